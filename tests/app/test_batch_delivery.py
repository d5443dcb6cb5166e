"""The offset gaps faust's commit bookkeeping must be told about (no broker)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.batch_delivery import offset_gaps


@dataclass
class Msg:
    partition: int
    offset: int


def _at(*offsets: int) -> list[Msg]:
    return [Msg(0, o) for o in offsets]


@pytest.mark.parametrize(
    ("read_offset", "offsets", "gaps"),
    [
        (9, (10, 11, 12), []),  # read 9, then 10-12
        (9, (12, 13, 17), [(10, 12), (14, 17)]),  # 10-11 and 14-16 missing (faust's form)
        (0, (4, 5), [(1, 4)]),  # offset 0 was the last read: 1-3 missing
        # A first fetch from offset 0 or with no commit: the gaps between records still count
        # (an aborted transaction in the first fetch would otherwise stop faust's commits).
        (None, (0, 1, 5, 6, 9), [(2, 5), (7, 9)]),
        (None, (3, 4), []),
    ],
)
def test_offsets_missing_between_fetched_records_are_gaps(
    read_offset: int | None, offsets: tuple[int, ...], gaps: list[tuple[int, int]]
) -> None:
    assert offset_gaps(read_offset, _at(*offsets)) == gaps

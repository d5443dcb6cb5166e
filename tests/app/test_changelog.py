"""OwnMarkerSearch without a broker: where a local copy's own last batch ends in its changelog,
read newest window first."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from app.changelog import OwnMarkerSearch
from tables.partition_state import APPLIED_OFFSET


@dataclass
class _Rec:
    offset: int
    key: bytes
    value: bytes | None
    timestamp: int


def _log(*applied: int | None, ms: int = 1_000) -> list[_Rec]:
    """Records at offsets 0.., a marker for each number and an entry for each None."""
    return [
        _Rec(i, b"Kx", b"v", ms) if a is None else _Rec(i, APPLIED_OFFSET, struct.pack(">q", a), ms)
        for i, a in enumerate(applied)
    ]


def _search(log: list[_Rec], applied: int, window: int, cutoff_ms: float = 0) -> int | None:
    search = OwnMarkerSearch(applied, cutoff_ms)
    stop = len(log)
    while stop > 0 and not search.done:
        start = max(0, stop - window)
        search.read(log[start:stop])
        search.window_read()
        stop = start
    return search.found(log_start_read=stop == 0)


def test_the_copys_marker_is_found_once_the_batch_before_it_is_seen() -> None:
    log = _log(None, 4, None, None, 9, None, 14, None, 19)
    for window in (1, 2, 3, 9):
        assert _search(log, 9, window) == 5
        assert _search(log, 4, window) == 2
        assert _search(log, 7, window) is None  # no batch of this copy's ended at 7


def test_a_marker_repeated_by_a_flush_cannot_be_resumed_after() -> None:
    """The copy may hold the batch or the batch and its flush: only a whole restore is sure."""
    log = _log(None, 4, None, 9, None, 9, None, 14)
    for window in (1, 2, 8):
        assert _search(log, 9, window) is None
        assert _search(log, 14, window) == 8


def test_the_first_batch_is_sure_only_once_the_log_start_was_read() -> None:
    log = _log(None, 4, None, 9)
    search = OwnMarkerSearch(4, cutoff_ms=0)
    search.read(log[1:])
    search.window_read()
    assert not search.done and search.found(log_start_read=False) is None
    assert search.found(log_start_read=True) == 2


def test_the_search_stops_at_records_too_old_to_resume_on() -> None:
    """No marker yet, and every record of the window is older than the cutoff: a tail
    starting further back would be refused anyway, so nothing older is read."""
    search = OwnMarkerSearch(4, cutoff_ms=5_000)
    search.read(_log(None, None, ms=1_000))
    search.window_read()
    assert search.done and search.found(log_start_read=False) is None
    young = OwnMarkerSearch(4, cutoff_ms=500)
    young.read(_log(None, None, ms=1_000))
    young.window_read()
    assert not young.done

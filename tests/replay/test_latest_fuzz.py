"""Fuzz the reading back of a version's outputs (`kappa export`, `kappa sink`, `kappa diff`):
anyone with access to an output topic can write to it, and a record Kappa did not write is
refused in one line, never a traceback; what is taken is stored and written as it was read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from app.settings import ConfigError
from replay.latest import RESULT_OUTPUTS, decode_entry, latest_entry, result_line
from tests.support.fuzz import HEADERS, values

GOOD = {
    "product_id": "p1",
    "window_start": 0,
    "window_end": 60_000,
    "user_id": "u1",
    "quiet_from": 60_000,
    "count": 1,
    "sum": 2.5,
    "final": True,
}


@dataclass
class _Record:
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int = 1
    offset: int = 7


def _same(a: object, b: object) -> bool:
    """Equal as JSON, NaN included (a foreign record may hold one: it is passed on as read)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(output=st.sampled_from(RESULT_OUTPUTS), value=values(GOOD), headers=HEADERS)
def test_any_output_record_is_taken_or_refused_in_one_line(
    output: tuple[str, tuple[str, ...]], value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    topic, keys = output
    try:
        entry = latest_entry(_Record(value, headers), keys, topic)  # type: ignore[arg-type]
    except ConfigError as e:
        assert str(e).startswith(f"{topic}[1] offset 7 is not a Kappa output record (")
        assert "\n" not in str(e)
        return
    if value is None:
        assert entry is None
        return
    assert entry is not None
    fields, provisional = decode_entry(entry[1])
    read = json.loads(value)
    assert provisional == (
        read.get("final", None) is False or any(k == "kappa.provisional" for k, _ in headers)
    )
    read.pop("final", None)
    assert _same(fields, read)
    assert _same(json.loads(result_line(fields)), read)

"""How `kappa diff` reads and compares two versions' outputs, without a broker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.base import SourceRecord
from app.settings import ConfigError
from replay.diff import _why_they_may_differ, compare_latest
from replay.latest import (
    Entry,
    decode_entry,
    latest_entry,
    sort_key,
)
from replay.registry import COMPLETE, LIVE, RUNNING, VersionRecord

WINDOW_KEY = ("product_id", "window_start", "window_end")


def out(offset: int, value: bytes | None, headers: list | None = None) -> SourceRecord:
    return SourceRecord("orders.user-totals.v2", 1, offset, None, b"u", value, headers or [])


def test_diff_reads_outputs_by_key_and_names_a_record_kappa_did_not_write() -> None:
    first = latest_entry(out(0, b'{"user_id": "u", "orders": 1}'), ("user_id",), "t")
    flushed = latest_entry(
        out(1, b'{"user_id": "u", "orders": 2}', [("kappa.provisional", b"1")]), ("user_id",), "t"
    )
    assert first is not None and flushed is not None
    assert first[0] == flushed[0] == sort_key(("u",))
    assert decode_entry(first[1]) == ({"user_id": "u", "orders": 1}, False)
    assert decode_entry(flushed[1]) == ({"user_id": "u", "orders": 2}, True)
    assert latest_entry(out(2, None), ("user_id",), "t") is None  # a tombstone
    for junk in (b"not json", b'{"orders": 1}', b'{"user_id": ["x"]}', b"[1]"):
        with pytest.raises(ConfigError) as err:
            latest_entry(out(7, junk), ("user_id",), "orders.user-totals.v2")
        assert "orders.user-totals.v2[1] offset 7" in str(err.value)


def test_diff_compares_results_not_how_a_version_emits_them() -> None:
    """A version run with KAPPA_EMIT_UPDATES marks its windows `final`; the other does not."""
    window = b'{"product_id":"p","window_start":0,"window_end":60000,"count":2,"sum":3.0'
    a = latest_entry(
        SourceRecord("r.v2", 0, 0, None, b"p", window + b',"final":true}'), WINDOW_KEY, "r"
    )
    b = latest_entry(SourceRecord("r.v3", 0, 0, None, b"p", window + b"}"), WINDOW_KEY, "r")
    assert a is not None and b is not None
    assert compare_latest([a], [b], WINDOW_KEY, 2, 3).differences == 0


def test_a_window_still_open_in_a_version_that_emits_updates_is_not_a_difference() -> None:
    """Its latest record is a running value (`"final":false`, no provisional header): it was
    reported as a window only that version has."""
    window = b'{"product_id":"p","window_start":0,"window_end":60000,"count":2,"sum":3.0'
    running = latest_entry(
        SourceRecord("r.v2", 0, 0, None, b"p", window + b',"final":false}'), WINDOW_KEY, "r"
    )
    assert running is not None
    diffed = compare_latest([running], [], WINDOW_KEY, 2, 3)
    assert (diffed.differences, diffed.provisional) == (0, 1)


keys = st.tuples(st.text(), st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))


@given(st.lists(keys, max_size=30))
def test_stored_keys_sort_as_the_keys_do(ks: list[tuple[str, int, int]]) -> None:
    """The report lists windows by product, then start time, not by their bytes' order."""
    assert sorted(ks, key=sort_key) == sorted(ks)
    assert len({sort_key(k) for k in ks}) == len(set(ks))


def window(product: str, start: int, count: int, provisional: bool = False) -> Entry:
    value = {"product_id": product, "window_start": start, "window_end": start + 60_000}
    record = SourceRecord(
        "r",
        0,
        0,
        None,
        product.encode(),
        json.dumps({**value, "count": count}).encode(),
        [("kappa.provisional", b"1")] if provisional else [],
    )
    entry = latest_entry(record, WINDOW_KEY, "r")
    assert entry is not None
    return entry


def test_two_outputs_are_walked_side_by_side_in_key_order() -> None:
    a = sorted(
        [
            window("p", 0, 1),
            window("p", 60_000, 2),  # differs
            window("p", 120_000, 3),  # only in v2
            window("q", 0, 4, provisional=True),  # flushed open window: not compared
            window("r", 0, 5),
        ]
    )
    b = sorted(
        [
            window("p", 0, 1),
            window("p", 60_000, 7),
            window("q", 0, 9),
            window("r", 0, 5),
            window("s", 0, 6),  # only in v3
        ]
    )
    result = compare_latest(a, b, WINDOW_KEY, 2, 3, limit=2)
    assert (result.in_a, result.in_b) == (5, 5)
    assert (result.only_a, result.only_b, result.changed, result.provisional) == (1, 1, 1, 1)
    assert result.lines("revenue") == [
        "revenue: 5 in v2, 5 in v3; 1 only in v2, 1 only in v3, 1 differ; "
        "1 provisional (windows still open), not compared",
        "  ~ ('p', 60000, 120000): count 2 → 7",
        "  - v2 only ('p', 120000, 180000): "
        '{"product_id": "p", "window_start": 120000, "window_end": 180000, "count": 3}',
        "  … 1 more",
    ]
    assert compare_latest(a, a, WINDOW_KEY, 2, 2).differences == 0
    # --limit 0 is "the counts only": no "… 3 more" under them either
    assert compare_latest(a, b, WINDOW_KEY, 2, 3, limit=0).lines("revenue") == [
        result.summary("revenue")
    ]


def test_differences_that_are_expected_say_why() -> None:
    """A replay still running, other `--since`, or a live version past the other's snapshot
    differ as a matter of course: the report said only how many differences there were."""
    snapshot = {"orders": {"0": 10}}
    unfinished = VersionRecord(2, RUNNING, ["orders"], snapshot, replay_done=False)
    since = VersionRecord(3, COMPLETE, ["orders"], snapshot, since_ms=60_000)
    live = VersionRecord(1, LIVE)
    assert _why_they_may_differ({1: live, 2: unfinished}, None) == [
        "note: version 2's replay has not completed: its outputs may be partial (kappa versions)"
    ]
    assert _why_they_may_differ({1: live, 3: since}, None) == [
        "note: the versions count windows from different times (--since): version 1 from the "
        "start, version 3 from 60000 (epoch ms)"
    ]
    later = VersionRecord(5, COMPLETE, ["orders"], {"orders": {"0": 10, "1": 25}})
    assert _why_they_may_differ({2: unfinished, 5: later}, None)[1:] == [
        "note: the versions were replayed up to different snapshots of their sources (version "
        "2: 10 records, version 5: 35); windows and totals the records in between reach differ"
    ]
    assert _why_they_may_differ({1: live, 4: VersionRecord(4, COMPLETE)}, (1, 4)) == [
        "note: version 1 is live and has read orders produced after version 4's snapshot; "
        "windows and totals they reach differ until version 4 runs live too"
    ]

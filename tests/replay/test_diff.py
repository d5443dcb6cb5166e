"""How `kappa diff` reads and compares two versions' outputs, without a broker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.base import SourceRecord
from app.settings import ConfigError, load_settings
from replay.diff import _why_they_may_differ, compare_latest
from replay.latest import (
    Entry,
    decode_entry,
    latest_entry,
    sort_key,
)
from replay.registry import COMPLETE, LIVE, RUNNING, VersionRecord, version_definition

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
    """A replay still running, other settings, other `--since`, or sources read to other points
    (a live version past the other's snapshot) differ as a matter of course: the report said
    only how many differences there were."""
    snapshot = {"orders": {"0": 10}}
    unfinished = VersionRecord(2, RUNNING, ["orders"], snapshot, replay_done=False)
    since = VersionRecord(3, COMPLETE, ["orders"], snapshot, since_ms=60_000)
    live = VersionRecord(1, LIVE)
    unknown: dict[int, dict[str, object] | None] = {v: None for v in range(1, 10)}
    assert _why_they_may_differ({1: live, 2: unfinished}, unknown, {}, 1) == [
        "note: version 2's replay has not completed: its outputs may be partial (kappa versions)"
    ]
    assert _why_they_may_differ({1: live, 3: since}, unknown, {}, 1) == [
        "note: the versions count windows from different times (--since): version 1 from the "
        "start, version 3 from 60000 (epoch ms)"
    ]
    later = VersionRecord(5, COMPLETE, ["orders"], {"orders": {"0": 10, "1": 25}})
    read = {2: {"orders": {"0": 10, "1": 0}}, 5: {"orders": {"0": 10, "1": 25}}}
    assert _why_they_may_differ({2: unfinished, 5: later}, unknown, read, 1)[1:] == [
        "note: the versions have read their sources to different points (version 2: 10 "
        "records, version 5: 35); windows and totals the records in between reach differ"
    ]
    read = {1: {"orders": {"0": 12}}, 4: {"orders": {"0": 10}}}
    assert _why_they_may_differ({1: live, 4: VersionRecord(4, COMPLETE)}, unknown, read, 1) == [
        "note: version 1 is live and has read orders version 4 has not (produced after its "
        "snapshot); windows and totals they reach differ until version 4 runs live too"
    ]


def test_versions_built_with_other_settings_say_which() -> None:
    """`kappa diff 4 7` of versions replayed to the same snapshot, 7 with KAPPA_WINDOW_MS=120000,
    gave 100,420 differences and no note."""
    snapshot = {"orders": {"0": 500, "1": 520}}
    recs = {v: VersionRecord(v, COMPLETE, [], snapshot) for v in (4, 7)}
    built = version_definition(load_settings({}))
    other = {**built, "window_ms": 120_000, "anomaly_z": 2.0}
    read = {v: snapshot for v in recs}
    assert _why_they_may_differ(recs, {4: built, 7: other}, read, 1) == [
        "note: the versions were built with different settings: KAPPA_WINDOW_MS 60000 in "
        "version 4, 120000 in version 7; KAPPA_ANOMALY_Z 3.0 in version 4, 2.0 in version 7"
    ]
    assert _why_they_may_differ(recs, {4: built, 7: dict(built)}, read, 1) == []
    assert _why_they_may_differ(recs, {4: built, 7: None}, read, 1) == []  # not recorded


def test_a_live_version_past_its_own_snapshot_is_not_said_to_have_another_snapshot() -> None:
    """Live version 5 (replayed to 520,000 records) had read on to 530,268, where version 6
    was replayed to with other window settings: the note said they were replayed up to
    different snapshots, and not that their windows differ."""
    own = {"orders": {"0": 260_000, "1": 260_000}}
    now = {"orders": {"0": 265_000, "1": 265_268}}
    recs = {5: VersionRecord(5, LIVE, [], own), 6: VersionRecord(6, COMPLETE, [], now)}
    built = version_definition(load_settings({}))
    definitions: dict[int, dict[str, object] | None] = {
        5: built,
        6: {**built, "window_ms": 300_000},
    }
    assert _why_they_may_differ(recs, definitions, {5: now, 6: now}, 5) == [
        "note: the versions were built with different settings: KAPPA_WINDOW_MS 60000 in "
        "version 5, 300000 in version 6"
    ]


def test_every_count_in_a_summary_has_thousands_separators() -> None:
    """`39,904 in v2` stood beside `16385 only in v2`, `1000 provisional` and `… 67215 more`."""
    from replay.diff import OutputDiff

    out = OutputDiff(1, 2, 1, 39_904, 39_904, 16_385, 0, 50_831, 1_000, ["  ~ one"])
    assert out.lines("revenue") == [
        "revenue: 39,904 in v1, 39,904 in v2; 16,385 only in v1, 0 only in v2, 50,831 differ; "
        "1,000 provisional (windows still open), not compared",
        "  ~ one",
        "  … 67,215 more",
    ]

"""What `kappa diff` reads of a version's outputs, without a broker."""

from __future__ import annotations

import pytest

from agents.base import SourceRecord
from app.settings import ConfigError
from replay.registry import COMPLETE, LIVE, RegistryView, VersionRecord
from replay.versions import PROVISIONAL, shown_status, upsert_latest


def test_diff_reads_outputs_by_key_and_names_a_record_kappa_did_not_write() -> None:
    def out(offset: int, value: bytes, headers: list | None = None) -> SourceRecord:
        return SourceRecord("orders.user-totals.v2", 1, offset, None, b"u", value, headers or [])

    latest: dict = {}
    good = [
        out(0, b'{"user_id": "u", "orders": 1}'),
        out(1, b'{"user_id": "u", "orders": 2}', [("kappa.provisional", b"1")]),
    ]
    upsert_latest(latest, good, ("user_id",), "orders.user-totals.v2")
    assert latest == {("u",): {"user_id": "u", "orders": 2, PROVISIONAL: True}}
    for junk in (b"not json", b'{"orders": 1}', b'{"user_id": ["x"]}', b"[1]"):
        with pytest.raises(ConfigError) as err:
            upsert_latest(latest, [out(7, junk)], ("user_id",), "orders.user-totals.v2")
        assert "orders.user-totals.v2[1] offset 7" in str(err.value)


def test_diff_compares_results_not_how_a_version_emits_them() -> None:
    """A version run with KAPPA_EMIT_UPDATES marks its windows `final`; the other does not."""
    window = b'{"product_id":"p","window_start":0,"window_end":60000,"count":2,"sum":3.0'
    with_flag = SourceRecord("r.v2", 0, 0, None, b"p", window + b',"final":true}')
    without = SourceRecord("r.v3", 0, 0, None, b"p", window + b"}")
    key = ("product_id", "window_start")
    a: dict = {}
    b: dict = {}
    upsert_latest(a, [with_flag], key, "r.v2")
    upsert_latest(b, [without], key, "r.v3")
    assert a == b


def test_a_promote_stopped_halfway_shows_one_version_live_and_the_other_promoting() -> None:
    """The promote marked 3 live but stopped before marking 2 complete: 2 is still live."""
    view = RegistryView(
        {2: VersionRecord(2, LIVE), 3: VersionRecord(3, LIVE), 4: VersionRecord(4, COMPLETE)},
        {},
        marked={2: 5, 3: 9, 4: 7},
    )
    shown = {v: shown_status(view, v, rec) for v, rec in view.versions.items()}
    assert shown == {2: "live", 3: "promoting", 4: "complete"}

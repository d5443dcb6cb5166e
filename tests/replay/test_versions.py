"""What `kappa diff` reads of a version's outputs, without a broker."""

from __future__ import annotations

import pytest

from agents.base import SourceRecord
from app.settings import ConfigError
from replay.versions import PROVISIONAL, upsert_latest


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

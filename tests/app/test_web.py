"""The worker's table query answers, without a web server: what each case returns."""

from __future__ import annotations

import json

from agents.base import SourceRecord
from agents.orders import BY_USER
from agents.product_trends import SIGNALS_STORE, TRENDS_STORE, settled_signals, settled_trend
from agents.user_totals import USER_TOTALS_STORE, UserTotalsPipeline
from app.web import _user_totals, table_answer
from tables.partition_state import MemoryStore, PartitionState


def _state_holding(table: str, key: str, value: bytes) -> PartitionState:
    state = PartitionState(MemoryStore(), 3, pipeline="p")
    state.put_value(table, key, value)
    state.commit()
    return state


def test_a_key_held_elsewhere_names_its_partition_and_owner() -> None:
    assert table_answer(None, 3, "u1", "user", _user_totals, "no orders for user", "http://b") == (
        404,
        {
            "error": "partition 3 of this user is not on this worker",
            "partition": 3,
            "owner": "http://b",
        },
    )


def test_a_key_without_an_entry_is_404_and_one_with_is_200() -> None:
    state = PartitionState(MemoryStore(), 3)
    forward = {"user_id": "u", "src": [0, 20], "orders": 3, "spend": 7.0, "ts": 2}
    record = SourceRecord(BY_USER, 3, 0, None, b"u", json.dumps(forward).encode())
    UserTotalsPipeline().process(state, [record])
    state.prepare(0)
    state.commit()
    assert table_answer(state, 3, "u1", "user", _user_totals, "no orders for user", None) == (
        404,
        {"error": "no orders for user u1"},
    )
    assert table_answer(state, 3, "u", "user", _user_totals, "no orders for user", None) == (
        200,
        {"user_id": "u", "orders": 3, "spend": 7.0, "partition": 3},
    )


def test_a_stored_value_that_cannot_be_decoded_is_one_line_not_a_traceback() -> None:
    """The query meets a value the pipeline will stop on too: it says so, and the worker
    goes on serving the other keys."""
    for table, lookup in (
        (USER_TOTALS_STORE, _user_totals),
        (TRENDS_STORE, settled_trend),
        (SIGNALS_STORE, settled_signals),
    ):
        state = _state_holding(table, "k", b"\x09not a state this release wrote")
        status, body = table_answer(state, 3, "k", "key", lookup, "none for", None)
        assert status == 500 and body["partition"] == 3
        assert body["error"].startswith(
            f"p partition 3: the stored {table} value of key 'k' cannot be decoded ("
        )
        assert "\n" not in body["error"]

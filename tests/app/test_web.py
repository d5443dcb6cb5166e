"""The worker's table query answers, without a web server: what each case returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.partitioner import DefaultPartitioner

from agents.base import SourceRecord
from agents.orders import BY_USER
from agents.product_trends import SIGNALS_STORE, TRENDS_STORE, settled_signals, settled_trend
from agents.user_totals import USER_TOTALS_STORE, UserTotalsPipeline
from app.settings import Settings, load_settings
from app.web import (
    _register_query,
    _user_totals,
    other_table_path_answer,
    query_key,
    table_answer,
)
from app.worker import create_app
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


class _Pages:
    """A faust app's `page` decorator, keeping each page's view class by path."""

    def __init__(self) -> None:
        self.views: dict[str, type] = {}

    def page(self, path: str) -> Callable[[type], type]:
        def keep(view: type) -> type:
            self.views[path] = view
            return view

        return keep


class _JsonView:
    def json(self, body: dict[str, Any], status: int = 200) -> tuple[int, dict[str, Any]]:
        return status, body


async def test_a_key_of_a_partition_still_restoring_here_is_503_not_elsewhere() -> None:
    """Before its state is restored, a partition assigned to this worker is not "not on this
    worker" (which sent callers looking elsewhere, and `kappa query` to say no worker holds
    it): the answer says it is restoring here, to try again."""
    settings = Settings(partitions=4)
    key = "u1"
    partition = DefaultPartitioner()(key.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
    runner = SimpleNamespace(
        open_state=lambda p: None,
        pipeline=SimpleNamespace(source="orders.by-user"),
        topology=SimpleNamespace(physical=lambda t: t),
    )
    assigned: set[int] = set()
    app = _Pages()
    _register_query(
        app,  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        lambda: assigned,
        settings,
        "user-totals",
        "user",
        _user_totals,
        "no orders for user",
    )
    (view,) = app.views.values()

    async def ask() -> tuple[int, dict[str, Any]]:
        request = SimpleNamespace(rel_url=SimpleNamespace(raw_path=f"/tables/user-totals/{key}"))
        return await view.get(_JsonView(), request, key)  # type: ignore[attr-defined,no-any-return]

    assert await ask() == (
        404,
        {
            "error": f"partition {partition} of this user is not on this worker",
            "partition": partition,
        },
    )
    assigned.add(partition)
    status, body = await ask()
    assert status == 503 and body["partition"] == partition and "owner" not in body
    assert "is assigned to this worker but its state is still being restored" in body["error"]


@pytest.mark.parametrize(
    ("sent", "key"),
    [
        ("u1", "u1"),
        ("%25FF", "%FF"),
        ("a%2Fb%20%7Bc%7D%C3%BC", "a/b {c}\u00fc"),
        ("%f0%9f%98%80", "\U0001f600"),
        ("%FF", None),  # no UTF-8
        ("%C3", None),  # cut short
        ("%ED%A0%80", None),  # a surrogate
        ("%", None),  # starts no escape
        ("a%ZZ", None),
        ("%2", None),
    ],
)
def test_a_key_is_decoded_strictly_from_its_percent_encoding(sent: str, key: str | None) -> None:
    assert query_key(sent) == key


async def test_the_worker_answers_an_undecodable_key_or_an_unknown_table_in_json(
    tmp_path: Path,
) -> None:
    """Over HTTP, through the worker's own web app: `%FF` was looked up as the key "%FF" (the
    key `%25FF` names) and a table the worker does not serve was aiohttp's plain-text 404."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_PARTITIONS": "4"})
    app = create_app(settings, 1, ["user-totals"])
    async with TestClient(TestServer(app.web.web_app)) as client:

        async def ask(path: str) -> tuple[int, Any]:
            response = await client.get(path)
            return response.status, await response.json()

        status, body = await ask("/tables/user-totals/%FF")
        assert status == 400
        assert body == {"error": "key %FF is not valid UTF-8 percent-encoding (%25 for a %)"}
        for table in ("nosuch", "product-trends"):
            assert await ask(f"/tables/{table}/x/y") == (
                404,
                {
                    "error": f"no table {table} on this worker; it serves user-totals",
                    "tables": ["user-totals"],
                },
            )


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/tables", 200, {"tables": ["product-trends", "product-signals"]}),
        ("/tables/", 200, {"tables": ["product-trends", "product-signals"]}),
        (
            "/tables/product-trends",
            400,
            {"error": "a key is needed: /tables/product-trends/<product_id>"},
        ),
        (
            "/tables/product-signals/",
            400,
            {"error": "a key is needed: /tables/product-signals/<product_id>"},
        ),
        (
            "/tables//p1",
            400,
            {
                "error": "a table is needed: /tables/<table>/<key>; this worker serves "
                "product-trends, product-signals",
                "tables": ["product-trends", "product-signals"],
            },
        ),
        (
            "/tables/user-totals",
            404,
            {
                "error": "no table user-totals on this worker; it serves product-trends, "
                "product-signals",
                "tables": ["product-trends", "product-signals"],
            },
        ),
        (
            "/tables/a%2Fb/",
            404,
            {
                "error": "no table a/b on this worker; it serves product-trends, product-signals",
                "tables": ["product-trends", "product-signals"],
            },
        ),
    ],
)
async def test_a_table_query_path_missing_its_table_or_key_is_answered_in_json(
    tmp_path: Path, path: str, status: int, body: dict[str, Any]
) -> None:
    """`/tables/product-trends`, `/tables//p1`: aiohttp's plain-text 404, which `kappa query`
    and a script could only read as "no such page"; `/tables` lists the tables served."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_PARTITIONS": "4"})
    app = create_app(settings, 1, ["product-trends"])
    async with TestClient(TestServer(app.web.web_app)) as client:
        response = await client.get(path)
        assert (response.status, await response.json()) == (status, body)


def test_a_worker_keeping_no_table_lists_none() -> None:
    assert other_table_path_answer("", {}) == (200, {"tables": []})
    assert other_table_path_answer("user-totals/", {}) == (
        404,
        {
            "error": "no table user-totals on this worker; it serves none: its pipelines keep "
            "no table",
            "tables": [],
        },
    )

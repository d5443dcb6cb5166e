"""The worker's HTTP pages, on faust's web server: `/metrics`, `/health`, `/ready` and the
table queries.

faust's own `/router` and `/table` pages are switched off in `app.worker.create_app`: they know
nothing of Kappa's state.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from time import monotonic
from typing import Any

import faust
from aiohttp.web import AppRunner
from aiokafka.partitioner import DefaultPartitioner
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.product_trends import settled_signals, settled_trend
from agents.user_totals import settled_totals
from app import metrics
from app.consumer_lag import LagExport
from app.group_wait import GroupWait
from app.partition_owners import PartitionOwners
from app.readiness import PipelinePartitions, readiness
from app.runtime import PipelineRunner
from app.settings import Settings
from tables.cleaning import MAX_TEXT_CHARS
from tables.partition_state import PartitionState, StateError

log = logging.getLogger(__name__)

# The longest request line the query serves: a 1,024-character id, 4 UTF-8 bytes a character,
# 3 characters per percent-encoded byte, and the method, path and protocol.
QUERY_LINE_BYTES = MAX_TEXT_CHARS * 4 * 3 + 256

# a "%" not starting a two-hex-digit escape
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def register_pages(
    app: faust.App,
    version: int,
    group_id: str,
    runners: Sequence[PipelineRunner],
    settings: Settings,
    partitions: Callable[[], Mapping[str, PipelinePartitions]],
    lags: Callable[[], Mapping[str, Mapping[int, int]]],
) -> None:
    """Serve `/metrics`, `/health`, `/ready` and a query for each table this worker's
    pipelines keep. `partitions`: each pipeline's assigned and open partitions, now; `lags`:
    each pipeline's lag by partition, now (`app.consumer_lag`)."""
    lag_export = LagExport(version)

    def ready_now(explained: bool) -> tuple[bool, dict[str, Any]]:
        """What `/ready` answers now (`explained`: with how long it has been out of its group
        and the coordinator's answers); `/metrics` says it too (`kappa_worker_ready`), so a
        worker that stays out of its group, or restoring, can be alerted on."""
        wait: GroupWait | None = getattr(app, "kappa_group_wait", None)
        ready, body = readiness(
            getattr(app, "kappa_rebalances_done", 0),
            bool(app.rebalancing),
            partitions(),
            None
            if wait is None or not explained
            else lambda status: wait.waiting(status, monotonic()),
        )
        metrics.WORKER_READY.labels(str(version)).set(1 if ready else 0)
        return ready, body

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            ready_now(explained=False)
            lag_export.export(lags())
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "version": version, "group": group_id})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready, body = ready_now(explained=True)
            return self.json({**body, "version": version}, status=200 if ready else 503)

    # A key of up to 1,024 characters, percent-encoded, takes up to 12 KiB of request line,
    # over aiohttp's default limit (8,190 bytes). faust builds its runner with that default.
    web = app.web
    web._runner = AppRunner(web.web_app, access_log=None, max_line_size=QUERY_LINE_BYTES)
    served: dict[str, str] = {}  # table -> what its keys are, as its query's path names them
    for runner in runners:

        def assigned(name: str = runner.pipeline.name) -> Set[int]:
            held = partitions().get(name)
            return held.assigned if held is not None else frozenset()

        if runner.pipeline.name == "user-totals":
            _register_query(
                app,
                runner,
                assigned,
                settings,
                "user-totals",
                "user",
                _user_totals,
                "no orders for user",
            )
            served["user-totals"] = "user_id"
        elif runner.pipeline.name == "product-trends":
            for table, lookup, missing in (
                ("product-trends", settled_trend, "no closed window for product"),
                # a version upgraded to signals has none for windows closed before that
                ("product-signals", settled_signals, "no signals yet for product"),
            ):
                _register_query(app, runner, assigned, settings, table, "product", lookup, missing)
                served[table] = "product_id"
    _register_other_table_paths(app, served)


def _user_totals(state: PartitionState, user_id: str) -> dict[str, Any] | None:
    found = settled_totals(state, user_id)
    if found is None:
        return None
    orders, spend = found
    return {"user_id": user_id, "orders": orders, "spend": spend}


def _register_query(
    app: faust.App,
    runner: PipelineRunner,
    assigned: Callable[[], Set[int]],
    settings: Settings,
    table: str,
    noun: str,
    lookup: Callable[[PartitionState, str], dict[str, Any] | None],
    missing: str,
) -> None:
    """`GET /tables/{table}/{key}`: the key's entry from this worker's state; 404 with
    `missing` and the key when `lookup` finds none.

    Read-only, served from the partition's RocksDB state when this worker holds it (a key's
    partition is the Kafka default partitioner's over it, as for every keyed record);
    otherwise 404 naming the partition and, when the group's last join said so, the URL of
    the worker that holds it (`owner`), so a caller can ask there. A partition assigned here
    (`assigned`, the pipeline's source partitions now) whose state is still opening is 503.
    """
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.partitions))

    source = runner.topology.physical(runner.pipeline.source)
    owners: PartitionOwners | None = getattr(app, "kappa_partition_owners", None)

    async def get(view: View, request: Request, key: str) -> Response:
        # aiohttp hands on an escape it cannot decode as its text: "%FF" as key "%FF", the
        # key "%25FF" names; so the key is decoded again from the path as sent
        raw_key = request.rel_url.raw_path.split("/", 3)[3]
        decoded = query_key(raw_key)
        if decoded is None:
            return view.json(
                {"error": f"key {raw_key} is not valid UTF-8 percent-encoding (%25 for a %)"},
                status=400,
            )
        key = decoded
        partition = partitioner(key.encode(), partitions, partitions)
        state = runner.open_state(partition)
        owner = None
        restoring = state is None and partition in assigned()
        if state is None and not restoring and owners is not None:  # as of the last rebalance
            owner = owners.owner(source, partition)
        status, body = table_answer(
            state, partition, key, noun, lookup, missing, owner, restoring=restoring
        )
        return view.json(body, status=status)

    # any key, "{", "}" and "/" included
    app.page(f"/tables/{table}/{{key:.+}}")(type(f"Query-{table}", (View,), {"get": get}))


def _register_other_table_paths(app: faust.App, served: Mapping[str, str]) -> None:
    """`GET /tables...` that no table's own page takes, in JSON rather than aiohttp's plain-text
    404 (see `other_table_path_answer`). Registered after the tables' own pages, which keep
    their requests (aiohttp prefers the longer fixed prefix, and else the page registered
    first)."""

    async def get(view: View, request: Request, rest: str = "") -> Response:
        # the path as sent: aiohttp's match has "%2F" decoded, a "/" that would split it anew
        path = request.rel_url.raw_path
        status, body = other_table_path_answer(path[len("/tables/") :], served)
        return view.json(body, status=status)

    for path in ("/tables", "/tables/{rest:.*}"):
        page = type(f"Query-other-path{path.count('/')}", (View,), {"get": get})
        app.page(path)(page)


def other_table_path_answer(rest: str, served: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of `GET /tables/{rest}` (`rest` percent-encoded, as sent) that
    no table's own page takes; `served`: the tables this worker serves, each to what its keys
    are. `/tables` lists them; a table with no key part (`/tables/user-totals`, `.../`) or no
    table part (`/tables//x`) is 400, a table this worker does not serve 404."""
    if not rest:
        return 200, {"tables": [*served]}
    table_sent = rest.partition("/")[0]
    table = urllib.parse.unquote(table_sent, errors="replace")
    if not table:
        tables = ", ".join(served) if served else "none: its pipelines keep no table"
        return 400, {
            "error": f"a table is needed: /tables/<table>/<key>; this worker serves {tables}",
            "tables": [*served],
        }
    if table not in served:
        return 404, unknown_table_answer(table, served)
    # a table served here with a key is its own page's: here its key part is empty
    return 400, {"error": f"a key is needed: /tables/{table}/<{served[table]}>"}


def unknown_table_answer(table: str, served: Iterable[str]) -> dict[str, Any]:
    """The body of a query for `table`, which this worker does not serve (it serves `served`)."""
    tables = [*served]
    named = ", ".join(tables) if tables else "none: its pipelines keep no table"
    return {"error": f"no table {table} on this worker; it serves {named}", "tables": tables}


def query_key(raw_key: str) -> str | None:
    """The key of a table query from its percent-encoded form as sent, decoded strictly: None
    when it is not valid UTF-8 percent-encoding (`%FF`, an encoded surrogate, a `%` that
    starts no escape), which would otherwise be taken as the literal text."""
    if _BAD_ESCAPE.search(raw_key):
        return None
    try:
        return urllib.parse.unquote_to_bytes(raw_key).decode("utf-8")
    except UnicodeError:
        return None


def table_answer(
    state: PartitionState | None,
    partition: int,
    key: str,
    noun: str,
    lookup: Callable[[PartitionState, str], dict[str, Any] | None],
    missing: str,
    owner: str | None,
    restoring: bool = False,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a table query for `key` in `partition`, whose state this
    worker holds (`state`), or is still opening (`restoring`: assigned here, its state being
    opened or restored from its changelog), or not (`owner`: who does, if known)."""
    if state is None and restoring:
        return 503, {
            "error": f"partition {partition} of this {noun} is assigned to this worker but its "
            "state is still being restored from its changelog; try again shortly",
            "partition": partition,
        }
    if state is None:
        body: dict[str, Any] = {
            "error": f"partition {partition} of this {noun} is not on this worker",
            "partition": partition,
        }
        if owner is not None:
            body["owner"] = owner
        return 404, body
    try:
        found = lookup(state, key)
    except StateError as e:  # an undecodable value, an I/O error: one line, not a traceback
        log.error("query for %r: %s", key, e)
        return 500, {"error": str(e), "partition": partition}
    if found is None:
        return 404, {"error": f"{missing} {key}"}
    return 200, {**found, "partition": partition}

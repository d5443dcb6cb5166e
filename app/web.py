"""The worker's HTTP pages, on faust's web server: `/metrics`, `/health` and the user-totals query.

faust's own `/router` and `/table` pages are switched off in `app.worker.create_app`: they know
nothing of Kappa's state.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from aiohttp.web import AppRunner
from aiokafka.partitioner import DefaultPartitioner
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.user_totals import settled_totals
from app.runtime import PipelineRunner
from app.settings import Settings
from tables.cleaning import MAX_TEXT_CHARS

# The longest request line the query serves: a 1,024-character id, 4 UTF-8 bytes a character,
# 3 characters per percent-encoded byte, and the method, path and protocol.
QUERY_LINE_BYTES = MAX_TEXT_CHARS * 4 * 3 + 256


def register_pages(
    app: faust.App,
    version: int,
    group_id: str,
    runners: Sequence[PipelineRunner],
    settings: Settings,
) -> None:
    """Serve `/metrics`, `/health` and, when this worker runs user-totals, its query."""

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "version": version, "group": group_id})

    totals_runner = next((r for r in runners if r.pipeline.name == "user-totals"), None)
    if totals_runner is not None:
        _register_user_totals_query(app, totals_runner, settings)


def _register_user_totals_query(app: faust.App, runner: PipelineRunner, settings: Settings) -> None:
    """`GET /tables/user-totals/{user_id}`: the user's totals from this worker's state.

    Read-only, served from the partition's RocksDB state when this worker holds it (a user's
    partition is the Kafka default partitioner's over its key, as for every keyed record);
    otherwise 404 naming the partition, so a caller can ask the worker that owns it.
    """
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.partitions))
    # A user id of up to 1,024 characters, percent-encoded, takes up to 12 KiB of request line,
    # over aiohttp's default limit (8,190 bytes). faust builds its runner with that default.
    web = app.web
    web._runner = AppRunner(web.web_app, access_log=None, max_line_size=QUERY_LINE_BYTES)

    @app.page("/tables/user-totals/{user_id:.+}")  # any id, "{", "}" and "/" included
    class UserTotals(View):
        async def get(self, request: Request, user_id: str) -> Response:
            partition = partitioner(user_id.encode(), partitions, partitions)
            state = runner.open_state(partition)
            if state is None:
                return self.json(
                    {"error": f"partition {partition} of this user is not on this worker"},
                    status=404,
                )
            found = settled_totals(state, user_id)
            if found is None:
                return self.json({"error": f"no orders for user {user_id}"}, status=404)
            orders, spend = found
            return self.json(
                {"user_id": user_id, "orders": orders, "spend": spend, "partition": partition}
            )

"""A healthy worker working through a backlog logs no false "stream has not started
processing" errors (faust's livelock check, which Kappa's batch delivery must feed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.datasets import orders_spec, produce_orders
from tests.support.workers import Worker, check_stopped, kappa_env, patched_kappa, run_kappa

pytestmark = pytest.mark.integration

N = 100_000

# faust checks every partition every 2.5 s once a worker has run `stream_processing_timeout`
# (300 s): 1 s here. It looks only at partitions whose fetch position is behind the end, so
# fetches are made small: a backlog of a few seconds then meets the check.
PATCH = """
import app.worker as w
make = w.create_app
def create_app(*args, **kwargs):
    app = make(*args, **kwargs)
    app.conf.stream_processing_timeout = 1.0
    app.conf.consumer_max_fetch_size = 16_384  # a fetch takes part of the backlog, not all
    return app
w.create_app = create_app
"""


async def test_a_worker_catching_up_is_not_reported_as_a_stalled_stream(
    broker: str, unique: str, tmp_path: Path
) -> None:
    # Small batches: the backlog takes seconds to work through, as a big one would take minutes.
    env = kappa_env(broker, unique, tmp_path / "state", KAPPA_BATCH_MAX="20")
    assert run_kappa(["topics"], env).returncode == 0
    spec = orders_spec(N, 5, keys=50, users=40)
    await produce_orders(broker, f"{unique}.orders", spec)
    worker = Worker(env, tmp_path / "worker.log", command=patched_kappa(PATCH)).start()
    try:
        worker.wait_until(lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= N)
    finally:
        stopped = worker.stop()
    check_stopped(worker, stopped, "Stream has not started processing")

"""A real worker whose pipeline cannot make its batches durable (the broker refuses its sends
for a while) exports the records it has not applied as lag, and none once it has: what
KappaPipelineStalled and KappaFallingBehind read (`kappa_consumer_lag_records`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.datasets import orders_spec, produce_orders
from tests.support.workers import Worker, check_stopped, kappa_env, patched_kappa, run_kappa

pytestmark = pytest.mark.integration

# A worker whose orders pipeline's sends fail as if the broker were unreachable until the file
# TEST_GATE exists: the pipeline retries its batch, applying nothing, with its states open.
STALLED = """
import os
from pathlib import Path
from aiokafka.errors import KafkaConnectionError
import app.runtime as runtime
gate = Path(os.environ["TEST_GATE"])
send_and_commit = runtime.PipelineRunner._send_and_commit
async def refused_until_let(self, batches):
    if self.pipeline.name == "orders" and not gate.exists():
        raise KafkaConnectionError("test: the broker refuses sends for now")
    return await send_and_commit(self, batches)
runtime.PipelineRunner._send_and_commit = refused_until_let
"""


async def test_records_a_stalled_pipeline_has_not_applied_are_its_lag(
    broker: str, unique: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    env = kappa_env(broker, unique, tmp_path / "state", TEST_GATE=str(gate))
    assert run_kappa(["topics"], env).returncode == 0
    n = 400
    await produce_orders(broker, f"{unique}.orders", orders_spec(n, 21, keys=20, users=10))
    worker = Worker(env, tmp_path / "worker.log", command=patched_kappa(STALLED))
    worker.start("--pipeline", "orders")
    try:
        lag = "kappa_consumer_lag_records"
        # Every record fetched, none applied: the lag of its 4 partitions is all of them.
        worker.wait_until(lambda _: worker.metric(lag, pipeline="orders") == n)
        assert worker.metric("kappa_events_in_total", pipeline="orders") == 0
        gate.touch()
        worker.wait_until(
            lambda _: (
                worker.metric("kappa_events_in_total", pipeline="orders") == n
                and worker.metric(lag, pipeline="orders") == 0
            )
        )
    finally:
        stopped = worker.stop()
    check_stopped(worker, stopped, "Traceback")

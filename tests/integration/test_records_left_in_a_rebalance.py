"""Records a fetch returned just as a rebalance stopped the flow are read again.

faust drops such records, counting on the rebalance's seek of every partition to its committed
offset; but a fetch that spans the rebalance can return them after that seek and before the
flow resumes. The consumer's position was then past them, and a partition whose state follows
its records skipped them for good: the rolling-restart test lost a whole chunk of orders so.
Here the flow stops once, around one fetch of orders, with no rebalance and no seek at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.checks import check_outputs, eventually, reference_for
from tests.support.datasets import START_MS, orders_spec, produce_orders
from tests.support.workers import Worker, kappa_env, patched_kappa, run_kappa

pytestmark = pytest.mark.integration

# Once the trigger file exists: the next fetch of orders arrives while the flow is stopped.
PATCH = """
import os
from app.batch_delivery import BatchingConsumer
take_in = BatchingConsumer._take_in
done = []
async def flow_stopped_once(self, records, active):
    if done or not os.path.exists(os.environ["KAPPA_TEST_TRIGGER"]):
        return await take_in(self, records, active)
    if not any(tp.topic.endswith(".orders") for tp in records):
        return await take_in(self, records, active)
    done.append(True)
    self.stop_flow()
    try:
        return await take_in(self, records, active)
    finally:
        self.resume_flow()
BatchingConsumer._take_in = flow_stopped_once
"""


async def test_records_fetched_as_the_flow_stops_are_read_again(
    broker: str, unique: str, tmp_path: Path
) -> None:
    trigger = tmp_path / "stop-the-flow-now"
    env = kappa_env(
        broker, unique, tmp_path / "state", KAPPA_LOG_LEVEL="info", KAPPA_TEST_TRIGGER=str(trigger)
    )
    assert run_kappa(["topics"], env).returncode == 0
    worker = Worker(env, tmp_path / "worker.log", command=patched_kappa(PATCH)).start()
    start = START_MS
    try:
        for seed in (1, 2, 3):  # 2 is left once; 3 follows on, past it if it were skipped
            chunk = orders_spec(1_000, seed, start, keys=40, users=30, ms_per_event=600)
            start += chunk.span_ms
            if seed == 2:  # chunk 1 is all in: the next fetch of orders is this chunk's first
                trigger.touch()
            await produce_orders(broker, f"{unique}.orders", chunk)
            if seed == 2:
                worker.wait_until(lambda _: "read again" in worker.log_path.read_text())
            else:
                ref = await reference_for(broker, f"{unique}.orders")
                await eventually(
                    lambda ref=ref: check_outputs(broker, unique, ref), explain=worker.tail_log
                )
    finally:
        assert worker.stop() == 0, worker.tail_log()

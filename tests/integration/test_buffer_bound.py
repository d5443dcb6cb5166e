"""A worker working through a backlog buffers at most about KAPPA_BATCH_MAX records per
pipeline: its memory must not grow with what one fetch brings (16 MiB per partition)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.datasets import orders_spec, produce_orders
from tests.support.workers import Worker, check_stopped, kappa_env, patched_kappa, run_kappa

pytestmark = pytest.mark.integration

N = 20_000
BATCH_MAX = 100
OVER = "buffer over its bound"

# Says so in the log whenever a pipeline's buffer holds more than its bound plus one poll.
PATCH = f"""
import logging
from app.batch_buffer import BatchBuffer
put_many = BatchBuffer.put_many
async def checked(self, partition, messages, wait_s=None):
    if self.size + len(messages) >= self.max_buffered + self.target:
        logging.getLogger("app.batch_buffer").error("{OVER}: %d", self.size + len(messages))
    return await put_many(self, partition, messages, wait_s)
BatchBuffer.put_many = checked
"""


async def test_a_worker_catching_up_buffers_no_more_than_its_batch_max(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state", KAPPA_BATCH_MAX=str(BATCH_MAX))
    assert run_kappa(["topics"], env).returncode == 0
    await produce_orders(broker, f"{unique}.orders", orders_spec(N, 5, keys=50, users=40))
    worker = Worker(env, tmp_path / "worker.log", command=patched_kappa(PATCH)).start()
    try:
        worker.wait_until(lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= N)
    finally:
        stopped = worker.stop()
    check_stopped(worker, stopped, OVER)

"""A pipeline that cannot take records (its state still restoring) holds back only its own
source: the worker's other pipelines keep going, and the worker stays in its group."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.orders_generator import generate
from app.produce import produce_records
from tests.support.checks import check_outputs, eventually, reference_for
from tests.support.datasets import orders_spec, produce_orders
from tests.support.workers import (
    Worker,
    check_stopped,
    kappa_env,
    patched_kappa,
    run_kappa,
    scrape,
)

pytestmark = pytest.mark.integration

# A worker whose pipeline TEST_HELD opens no partition state until the file
# TEST_GATE exists: what a long changelog restore looks like to the rest of the worker.
HELD = """
import asyncio, os
from pathlib import Path
import app.state_restore as restore
gate, held = Path(os.environ["TEST_GATE"]), os.environ["TEST_HELD"]
open_state = restore.StateOpener.open
async def open_when_let(self, partition):
    while self.name == held and not gate.exists():
        await asyncio.sleep(0.05)
    return await open_state(self, partition)
restore.StateOpener.open = open_when_let
"""


def _stay_up(workers: list[Worker], seconds: float) -> None:
    """Fail if a worker exits within `seconds` (they are meant to outlast a max poll interval)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail_log()
        time.sleep(0.2)


PIPELINES = ("orders", "user-totals", "product-trends", "top-products")


def _held_worker(env: dict[str, str], log: Path) -> Worker:
    return Worker(env, log, command=patched_kappa(HELD))


async def test_a_pipeline_waiting_for_its_state_does_not_stop_the_others(
    broker: str, unique: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # A small buffer: the held pipeline's source fills it within the first batches.
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_BATCH_MAX="50",
        TEST_GATE=str(gate),
        TEST_HELD="user-totals",
    )
    assert run_kappa(["topics"], env).returncode == 0
    n = 4_000
    spec = orders_spec(n, 11, keys=60, users=200, ms_per_event=1_200_000 // n)
    orders = [(r.key, r.value) for r in generate(spec)]
    worker = _held_worker(env, tmp_path / "worker.log").start()
    try:
        # The first half fills the held pipeline's buffer (its source is orders.by-user,
        # which the orders pipeline writes); the second half comes after that.
        for upto in (n // 2, n):
            await produce_records(
                broker, f"{unique}.orders", orders[upto - n // 2 : upto], progress=False
            )
            worker.wait_until(
                lambda _, upto=upto: (
                    worker.metric("kappa_events_in_total", pipeline="orders") >= upto
                )
            )
        assert worker.metric("kappa_events_in_total", pipeline="user-totals") == 0
        assert worker.metric("kappa_source_held", pipeline="user-totals") == 1
        assert worker.metric("kappa_source_held", pipeline="orders") == 0
        code, body = worker.ready()  # its user-totals states are still "restoring"
        assert (code, body["status"]) == (503, "restoring"), body
        assert body["partitions"] == {"user-totals": [0, 1, 2, 3]}, body
        # /metrics says it too (the KappaWorkerNotReady alert): 0, not absent
        assert ("kappa_worker_ready", {"version": "1"}, 0.0) in scrape(worker.web_port)
        ref = await reference_for(broker, f"{unique}.orders")
        gate.touch()
        await eventually(lambda: check_outputs(broker, unique, ref))
        assert worker.metric("kappa_source_held", pipeline="user-totals") == 0
        code, body = worker.ready()
        assert (code, body["status"]) == (200, "ready"), body
        assert body["partitions"] == {p: [0, 1, 2, 3] for p in PIPELINES}, body
        assert worker.metric("kappa_worker_ready", version="1") == 1
    finally:
        stopped = worker.stop()
    assert stopped == 0, worker.tail_log()


async def test_a_worker_whose_every_source_is_held_stays_in_its_group(
    broker: str, unique: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    poll_interval_s = 3
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_BATCH_MAX="50",
        KAPPA_MAX_POLL_INTERVAL_MS=str(poll_interval_s * 1000),
        TEST_GATE=str(gate),
        TEST_HELD="orders",
    )
    assert run_kappa(["topics"], env).returncode == 0
    n = 1_000
    spec = orders_spec(n, 12, keys=60, users=40)
    await produce_orders(broker, f"{unique}.orders", spec)
    worker = _held_worker(env, tmp_path / "worker.log").start("--pipeline", "orders")
    try:
        worker.wait_until(lambda _: worker.metric("kappa_source_held", pipeline="orders") == 1)
        # Held for three times the max poll interval: a consumer that stops polling is out
        # of its group by then (and the worker stops: it could not rejoin).
        _stay_up([worker], 3 * poll_interval_s)
        assert worker.metric("kappa_events_in_total", pipeline="orders") == 0
        gate.touch()
        worker.wait_until(lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= n)
    finally:
        stopped = worker.stop()
    check_stopped(worker, stopped, "without polling")


async def test_a_worker_with_no_partitions_stays_in_its_group(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A spare worker (more workers than partitions) has nothing to fetch, and still polls."""
    poll_interval_s = 3
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_PARTITIONS="1",
        KAPPA_MAX_POLL_INTERVAL_MS=str(poll_interval_s * 1000),
    )
    assert run_kappa(["topics"], env).returncode == 0
    workers = [
        Worker({**env, "KAPPA_STATE_DIR": str(tmp_path / name)}, tmp_path / f"{name}.log")
        for name in ("a", "b")
    ]
    try:
        for worker in workers:
            worker.start("--pipeline", "orders")
        n = 100
        spec = orders_spec(n, 13, keys=10, users=10)
        await produce_orders(broker, f"{unique}.orders", spec)
        # Both in the group: one of them has the partition and has processed its records.
        await eventually(lambda: _processed(workers, n))
        await eventually(lambda: _both_ready(workers))  # the spare one too, with no partition
        _stay_up(workers, 3 * poll_interval_s)
    finally:
        stopped = [worker.stop() for worker in workers]
    for worker, code in zip(workers, stopped, strict=True):
        check_stopped(worker, code, "without polling")


async def _processed(workers: list[Worker], n: int) -> None:
    counts = [w.metric("kappa_events_in_total", pipeline="orders") for w in workers]
    assert sum(counts) == n and 0 in counts, counts


async def _both_ready(workers: list[Worker]) -> None:
    answers = [w.ready() for w in workers]
    assert [code for code, _ in answers] == [200, 200], answers
    assigned = sorted(body["partitions"]["orders"] for _, body in answers)  # type: ignore[index]
    assert assigned == [[], [0]], answers

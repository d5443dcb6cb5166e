"""Broker trouble while a worker runs, each on a broker of its own (they stop or restart it).

A frozen broker (SIGSTOP) is an outage that loses nothing: the worker must keep retrying and
resume with exact results. A restarted embedded broker has lost everything: the worker must
say so and stop instead of skipping the new records as "already applied".
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from app.broker import DevBroker, free_port
from app.orders_generator import GeneratorSpec
from tests.support.checks import check_outputs, eventually, reference_for
from tests.support.datasets import orders_spec, produce_orders
from tests.support.topics import delete_topics
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = pytest.mark.integration


_spec = partial(orders_spec, keys=30, users=20, disorder_ms=3_000)


@pytest.fixture
def own_broker() -> Iterator[DevBroker]:
    broker = DevBroker("127.0.0.1", free_port()).start()
    try:
        yield broker
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            os.kill(broker.proc.pid, signal.SIGCONT)
        broker.stop()


async def test_worker_rides_out_a_frozen_broker_and_stays_exact(
    own_broker: DevBroker, unique: str, tmp_path: Path
) -> None:
    addr = own_broker.address
    env = kappa_env(addr, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    first = _spec(2_000, 21)
    await produce_orders(addr, f"{unique}.orders", first)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(
            lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= 2_000
        )
        assert own_broker.proc is not None
        os.kill(own_broker.proc.pid, signal.SIGSTOP)  # the broker stops answering
        frozen_at = worker.metric("kappa_events_in_total")
        # The outage itself: 8 s, longer than the 6 s session timeout the tests use. The sleep
        # is the stimulus (how long the broker is gone), not a stand-in for a condition.
        await asyncio.sleep(8)
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail_log()
        assert worker.metrics(), "the worker's /metrics must answer during a broker outage"
        os.kill(own_broker.proc.pid, signal.SIGCONT)
        second = _spec(2_000, 22, start_ms=first.start_ms + first.span_ms)
        await produce_orders(addr, f"{unique}.orders", second)
        ref = await reference_for(addr, f"{unique}.orders")
        await eventually(lambda: check_outputs(addr, unique, ref), timeout=120)
        assert worker.metric("kappa_events_in_total") > frozen_at
    finally:
        assert worker.stop() == 0, worker.tail_log()


async def test_worker_stops_clearly_when_a_restarted_dev_broker_lost_its_data(
    own_broker: DevBroker, unique: str, tmp_path: Path
) -> None:
    addr = own_broker.address
    # A source end behind the state is looked at again for this long before it counts as lost.
    env = kappa_env(addr, unique, tmp_path / "state", KAPPA_SOURCE_END_GRACE_MS="2000")
    worker = await _worker_through(env, addr, f"{unique}.orders", _spec(1_500, 23), tmp_path)
    try:
        own_broker.stop()  # everything the broker held is gone
        own_broker.start()
        assert run_kappa(["topics"], env).returncode == 0
        await produce_orders(addr, f"{unique}.orders", _spec(50, 24))
        assert worker.proc is not None
        code = worker.proc.wait(120)
        log = worker.log_path.read_text()
        assert code == 1, log[-3000:]
        assert "the broker lost its data" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]  # said in one line, then an orderly stop
    finally:
        worker.stop()


async def test_a_worker_whose_restarted_dev_broker_has_no_topics_says_so_once(
    own_broker: DevBroker, unique: str, tmp_path: Path
) -> None:
    """A dev broker restarted without `kappa topics`: every pipeline found its changelog gone
    and said "topic ... does not exist", one ERROR line each, after thousands of aiokafka
    lines for the outage. Now: a line per kind of client error, and one line saying why."""
    addr = own_broker.address
    env = kappa_env(addr, unique, tmp_path / "state")
    worker = await _worker_through(env, addr, f"{unique}.orders", _spec(500, 25), tmp_path)
    try:
        own_broker.stop()
        await asyncio.sleep(1)  # the outage (the stimulus): several attempts a second
        own_broker.start()
        assert worker.proc is not None
        code = worker.proc.wait(120)
        log = worker.log_path.read_text()
        assert code == 1, log[-3000:]
        said = [line for line in log.splitlines() if "[ERROR] kappa worker:" in line]
        assert len(said) == 1, log[-3000:]
        assert "is gone from the broker: the broker lost its data" in said[0]
        assert f"remove all of {tmp_path / 'state'}: every version is gone" in said[0]
        assert log.count("Unable connect to node") <= 2, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        worker.stop()


async def _worker_through(
    env: dict[str, str], addr: str, source: str, spec: GeneratorSpec, tmp_path: Path
) -> Worker:
    """A worker started on a version's fresh topics, once it has processed `spec`'s orders."""
    assert run_kappa(["topics"], env).returncode == 0
    await produce_orders(addr, source, spec)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(
            lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= spec.count
        )
    except BaseException:
        worker.stop()
        raise
    return worker


async def test_a_worker_whose_source_topic_is_deleted_stops_saying_so(
    own_broker: DevBroker, unique: str, tmp_path: Path
) -> None:
    """A source topic deleted under a running worker: faust's offset commits then failed about
    40 times a second, the worker read nothing and ran on, and its stop waited out its whole
    shutdown deadline. Now it stops in one line naming the topic, as Kafka Streams does
    (`MissingSourceTopicException`)."""
    addr = own_broker.address
    env = kappa_env(addr, unique, tmp_path / "state")
    worker = await _worker_through(env, addr, f"{unique}.orders", _spec(500, 26), tmp_path)
    try:
        await delete_topics(addr, [f"{unique}.orders"])
        assert worker.proc is not None
        code = worker.proc.wait(60)
        log = worker.log_path.read_text()
        assert code == 1, log[-3000:]
        said = [line for line in log.splitlines() if "[ERROR] kappa worker:" in line]
        assert len(said) == 1, log[-3000:]
        assert f"source topic {unique}.orders is gone from the broker" in said[0], said[0]
        assert "Traceback" not in log, log[-3000:]
    finally:
        worker.stop()

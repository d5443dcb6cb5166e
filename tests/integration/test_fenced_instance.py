"""A static worker fenced by its group coordinator (FENCED_INSTANCE_ID, what Apache Kafka answers
the older of two processes joined with the same `KAPPA_GROUP_INSTANCE_ID`) stops in one line,
and sends no group request (heartbeat, join, sync, offset commit) and nothing to produce after
the fencing answer.

The dev broker never fences a static member, so a `FaultProxy` between the worker and a broker
of the test's own says it in the broker's place. Before: a fenced heartbeat crashed the worker
with a traceback, and a fenced join or sync left it joining for good.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from app.orders_generator import generate
from app.produce import produce_records
from tests.support.datasets import orders_spec
from tests.support.kafka_proxy import (
    HEARTBEAT,
    JOIN_GROUP,
    OFFSET_COMMIT,
    SYNC_GROUP,
    UNKNOWN_MEMBER_ID,
    FaultProxy,
)
from tests.support.workers import (
    Worker,
    group_warnings,
    kappa_env,
    run_kappa,
    stopped_in_one_error,
)

pytestmark = pytest.mark.integration

INSTANCE_ID = "worker-0"
MEMBER_REQUESTS = {HEARTBEAT, JOIN_GROUP, SYNC_GROUP, OFFSET_COMMIT}
_spec = partial(orders_spec, keys=30, users=20, disorder_ms=3_000)


def _stopped_fenced(
    worker: Worker,
    proxy: FaultProxy,
    group: str,
    inputs: frozenset[str] = frozenset(),
    said_at: tuple[int, int] = (0, 0),
) -> None:
    """`inputs`: topics the test itself produces to (through the proxy) meanwhile;
    `said_at`: how many requests, and topics produced to, the proxy saw after the fencing
    answer but before the worker said it was fenced (sent before it could read the answer:
    a busy worker's consumer thread waits for the interpreter's lock)."""
    said, log = stopped_in_one_error(worker)
    # nothing more about the group: aiokafka's coordinator says nothing of the requests refused
    assert not group_warnings(log), log[-3000:]
    assert (
        f"kappa worker: another process joined consumer group {group} with "
        f"KAPPA_GROUP_INSTANCE_ID={INSTANCE_ID}, so the broker fenced this one" in said
    ), said
    assert proxy.fenced_answers == 1, log[-3000:]
    sent = proxy.seen_after_fence()[said_at[0] :]
    assert not MEMBER_REQUESTS & set(sent), sent
    # nor any output or changelog entry: the partitions and their changelogs are another
    # process's, which restores from them (an older entry landing last there would win)
    produced = proxy.produced_after_fence()[said_at[1] :]
    assert not set(produced) - inputs, produced


def _producing(address: str, topic: str, rate: float) -> tuple[threading.Thread, threading.Event]:
    """Orders produced to `topic` at `rate` a second, in a thread (the test blocks while it
    polls the worker), until the event returned is set."""
    stop = threading.Event()
    orders = itertools.takewhile(lambda _: not stop.is_set(), generate(_spec(1_000_000, 31)))
    records = ((r.key, r.value) for r in orders)
    produce = produce_records(address, topic, records, rate=rate, progress=False)
    thread = threading.Thread(target=asyncio.run, args=(produce,), daemon=True)
    thread.start()
    return thread, stop


@pytest.mark.parametrize("rate", [2_000, 20_000], ids=["steady", "busy"])
def test_a_static_worker_whose_heartbeat_is_fenced_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path, rate: int
) -> None:
    """Fenced while records keep coming: it has processed records whose offsets it has not
    committed yet (faust commits once a second, and on stop), and commits none of them. Once
    it says it is fenced, it sends neither the batches it takes nor, on stop, the changelog
    entries it holds (busy, it always holds some): the partitions, and the changelogs the
    other process restores them from, are that process's now. What it sent between the
    fencing answer and reading it is not its to help."""
    address = f"127.0.0.1:{proxy.port}"
    source = f"{unique}.orders"
    env = kappa_env(address, unique, tmp_path / "state", KAPPA_GROUP_INSTANCE_ID=INSTANCE_ID)
    assert run_kappa(["topics"], env).returncode == 0
    producer, stop_producing = _producing(address, source, rate)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(
            lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= rate
        )
        proxy.fence(HEARTBEAT)
        _logged(worker, "so the broker fenced this one")
        said_at = (len(proxy.seen_after_fence()), len(proxy.produced_after_fence()))
        _stopped_fenced(worker, proxy, f"kappa-{unique}-v1", frozenset({source}), said_at)
    finally:
        worker.stop()
        stop_producing.set()
        producer.join(30)


def test_a_static_worker_whose_commit_is_refused_as_a_replaced_members_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path
) -> None:
    """Apache Kafka answers the older process's offset commit (aiokafka's does not name the
    id) UNKNOWN_MEMBER_ID, and a heartbeat naming the id FENCED_INSTANCE_ID. aiokafka would
    join again with the id on that commit answer, taking the id back and fencing the newer
    process: the one that joined last would stop. Here the older one stops, joining nothing."""
    address = f"127.0.0.1:{proxy.port}"
    source = f"{unique}.orders"
    env = kappa_env(address, unique, tmp_path / "state", KAPPA_GROUP_INSTANCE_ID=INSTANCE_ID)
    assert run_kappa(["topics"], env).returncode == 0
    producer, stop_producing = _producing(address, source, 500)  # offsets to commit
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(
            lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= 500
        )
        proxy.answer(OFFSET_COMMIT, UNKNOWN_MEMBER_ID, and_fence=HEARTBEAT)
        assert worker.proc is not None
        code = worker.proc.wait(60)
        log = worker.log_path.read_text(errors="replace")
        assert code == 1, log[-3000:]
        sent = proxy.seen_after_fence()  # after the commit's answer: the heartbeat asking
        assert not {JOIN_GROUP, SYNC_GROUP, OFFSET_COMMIT} & set(sent), sent
        # aiokafka's answer to the commit (forget the member id, join again) never ran: the
        # proxy fences every later heartbeat, so the next one would have stopped it anyway
        assert "will rejoin" not in log, log[-3000:]
        said = [line for line in log.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line]
        assert len(said) == 1 and "so the broker fenced this one" in said[0], log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        worker.stop()
        stop_producing.set()
        producer.join(30)


def _logged(worker: Worker, text: str) -> None:
    """Until the worker's log has `text` (polled: the log is another process's file)."""
    assert worker.proc is not None
    deadline = time.monotonic() + 120  # a worker that never says it: fail, not hang
    while text not in worker.log_path.read_text(errors="replace"):
        assert worker.proc.poll() is None and time.monotonic() < deadline, worker.tail_log()
        time.sleep(0.01)


@pytest.mark.parametrize("api", [JOIN_GROUP, SYNC_GROUP], ids=["join", "sync"])
async def test_a_static_worker_fenced_as_it_joins_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path, api: int
) -> None:
    address = f"127.0.0.1:{proxy.port}"
    env = kappa_env(address, unique, tmp_path / "state", KAPPA_GROUP_INSTANCE_ID=INSTANCE_ID)
    assert run_kappa(["topics"], env).returncode == 0
    proxy.fence(api)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        _stopped_fenced(worker, proxy, f"kappa-{unique}-v1")
    finally:
        worker.stop()

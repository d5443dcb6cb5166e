"""A worker refuses, or waits, instead of silently using state it must not use.

- two workers on one state directory: the second exits 2 at once, naming the directory;
- a corrupt or foreign partition directory: exit 2 with the command that rebuilds it;
- no broker yet: the worker says it is waiting once and starts when the broker appears;
- a restarted (empty) dev broker under old local state: exit 2 instead of skipping records.

The state checks without a broker (`app.state_guard`) are unit-tested here too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.broker import DevBroker, free_port
from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from app.settings import Settings
from app.state_guard import (
    LOCK_FILE,
    check_partition_dirs,
    lock_state_dir,
    state_identity,
)
from app.topology import Topology
from tables.partition_state import APPLIED_OFFSET
from tables.rocks import MARKER, RocksStore, StateLockedError, StateUnreadableError
from tests.support.workers import Worker, kappa_env, run_kappa

integration = pytest.mark.integration


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _run_worker(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A worker expected to refuse to start: its exit, or a failure if it keeps running."""
    try:
        return run_kappa(["worker", "--web-port", str(free_port())], env, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # run() has killed it
        out = f"{e.stdout!r}\n{e.stderr!r}"
        raise AssertionError(f"the worker did not exit in {timeout}s:\n{out}") from None


def _wait_for_log(worker: Worker, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log_path.read_text(errors="replace"):
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited {worker.proc.returncode}:\n{worker.tail_log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the worker's log:\n{worker.tail_log()}")
        time.sleep(0.1)


def _orders(count: int) -> list[tuple[bytes | None, bytes]]:
    spec = GeneratorSpec(count=count, seed=11, keys=20, start_ms=1_700_000_000_000, span_ms=60_000)
    return [(r.key, r.value) for r in generate(spec)]


@pytest.fixture
def own_broker() -> Iterator[DevBroker]:
    """A broker this test may stop and restart (the session broker must stay up)."""
    dev = DevBroker("127.0.0.1", free_port())
    try:
        yield dev
    finally:
        dev.stop()


# -- a bounded shutdown --------------------------------------------------------------------------


@integration
def test_a_worker_whose_shutdown_hangs_exits_at_its_deadline_saying_so(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_SHUTDOWN_TIMEOUT_MS="1500",
        KAPPA_CHAOS_HANG_ON_STOP="1",  # an orderly shutdown that never finishes
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(lambda m: bool(m))  # up: metrics respond
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(20) == 0
        log = worker.log_path.read_text(errors="replace")
        assert "shutdown did not finish within KAPPA_SHUTDOWN_TIMEOUT_MS" in log, log
    finally:
        worker.stop()


# -- one worker per state directory -----------------------------------------------------------


@integration
def test_a_second_worker_on_the_same_state_dir_exits_at_once(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    first = Worker(env, tmp_path / "first.log").start()
    try:
        first.wait_until(lambda m: bool(m))  # up: metrics respond
        second = _run_worker(env)
        assert second.returncode == 2, second.stderr
        line = _one_line(second.stderr)
        assert str(tmp_path / "state" / "v1") in line and "in use" in line, line
        assert first.proc is not None and first.proc.poll() is None  # the first one runs on
    finally:
        assert first.stop() == 0, first.tail_log()


def test_the_state_dir_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    root = tmp_path / "state" / "v1"
    lock = lock_state_dir(root)
    try:
        with pytest.raises(StateLockedError) as e:
            lock_state_dir(root)  # flock: refused even from the same process
        assert str(root) in str(e.value) and "\n" not in str(e.value)
        assert (root / LOCK_FILE).read_text().strip().isdigit()  # the holder's pid
    finally:
        lock.release()
    lock_state_dir(root).release()


# -- corrupt and foreign partition directories -------------------------------------------------


def _settings(tmp_path: Path, app_id: str = "kappa") -> Settings:
    return Settings(app_id=app_id, state_dir=tmp_path / "state")


def test_partition_dirs_are_validated_and_adopted(tmp_path: Path) -> None:
    topology = Topology(_settings(tmp_path))
    orders = topology.pipelines[0]
    p2 = topology.state_path(orders, 2)
    store = RocksStore(p2)  # as an older runner creates it: no marker
    store.write({APPLIED_OFFSET: (41).to_bytes(8, "big", signed=True)})
    store.close()
    (p2.parent / "not-a-partition").mkdir()
    assert check_partition_dirs(topology) == {("orders", 2): 41}
    assert json.loads((p2 / MARKER).read_text()) == state_identity(topology, "orders", 2)
    assert not topology.state_path(orders, 0).exists()  # no directory is created


def test_a_partition_dir_holding_garbage_values_is_unreadable(tmp_path: Path) -> None:
    topology = Topology(_settings(tmp_path))
    path = topology.state_path(topology.pipelines[0], 0)
    store = RocksStore(path)
    store.write({APPLIED_OFFSET: b"\x01"})  # not an 8-byte offset
    store.close()
    with pytest.raises(StateUnreadableError) as e:
        check_partition_dirs(topology)
    assert f"rm -rf {path}" in str(e.value)


def _corrupt(path: Path) -> None:
    RocksStore(path).close()
    (path / "CURRENT").write_bytes(b"\x00\x01garbage")


def _foreign(path: Path) -> None:
    RocksStore(path, {"app_id": "somebody-else", "pipeline": "orders", "partition": 1}).close()


@integration
@pytest.mark.parametrize(
    "damage,words", [(_corrupt, "is unreadable ("), (_foreign, "belongs to app_id='somebody-else'")]
)
def test_a_worker_refuses_a_corrupt_or_foreign_partition_dir(
    broker: str, unique: str, tmp_path: Path, damage, words: str
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    path = tmp_path / "state" / "v1" / "orders" / "p1"
    damage(path)
    r = _run_worker(env)
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_line(r.stderr)
    assert words in line and f"rm -rf {path}` and restart" in line, line
    assert "rebuilt from its source" in line


# -- the broker is not there yet ---------------------------------------------------------------


@integration
async def test_a_worker_waits_for_a_broker_that_starts_later(
    unique: str, tmp_path: Path, own_broker: DevBroker
) -> None:
    address = own_broker.address  # nothing listens there yet
    env = kappa_env(address, unique, tmp_path / "state")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        _wait_for_log(worker, f"waiting for the Kafka broker at {address} (")
        own_broker.start()
        worker.wait_until(lambda m: bool(m), timeout=60)  # up: it created its topics
        await produce_records(address, f"{unique}.orders", _orders(1), progress=False)
        worker.wait_until(lambda m: m.get("kappa_events_in_total", 0) >= 1, timeout=60)
        log = worker.log_path.read_text()
        assert log.count("waiting for the Kafka broker") == 1, log  # said once, not per attempt
        assert "Unable connect" not in log, log  # aiokafka's per-attempt errors stay quiet
    finally:
        assert worker.stop() == 0, worker.tail_log()


# -- the embedded broker restarted (and forgot everything) ---------------------------------------


@integration
async def test_a_worker_refuses_state_a_restarted_broker_no_longer_has(
    unique: str, tmp_path: Path, own_broker: DevBroker
) -> None:
    address = own_broker.start().address
    env = kappa_env(address, unique, tmp_path / "state", KAPPA_SOURCE_END_GRACE_MS="1000")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(lambda m: bool(m))
        await produce_records(address, f"{unique}.orders", _orders(200), progress=False)
        worker.wait_until(
            lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= 200
        )
    finally:
        assert worker.stop() == 0, worker.tail_log()

    own_broker.stop()
    own_broker.start()  # same address, empty
    topics = run_kappa(["topics"], env)
    assert topics.returncode == 0, topics.stderr

    r = _run_worker(env)
    assert r.returncode == 2, r.stdout + r.stderr
    # It asks again for KAPPA_SOURCE_END_GRACE_MS (a new leader can report an older end), says
    # so in one line, then refuses in one line.
    waiting, line = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "asking the broker again for up to 1 s (KAPPA_SOURCE_END_GRACE_MS)" in waiting
    assert "Traceback" not in r.stderr
    assert f"local state for {unique}.orders[" in line, line
    assert "but the broker's log ends at 0" in line, line
    assert "the broker lost its data (the embedded broker keeps nothing across restarts)" in line
    assert f"remove {tmp_path / 'state' / 'v1'} to start over" in line, line

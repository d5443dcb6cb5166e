"""The live worker against the embedded broker: outputs equal the batch computation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from tests.support.checks import check_outputs, eventually, reference_for
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = pytest.mark.integration


def _spec(
    count: int, seed: int, start_ms: int = 1_700_000_000_000, span_ms: int = 1_200_000
) -> GeneratorSpec:
    return GeneratorSpec(
        count=count,
        seed=seed,
        keys=60,
        users=40,
        start_ms=start_ms,
        span_ms=span_ms,
        disorder_ms=5_000,
        late_fraction=0.01,
        bad_fraction=0.02,
    )


async def _produce(broker: str, topic: str, spec: GeneratorSpec) -> None:
    await produce_records(broker, topic, ((r.key, r.value) for r in generate(spec)), progress=False)


def _alive(worker: Worker):
    def check() -> None:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker died ({worker.proc.returncode}):\n{worker.tail_log()}")

    return check


async def test_live_worker_outputs_equal_batch_computation(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    await _produce(broker, f"{unique}.orders", _spec(8_000, seed=1))
    ref = await reference_for(broker, f"{unique}.orders")
    assert ref.dlq and ref.late and len(ref.windows) > 100  # the dataset exercises every path

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
        m = worker.metrics()
        assert m["kappa_dlq_total"] == len(ref.dlq)
        assert m["kappa_late_total"] == len(ref.late)
        assert m["kappa_windows_closed_total"] == len(ref.windows)
    finally:
        assert worker.stop() == 0, worker.tail_log()


async def test_restart_midway_keeps_windows_exact(broker: str, unique: str, tmp_path: Path) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    first = _spec(5_000, seed=2)
    await _produce(broker, f"{unique}.orders", first)

    worker = Worker(env, tmp_path / "worker.log").start()
    worker.wait_until(lambda m: m.get("kappa_events_in_total", 0) >= 2_000)
    assert worker.stop() == 0, worker.tail_log()  # SIGTERM midway

    await _produce(
        broker, f"{unique}.orders", _spec(5_000, seed=3, start_ms=first.start_ms + first.span_ms)
    )
    ref = await reference_for(broker, f"{unique}.orders")
    worker = Worker(env, tmp_path / "worker2.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
    finally:
        assert worker.stop() == 0, worker.tail_log()


async def test_state_behind_committed_offsets_is_rebuilt_from_the_source(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Lost local state (or a consumer whose commits ran ahead of it) must not lose records:
    the worker reads the gap from the source, and re-sent windows are byte-identical."""
    state = tmp_path / "state"
    env = kappa_env(broker, unique, state)
    assert run_kappa(["topics"], env).returncode == 0
    first = _spec(3_000, seed=4)
    await _produce(broker, f"{unique}.orders", first)
    ref = await reference_for(broker, f"{unique}.orders")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
    finally:
        assert worker.stop() == 0, worker.tail_log()

    shutil.rmtree(state / "v1")  # committed offsets now point far past the (empty) state
    await _produce(
        broker, f"{unique}.orders", _spec(3_000, seed=5, start_ms=first.start_ms + first.span_ms)
    )
    ref = await reference_for(broker, f"{unique}.orders")
    worker = Worker(env, tmp_path / "worker2.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref), alive=_alive(worker))
        assert "reading the gap" in worker.log_path.read_text()
    finally:
        assert worker.stop() == 0, worker.tail_log()

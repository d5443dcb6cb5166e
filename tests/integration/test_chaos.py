"""Exactness through kill -9 and failover, against the embedded broker.

`make test` runs a few rounds; `make chaos` (KAPPA_CHAOS_ROUNDS=50) runs many. Each kill point
is drawn at random: which pipeline, which batch, and where in it (before the outputs are sent,
after they are acknowledged but before the state commit, after the commit).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from functools import partial
from pathlib import Path

import pytest

from tests.support.checks import changelogs_caught_up, check_outputs, eventually, reference_for
from tests.support.datasets import orders_spec, produce_orders
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROUNDS = int(os.environ.get("KAPPA_CHAOS_ROUNDS", "4"))
PHASES = ("before-send", "after-send", "after-commit")
PIPELINES = ("orders", "user-totals", "top-products", "product-trends")


_spec = partial(orders_spec, keys=50, users=40)


@pytest.mark.timeout(max(900, 90 * ROUNDS))  # ~9 s a round; a slow CI machine has room
async def test_kill_9_at_random_points_keeps_results_exact(
    broker: str, unique: str, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("KAPPA_CHAOS_SEED", "0")) or None)
    # Small live batches, so a run has many batches to die in.
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_BATCH_MAX="300",
        KAPPA_BATCH_LINGER_MS="0",
        # a killed worker's group membership lapses fast, so each next round joins quickly
        KAPPA_SESSION_TIMEOUT_MS="2500",
        KAPPA_REBALANCE_TIMEOUT_MS="1500",
    )
    assert run_kappa(["topics"], env).returncode == 0
    kills: list[str] = []
    start = 1_700_000_000_000
    rounds = 0
    while len(kills) < ROUNDS:
        rounds += 1
        assert rounds <= 2 * ROUNDS, f"only {len(kills)} kill points reached in {rounds - 1} rounds"
        chunk = _spec(800, 100 + rounds, start)  # fresh work every round: a batch to die in
        start += chunk.span_ms
        await produce_orders(broker, f"{unique}.orders", chunk)
        point = f"{rng.choice(PIPELINES)}:{rng.randint(1, 3)}:{rng.choice(PHASES)}"
        worker = Worker({**env, "KAPPA_CHAOS_KILL": point}, tmp_path / f"round{rounds}.log").start()
        assert worker.proc is not None
        try:
            code = worker.proc.wait(30)
        except subprocess.TimeoutExpired:  # the kill point was not reached: stop it normally
            assert worker.stop() == 0, worker.tail_log()
            continue
        worker.stop()
        assert code == -signal.SIGKILL, worker.tail_log()
        kills.append(point)
        print(f"round {rounds}: killed at {point}", flush=True)  # shown if a check fails
        # After every kill: a clean restart must end with exact results.
        ref = await reference_for(broker, f"{unique}.orders")
        clean = Worker(env, tmp_path / f"after{rounds}.log").start()
        try:
            clean.wait_until(lambda m: bool(m))  # up: past the point it could die on SIGTERM
            await eventually(lambda ref=ref: check_outputs(broker, unique, ref), timeout=120)
        finally:
            assert clean.stop() == 0, clean.tail_log()


async def test_three_workers_one_killed_the_others_take_over_exactly(
    broker: str, unique: str, tmp_path: Path
) -> None:
    base = kappa_env(  # INFO: the restore's lines
        broker,
        unique,
        tmp_path / "unused",
        KAPPA_PARTITIONS="8",
        KAPPA_BATCH_MAX="2000",
        KAPPA_LOG_LEVEL="info",
    )
    assert run_kappa(["topics"], base).returncode == 0
    workers = [
        Worker(
            {**base, "KAPPA_STATE_DIR": str(tmp_path / f"state{i}")}, tmp_path / f"w{i}.log"
        ).start()
        for i in range(3)
    ]
    try:
        for w in workers:
            w.wait_until(lambda m: bool(m))
        first = _spec(6_000, 12)
        await produce_orders(broker, f"{unique}.orders", first, rate=4_000)
        victim = workers[1]
        victim.wait_until(lambda m: m.get("kappa_events_in_total", 0) > 0, timeout=60)
        # Idle, every worker sent its held batches: the victim's partitions have changelog
        # entries to restore (killed with them held, they would be read from the source).
        await eventually(lambda: changelogs_caught_up(base), timeout=60)
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        second = _spec(6_000, 13, start_ms=first.start_ms + first.span_ms)
        await produce_orders(broker, f"{unique}.orders", second)
        ref = await reference_for(broker, f"{unique}.orders")
        await eventually(lambda: check_outputs(broker, unique, ref), timeout=180)
        logs = "".join(w.log_path.read_text() for w in (workers[0], workers[2]))
        assert "restoring from" in logs  # the victim's partitions came back from its changelog
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.stop()

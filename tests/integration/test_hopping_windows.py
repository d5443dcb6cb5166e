"""orders.revenue-hopping end to end: a live worker and a replay of the same orders give the
plain computation's hopping windows, and the late topic holds each order late for a kind of
window once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.checks import GRACE_MS, check_downstream, eventually, reference_for
from tests.support.datasets import START_MS, orders_spec, produce_orders
from tests.support.reference import Reference, assert_windows_equal, compute_hopping
from tests.support.workers import (
    Worker,
    kappa_env,
    read_records,
    read_source,
    run_kappa,
    source_positions,
)

pytestmark = pytest.mark.integration

# 40 s windows every 20 s: one ends 20 to 40 s after an order, its 60 s tumbling window up to
# 60 s after it, so with 40 s of disorder an order can be late for the hopping windows alone.
SIZE, STEP = 40_000, 20_000


def _windows(
    recs: dict[int, list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]]],
) -> tuple[dict[tuple[str, int, int], dict[str, float]], dict[tuple[str, int, int], dict]]:  # type: ignore[type-arg]
    """(final, provisional) windows, keyed by (product, start, end)."""
    final: dict[tuple[str, int, int], dict[str, float]] = {}
    provisional: dict[tuple[str, int, int], dict] = {}  # type: ignore[type-arg]
    for rs in recs.values():
        for _, _, value, headers in rs:
            w = json.loads(value or b"")
            key = (w["product_id"], w["window_start"], w["window_end"])
            (provisional if "kappa.provisional" in headers else final)[key] = w
    return final, provisional


async def test_live_and_replayed_hopping_windows_equal_the_plain_computation(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_HOPPING_SIZE_MS=str(SIZE),
        KAPPA_HOPPING_STEP_MS=str(STEP),
    )
    assert run_kappa(["topics"], env).returncode == 0
    spec = orders_spec(3_000, 31, START_MS, keys=40, users=30, ms_per_event=400, disorder_ms=40_000)
    await produce_orders(broker, f"{unique}.orders", spec)
    source = await read_source(broker, f"{unique}.orders")
    tumbling = await reference_for(broker, f"{unique}.orders")
    closed, hop_late = compute_hopping(source, SIZE, STEP, GRACE_MS)
    every, _ = compute_hopping(source, SIZE, STEP, GRACE_MS, flush=True)
    only_hopping_late = hop_late - tumbling.late
    assert len(closed) > 100 and tumbling.late and only_hopping_late  # every path is taken

    async def live_done() -> None:
        final, provisional = _windows(
            await read_records(broker, f"{unique}.orders.revenue-hopping")
        )
        assert not provisional
        assert_windows_equal(final, Reference(windows=closed))
        late = await read_records(broker, f"{unique}.orders.late")
        assert sorted(source_positions(late)) == sorted(tumbling.late | hop_late)
        marked = {
            (int(h["kappa.source.partition"]), int(h["kappa.source.offset"])): h["kappa.late-for"]
            for rs in late.values()
            for _, _, _, h in rs
        }
        assert {p for p, m in marked.items() if m == b"orders.revenue-hopping"} == (
            only_hopping_late
        )
        assert {p for p, m in marked.items() if m.startswith(b"orders.revenue-1m")} == (
            tumbling.late
        )
        assert {p for p, m in marked.items() if m.endswith(b"orders.revenue-hopping")} == hop_late
        await check_downstream(broker, unique, tumbling)  # the other pipelines are done too

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await eventually(live_done)
    finally:
        assert worker.stop() == 0, worker.tail_log()

    replayed = run_kappa(["replay", "--version", "2", "--no-progress"], env)
    assert replayed.returncode == 0, replayed.stderr
    final, provisional = _windows(await read_records(broker, f"{unique}.orders.revenue-hopping.v2"))
    assert_windows_equal(final, Reference(windows=closed))
    assert_windows_equal({**final, **provisional}, Reference(windows=every))
    diff = run_kappa(["diff", "1", "2"], env)
    assert diff.returncode == 0 and diff.stdout.endswith("identical\n"), diff.stdout
    hopping_line = f"orders.revenue-hopping: {len(closed):,} in v1, {len(every):,} in v2; 0 only in"
    assert hopping_line in diff.stdout, diff.stdout

    out = tmp_path / "export"
    exported = run_kappa(["export", str(out), "--version", "2"], env)
    assert exported.returncode == 0, exported.stderr
    lines = (out / "orders.revenue-hopping.jsonl").read_bytes().splitlines()
    assert len(lines) == len(closed)  # the final ones: provisional windows are not results yet

    other = dict(env, KAPPA_HOPPING_STEP_MS="10000")  # a version's windows never change
    refused = run_kappa(["replay", "--version", "2", "--no-progress"], other)
    assert refused.returncode == 2
    said = "version 2 is built with KAPPA_HOPPING_STEP_MS=20000, not KAPPA_HOPPING_STEP_MS=10000"
    assert said in refused.stderr, refused.stderr

    # A version without hopping windows: nothing to compare them with (not "all only in v2").
    plain = {k: v for k, v in env.items() if not k.startswith("KAPPA_HOPPING_")}
    assert run_kappa(["replay", "--version", "3", "--no-progress"], plain).returncode == 0
    diff = run_kappa(["diff", "2", "3"], plain)
    assert diff.returncode == 0, diff.stdout
    skipped = "orders.revenue-hopping: skipped (version 3 was built without hopping windows)"
    assert skipped in diff.stdout.splitlines(), diff.stdout

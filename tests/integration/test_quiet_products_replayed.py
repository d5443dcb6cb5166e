"""orders.quiet-products end to end: a product that stops selling is said quiet once, the
same by a live worker and by a replay, and the other products are not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from app.orders_generator import generate
from app.produce import produce_records
from tests.support.checks import check_downstream, eventually, reference_for
from tests.support.datasets import START_MS, orders_spec
from tests.support.workers import Worker, kappa_env, read_records, run_kappa

pytestmark = pytest.mark.integration

STOPS_AT = START_MS + 25 * 60_000  # the quiet product's last order is before this


async def test_a_product_that_stops_selling_is_said_quiet_live_and_replayed(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    # 20 products over 40 minutes: about 5 orders a window each
    spec = orders_spec(4_000, 41, keys=20, users=30, ms_per_event=600)
    records = list(generate(spec))
    quiet = "p00007"
    kept = [
        (r.key, r.value)
        for r in records
        if not (r.key == quiet.encode() and _ts(r.value) >= STOPS_AT)
    ]
    await produce_records(broker, f"{unique}.orders", iter(kept), progress=False)
    ref = await reference_for(broker, f"{unique}.orders")

    async def live_done() -> None:
        await check_downstream(broker, unique, ref)  # quiet-products is checked there too

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await eventually(live_done)
    finally:
        assert worker.stop() == 0, worker.tail_log()
    said = await read_records(broker, f"{unique}.orders.quiet-products")
    points = [json.loads(v or b"") for rs in said.values() for _, _, v, _ in rs]
    assert [p["product_id"] for p in points] == [quiet], points
    (point,) = points
    assert point["last_window_start"] < STOPS_AT <= point["quiet_from"]  # its last window
    # e^(-rate × windows) < 1e-3 with one window less than that, not yet
    assert point["orders_per_window"] * point["windows"] > math.log(1e3)
    assert point["orders_per_window"] * (point["windows"] - 1) <= math.log(1e3)

    replayed = run_kappa(["replay", "--version", "2", "--no-progress"], env)
    assert replayed.returncode == 0, replayed.stderr
    await check_downstream(broker, unique, ref, ".v2")
    diff = run_kappa(["diff", "1", "2"], env)
    assert diff.returncode == 0 and diff.stdout.endswith("identical\n"), diff.stdout
    assert "orders.quiet-products: 1 in v1, 1 in v2; 0 only in" in diff.stdout, diff.stdout


def _ts(value: bytes | None) -> int:
    try:
        ts = json.loads(value or b"").get("ts")
    except (ValueError, AttributeError):
        return 0  # a malformed order: kept, it goes to the DLQ either way
    return ts if type(ts) is int else 0

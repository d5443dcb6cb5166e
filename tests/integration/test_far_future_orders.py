"""A far-future order produced by `kappa produce` (its record stamped when produced) goes to
`orders.dlq` as `timestamp_ahead`, and the later orders of its partition are on time: live, and
in a replay, which judges it alike. With the guard off it ruins its partition, as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.checks import check_outputs, check_side_outputs, eventually, reference_for
from tests.support.datasets import GOOD_ORDER, START_MS
from tests.support.workers import Worker, kappa_env, read_records, run_kappa, source_positions

pytestmark = pytest.mark.integration

FAR_MS = 4_102_358_400_000  # 2099-12-31: a valid ts (before 2100), 76 years ahead
DAY_MS = 86_400_000  # the guard as the README recommends it for a new version


def _orders() -> list[dict[str, object]]:
    """Orders of eight products (on all four partitions, so the rankings close too) over 6
    minutes of event time, in order, with one stamped 2099 among them: without the guard,
    every order of its partition after it would be late."""
    out: list[dict[str, object]] = []
    for i in range(36):
        ts = START_MS + i * 10_000
        for product in [f"p{n}" for n in range(1, 9)]:
            out.append(
                {**GOOD_ORDER, "order_id": f"{product}-{i}", "product_id": product, "ts": ts}
            )
        if i == 5:
            out.append({**GOOD_ORDER, "order_id": "far", "product_id": "p1", "ts": FAR_MS})
    return out


async def test_a_far_future_order_is_dead_lettered_and_its_partition_stays_on_time(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state", KAPPA_MAX_TS_AHEAD_MS=str(DAY_MS))
    assert run_kappa(["topics"], env).returncode == 0
    source = tmp_path / "orders.jsonl"
    source.write_text("".join(json.dumps(o) + "\n" for o in _orders()))
    produced = run_kappa(["produce", f"{unique}.orders", "--file", str(source)], env)
    assert produced.returncode == 0, produced.stderr

    # the same rule, plainly computed
    ref = await reference_for(broker, f"{unique}.orders", max_ts_ahead_ms=DAY_MS)
    assert list(ref.dlq.values()) == ["timestamp_ahead"] and not ref.late
    assert len(ref.watermarks) == 4 and len(ref.windows) >= 32  # every product's windows close
    (far_at,) = ref.dlq
    value_at = {
        (p, o): v
        for p, rs in (await read_records(broker, f"{unique}.orders")).items()
        for o, _, v, _ in rs
    }
    assert json.loads(value_at[far_at] or b"")["order_id"] == "far"

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await eventually(lambda: check_outputs(broker, unique, ref))
        (dlq,) = [
            r for rs in (await read_records(broker, f"{unique}.orders.dlq")).values() for r in rs
        ]
        detail = dlq[3]["kappa.error.detail"].decode()
        assert detail.startswith(f"ts {FAR_MS} (2099-12-31T00:00:00.000Z) is more than 86400000 ms")
        assert worker.metric("kappa_dlq_total", reason="timestamp_ahead") == 1
        assert worker.metric("kappa_late_total") == 0
    finally:
        assert worker.stop() == 0, worker.tail_log()

    replayed = run_kappa(["replay", "--version", "2", "--no-progress"], env)
    assert replayed.returncode == 0, replayed.stderr
    await check_side_outputs(broker, unique, ref, ".v2")  # its DLQ, late and user totals
    diff = run_kappa(["diff", "1", "2"], env)
    assert diff.returncode == 0 and "identical" in diff.stdout, diff.stdout + diff.stderr

    # The guard off (a version's setting, so a version of its own): the order moves its
    # partition's stream time to 2099, and every later order of that partition is late.
    off = dict(env, KAPPA_MAX_TS_AHEAD_MS="0")
    replayed = run_kappa(["replay", "--version", "3", "--no-progress"], off)
    assert replayed.returncode == 0, replayed.stderr
    late = source_positions(await read_records(broker, f"{unique}.orders.late.v3"))
    after = {(p, o) for p, o in value_at if p == far_at[0] and o > far_at[1]}
    assert len(after) >= 30 and sorted(late) == sorted(after)
    assert not any((await read_records(broker, f"{unique}.orders.dlq.v3")).values())

"""End-to-end checks of a version's outputs against the batch reference."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agents.orders import PROVISIONAL_HEADER
from agents.product_trends import parse_window, signal_value, trend_dict
from agents.quiet_products import quiet_value
from app.changelog import KafkaChangelog
from app.settings import Settings, load_settings, quiet_config
from app.state_guard import check_partition_dirs
from app.topic_reader import high_watermarks
from app.topology import Topology
from tables.cleaning import DEFAULT_MAX_TS_AHEAD_MS
from tables.quiet import Activity
from tables.signals import Signals, TrendInput
from tables.top_k import ranked
from tables.trends import TrendConfig, trend_points
from tests.support.reference import Reference, assert_windows_equal, compute
from tests.support.workers import read_records, read_source, read_windows, source_positions

WINDOW_MS, GRACE_MS = 60_000, 10_000
ClosedWindowRow = tuple[int, int, int, float]  # start, end, count, sum


async def reference_for(
    broker: str,
    source_topic: str,
    flush: bool = False,
    max_ts_ahead_ms: int = DEFAULT_MAX_TS_AHEAD_MS,  # what workers run new versions with
) -> Reference:
    records = await read_source(broker, source_topic)
    return compute(records, WINDOW_MS, GRACE_MS, flush, max_ts_ahead_ms)


async def check_outputs(broker: str, prefix: str, ref: Reference, suffix: str = "") -> None:
    """Windows, DLQ, late and user totals of one version equal the reference exactly."""
    assert_windows_equal(await read_windows(broker, f"{prefix}.orders.revenue-1m{suffix}"), ref)
    await check_side_outputs(broker, prefix, ref, suffix)


async def check_side_outputs(broker: str, prefix: str, ref: Reference, suffix: str = "") -> None:
    """DLQ (with reasons), late records and user totals of one version equal the reference,
    and the trends are those of its windows."""
    t = f"{prefix}.orders"
    dlq_recs = await read_records(broker, f"{t}.dlq{suffix}")
    dlq = source_positions(dlq_recs)
    assert set(dlq) == set(ref.dlq), (
        f"dlq missing {set(ref.dlq) - set(dlq)} extra {set(dlq) - set(ref.dlq)}"
    )
    reasons = {
        (int(h["kappa.source.partition"]), int(h["kappa.source.offset"])): h["kappa.error"].decode()
        for rs in dlq_recs.values()
        for _, _, _, h in rs
    }
    assert reasons == ref.dlq
    late = source_positions(await read_records(broker, f"{t}.late{suffix}"))
    assert set(late) == ref.late, (
        f"late missing {ref.late - set(late)} extra {set(late) - ref.late}"
    )
    await check_downstream(broker, prefix, ref, suffix)


async def check_downstream(broker: str, prefix: str, ref: Reference, suffix: str = "") -> None:
    """User totals equal the reference; trends, signals and rankings are those of the final
    windows the orders pipeline emitted (so every pipeline after it has caught up)."""
    t = f"{prefix}.orders"
    totals: dict[str, tuple[int, float]] = {}
    for rs in (await read_records(broker, f"{t}.user-totals{suffix}")).values():
        for _, _, v, _ in rs:
            d = json.loads(v or b"")
            totals[d["user_id"]] = (d["orders"], d["spend"])  # per partition in order: last wins
    assert set(totals) == set(ref.user_totals)
    for u, (n, spend) in ref.user_totals.items():
        assert totals[u][0] == n, (u, totals[u], n)
        assert abs(totals[u][1] - spend) <= 1e-6 * max(1.0, abs(spend)), (u, totals[u], spend)
    windows = await final_windows(broker, f"{t}.revenue-1m{suffix}")
    trends = await check_trends(broker, prefix, windows, suffix)
    await check_signals(broker, prefix, trends, suffix)
    await check_top_products(broker, prefix, windows, ref, suffix)
    await check_quiet_products(broker, prefix, windows, ref, suffix)


async def final_windows(broker: str, topic: str) -> dict[str, dict[int, ClosedWindowRow]]:
    """Per product, the final windows the orders pipeline emitted (start → window)."""
    windows: dict[str, dict[int, ClosedWindowRow]] = {}
    for rs in (await read_records(broker, topic)).values():
        for _, key, value, headers in rs:
            parsed = parse_window(key, value, WINDOW_MS)
            if parsed is not None and PROVISIONAL_HEADER not in headers:
                product, start, end, count, total = parsed
                windows.setdefault(product, {})[start] = (start, end, count, total)
    return windows


async def check_trends(
    broker: str, prefix: str, windows: dict[str, dict[int, ClosedWindowRow]], suffix: str = ""
) -> dict[str, list[dict[str, Any]]]:
    """Per product, the trend points and anomalies are exactly the fold of the final windows
    the orders pipeline emitted (the windows themselves are checked against the reference);
    returns the points."""
    t = f"{prefix}.orders"
    want = {
        product: [trend_dict(product, p) for p in trend_points(sorted(ws.values()), TrendConfig())]
        for product, ws in windows.items()
    }
    assert want, "no final windows to fold"
    got = await _points_by_product(broker, f"{t}.product-trends{suffix}")
    assert got.keys() == want.keys(), f"missing {want.keys() - got.keys()}"
    for product, points in want.items():
        assert got[product] == points, product
    anomalies = await _points_by_product(broker, f"{t}.anomalies{suffix}")
    assert anomalies == {
        product: [p for p in points if p["anomaly"]]
        for product, points in want.items()
        if any(p["anomaly"] for p in points)
    }
    return want


async def check_signals(
    broker: str, prefix: str, trends: dict[str, list[dict[str, Any]]], suffix: str = ""
) -> None:
    """Per product, the demand levels and direction are exactly the fold of its trend points."""
    want: dict[str, list[dict[str, Any]]] = {}
    for product, points in trends.items():
        s = Signals(Settings().demand_levels)
        folded = (
            s.observe(
                TrendInput(
                    p["window_start"],
                    p["window_end"],
                    p["revenue"],
                    p["moving_avg"],
                    p["forecast_next"],
                )
            )
            for p in points
        )
        want[product] = [json.loads(signal_value(product, sp)) for sp in folded if sp is not None]
    got = await _points_by_product(broker, f"{prefix}.orders.product-signals{suffix}")
    assert got.keys() == want.keys(), f"missing {want.keys() - got.keys()}"
    for product, points in want.items():
        assert got[product] == points, product


async def check_top_products(
    broker: str,
    prefix: str,
    windows: dict[str, dict[int, ClosedWindowRow]],
    ref: Reference,
    suffix: str = "",
) -> None:
    """Every window that all source partitions' final watermarks passed is ranked once, as a
    plain sort of the final windows the orders pipeline emitted; no other window is."""
    low = min(ref.watermarks.values(), default=None)  # the datasets fill every partition
    by_window: dict[tuple[int, int], list[tuple[str, float, int]]] = {}
    for product, ws in windows.items():
        for start, end, count, total in ws.values():
            if low is not None and end <= low:
                by_window.setdefault((start, end), []).append((product, total, count))
    want = {
        w: [{"product_id": p, "revenue": v, "count": c} for p, v, c in ranked(entries, 10)]
        for w, entries in by_window.items()
    }
    assert want, "no window every source partition has passed"
    got: dict[tuple[int, int], bytes] = {}
    for rs in (await read_records(broker, f"{prefix}.orders.top-products{suffix}")).values():
        for _, _, value, _ in rs:
            d = json.loads(value or b"")
            w = (d["window_start"], d["window_end"])
            assert got.setdefault(w, value or b"") == value, f"ranking {w} re-sent different"
    assert {w: json.loads(v)["top"] for w, v in got.items()} == want


async def check_quiet_products(
    broker: str,
    prefix: str,
    windows: dict[str, dict[int, ClosedWindowRow]],
    ref: Reference,
    suffix: str = "",
) -> None:
    """Per product, the silences are those of its final windows folded in order: one due
    before its next window starts, or passed by its partition's final watermark."""
    config = quiet_config(Settings())
    want: dict[str, list[dict[str, object]]] = {}
    for product, ws in windows.items():
        partition = ref.product_partitions[product]
        activity: Activity | None = None
        for start, end, count, _ in sorted(ws.values()):
            if activity is None:
                activity = Activity.first(partition, start, end, count, config)
                continue
            if activity.due is not None and start >= activity.due:
                want.setdefault(product, []).append(
                    json.loads(quiet_value(activity.silence(product)))
                )
            activity.observe(partition, start, end, count, config)
        due = None if activity is None else activity.due
        if activity is not None and due is not None and due <= ref.watermarks[partition]:
            want.setdefault(product, []).append(json.loads(quiet_value(activity.silence(product))))
    got: dict[str, list[dict[str, object]]] = {}
    sent: dict[tuple[str, object], dict[str, object]] = {}  # a re-sent silence: the same
    for rs in (await read_records(broker, f"{prefix}.orders.quiet-products{suffix}")).values():
        for _, key, value, _ in rs:
            point = json.loads(value or b"")
            assert key == point["product_id"].encode()
            silence = (point["product_id"], point["quiet_from"])
            if silence in sent:
                assert sent[silence] == point, f"silence {silence} re-sent different"
                continue
            sent[silence] = point
            got.setdefault(point["product_id"], []).append(point)
    differ = {p for p in got.keys() | want.keys() if got.get(p) != want.get(p)}
    assert not differ, {p: (got.get(p), want.get(p)) for p in sorted(differ)[:3]}


async def _points_by_product(broker: str, topic: str) -> dict[str, list[dict[str, object]]]:
    """Each product's points in window order; a re-sent point must be byte-identical."""
    seen: dict[tuple[str, int], bytes] = {}
    for rs in (await read_records(broker, topic)).values():
        for _, _, value, _ in rs:
            d = json.loads(value or b"")
            k = (d["product_id"], d["window_start"])
            assert seen.setdefault(k, value or b"") == value, f"point {k} re-sent different"
    out: dict[str, list[dict[str, object]]] = {}
    for (product, _), value in sorted(seen.items()):
        out.setdefault(product, []).append(json.loads(value))
    return out


async def eventually(
    check: Callable[[], Awaitable[None]],
    timeout: float = 120,
    alive: Callable[[], None] | None = None,
    explain: Callable[[], str] | None = None,
) -> None:
    """Retry an async check until it passes; on timeout raise its last failure, followed by
    what `explain` says (the workers' logs, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await check()
            return
        except AssertionError as e:
            if time.monotonic() > deadline:
                if explain is None:
                    raise
                raise AssertionError(f"{e}\n{explain()}") from e
        if alive is not None:
            alive()
        await asyncio.sleep(0.5)


async def changelogs_caught_up(env: dict[str, str]) -> None:
    """Every partition's changelog reflects all of its source (held batches sent)."""
    topology = Topology(load_settings(env), 1)
    kafka = topology.settings.kafka
    for pipeline in topology.pipelines:
        ends = await high_watermarks(kafka, topology.physical(pipeline.source))
        changelog = KafkaChangelog(kafka, topology.changelog(pipeline))
        for partition, end in ends.items():
            applied = await changelog.last_applied(partition, fresh=True)
            assert applied == end - 1, (pipeline.name, partition, applied, end)


async def check_copies_applied(env: dict[str, str], version: int) -> int:
    """Every DLQ and late copy a (stopped) replay of `version` wrote is of a source record its
    local state applied, so resuming from that state writes none of them again. Returns how
    many copies there are."""
    topology = Topology(load_settings(env), version)
    applied = check_partition_dirs(topology)
    copies = 0
    for side in ("orders.dlq", "orders.late"):
        topic = topology.physical(side)
        positions = source_positions(await read_records(topology.settings.kafka, topic))
        copies += len(positions)
        ahead = sorted((p, o) for p, o in positions if o > applied.get(("orders", p), -1))
        assert not ahead, f"{topic}: copies of records the state has not applied: {ahead}"
    return copies


async def check_copied_once(env: dict[str, str], version: int) -> None:
    """No source record has two DLQ or two late copies in `version`."""
    topology = Topology(load_settings(env), version)
    for side in ("orders.dlq", "orders.late"):
        topic = topology.physical(side)
        positions = source_positions(await read_records(topology.settings.kafka, topic))
        twice = sorted({at for at in positions if positions.count(at) > 1})
        assert not twice, f"{topic}: records copied twice: {twice}"

"""`kappa diff` on the embedded broker: outputs read in chunks, compared key by key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.admin import ensure_topics
from app.kafka_clients import new_producer
from app.settings import load_settings
from app.topology import Topology
from replay.diff import diff
from replay.registry import COMPLETE, Registry, VersionRecord

pytestmark = pytest.mark.integration


def revenue(product: str, start: int, count: int) -> bytes:
    return json.dumps(
        {"product_id": product, "window_start": start, "window_end": start + 60_000, "count": count}
    ).encode()


async def test_diff_folds_each_side_by_key_and_reports_what_differs(
    broker: str, unique: str, tmp_path: Path
) -> None:
    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"diff-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path / "state"),
        }
    )
    registry = Registry(settings)
    await registry.ensure()
    for v in (2, 3):
        await registry.put_version(VersionRecord(v, COMPLETE, []))
    topics = {v: Topology(settings, v) for v in (2, 3)}
    names = {
        (v, logical): t.physical(logical)
        for v, t in topics.items()
        for logical in ("orders.revenue-1m", "orders.user-totals")
    }
    await ensure_topics(broker, {name: (3, {}) for name in names.values()})

    # 2,000 windows a side, several fetches' worth; each key written twice (upserts), and the
    # last value is what counts. v3 differs in one window, lacks one, and has one more.
    products = [f"p{i}" for i in range(200)]
    producer = new_producer(broker)
    await producer.start()
    try:
        for v in (2, 3):
            topic = names[(v, "orders.revenue-1m")]
            for rnd in (0, 1):
                for p in products:
                    for w in range(10):
                        if v == 3 and (p, w) == ("p5", 9):
                            continue
                        count = 100 * rnd + w + (1 if v == 3 and (p, w) == ("p7", 3) else 0)
                        await producer.send(topic, revenue(p, w * 60_000, count), key=p.encode())
            if v == 3:
                await producer.send(topic, revenue("p9", 600_000, 1), key=b"p9")
            open_window = revenue("p1", 600_000, 5 if v == 2 else 6)  # flushed, differently
            await producer.send(
                topic, open_window, key=b"p1", headers=[("kappa.provisional", b"1")]
            )
            for u in range(50):
                total = json.dumps({"user_id": f"u{u}", "orders": u}).encode()
                await producer.send(names[(v, "orders.user-totals")], total, key=f"u{u}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    report, differences = await diff(settings, 2, 3, limit=5)
    assert differences == 3
    assert report.splitlines() == [
        "orders.revenue-1m: 2,001 in v2, 2,001 in v3; 1 only in v2, 1 only in v3, 1 differ; "
        "1 provisional (flushed by a replay), not compared",
        "  - v2 only ('p5', 540000, 600000): "
        '{"product_id": "p5", "window_start": 540000, "window_end": 600000, "count": 109}',
        "  ~ ('p7', 180000, 240000): count 103 → 104",
        "  + v3 only ('p9', 600000, 660000): "
        '{"product_id": "p9", "window_start": 600000, "window_end": 660000, "count": 1}',
        "orders.user-totals: 50 in v2, 50 in v3; 0 only in v2, 0 only in v3, 0 differ",
        "3 differences",
    ]
    assert not list((tmp_path / "state").iterdir())  # the scratch stores are removed

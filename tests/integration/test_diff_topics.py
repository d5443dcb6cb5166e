"""`kappa diff` on the embedded broker: outputs read in chunks, compared key by key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import pytest

from app.admin import ensure_topics
from app.kafka_clients import new_producer
from app.settings import ConfigError, Settings, load_settings
from app.topology import Topology
from replay.diff import diff
from replay.registry import COMPLETE, Registry, VersionRecord, version_definition

pytestmark = pytest.mark.integration


def revenue(product: str, start: int, count: int) -> bytes:
    return json.dumps(
        {"product_id": product, "window_start": start, "window_end": start + 60_000, "count": count}
    ).encode()


async def _versions_2_and_3(broker: str, unique: str, tmp_path: Path) -> Settings:
    """Settings whose registry lists versions 2 and 3 as complete, to diff."""
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
    # as their first workers or replays record them: version 3's trends with another half-life
    built = version_definition(settings)
    await registry.claim_definition(2, built)
    await registry.claim_definition(3, {**built, "trend_half_life": 5.0})
    return settings


async def test_diff_folds_each_side_by_key_and_reports_what_differs(
    broker: str, unique: str, tmp_path: Path
) -> None:
    settings = await _versions_2_and_3(broker, unique, tmp_path)
    topics = {v: Topology(settings, v) for v in (2, 3)}
    names = {
        (v, logical): t.physical(logical)
        for v, t in topics.items()
        for logical in (
            "orders.revenue-1m",
            "orders.user-totals",
            "orders.product-trends",
            "orders.top-products",
            "orders.product-signals",
            "orders.quiet-products",
        )
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
            # trends with other settings: the same windows, another forecast
            point = {"product_id": "p1", "window_start": 0, "window_end": 60_000}
            point["forecast_next"] = 2.5 if v == 2 else 3.0
            trends = names[(v, "orders.product-trends")]
            await producer.send(trends, json.dumps(point).encode(), key=b"p1")
        await producer.flush()
    finally:
        await producer.stop()

    report, differences = await diff(settings, 2, 3, limit=5)
    assert differences == 4
    assert report.splitlines() == [
        "orders.revenue-1m: 2,001 in v2, 2,001 in v3; 1 only in v2, 1 only in v3, 1 differ; "
        "1 provisional (windows still open), not compared",
        "  - v2 only ('p5', 540000, 600000): "
        '{"product_id": "p5", "window_start": 540000, "window_end": 600000, "count": 109}',
        "  ~ ('p7', 180000, 240000): count 103 → 104",
        "  + v3 only ('p9', 600000, 660000): "
        '{"product_id": "p9", "window_start": 600000, "window_end": 660000, "count": 1}',
        "orders.user-totals: 50 in v2, 50 in v3; 0 only in v2, 0 only in v3, 0 differ",
        "orders.product-trends: 1 in v2, 1 in v3; 0 only in v2, 0 only in v3, 1 differ",
        "  ~ ('p1', 0, 60000): forecast_next 2.5 → 3.0",
        "orders.top-products: 0 in v2, 0 in v3; 0 only in v2, 0 only in v3, 0 differ",
        "orders.product-signals: 0 in v2, 0 in v3; 0 only in v2, 0 only in v3, 0 differ",
        "orders.quiet-products: 0 in v2, 0 in v3; 0 only in v2, 0 only in v3, 0 differ",
        "4 differences",
        "note: the versions were built with different settings: KAPPA_TREND_HALF_LIFE 10.0 in "
        "version 2, 5.0 in version 3",
    ]
    assert not list((tmp_path / "state").iterdir())  # the scratch stores are removed


async def test_a_long_read_goes_on_while_it_progresses_and_stops_when_it_stalls(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker is made slow (0.4 s a fetch, one record each): the whole read takes longer
    than the timeout, and only a read with no new record for that long gives up."""
    from aiokafka import AIOKafkaConsumer

    from app.topic_reader import read_chunks, read_to_end

    topic = f"slow-{unique}"
    await ensure_topics(broker, {topic: (1, {})})
    producer = new_producer(broker)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, b"%d" % i)
    finally:
        await producer.stop()
    getmany = AIOKafkaConsumer.getmany

    async def slow(self: AIOKafkaConsumer, *tps: object, **kwargs: object) -> object:
        await asyncio.sleep(0.4)  # stands in for a slow broker
        return await getmany(self, *tps, **{**kwargs, "max_records": 1})

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", slow)
    got = await read_to_end(broker, topic, stall_timeout_s=1.0)  # about 2 s in all
    assert [r.value for r in got[0]] == [b"0", b"1", b"2", b"3", b"4"]

    async def stalled(self: AIOKafkaConsumer, *tps: object, **kwargs: object) -> object:
        await asyncio.sleep(0.2)
        return {}

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", stalled)
    with pytest.raises(TimeoutError, match=rf"reading {topic} made no progress for 1s"):
        async with contextlib.aclosing(read_chunks(broker, topic, stall_timeout_s=1.0)) as chunks:
            async for _ in chunks:
                pass


async def test_diff_says_how_far_it_has_read(
    broker: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from app.settings import load_settings as load
    from replay import latest as latest_module
    from tables.rocks import RocksStore

    monkeypatch.setattr(latest_module, "LOG_EVERY_S", 0.0)  # a line for every fetch
    caplog.set_level(logging.INFO, logger="kappa.progress")
    settings = load({"KAPPA_BROKER": broker, "KAPPA_STATE_DIR": str(tmp_path)})
    topic = f"progress-{unique}"
    await ensure_topics(broker, {topic: (1, {})})
    producer = new_producer(broker)
    await producer.start()
    try:
        await producer.send_and_wait(topic, revenue("p", 0, 1), key=b"p")
    finally:
        await producer.stop()
    store = RocksStore(tmp_path / "scratch")
    try:
        read = await latest_module.fold_latest(
            settings, topic, ("product_id", "window_start", "window_end"), store
        )
    finally:
        store.close()
    assert read == 1
    assert f"read 1 records of {topic}" in caplog.text


async def test_a_version_has_read_to_its_committed_positions_else_to_its_snapshot(
    broker: str, unique: str
) -> None:
    """A live version goes on past its own snapshot: diff said two versions were replayed to
    different snapshots when the live one had read as far as the other's. And the note about
    orders produced after the snapshot was printed whenever one side was live, even when the
    differences had another cause (a --since)."""
    from app.admin import ensure_topics
    from app.settings import load_settings
    from replay.diff import _read_positions
    from replay.registry import COMPLETE, LIVE, VersionRecord
    from replay.runner import commit_offsets

    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"ahead-{unique}"})
    source = f"{unique}.orders"
    await ensure_topics(broker, {source: (2, {})})
    recs = {
        5: VersionRecord(5, LIVE, [], {source: {"0": 3, "1": 4}}),
        6: VersionRecord(6, COMPLETE, [], {source: {"0": 5, "1": 4}}),
    }
    # nothing committed (a replay commits as a stage ends): each as far as its snapshot
    assert await _read_positions(settings, recs) == {
        5: {source: {"0": 3, "1": 4}},
        6: {source: {"0": 5, "1": 4}},
    }
    await commit_offsets(broker, f"ahead-{unique}-v5", source, {0: 5, 1: 4})  # read on, live
    await commit_offsets(broker, f"ahead-{unique}-v6", source, {0: 5, 1: 4})  # its replay's end
    assert await _read_positions(settings, recs) == {
        5: {source: {"0": 5, "1": 4}},
        6: {source: {"0": 5, "1": 4}},
    }
    await commit_offsets(broker, f"ahead-{unique}-v5", source, {0: 7})
    assert (await _read_positions(settings, recs))[5] == {source: {"0": 7, "1": 4}}
    recs[1] = VersionRecord(1, LIVE)  # no snapshot of its own: the others' partitions
    assert await _read_positions(settings, {1: recs[1], 6: recs[6]}) == {
        1: {},
        6: {source: {"0": 5, "1": 4}},
    }


async def test_a_scratch_store_that_fails_is_one_line_not_a_workers_advice(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scratch store failing (a full disk) said "stop the worker, remove it ... and restart"."""
    from tables.rocks import RocksStore, StateIOError

    settings = await _versions_2_and_3(broker, unique, tmp_path)
    topics = [Topology(settings, v) for v in (2, 3)]
    await ensure_topics(broker, {name: (1, {}) for t in topics for name in t.output_topics()})
    revenue_v2 = topics[0].physical("orders.revenue-1m")
    producer = new_producer(broker)
    await producer.start()
    try:
        await producer.send_and_wait(revenue_v2, revenue("p1", 0, 1), key=b"p1")
    finally:
        await producer.stop()

    def failing_write(self: RocksStore, changes: object) -> None:
        raise StateIOError(f"state at {self.path} failed: IO error: No space left on device")

    monkeypatch.setattr(RocksStore, "write", failing_write)
    with pytest.raises(ConfigError) as failed:
        await diff(settings, 2, 3, limit=5)
    assert str(failed.value) == (
        f"cannot keep {revenue_v2}'s latest values under {tmp_path / 'state'} (is its disk full?)"
    )
    assert not list((tmp_path / "state").iterdir())  # the scratch stores are removed

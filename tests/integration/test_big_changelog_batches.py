"""One record whose state changes exceed a record batch (it closes every open window of its
partition), against the embedded broker: made durable, and restored exactly elsewhere."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from agents.base import SourceRecord
from app import runtime
from app.admin import ensure_topics
from app.batch_producer import BatchSender, new_batch_producer
from app.changelog import KafkaChangelog
from app.produce import produce_records
from app.runtime import PipelineRunner
from app.settings import load_settings
from app.topology import Topology
from tables.partition_state import APPLIED_OFFSET
from tests.support.datasets import GOOD_ORDER
from tests.support.fakes import changelog_read_starts
from tests.support.state import state_contents

pytestmark = pytest.mark.integration

PRODUCER_BATCH = 16 * 1024  # small record batches, so that a thousand windows overflow one
PRODUCTS = 1_000


def _order(offset: int, product: str, ts: int) -> SourceRecord:
    value = {**GOOD_ORDER, "order_id": str(offset), "product_id": product, "ts": ts}
    return SourceRecord("orders", 0, offset, None, product.encode(), json.dumps(value).encode())


def _everything(runner: PipelineRunner) -> list[tuple[bytes, bytes]]:
    store = runner._states[0].store
    return state_contents(store)


async def test_a_record_that_closes_more_windows_than_a_record_batch_holds(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of many records are split to fit a record batch, as in production (512 KiB
    # against 1 MB); only the one record's changes cannot be split.
    monkeypatch.setattr(runtime, "CHANGELOG_BATCH_BYTES", PRODUCER_BATCH // 2)
    env = {"KAPPA_BROKER": broker, "KAPPA_TOPIC_PREFIX": f"{unique}.", "KAPPA_APP_ID": unique}
    topology = Topology(load_settings({**env, "KAPPA_STATE_DIR": str(tmp_path / "a")}), 1)
    topology = topology.select(["orders"])
    await ensure_topics(broker, {t: (1, c) for t, c in topology.all_topics().items()})
    producer = new_batch_producer(broker, max_batch_size=PRODUCER_BATCH)
    await producer.start()
    try:
        runner = PipelineRunner(
            topology.pipelines[0],
            topology,
            BatchSender(producer).send,
            changelog_source=KafkaChangelog(broker, topology.changelog(topology.pipelines[0])),
        )
        t0 = GOOD_ORDER["ts"]
        await runner.handle(0, [_order(i, f"product-{i:06d}", t0) for i in range(PRODUCTS)])
        closing = await runner.handle(0, [_order(PRODUCTS, "product-x", t0 + 3_600_000)])
        assert closing.counts.windows_closed == PRODUCTS
        assert await runner.applied_offset(0) == PRODUCTS
        written = _everything(runner)
        runner.close()
    finally:
        await producer.stop()

    changelog = topology.changelog(topology.pipelines[0])
    restored = PipelineRunner(
        topology.pipelines[0],
        Topology(load_settings({**env, "KAPPA_STATE_DIR": str(tmp_path / "b")}), 1),
        BatchSender(producer).send,
        changelog_source=KafkaChangelog(broker, changelog),
    )
    assert await restored.applied_offset(0) == PRODUCTS
    assert _everything(restored) == written
    restored.close()


async def test_a_restore_stops_at_the_last_applied_offset(broker: str, unique: str) -> None:
    """Entries after it are part of a batch whose writer died before its last record batch:
    that batch is done again, so its first part must not be applied."""
    topic = f"{unique}.changelog"
    await ensure_topics(broker, {topic: (1, {"cleanup.policy": "compact"})})
    done = [(b"Ka", b"1"), (APPLIED_OFFSET, struct.pack(">q", 5))]
    await produce_records(broker, topic, done, progress=False)
    await produce_records(broker, topic, [(b"Ka", b"2"), (b"Kb", b"3")], progress=False)
    changelog = KafkaChangelog(broker, topic)
    assert await changelog.last_applied(0) == 5
    assert [e for chunk in [c async for c in changelog.entries(0)] for e in chunk] == done


async def test_the_last_applied_offset_is_found_without_reading_the_whole_partition(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial batch after the newest marker (or, under `exactly_once`, a transaction's
    commit record) must not make every partition open read the changelog from its start."""
    topic = f"{unique}.changelog"
    await ensure_topics(broker, {topic: (1, {"cleanup.policy": "compact"})})
    complete = [
        entry
        for offset in range(20_000)
        for entry in [
            (b"K%d" % (offset % 7), b"%d" % offset),
            (APPLIED_OFFSET, struct.pack(">q", offset)),
        ]
    ]
    await produce_records(broker, topic, complete, progress=False)
    await produce_records(
        broker, topic, [(b"K%d" % i, b"partial") for i in range(300)], progress=False
    )
    starts = changelog_read_starts(monkeypatch)
    changelog = KafkaChangelog(broker, topic)
    assert await changelog.last_applied(0) == 19_999
    assert min(starts) > 0
    entries = [e for chunk in [c async for c in changelog.entries(0)] for e in chunk]
    assert entries == complete


async def test_a_changelog_without_an_applied_offset_restores_nothing(
    broker: str, unique: str
) -> None:
    topic = f"{unique}.changelog"
    await ensure_topics(broker, {topic: (1, {"cleanup.policy": "compact"})})
    changelog = KafkaChangelog(broker, topic)
    assert await changelog.last_applied(0) == -1
    assert [c async for c in changelog.entries(0)] == []
    await produce_records(broker, topic, [(b"Ka", b"1")] * 200, progress=False)
    changelog = KafkaChangelog(broker, topic)
    assert await changelog.last_applied(0) == -1
    assert [c async for c in changelog.entries(0)] == []

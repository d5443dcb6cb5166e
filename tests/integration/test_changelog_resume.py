"""A local copy behind its changelog catches up from after its own last batch, against the
embedded broker: found without reading the whole log, only on the log the copy came from."""

from __future__ import annotations

import json
import logging
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from agents.base import SourceRecord
from app import changelog as changelog_module
from app import topic_reader
from app.admin import ensure_topics
from app.batch_producer import BatchSender, new_batch_producer
from app.changelog import KafkaChangelog
from app.produce import produce_records
from app.runtime import PipelineRunner
from app.settings import load_settings
from app.state_restore import StateOpener
from app.topology import Topology
from tables.partition_state import APPLIED_OFFSET, ORIGIN, StateError
from tables.rocks import RocksStore
from tests.support.datasets import GOOD_ORDER
from tests.support.fakes import changelog_read_starts

pytestmark = pytest.mark.integration

Entry = tuple[bytes, bytes | None]


def _batch(applied: int) -> list[Entry]:
    return [(b"K%d" % (applied % 7), b"%d" % applied), (APPLIED_OFFSET, struct.pack(">q", applied))]


async def _changelog(
    broker: str, topic: str, entries: list[Entry], **config: str
) -> KafkaChangelog:
    await ensure_topics(broker, {topic: (1, {"cleanup.policy": "compact", **config})})
    await produce_records(broker, topic, entries, progress=False)
    return KafkaChangelog(broker, topic)


async def _entries(changelog: KafkaChangelog, start: int) -> list[Entry]:
    return [e async for chunk in changelog.entries(0, start) for e in chunk]


async def test_the_entries_after_a_copys_own_batch_are_found_on_its_own_log_only(
    broker: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    head = [(ORIGIN, b"origin-1"), *_batch(4), *_batch(9)]
    tail = _batch(14)
    partial = [(b"K1", b"never completed")]  # a dead writer's: done again, never applied
    changelog = await _changelog(broker, f"{unique}.a", head + tail + partial)
    assert await changelog.last_applied(0) == 14
    start = await changelog.resume_point(0, 9, b"origin-1")
    assert start == len(head)
    assert await _entries(changelog, start) == tail
    assert await changelog.resume_point(0, 9, b"origin-2") is None  # another log
    assert await changelog.resume_point(0, 7, b"origin-1") is None  # no batch ended at 7
    old = await _changelog(broker, f"{unique}.b", [*_batch(4), *_batch(9), *tail])
    assert await old.last_applied(0) == 14
    assert await old.resume_point(0, 9, b"origin-1") is None  # written before origins
    # a flush repeats the last batch's marker: the copy may hold either, so it is restored whole
    flushed = [*head, (b"K1", None), (APPLIED_OFFSET, struct.pack(">q", 9)), *tail]
    flushed_log = await _changelog(broker, f"{unique}.c", flushed)
    assert await flushed_log.last_applied(0) == 14
    assert await flushed_log.resume_point(0, 9, b"origin-1") is None
    said = [r.getMessage() for r in caplog.records if r.name == "app.changelog"]
    assert said == [
        f"{unique}.a[0]: the local copy cannot catch up: the changelog is not the one it came from",
        f"{unique}.a[0]: the local copy cannot catch up: the marker of its last batch (7) is not "
        "found, or too old",
        f"{unique}.b[0]: the local copy cannot catch up: the changelog is not the one it came from",
        f"{unique}.c[0]: the local copy cannot catch up: the marker of its last batch (9) is "
        "repeated by a flush",
    ]


async def test_a_copy_just_behind_does_not_read_the_whole_log(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [(ORIGIN, b"o"), *(e for applied in range(20_000) for e in _batch(applied))]
    changelog = await _changelog(broker, f"{unique}.changelog", entries)
    starts = changelog_read_starts(monkeypatch)
    assert await changelog.last_applied(0) == 19_999
    starts.clear()
    start = await changelog.resume_point(0, 19_989, b"o")
    assert start == len(entries) - 20
    # its first record, one window back, then the first record after its batch
    assert starts == [0, len(entries) - 64, len(entries) - 20]
    assert await _entries(changelog, start) == entries[-20:]


async def test_a_marker_that_is_no_offset_stops_the_restore_in_one_line(
    broker: str, unique: str
) -> None:
    """Anyone with access to the changelog topic can write a marker: one that is no 8-byte
    offset is no entry Kappa wrote, and was a struct.error traceback."""
    topic = f"{unique}.changelog"
    changelog = await _changelog(
        broker, topic, [(ORIGIN, b"o"), *_batch(4), (APPLIED_OFFSET, b"9")]
    )
    with pytest.raises(StateError) as caught:
        await changelog.last_applied(0)
    assert str(caught.value) == (
        f"{topic}[0] offset 3: the applied offset there cannot be decoded (not 8 bytes long): "
        "only Kappa may write to a changelog topic; replay into a new version"
    )


async def test_a_record_without_a_key_stops_the_restore_in_one_line(
    broker: str, unique: str
) -> None:
    """No state key Kappa writes is missing: a keyless record (which Apache Kafka refuses on
    a compacted topic, and the dev broker takes) was a KeyError traceback from the store."""
    topic = f"{unique}.changelog"
    entries = [(ORIGIN, b"o"), (None, b"x"), *_batch(4)]
    changelog = await _changelog(broker, topic, entries)  # type: ignore[arg-type]
    assert await changelog.last_applied(0) == 4
    with pytest.raises(StateError) as caught:
        await _entries(changelog, 0)
    assert str(caught.value) == (
        f"{topic}[0] offset 1: a record without a key: only Kappa may write to a changelog "
        "topic; replay into a new version"
    )


@pytest.mark.parametrize(
    ("config", "retention_ms"),
    [({"delete.retention.ms": "3600000"}, 3_600_000), ({}, 86_400_000)],  # set, or Kafka's
)
async def test_a_tail_whose_tombstones_may_be_gone_is_not_resumed_on(
    broker: str, unique: str, config: dict[str, str], retention_ms: int
) -> None:
    """Compaction drops a tombstone `delete.retention.ms` after it was written at the earliest:
    a copy that missed it would keep the deleted entry, so an older tail is restored whole."""
    entries = [(ORIGIN, b"o"), *_batch(4), (b"K1", None), *_batch(9)]
    written = await _changelog(broker, f"{unique}.changelog", entries, **config)
    assert await written.last_applied(0) == 9
    for age_ms, resumed in ((0.4 * retention_ms, True), (0.6 * retention_ms, False)):
        later = KafkaChangelog(broker, written.topic, now_ms=lambda a=age_ms: time.time() * 1e3 + a)
        assert await later.last_applied(0) == 9
        assert (await later.resume_point(0, 4, b"o") is not None) == resumed


async def test_a_copy_is_restored_whole_where_the_broker_will_not_describe_its_changelog(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its `delete.retention.ms` unknown, compaction may have dropped tombstones from the tail
    (a worker without DescribeConfigs permission gets the topic left out, not an error)."""
    entries = [(ORIGIN, b"o"), *(e for applied in range(100) for e in _batch(applied))]
    changelog = await _changelog(broker, f"{unique}.changelog", entries)
    assert await changelog.last_applied(0) == 99
    assert await changelog.resume_point(0, 60, b"o") == 1 + 2 * 61
    starts = changelog_read_starts(monkeypatch)

    async def not_described(*args: object) -> dict[str, dict[str, str]]:
        return {}

    monkeypatch.setattr(changelog_module, "topic_configs", not_described)
    assert await changelog.resume_point(0, 60, b"o") is None
    assert starts == [0]  # its origin only


def _orders(first: int, n: int) -> list[SourceRecord]:
    out = []
    for offset in range(first, first + n):
        product = f"product-{offset % 13}"
        value = {**GOOD_ORDER, "order_id": str(offset), "product_id": product}
        value["ts"] = GOOD_ORDER["ts"] + offset * 7_000  # windows close as the orders go on
        out.append(
            SourceRecord("orders", 0, offset, None, product.encode(), json.dumps(value).encode())
        )
    return out


async def test_a_partition_moved_away_and_back_catches_up_exactly(
    broker: str, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"KAPPA_BROKER": broker, "KAPPA_TOPIC_PREFIX": f"{unique}.", "KAPPA_APP_ID": unique}

    def topology(state_dir: str) -> Topology:
        settings = load_settings({**env, "KAPPA_STATE_DIR": str(tmp_path / state_dir)})
        return Topology(settings, 1).select(["orders"])

    first = topology("a")
    await ensure_topics(broker, {t: (1, c) for t, c in first.all_topics().items()})
    changelog = first.changelog(first.pipelines[0])
    producer = new_batch_producer(broker)
    await producer.start()

    def runner(t: Topology) -> PipelineRunner:
        source = KafkaChangelog(broker, changelog)
        return PipelineRunner(
            t.pipelines[0], t, BatchSender(producer).send, changelog_source=source
        )

    try:
        owner = runner(first)
        await owner.handle(0, _orders(0, 100))
        owner.close()
        other = runner(topology("b"))  # restores all of it, then goes on
        await other.handle(0, _orders(100, 50))
        expected = list(other._states[0].store.scan(b"", b"\xff" * 8))
        other.close()
        back = runner(topology("a"))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="app.state_restore"):
            state = await back.state(0)
        assert state.applied_offset == 149
        assert list(state.store.scan(b"", b"\xff" * 8)) == expected
        said = [r.getMessage() for r in caplog.records if r.name == "app.state_restore"]
        assert "local state at offset 99, changelog at 149: catching up from" in said[0]
        back.close()
    finally:
        await producer.stop()


async def test_a_restore_that_fails_midway_stops_its_changelog_reader_at_once(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not when the collector gets to it: the failure's traceback holds the reading frames, and
    a worker retrying a restore over and over would pile up open consumers meanwhile."""
    changelog = await _changelog(broker, f"{unique}.changelog", [(ORIGIN, b"o"), *_batch(4)])
    consumers: list[AIOKafkaConsumer] = []
    real_bounded_consumer = topic_reader.bounded_consumer

    def recording_consumer(*args: Any, **kwargs: Any) -> AIOKafkaConsumer:
        consumers.append(real_bounded_consumer(*args, **kwargs))
        return consumers[-1]

    monkeypatch.setattr(topic_reader, "bounded_consumer", recording_consumer)

    def failing_write(self: RocksStore, changes: dict[bytes, bytes | None]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(RocksStore, "write", failing_write)
    topology = Topology(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1).select(["orders"])
    opener = StateOpener(topology.pipelines[0], topology, changelog.topic, changelog)
    with pytest.raises(OSError, match="disk full") as failed:
        await opener.open(0)
    assert failed.value.__traceback__ is not None  # still held
    assert consumers and all(c._closed for c in consumers)

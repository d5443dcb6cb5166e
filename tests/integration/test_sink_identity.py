"""A sink whose topic is made anew while it runs, or between two runs: no finished file mixes
the two logs, and no partition gone is passed over without a word."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from app.admin import ensure_topics
from app.settings import ConfigError, load_settings
from replay.sink import OtherTopic, _follow, _SinkRun
from replay.sink_files import RollPolicy, finished_range
from tests.support.checks import eventually
from tests.support.topics import delete_topics

pytestmark = pytest.mark.integration

OUTPUT = "orders.user-totals"


async def _produce(broker: str, topic: str, users: range, partition: int | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic, json.dumps({"user_id": f"u{i}", "orders": i}).encode(), partition=partition
            )
            for i in users
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _finished(directory: Path) -> list[tuple[int, int]]:
    names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
    return sorted(r for n in names if (r := finished_range(n)) is not None)


def _run(broker: str, directory: Path, topic: str, said: list[str]) -> _SinkRun:
    return _SinkRun(
        load_settings({"KAPPA_BROKER": broker}), directory, 1, {OUTPUT: topic},
        {OUTPUT: ("user_id",)}, RollPolicy(max_results=100, max_age_s=86_400), said.append,
    )  # fmt: skip


def _following(
    broker: str, directory: Path, topic: str, partition: int, said: list[str]
) -> tuple[_SinkRun, asyncio.Task[None], Path]:
    """A sink of `topic` into `directory` following it in a task, and `partition`'s files."""
    run = _run(broker, directory, topic, said)
    return run, asyncio.create_task(_follow(run)), directory / OUTPUT / f"partition={partition}"


async def _read_up_to_149(
    run: _SinkRun, following: asyncio.Task[None], tp: TopicPartition, partition: Path
) -> None:
    """Until the sink has read offsets 0–149 of `tp` and finished 0–99 (100 results a file)."""

    async def read_it_all() -> None:
        assert not following.done()
        assert tp in run.files and run.files[tp].last_read == 149
        assert _finished(partition) == [(0, 99)]

    await eventually(read_it_all, timeout=60)


async def test_a_topic_made_anew_under_a_running_sink_stops_it_before_a_file_mixes_logs(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """The new log passed the sink's position before its next fetch (the dev broker restarted
    with its workers, or the broker away meanwhile): its records came as if they followed the
    old ones, and the next file finished held both logs' lines."""
    topic = f"{unique}.{OUTPUT}"
    tp = TopicPartition(topic, 0)
    await ensure_topics(broker, {topic: (1, {})})
    await _produce(broker, topic, range(150))  # u0..u149
    run, following, partition = _following(broker, tmp_path, topic, 0, [])
    try:
        await _read_up_to_149(run, following, tp, partition)
        run.consumer.pause(tp)  # no fetch while the topic is made anew and passes offset 150
        await delete_topics(broker, [topic])
        await ensure_topics(broker, {topic: (1, {})})
        await _produce(broker, topic, range(1_000, 1_400))
        run.consumer.resume(tp)
        with pytest.raises(OtherTopic, match=r"holds another record at offset 99 than the one"):
            await asyncio.wait_for(following, 60)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert _finished(partition) == [(0, 99)]  # the old log's only: the mixed file was dropped
    lines = (partition / "00000000000000000000-00000000000000000099.jsonl").read_text()
    assert "u1" in lines and "u1000" not in lines
    assert not [p for p in partition.iterdir() if p.name.endswith(".tmp")]


async def test_a_partition_gone_under_a_running_sink_stops_it_and_drops_its_open_file(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """The topic made anew with fewer partitions: the sink's consumer waited for the partition
    gone without a word (here, until its end looked behind for KAPPA_SOURCE_END_GRACE_MS), a
    file of it due waited for ever for its anchor, and at the stop its open file was said as
    "the broker did not confirm its topic in time"."""
    topic = f"{unique}.{OUTPUT}"
    tp = TopicPartition(topic, 1)
    await ensure_topics(broker, {topic: (2, {})})
    await _produce(broker, topic, range(150), partition=1)
    said: list[str] = []
    run, following, partition = _following(broker, tmp_path, topic, 1, said)
    try:
        await _read_up_to_149(run, following, tp, partition)
        run.watch.next_check = math.inf  # not while the topic is away: that is another stop
        await delete_topics(broker, [topic])
        await ensure_topics(broker, {topic: (1, {})})
        run.watch.next_check = 0.0  # due now, not TOPIC_CHECK_S after the last one
        t = re.escape(topic)
        gone = rf"{t}\[1\] no longer exists \({t} has 1 partition\): it is not the topic"
        with pytest.raises(OtherTopic, match=f"^{gone}"):
            await asyncio.wait_for(following, 60)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert re.fullmatch(rf"{OUTPUT}\[1\]: not finished: {gone} .*", said[-1])
    assert _finished(partition) == [(0, 99)]  # its open file (100–149) dropped: no log has it
    assert not [p for p in partition.iterdir() if p.name.endswith(".tmp")]


async def test_files_of_a_partition_the_topic_no_longer_has_are_refused_at_start(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A topic made anew with fewer partitions between two runs: the sink went on over the
    partitions left, and the files of the one gone stayed beside theirs without a word."""
    topic = f"{unique}.{OUTPUT}"
    await ensure_topics(broker, {topic: (2, {})})
    await _produce(broker, topic, range(100), partition=1)
    said: list[str] = []
    _, following, partition = _following(broker, tmp_path, topic, 1, said)

    async def finished() -> None:
        assert not following.done()
        assert _finished(partition) == [(0, 99)]

    try:
        await eventually(finished, timeout=60)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    await delete_topics(broker, [topic])
    await ensure_topics(broker, {topic: (1, {})})
    await _produce(broker, topic, range(1_000, 1_010), partition=0)
    again = _run(broker, tmp_path, topic, said)
    try:
        with pytest.raises(ConfigError) as refused:
            await again.start()
    finally:
        await again.stop()
    assert str(refused.value) == (
        f"{partition} holds results of {topic}[1], which no longer exists ({topic} has 1 "
        "partition): the topic was made anew (a restarted dev broker?); sink it to another "
        "directory"
    )
    assert not (tmp_path / OUTPUT / "partition=0").exists()

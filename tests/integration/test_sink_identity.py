"""A sink whose topic is made anew while it runs: no finished file mixes the two logs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from app.admin import ensure_topics
from app.settings import load_settings
from replay.sink import OtherTopic, _follow, _SinkRun
from replay.sink_files import RollPolicy, finished_range
from tests.support.checks import eventually
from tests.support.topics import delete_topics

pytestmark = pytest.mark.integration

OUTPUT = "orders.user-totals"


async def _produce(broker: str, topic: str, users: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, json.dumps({"user_id": f"u{i}", "orders": i}).encode())
            for i in users
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _finished(directory: Path) -> list[tuple[int, int]]:
    return sorted(r for p in directory.iterdir() if (r := finished_range(p.name)) is not None)


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
    said: list[str] = []
    run = _SinkRun(
        load_settings({"KAPPA_BROKER": broker}), tmp_path, 1, {OUTPUT: topic},
        {OUTPUT: ("user_id",)}, RollPolicy(max_results=100, max_age_s=86_400), said.append,
    )  # fmt: skip
    following = asyncio.create_task(_follow(run))
    partition = tmp_path / OUTPUT / "partition=0"
    try:

        async def read_it_all() -> None:
            assert not following.done()
            assert tp in run.files and run.files[tp].last_read == 149
            assert _finished(partition) == [(0, 99)]

        await eventually(read_it_all, timeout=60)
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

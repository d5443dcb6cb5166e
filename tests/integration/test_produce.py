"""Producing to the embedded Tansu broker: topic creation, key partitioning, full round trip."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.admin import ensure_topics
from app.broker import free_port
from app.orders_generator import GeneratorSpec, generate
from app.produce import RateLimiter, produce_records
from app.settings import load_settings
from app.topic_reader import read_to_end
from replay.registry import Registry
from tests.support.workers import kappa_env, patched_kappa, run_kappa

CONSUME_TIMEOUT_S = 60.0


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
    broker: str,
) -> None:
    topic = _unique_topic("ensure")
    await ensure_topics(broker, {topic: (3, {"retention.ms": "3600000"})})
    await ensure_topics(broker, {topic: (3, {})})
    assert await _partition_count(broker, topic) == 3


@pytest.mark.integration
async def test_generated_records_round_trip_with_keys_partitioned(broker: str) -> None:
    topic = _unique_topic("orders")
    await ensure_topics(broker, {topic: (4, {})})
    spec = GeneratorSpec(count=2_000, seed=11, keys=40, late_fraction=0.05, bad_fraction=0.05)
    expected = [(record.key, record.value) for record in generate(spec)]

    sent = await produce_records(broker, topic, iter(expected), progress=False)
    assert sent == len(expected)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
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
    broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kappa.progress")
    topic = _unique_topic("rated")
    await ensure_topics(broker, {topic: (2, {})})
    records = [(f"k{index % 7}".encode(), f'{{"n":{index}}}'.encode()) for index in range(300)]
    sent = await produce_records(broker, topic, records, rate=5_000.0, progress=False)
    assert sent == 300
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, group_id=None)
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
    port = free_port()
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


@pytest.mark.integration
async def test_progress_off_a_terminal_is_an_info_line_the_cli_shows(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """The CLI shows warnings and up, so progress was logged as WARNING; it is INFO now, on
    the one logger the CLI shows at INFO."""
    topic = _unique_topic("progress")
    await ensure_topics(broker, {topic: (1, {})})
    env = kappa_env(broker, unique, tmp_path / "state")
    patch = "import app.produce\napp.produce.LOG_EVERY_S = 0.0"
    done = run_kappa(["produce", topic, "--generate", "6000"], env, command=patched_kappa(patch))
    assert done.returncode == 0, done.stderr
    said = done.stderr.splitlines()
    assert any(" INFO kappa.progress: producing " in line for line in said), said
    assert any(f"records to {topic}" in line for line in said), said
    assert not [line for line in said if " WARNING " in line], said


@pytest.mark.integration
async def test_a_second_generate_continues_after_the_orders_already_in_the_topic(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Each run's default start is "now" and spans an hour: a second run a minute later put
    almost all its orders behind the first run's watermark, where they are late."""
    topic = _unique_topic("again")
    env = kappa_env(broker, unique, tmp_path / "state")
    first = run_kappa(["produce", topic, "--generate", "300", "--no-progress"], env)
    assert first.returncode == 0, first.stderr
    assert "already holds" not in first.stdout
    await produce_records(broker, topic, [(None, b"not json"), (None, b'{"ts": "soon"}')])
    before = await _event_times(broker, topic)
    second = run_kappa(["produce", topic, "--generate", "300", "--no-progress"], env)
    assert second.returncode == 0, second.stderr
    after = await _event_times(broker, topic)
    firsts = [ms for times in before.values() for ms in times]
    seconds = [ms for p, times in after.items() for ms in times[len(before.get(p, [])) :]]
    assert len(firsts) == len(seconds) == 300
    line = second.stdout.splitlines()[0]
    assert line.startswith(
        f"{topic} already holds orders up to event time {max(firsts)}: generated orders start "
        f"after them, at {max(firsts) + 1} ("
    ), line
    assert min(seconds) > max(firsts)
    chosen = run_kappa(["produce", topic, "--generate", "10", "--start-ms", "1700000000000"], env)
    assert chosen.returncode == 0 and "already holds" not in chosen.stdout  # a start given is kept
    # A week of orders sent at once would run days ahead of their record timestamps, and the
    # orders pipeline would dead-letter them (timestamp_ahead): refused, nothing sent.
    week_args = ["produce", topic, "--generate", "100", "--span-ms", "604800000"]
    for guarded in (env, dict(env, KAPPA_MAX_TS_AHEAD_MS="86400000")):  # the default, and set
        week = run_kappa(week_args, guarded)
        assert week.returncode == 2, week.stderr
        assert "more than KAPPA_MAX_TS_AHEAD_MS=86400000 allows" in week.stderr, week.stderr
        assert "Traceback" not in week.stderr
    assert sum(map(len, (await _event_times(broker, topic)).values())) == 610
    # The live version recorded its settings before the guard existed: it runs without it,
    # and so does what is generated for it, unless the environment sets the guard.
    registry = Registry(load_settings({k: v for k, v in env.items() if k.startswith("KAPPA_")}))
    await registry.claim_definition(1, {"window_ms": 60_000, "grace_ms": 10_000})
    assert run_kappa(week_args, env).returncode == 0
    assert sum(map(len, (await _event_times(broker, topic)).values())) == 710


async def _event_times(broker: str, topic: str) -> dict[int, list[int]]:
    """Each partition's orders' `ts`, in offset order (other records left out)."""
    return {
        partition: [json.loads(r.value)["ts"] for r in records if r.value.startswith(b'{"order')]
        for partition, records in (await read_to_end(broker, topic)).items()
    }


@pytest.mark.integration
async def test_a_file_with_lines_that_are_not_objects_is_produced_with_a_count_of_them(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """They go to the DLQ, as the README says; the command said nothing of them."""
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"order_id": "1"}\n\xff\xfe garbage\n  {"order_id": "2"}\n[1, 2]\n')
    topic = _unique_topic("mixed")
    env = kappa_env(broker, unique, tmp_path / "state")
    done = run_kappa(["produce", topic, "--file", str(path)], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"produced 4 records to {topic}"
    assert done.stderr.splitlines()[-1] == (  # no pipeline reads this topic: no DLQ named
        f"kappa produce: warning: 2 of the 4 records from {path} are not JSON objects (one "
        "object per line is expected)"
    )


@pytest.mark.integration
async def test_a_record_over_the_request_limit_is_one_line_naming_it(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A 20 MiB line was "Kafka broker at ...: MessageSizeTooLargeError: ... the maximum request
    size you have configured with the max_request_size configuration": the client's limit,
    not the broker's nor one a user sets, and nothing said of the records sent before it."""
    path = tmp_path / "big.jsonl"
    small = [json.dumps({"order_id": str(i), "product_id": "p1"}) for i in range(3)]
    huge = json.dumps({"order_id": "3", "product_id": "p1", "note": "x" * (20 * 1024 * 1024)})
    path.write_text("\n".join([*small, "", huge, *small]) + "\n")  # a blank line: no record
    topic = _unique_topic("huge")
    env = kappa_env(broker, unique, tmp_path / "state")
    done = run_kappa(["produce", topic, "--file", str(path), "--no-progress"], env)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if " error: " in line]
    assert line.startswith(
        f"kappa produce: error: the record at line 5 of {path} is too large: "
    ), line
    assert line.endswith(
        f"bytes as a record batch, over the 16,777,216 bytes kappa produce sends at once; up "
        f"to 3 records before it went to {topic} (loading the file again produces them again)"
    ), line
    assert "Traceback" not in done.stderr

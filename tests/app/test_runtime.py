"""PipelineRunner without a broker: a recording sender stands in for the produce path."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from aiokafka.errors import (
    InvalidTimestampError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    ProducerClosed,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from prometheus_client import REGISTRY

from agents.base import BatchOutput, Pipeline, Record, SourceRecord, record_bytes_bound
from agents.user_state import decode_partial
from app import chaos as chaos_module
from app import runtime, state_restore
from app.batch_producer import retrying
from app.chaos import ChaosKill
from app.runtime import PipelineRunner, Produce, SenderClosed, SourceCommit, SourceEndBehind
from app.send_refusals import SendRefused
from app.settings import load_settings
from app.state_guard import BrokerDataLost
from app.topology import Topology
from tables.partition_state import PartitionState, StateError
from tests.support.datasets import GOOD_ORDER
from tests.support.fakes import ListChangelog
from tests.support.state import state_contents


def _records(n: int) -> list[SourceRecord]:
    out = []
    for i in range(n):
        pid = f"p{i:05d}"  # every order its own product: lots of window state per batch
        value = {
            "order_id": str(i),
            "user_id": f"u{i % 7}",
            "product_id": pid,
            "category": "c",
            "amount": 1.5,
            "quantity": 1,
            "ts": 1_700_000_000_000 + i * 10,
        }
        out.append(SourceRecord("orders", 0, i, None, pid.encode(), json.dumps(value).encode()))
    return out


async def _run(
    tmp_path: Path, limit: int, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[list[Produce], SourceCommit]]:
    monkeypatch.setattr(runtime, "CHANGELOG_BATCH_BYTES", limit)
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / f"state-{limit}")})
    topology = Topology(settings, 1).select(["orders"])
    sent: list[tuple[list[Produce], SourceCommit]] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sent.append((records, commit))

    runner = PipelineRunner(topology.pipelines[0], topology, send)
    await runner.handle(0, _records(3_000))
    assert await runner.applied_offset(0) == 2_999
    runner.close()
    return sent


def _outputs(sent: list[tuple[list[Produce], SourceCommit]]) -> list[tuple[str, bytes | None]]:
    return [(r.topic, r.value) for records, _ in sent for r in records if not r.atomic]


async def test_a_batch_too_big_for_one_changelog_batch_is_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 20_000
    split = await _run(tmp_path, limit, monkeypatch)
    whole = await _run(tmp_path, 10**9, monkeypatch)
    assert len(whole) == 1 and len(split) > 1
    for records, _ in split:
        changelog = [r for r in records if r.atomic]
        assert sum(len(r.key or b"") + len(r.value or b"") + 16 for r in changelog) <= limit
        assert changelog[-1].key == b"Mapplied-offset"  # each batch ends with its offset
    assert [c.offset for _, c in split] == sorted(c.offset for _, c in split)
    assert split[-1][1].offset == 3_000
    # Windows (and DLQ, late) are the same records in the same order; per-user forwards and
    # window reports come once per batch, so smaller batches send more of them, ending at the
    # same running totals, and reporting the same windows and the same window boundary passed
    # (a report goes out when the watermark passes one).
    forwards = ("orders.by-user", "orders.by-window")
    assert [o for o in _outputs(split) if o[0] not in forwards] == [
        o for o in _outputs(whole) if o[0] not in forwards
    ]

    def reported(sent: list[tuple[list[Produce], SourceCommit]]) -> tuple[list[object], int]:
        reports = [json.loads(v or b"") for t, v in _outputs(sent) if t == "orders.by-window"]
        return [w for r in reports for w in r["w"]], reports[-1]["wm"] // 60_000

    assert reported(split) == reported(whole)
    reports = [r for records, _ in split for r in records if r.topic == "orders.by-window"]
    assert reports and all(r.in_order for r in reports)  # a report's parts land in order

    def last_forward(sent: list[tuple[list[Produce], SourceCommit]]) -> dict[str, bytes | None]:
        return {
            json.loads(v or b"")["user_id"]: v for t, v in _outputs(sent) if t == "orders.by-user"
        }

    assert last_forward(split) == last_forward(whole)


async def test_dlq_records_get_the_physical_source_position_in_headers(tmp_path: Path) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 2).select(["orders"])
    sent: list[Produce] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sent.extend(records)

    runner = PipelineRunner(topology.pipelines[0], topology, send)
    await runner.handle(3, [SourceRecord("orders", 3, 41, None, b"p1", b"{broken")])
    runner.close()
    (dlq,) = [r for r in sent if r.topic == "orders.dlq.v2"]
    assert dict(dlq.headers) == {
        "kappa.error": b"not_json",
        "kappa.source.topic": b"orders",  # sources are not versioned
        "kappa.source.partition": b"3",
        "kappa.source.offset": b"41",
    }


@pytest.mark.parametrize("copy", ["orders.dlq", "orders.late"])
async def test_a_copy_too_big_for_the_broker_is_cut_and_the_batch_commits(
    tmp_path: Path, copy: str
) -> None:
    """A copy the broker refused would be retried forever: the partition would stall."""
    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path / "state"), "KAPPA_COPY_MAX_BYTES": "4096"}
    )
    topology = Topology(settings, 1).select(["orders"])
    sent: list[Produce] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sent.extend(records)

    pad = "x" * 20_000
    ahead = json.dumps({**GOOD_ORDER, "ts": GOOD_ORDER["ts"] + 3_600_000}).encode()
    big = (
        b'{"broken' + pad.encode()
        if copy == "orders.dlq"
        else json.dumps({**GOOD_ORDER, "pad": pad}).encode()  # valid, an hour behind: late
    )
    runner = PipelineRunner(topology.pipelines[0], topology, send)
    await runner.handle(0, [SourceRecord("orders", 0, 7, None, b"p1", ahead)])
    await runner.handle(0, [SourceRecord("orders", 0, 8, None, b"p1", big)])
    assert await runner.applied_offset(0) == 8
    runner.close()
    (out,) = [r for r in sent if r.topic == copy]
    headers = dict(out.headers)
    assert headers["kappa.truncated.value"] == str(len(big)).encode()
    assert headers["kappa.source.offset"] == b"8"
    assert big.startswith(out.value or b"") and len(out.value or b"") > 3_000
    assert record_bytes_bound(out.key, out.value, out.headers) <= 4096


def _orders(partition: int, n: int) -> list[SourceRecord]:
    return [
        SourceRecord(r.topic, partition, r.offset, r.timestamp, r.key, r.value) for r in _records(n)
    ]


async def test_handle_many_makes_all_partitions_durable_with_one_send(tmp_path: Path) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])
    sent: list[tuple[list[Produce], SourceCommit]] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sent.append((records, commit))

    runner = PipelineRunner(topology.pipelines[0], topology, send, one_request=True)
    out = await runner.handle_many({0: _orders(0, 5), 2: _orders(2, 3)})
    assert len(sent) == 1
    changelog = {r.partition for r in sent[0][0] if r.atomic}
    assert changelog == {0, 2}  # each partition's changelog batch, in the one request
    assert (await runner.applied_offset(0), await runner.applied_offset(2)) == (4, 2)
    assert out.counts.events == 8
    runner.close()


async def test_handle_many_commits_nothing_when_the_send_fails(tmp_path: Path) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        raise ConnectionError("broker gone")

    runner = PipelineRunner(topology.pipelines[0], topology, send, one_request=True)
    with pytest.raises(ConnectionError):
        await runner.handle_many({0: _orders(0, 5), 1: _orders(1, 5)})
    assert (await runner.applied_offset(0), await runner.applied_offset(1)) == (-1, -1)
    runner.close()


async def test_handle_many_with_a_transactional_sender_sends_per_partition(
    tmp_path: Path,
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])
    commits: list[SourceCommit] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        assert {r.partition for r in records if r.atomic} == {commit.partition}
        commits.append(commit)

    runner = PipelineRunner(topology.pipelines[0], topology, send, one_request=False)
    await runner.handle_many({0: _orders(0, 5), 3: _orders(3, 2)})
    assert sorted((c.partition, c.offset) for c in commits) == [(0, 5), (3, 2)]
    runner.close()


class _FlakyChangelog:
    """A changelog source that fails once for partition 1 (the broker went away mid-cycle)."""

    def __init__(self) -> None:
        self.failed = False

    async def last_applied(self, partition: int) -> int:
        if partition == 1 and not self.failed:
            self.failed = True
            raise ConnectionError("broker gone")
        return -1

    async def entries(
        self, partition: int, start: int = 0
    ) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
        return
        yield []


async def test_handle_many_retried_after_a_failure_mid_cycle_counts_each_record_once(
    tmp_path: Path,
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(
        topology.pipelines[0], topology, send, changelog_source=_FlakyChangelog(), one_request=True
    )
    batches = {0: _orders(0, 7), 1: _orders(1, 7)}
    with pytest.raises(ConnectionError):
        await runner.handle_many(batches)  # partition 0 processed, then partition 1 fails
    await runner.handle_many(batches)  # the retry
    state = await runner.state(0)
    (raw,) = state.get_values("user-partials", ["u0"])
    assert raw is not None and decode_partial(raw)[0] == 1  # u0 ordered once (record 0), not twice
    runner.close()


def test_chaos_kill_point_is_hit_inside_a_combined_send(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr(chaos_module.os, "kill", lambda pid, sig: kills.append(sig))
    chaos = ChaosKill(3, "before-send")
    chaos.step("before-send", 2)  # batches 1 and 2: not yet
    chaos.batch_done()
    chaos.batch_done()
    chaos.step("after-send", 2)  # batches 3 and 4, other phase
    assert kills == []
    chaos.step("before-send", 2)  # batches 3 and 4 go out together: batch 3 is among them
    assert kills == [signal.SIGKILL]


def _age_samples() -> tuple[float, float]:
    labels = {"pipeline": "orders", "version": "1"}
    count = REGISTRY.get_sample_value("kappa_record_age_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("kappa_record_age_seconds_sum", labels) or 0.0
    return count, total


def _stamped(partition: int, n: int, first_ms: int) -> list[SourceRecord]:
    return [
        SourceRecord(r.topic, partition, r.offset, first_ms + r.offset, r.key, r.value)
        for r in _records(n)
    ]


async def test_each_durable_batch_observes_its_first_records_age(tmp_path: Path) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(
        topology.pipelines[0], topology, send, one_request=True, wall_clock=lambda: 1_000_010.0
    )
    count, total = _age_samples()
    await runner.handle_many({0: _stamped(0, 5, 1_000_000_000), 1: _stamped(1, 3, 1_000_004_000)})
    await runner.handle(2, _stamped(2, 4, 1_000_009_500))  # the per-partition path
    await runner.handle(3, _stamped(3, 2, 1_000_011_000))  # producer clock ahead: zero
    after_count, after_total = _age_samples()
    assert after_count - count == 4
    assert after_total - total == pytest.approx(10.0 + 6.0 + 0.5 + 0.0)
    runner.close()


class _ListChangelog(ListChangelog):
    """`fail_entries` fails a restore midway once, raised through a future as aiokafka raises
    (which keeps the failed frame alive)."""

    def __init__(self, entries: list[tuple[bytes, bytes | None]], fail_entries: bool = False):
        super().__init__(entries)
        self.fail_entries = fail_entries

    async def entries(
        self, partition: int, start: int = 0
    ) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
        chunks = [c async for c in super().entries(partition, start)]
        whole = [e for c in chunks for e in c]
        yield whole[:1]
        if self.fail_entries:
            self.fail_entries = False
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(KafkaConnectionError("broker gone"))
            await failed
        yield whole[1:]


async def _changelog_of(tmp_path: Path, n: int) -> list[tuple[bytes, bytes | None]]:
    """The changelog entries a runner writes for `n` orders of partition 0."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "writer")})
    topology = Topology(settings, 1).select(["orders"])
    entries: list[tuple[bytes, bytes | None]] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        entries.extend((r.key or b"", r.value) for r in records if r.atomic)

    runner = PipelineRunner(topology.pipelines[0], topology, send)
    await runner.handle(0, _orders(0, n))
    runner.close()
    return entries


async def test_a_restore_that_failed_midway_can_be_retried(tmp_path: Path) -> None:
    changelog = _ListChangelog(await _changelog_of(tmp_path, 5), fail_entries=True)
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "reader")})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(topology.pipelines[0], topology, send, changelog_source=changelog)
    with pytest.raises(KafkaConnectionError):
        await runner.state(0)
    # The worker retries broker trouble: the partition's directory must not still be locked.
    assert (await runner.state(0)).applied_offset == 4
    runner.close()


def _logging_runner(tmp_path: Path, directory: str, log: list[tuple[bytes, bytes | None]]):
    """A runner with its own state directory whose changelog is `log` (shared by all)."""
    topology = Topology(load_settings({"KAPPA_STATE_DIR": str(tmp_path / directory)}), 1)
    topology = topology.select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        log.extend((r.key or b"", r.value) for r in records if r.atomic)

    return PipelineRunner(
        topology.pipelines[0], topology, send, changelog_source=ListChangelog(log)
    )


async def test_a_copy_behind_its_changelog_catches_up_from_after_its_own_last_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rebalance moved the partition away and back: the first owner's copy applies only what
    the other owner wrote meanwhile, and ends as the other's state, exactly."""
    log: list[tuple[bytes, bytes | None]] = []
    first = _logging_runner(tmp_path, "a", log)
    await first.handle(0, _orders(0, 40)[:20])
    first.close()
    own = len(log)
    other = _logging_runner(tmp_path, "b", log)
    await other.handle(0, _orders(0, 40)[20:])
    expected = list(other._states[0].store.scan(b"", b"\xff" * 8))
    other.close()
    back = _logging_runner(tmp_path, "a", log)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="app.state_restore"):
        state = await back.state(0)
    assert state.applied_offset == 39
    assert list(state.store.scan(b"", b"\xff" * 8)) == expected  # its origin too
    said = [r.getMessage() for r in caplog.records if r.name == "app.state_restore"]
    assert said == [
        f"orders p0: local state at offset 19, changelog at 39: catching up from "
        f"{back.changelog} offset {own}",
        f"orders p0: restored {len(log) - own} changelog entries in 0.0s (state at offset 39)",
    ]
    back.close()


async def test_a_copy_of_another_changelog_is_restored_whole(tmp_path: Path) -> None:
    """The broker lost the log and it was written anew, its batches ending at the same offsets:
    the local copy's batches are not in it, so the copy must not resume on it."""
    old: list[tuple[bytes, bytes | None]] = []
    first = _logging_runner(tmp_path, "a", old)
    await first.handle(0, _orders(0, 40)[:20])
    first.close()
    new: list[tuple[bytes, bytes | None]] = []
    rebuilt = _logging_runner(tmp_path, "b", new)
    await rebuilt.handle(0, _orders(0, 40)[:20])
    await rebuilt.handle(0, _orders(0, 40)[20:])
    expected = list(rebuilt._states[0].store.scan(b"", b"\xff" * 8))
    rebuilt.close()
    back = _logging_runner(tmp_path, "a", new)
    assert list((await back.state(0)).store.scan(b"", b"\xff" * 8)) == expected
    back.close()


async def test_a_state_that_fails_to_load_leaves_its_directory_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the state's applied offset failed once (an I/O error): the store is closed at
    once, not when the collector frees it (the error's traceback holds it meanwhile)."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    real = state_restore.PartitionState
    calls: list[int] = []

    def failing_once(store: object, partition: int, **named: object) -> object:
        calls.append(partition)
        if len(calls) == 1:
            raise OSError("read failed")
        return real(store, partition, **named)  # type: ignore[arg-type]

    monkeypatch.setattr(state_restore, "PartitionState", failing_once)
    runner = PipelineRunner(
        topology.pipelines[0], topology, send, changelog_source=_ListChangelog([])
    )
    with pytest.raises(OSError) as failed:
        await runner.state(0)
    assert failed.value.__traceback__ is not None  # still held, with the frames that opened it
    assert (await runner.state(0)).applied_offset == -1
    runner.close()


async def test_local_state_ahead_of_its_changelog_is_refused(tmp_path: Path) -> None:
    """The broker lost the changelog (and the source was refilled): going on would skip the
    new records at offsets the old state had applied."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    before = PipelineRunner(topology.pipelines[0], topology, send)
    await before.handle(0, _orders(0, 5))
    before.close()
    after = PipelineRunner(
        topology.pipelines[0], topology, send, changelog_source=_ListChangelog([])
    )
    with pytest.raises(BrokerDataLost, match="remove"):
        await after.state(0)
    after.close()


async def test_a_source_end_behind_the_state_is_waited_for_before_it_counts_as_lost(
    tmp_path: Path,
) -> None:
    """A new partition leader can report an older end for a moment (KIP-207): the batch is
    retried meanwhile, and only an end that stays behind for the grace stops the worker."""
    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path / "state"), "KAPPA_SOURCE_END_GRACE_MS": "30000"}
    )
    topology = Topology(settings, 1).select(["orders"])
    now = [100.0]

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(topology.pipelines[0], topology, send, monotonic=lambda: now[0])
    await runner.handle(0, _orders(0, 5))  # applied up to offset 4
    await runner.check_log_kept(0, 5)  # the end is past it
    with pytest.raises(SourceEndBehind, match="ends at offset 3 but the state has applied up to 4"):
        await runner.check_log_kept(0, 3)
    now[0] += 29.0
    with pytest.raises(SourceEndBehind):
        await runner.check_log_kept(0, 4)
    await runner.check_log_kept(0, 6)  # caught up: the next look behind starts a new wait
    now[0] += 100.0
    with pytest.raises(SourceEndBehind):
        await runner.check_log_kept(0, 2)
    now[0] += 30.0
    with pytest.raises(BrokerDataLost, match="remove"):
        await runner.check_log_kept(0, 2)
    runner.close()


async def test_the_previous_owner_is_fenced_before_the_state_is_restored(tmp_path: Path) -> None:
    """exactly_once: a zombie's open transaction must be ended before the changelog is read,
    or a restore could miss what the zombie then commits."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])
    calls: list[str] = []

    class Changelog(_ListChangelog):
        async def last_applied(self, partition: int, fresh: bool = False) -> int:
            calls.append(f"changelog p{partition}")
            return await super().last_applied(partition, fresh)

    async def fence(partition: int) -> None:
        calls.append(f"fence p{partition}")

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(
        topology.pipelines[0], topology, send, changelog_source=Changelog([]), before_open=fence
    )
    await runner.state(2)
    await runner.state(2)  # already open: nothing again
    assert calls == ["fence p2", "changelog p2"]
    runner.close()


async def test_only_broker_and_network_failures_are_retried() -> None:
    failures: list[BaseException] = [KafkaConnectionError("broker gone"), TypeError("a bug")]
    calls = []

    async def send_once(records: list[Produce], commit: SourceCommit) -> None:
        calls.append(1)
        if failures:
            raise failures.pop(0)

    send = retrying(send_once, ("orders", "1"))
    with pytest.raises(TypeError, match="a bug"):  # not retried: it would stall the partition
        await send([], SourceCommit("orders", 0, 1, "g"))
    assert len(calls) == 2  # the broker failure was retried once


@pytest.mark.parametrize("closed", [True, False])
async def test_a_send_the_closed_sender_failed_is_not_retried(
    closed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker stopping closes its senders while a batch may be sending: that batch was
    retried as broker trouble ("produce failed (ProducerClosed …); retrying", a retry
    counted). A producer that closed otherwise (a revoked partition's) is retried."""
    failures = [ProducerClosed()]

    async def send_once(records: list[Produce], commit: SourceCommit) -> None:
        if failures:
            raise failures.pop(0)

    send = retrying(send_once, ("orders", "1"), max_backoff_s=0.01, closed=lambda: closed)
    with caplog.at_level(logging.WARNING, logger="app.batch_producer"):
        if closed:
            with pytest.raises(SenderClosed):
                await send([], SourceCommit("orders", 0, 1, "g"))
        else:
            await send([], SourceCommit("orders", 0, 1, "g"))
    assert bool(caplog.records) is not closed


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (TopicAuthorizationFailedError(), "Write and Describe"),
        (MessageSizeTooLargeError(), "max.message.bytes"),
        (InvalidTimestampError(), "message.timestamp.before.max.ms"),
    ],
)
async def test_a_write_the_broker_refuses_for_good_is_not_retried(
    error: BaseException, hint: str
) -> None:
    """Retrying cannot fix an ACL, a size limit or a timestamp policy: the sender stops at once
    with one line naming the topics and what to change, instead of stalling the partition."""
    calls = []

    async def send_once(records: list[Produce], commit: SourceCommit) -> None:
        calls.append(1)
        raise error

    send = retrying(send_once, ("orders", "1"))
    records = [
        Produce(topic, None, b"k", b"v", 0, []) for topic in ("orders.dlq", "c", "orders.dlq")
    ]
    with pytest.raises(SendRefused) as refused:
        await asyncio.wait_for(send(records, SourceCommit("orders", 0, 1, "g")), 10)
    assert len(calls) == 1
    message = str(refused.value)
    assert message.startswith(f"the broker refused writes to c, orders.dlq: {type(error).__name__}")
    assert hint in message and "\n" not in message


@pytest.mark.parametrize("gone", [True, False])
async def test_a_send_to_a_topic_the_broker_does_not_know_is_checked(gone: bool) -> None:
    """UnknownTopicOrPartition: a topic deleted under the worker stops it (the check raises);
    one the broker still lists is a broker catching up, and the send is retried."""
    failures = [UnknownTopicOrPartitionError()]
    checked: list[set[str]] = []

    async def send_once(records: list[Produce], commit: SourceCommit) -> None:
        if failures:
            raise failures.pop(0)

    async def topics_gone(topics: set[str]) -> None:
        checked.append(topics)
        if gone:
            raise BrokerDataLost("topic orders.late is gone")

    send = retrying(send_once, ("orders", "1"), max_backoff_s=0.01, topics_gone=topics_gone)
    records = [Produce(t, None, b"k", b"v", 0, []) for t in ("orders.late", "orders.dlq")]
    if gone:
        with pytest.raises(BrokerDataLost):
            await send(records, SourceCommit("orders", 0, 1, "g"))
    else:
        await send(records, SourceCommit("orders", 0, 1, "g"))
    assert checked == [{"orders.late", "orders.dlq"}]


def _poisoned(pipeline: Pipeline, marker: bytes, error: type[BaseException]) -> Callable:
    """The pipeline's `process`, raising `error` (after staging) when a record holds `marker`:
    a bug that only some records meet."""
    process = pipeline.process

    def process_or_raise(state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = process(state, records)
        if any(marker in (r.value or b"") for r in records):
            raise error("a bug")
        return out

    return process_or_raise


def _recording(sent: list[Produce]) -> Callable:
    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sent.extend(records)

    return send


def _poison(records: list[SourceRecord], offsets: set[int]) -> list[SourceRecord]:
    for r in records:
        if r.offset in offsets:
            r.value = (r.value or b"").replace(b'"category": "c"', b'"category": "boom"')
    return records


@pytest.mark.parametrize("batches", [[range(0, 40)], [range(0, 13), range(13, 40)]])
async def test_a_record_that_makes_the_pipeline_raise_goes_to_the_dlq_and_the_rest_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batches: list[range]
) -> None:
    poisoned = {3, 17, 18, 30}  # the last one (39) too would leave a different applied offset
    results = {}
    for run, dropped in (("poisoned", set()), ("without", poisoned)):
        settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / run)})
        topology = Topology(settings, 1).select(["orders"])
        sent: list[Produce] = []
        pipeline = topology.pipelines[0]
        monkeypatch.setattr(pipeline, "process", _poisoned(pipeline, b"boom", RuntimeError))
        runner = PipelineRunner(pipeline, topology, _recording(sent), one_request=True)
        records = [r for r in _poison(_orders(0, 40), poisoned) if r.offset not in dropped]
        counts = BatchOutput()
        for batch in batches:
            counts.extend(await runner.handle_many({0: [r for r in records if r.offset in batch]}))
        await runner.flush(0)  # the windows' results (forwards to by-user are per batch)
        revenue = topology.physical("orders.revenue-1m")
        results[run] = (
            state_contents(runner._states[0].store),
            [(r.key, r.value) for r in sent if r.topic == revenue],
        )
        dead = {int(dict(r.headers)["kappa.source.offset"]) for r in sent if "dlq" in r.topic}
        assert dead == poisoned - dropped
        assert counts.counts.dlq_reasons == ({"processing_error": 4} if dead else {})
        runner.close()
    # The same state and windows as if the poisoned records had never been there.
    assert results["poisoned"][1] and results["poisoned"] == results["without"]


async def test_the_dead_letter_says_why_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])
    sent: list[Produce] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sent.extend(records)

    pipeline = topology.pipelines[0]
    monkeypatch.setattr(pipeline, "process", _poisoned(pipeline, b"boom", KeyError))
    runner = PipelineRunner(pipeline, topology, send)
    out = await runner.handle(0, _poison(_orders(0, 10), {6}))
    assert out.counts.dlq_reasons == {"processing_error": 1}
    assert (out.counts.events, await runner.applied_offset(0)) == (10, 9)
    (dead,) = [r for r in sent if r.topic == topology.physical("orders.dlq")]
    headers = dict(dead.headers)
    assert headers["kappa.error"] == b"processing_error"
    assert headers["kappa.error.detail"] == b"KeyError"
    assert headers["kappa.source.offset"] == b"6"
    assert dead.value is not None and b"boom" in dead.value
    runner.close()


@pytest.mark.parametrize("error", [MemoryError, OSError])
async def test_an_error_that_is_no_records_fault_stops_and_leaves_nothing_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    pipeline = topology.pipelines[0]
    runner = PipelineRunner(pipeline, topology, send, one_request=True)
    process = pipeline.process
    batches = {0: _poison(_orders(0, 7), {0})}
    for handle in (runner.handle_many, lambda b: runner.handle(0, b[0])):
        monkeypatch.setattr(pipeline, "process", _poisoned(pipeline, b"boom", error))
        with pytest.raises(error):
            await handle(batches)
        monkeypatch.setattr(pipeline, "process", process)
        assert (await runner.state(0)).staged_bytes() == 0
    await runner.handle_many(batches)
    (raw,) = (await runner.state(0)).get_values("user-partials", ["u0"])
    assert raw is not None and decode_partial(raw)[0] == 1  # u0 ordered once, not three times
    runner.close()


@pytest.mark.parametrize("many", [False, True])
async def test_only_the_first_batch_after_a_partition_opens_can_have_a_gap(
    tmp_path: Path, many: bool
) -> None:
    """Later batches follow the consumer's position: offsets skipped between them are
    transaction markers (or compacted away), which a gap read would find empty every batch."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 1).select(["orders"])
    source = _orders(0, 30)
    reads: list[tuple[int, int]] = []

    async def read_gap(partition: int, start: int, end: int) -> AsyncIterator[list[SourceRecord]]:
        reads.append((start, end))
        yield source[start:end]

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(topology.pipelines[0], topology, send, read_gap, one_request=True)

    async def deliver(records: list[SourceRecord]) -> None:
        await (runner.handle_many({0: records}) if many else runner.handle(0, records))

    await deliver(source[5:10])  # the committed offset ran ahead of the new state: read 0-4
    await deliver(source[12:20])  # 10 and 11 were a transaction's markers
    assert reads == [(0, 5)]
    runner.close_partition(0)
    await deliver(source[25:30])  # reopened: 20-24 are read again
    assert reads == [(0, 5), (20, 25)]
    assert await runner.applied_offset(0) == 29
    runner.close()


async def test_a_bug_that_meets_every_fourth_record_dead_letters_just_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select(["orders"])
    sent: list[Produce] = []
    pipeline = topology.pipelines[0]
    monkeypatch.setattr(pipeline, "process", _poisoned(pipeline, b"boom", ValueError))
    runner = PipelineRunner(pipeline, topology, _recording(sent))
    poisoned = set(range(3, 4_000, 4))
    out = await runner.handle(0, _poison(_orders(0, 4_000), poisoned))
    assert out.counts.dlq_reasons == {"processing_error": 1_000}
    dead = [int(dict(r.headers)["kappa.source.offset"]) for r in sent if "dlq" in r.topic]
    assert dead == sorted(poisoned)
    assert (out.counts.events, await runner.applied_offset(0)) == (4_000, 3_999)
    runner.close()


async def test_a_corrupt_state_file_stops_the_partition_instead_of_dead_lettering(
    tmp_path: Path,
) -> None:
    """rocksdict raises a bare Exception for I/O and corruption errors: no record's fault."""
    from tables.rocks import StateIOError

    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select(["orders"])
    sent: list[Produce] = []
    runner = PipelineRunner(topology.pipelines[0], topology, _recording(sent))
    orders = _orders(0, 40)
    await runner.handle(0, orders[:10])  # products p00000-p00009
    runner._states[0].store.db.flush()
    older = set((tmp_path / "v1").rglob("*.sst"))
    await runner.handle(0, orders[10:20])  # other products; the applied offset, in a newer file
    runner._states[0].store.db.flush()
    runner.close()
    for table in older:  # a bad sector in the older file
        with table.open("r+b") as f:
            f.write(b"\xff" * 64)
    runner = PipelineRunner(topology.pipelines[0], topology, _recording(sent))
    sent.clear()
    again = [  # the first products again: their windows are read from the older file
        SourceRecord(r.topic, 0, 20 + i, r.timestamp, r.key, r.value)
        for i, r in enumerate(orders[:10])
    ]
    with pytest.raises(StateIOError, match="stop the worker, remove it with"):
        await runner.handle(0, again)
    state = runner.open_state(0)
    assert not sent and state is not None and state.applied_offset == 19
    runner.close()


_FORWARD = {"user_id": "u0", "src": [0, 1], "orders": 1, "spend": 1.0, "ts": 1}
_WINDOW = {"product_id": "p1", "window_start": 0, "window_end": 60_000, "count": 1, "sum": 2.0}
_REPORT = {"src": 0, "from": None, "wm": 1, "w": [["p1", 0, 60_000, 2.0, 1]]}


@pytest.mark.parametrize(
    "pipeline,table,key,record",
    [
        ("orders", "user-partials", "u5", None),  # the order at offset 5 is u5's
        ("user-totals", "user-totals", "u0", ("orders.by-user", b"u0", _FORWARD)),
        ("product-trends", "product-trends", "p1", ("orders.revenue-1m", b"p1", _WINDOW)),
        ("top-products", "quiet-products", "pp1", ("orders.by-window", b"w", _REPORT)),
    ],
)
async def test_a_stored_value_no_release_can_decode_stops_the_partition_and_dead_letters_nothing(
    tmp_path: Path, pipeline: str, table: str, key: str, record: tuple[str, bytes, dict] | None
) -> None:
    """The state's fault, not the record's: a replay into fresh state would never meet it, so
    dead-lettering the record would leave outputs no replay gives. It stops with one line
    naming the store, the partition, the key and the directory to remove; the record stays
    unapplied, to be processed once the state is rebuilt."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select([pipeline])
    sent: list[Produce] = []
    runner = PipelineRunner(topology.pipelines[0], topology, _recording(sent))
    state = await runner.state(0)
    state.put_value(table, key, b"\x07 no release wrote this")
    state.prepare(4)
    state.commit()
    if record is None:
        batch = _orders(0, 6)[5:]
    else:
        topic, record_key, value = record
        batch = [SourceRecord(topic, 0, 5, None, record_key, json.dumps(value).encode())]
    for _ in range(2):  # not skipped past: it stops again
        with pytest.raises(StateError) as caught:
            await runner.handle(0, batch)
        line = str(caught.value)
        assert line.startswith(
            f"{pipeline} partition 0: the stored {table} value of key '{key}' cannot be decoded ("
        )
        assert f"`rm -rf {tmp_path / 'v1' / pipeline / 'p0'}`" in line and "\n" not in line
    assert sent == [] and state.applied_offset == 4 and state.staged_bytes() == 0
    runner.close()


_DUE = f"d00000:{1 << 63:020d}"  # quiet-products: a silence due at 0 on source partition 0


@pytest.mark.parametrize(
    "pipeline,stored,shown,records",
    [
        # a window too short for its end and start: closing scans read every window key
        (
            "orders",
            b"Wrevenue-tumbling-60000ms\0\x80\x00",
            "revenue-tumbling-60000ms key b'\\x80\\x00'",
            None,
        ),
        # a top-products window key: read by the scan of the windows all partitions passed
        ("top-products", b"Ktop-products\0w00:x", "top-products key 'w00:x'", "all"),
        ("top-products", b"Ktop-products\0w00\xff", "top-products key b'w00\\xff'", "all"),
        # a due silence without its product: read by the scan of the silences due
        (
            "top-products",
            f"Kquiet-products\0{_DUE}p1".encode(),
            f"quiet-products key '{_DUE}p1'",
            "one",
        ),
    ],
    ids=["window", "ranking-window", "ranking-window-not-utf8", "quiet-due"],
)
async def test_a_stored_key_no_release_can_decode_stops_the_partition_and_dead_letters_nothing(
    tmp_path: Path, pipeline: str, stored: bytes, shown: str, records: str | None
) -> None:
    """As for a value: read back by a range scan, a key that cannot be decoded once made every
    record that scanned it a `processing_error`, where a replay into fresh state has none."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select([pipeline])
    sent: list[Produce] = []
    runner = PipelineRunner(topology.pipelines[0], topology, _recording(sent))
    state = await runner.state(0)
    state.stage(stored, b"[]")
    state.prepare(4)
    state.commit()
    if records is None:
        batch = _orders(0, 6)[5:]
    else:  # reports of source partition 0, or of every one (windows up to 60 s are final)
        reporting = range(settings.partitions if records == "all" else 1)
        reports = [{**_REPORT, "src": p, "wm": 60_000} for p in reporting]
        batch = [
            SourceRecord("orders.by-window", 0, 5 + i, None, b"w", json.dumps(r).encode())
            for i, r in enumerate(reports)
        ]
    for _ in range(2):  # not skipped past: it stops again
        with pytest.raises(StateError) as caught:
            await runner.handle(0, batch)
        line = str(caught.value)
        assert line.startswith(f"{pipeline} partition 0: the stored {shown} cannot be decoded (")
        assert f"(`rm -rf {tmp_path / 'v1' / pipeline / 'p0'}`) and restart the worker:" in line
        assert "\n" not in line
    assert sent == [] and state.applied_offset == 4 and state.staged_bytes() == 0
    runner.close()


def test_the_processing_error_count_is_exported_from_the_start(tmp_path: Path) -> None:
    """At 0, so that an alert on its increase also sees the first one."""

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    topology = Topology(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 77).select(["orders"])
    labels = {"pipeline": "orders", "version": "77", "reason": "processing_error"}
    assert REGISTRY.get_sample_value("kappa_dlq_total", labels) is None
    PipelineRunner(topology.pipelines[0], topology, send).close()
    assert REGISTRY.get_sample_value("kappa_dlq_total", labels) == 0.0


async def test_a_bug_that_meets_every_record_costs_one_durable_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select(["orders"])
    sends: list[list[Produce]] = []

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        sends.append(records)

    pipeline = topology.pipelines[0]
    monkeypatch.setattr(pipeline, "process", _poisoned(pipeline, b'"category"', TypeError))
    runner = PipelineRunner(pipeline, topology, send)
    out = await runner.handle(0, _orders(0, 500))
    assert out.counts.dlq_reasons == {"processing_error": 500}
    assert len(sends) == 1 and await runner.applied_offset(0) == 499
    offsets = [int(dict(r.headers)["kappa.source.offset"]) for r in sends[0] if not r.atomic]
    assert offsets == list(range(500))
    runner.close()


async def test_every_failure_of_concurrent_batches_is_retrieved() -> None:
    """Two partitions' batches failing together: the second failure must not be logged later,
    with its traceback, as a task exception never retrieved."""
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    gc.collect()  # earlier tests' garbage (an unclosed client) is not this test's to report
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: unretrieved.append(context["message"]))

    async def fail(message: str) -> None:
        raise ConnectionError(message)

    try:
        with contextlib.suppress(ConnectionError):
            await runtime.run_concurrently([fail("a"), fail("b")])
        gc.collect()
    finally:
        loop.set_exception_handler(previous)  # the session's loop: later tests report again
    assert unretrieved == []


async def test_a_partition_let_go_stops_exporting_its_stream_time(tmp_path: Path) -> None:
    """After a rebalance the old owner kept a frozen `kappa_stream_time_ms` for it."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, 7).select(["orders"])  # a version of its own: its own series

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    runner = PipelineRunner(topology.pipelines[0], topology, send, one_request=True)
    await runner.handle_many({0: _orders(0, 3), 1: _orders(1, 3)})

    def exported(partition: int) -> float | None:
        labels = {"pipeline": "orders", "version": "7", "partition": str(partition)}
        return REGISTRY.get_sample_value("kappa_stream_time_ms", labels)

    assert exported(0) is not None and exported(1) is not None
    runner.close_partition(1)
    assert exported(0) is not None and exported(1) is None
    runner.close()


def _missing(version: int, pipeline: str = "orders") -> float | None:
    labels = {"pipeline": pipeline, "version": str(version)}
    return REGISTRY.get_sample_value("kappa_source_offsets_missing_total", labels)


@pytest.mark.parametrize("many", [False, True])
@pytest.mark.parametrize("hold", [False, True])
async def test_offsets_without_a_record_are_counted_once_each(
    tmp_path: Path, many: bool, hold: bool
) -> None:
    """Between batches, inside a batch, and not again for records delivered twice, for a
    batch retried after a failed send, or for a flush: the count an alert on lost records
    (or on a source's transaction markers) reads."""
    version = 9100 + 2 * many + hold
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, version).select(["orders"])
    source = _orders(0, 60)
    fail_next = False

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        nonlocal fail_next
        if fail_next:
            fail_next = False
            raise ConnectionError("broker gone")

    runner = PipelineRunner(
        topology.pipelines[0], topology, send, one_request=True, hold_changelog=hold
    )

    async def deliver(records: list[SourceRecord]) -> None:
        await (runner.handle_many({0: records}) if many else runner.handle(0, records))

    assert _missing(version) == 0  # exported from the start
    await deliver(source[0:10])
    await deliver(source[12:20])  # 10 and 11: two
    await deliver([*source[20:23], *source[26:30]])  # 23-25 inside the batch: three
    await deliver(source[25:35])  # 25-29 again (a restart's re-delivery): none
    fail_next = True
    with pytest.raises(ConnectionError):
        await deliver(source[40:45])
    await deliver(source[40:45])  # the retry of 35-39: five, once
    await runner.flush(0)
    assert _missing(version) == 2 + 3 + 5
    assert await runner.applied_offset(0) == 44
    runner.close()


async def test_offsets_before_the_first_record_taken_are_not_missing(tmp_path: Path) -> None:
    """A log whose start was deleted (retention), read by a new state or a replay from offset
    0, starts past 0: those offsets are not passed over. From the first record on, they are."""
    version = 9110
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / "state")})
    topology = Topology(settings, version).select(["orders"])
    source = _orders(0, 40)

    async def read_gap(partition: int, start: int, end: int) -> AsyncIterator[list[SourceRecord]]:
        yield source[max(start, 20) : end]  # the log starts at 20

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        pass

    live = PipelineRunner(topology.pipelines[0], topology, send, read_gap, one_request=True)
    await live.handle_many({0: source[25:30]})  # committed at 25: the gap 0-24 read from 20
    await live.handle_many({0: source[32:35]})
    assert _missing(version) == 2
    replay = PipelineRunner(topology.pipelines[0], topology, send, one_request=True)
    await replay.handle_many({1: _orders(1, 40)[30:35]})  # no gap reader: from the first
    assert _missing(version) == 2
    live.close()
    replay.close()


async def test_a_dead_lettered_record_is_not_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record the pipeline raised on goes to the DLQ and counts as taken, on every path of
    `_isolate`; only the real gap (offset 7) is missing."""
    version = 9120
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, version).select(["orders"])
    pipeline = topology.pipelines[0]
    monkeypatch.setattr(pipeline, "process", _poisoned(pipeline, b"boom", ValueError))
    runner = PipelineRunner(pipeline, topology, _recording([]))
    records = [r for r in _poison(_orders(0, 40), {0, 1, 5, 20, 39}) if r.offset != 7]
    out = await runner.handle(0, records)
    assert out.counts.dlq == 5
    assert _missing(version) == 1
    runner.close()


@pytest.mark.parametrize(
    ("guarantee", "pipeline", "warned"),
    [
        ("at_least_once", "user-totals", True),
        ("exactly_once", "orders", True),  # a source Kappa does not write: markers unknown
        ("exactly_once", "user-totals", False),  # Kappa writes its source in transactions
    ],
)
async def test_offsets_without_a_record_are_said_unless_the_source_has_markers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, guarantee: str, pipeline: str, warned: bool
) -> None:
    version = {"at_least_once": 9130, "exactly_once": 9131}[guarantee]
    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_PROCESSING_GUARANTEE": guarantee}
    )
    topology = Topology(settings, version).select([pipeline])
    runner = PipelineRunner(topology.pipelines[0], topology, _recording([]))
    source = [SourceRecord("src", 0, offset, None, b"k", b"not json") for offset in (0, 1, 2, 5, 6)]
    with caplog.at_level(logging.WARNING, logger=runtime.log.name):
        await runner.handle(0, source)  # dead-lettered, all taken: 3 and 4 held no record
    said = [r.getMessage() for r in caplog.records if "held no record" in r.getMessage()]
    assert said == (
        [
            f"{pipeline} p0: 2 source offsets after -1, up to 6, held no record: records lost "
            "before they were applied, unless the source is written in transactions (a commit "
            "marker each)"
        ]
        if warned
        else []
    )
    assert _missing(version, pipeline) == 2
    runner.close()

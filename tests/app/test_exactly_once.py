"""processing_guarantee=exactly_once, at the plumbing level: the embedded broker has no
transactions (its InitProducerId fails), so these check what Kappa asks of the producer and
consumers; a transactional broker (Apache Kafka, Redpanda) is needed to run it for real."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import ProducerClosed

from app.batch_producer import TransactionalSender
from app.kafka_clients import new_consumer
from app.runtime import Produce, SourceCommit
from app.settings import ConfigError, load_settings


class FakeTransactionalProducer:
    """Records the calls a transactional aiokafka producer receives (no broker involved)."""

    def __init__(self, fail_on_send: bool = False) -> None:
        self.calls: list[Any] = []
        self.fail_on_send = fail_on_send

    def transaction(self) -> FakeTransactionalProducer:
        return self

    async def __aenter__(self) -> None:
        self.calls.append("begin")

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        self.calls.append("abort" if exc_type else "commit")

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if self.fail_on_send:
            raise RuntimeError("broker said no")
        self.calls.append(("batch", topic, partition, len(batch.records)))
        fut: Any = __import__("asyncio").get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group: str) -> None:
        self.calls.append(
            ("offsets", {(tp.topic, tp.partition): o for tp, o in offsets.items()}, group)
        )


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, **record: Any) -> object:
        self.records.append(record)
        return object()

    def close(self) -> None:
        pass


def _sender(producer: FakeTransactionalProducer) -> TransactionalSender:
    from app.batch_producer import BatchSender

    sender = TransactionalSender("127.0.0.1:1", "kappa-v1-orders")
    sender._producers[3] = (producer, BatchSender(producer))  # type: ignore[assignment]
    return sender


RECORDS = [
    Produce("orders.revenue-1m", 0, b"p1", b"{}", 1, []),
    Produce("kappa-v1-orders-changelog", 3, b"k", b"v", None, [], atomic=True),
]
COMMIT = SourceCommit("orders", 3, 101, "kappa-v1")


async def test_a_batch_and_its_source_offset_commit_are_one_transaction() -> None:
    producer = FakeTransactionalProducer()
    await _sender(producer).send(RECORDS, COMMIT)
    assert producer.calls[0] == "begin" and producer.calls[-1] == "commit"
    assert ("offsets", {("orders", 3): 101}, "kappa-v1") in producer.calls
    assert {c[1] for c in producer.calls if isinstance(c, tuple) and c[0] == "batch"} == {
        "orders.revenue-1m",
        "kappa-v1-orders-changelog",
    }


async def test_a_failed_batch_aborts_its_transaction() -> None:
    producer = FakeTransactionalProducer(fail_on_send=True)
    with pytest.raises(RuntimeError):
        await _sender(producer).send(RECORDS, COMMIT)
    assert producer.calls == ["begin", "abort"]


async def test_exactly_once_consumers_read_committed_only() -> None:
    settings = load_settings({"KAPPA_PROCESSING_GUARANTEE": "exactly_once"})
    consumer = new_consumer(settings.kafka)
    default = new_consumer(load_settings({}).kafka)
    try:
        assert consumer._isolation_level == "read_committed"
        assert default._isolation_level == "read_uncommitted"
    finally:
        await consumer.stop()
        await default.stop()


def test_processing_guarantee_is_validated() -> None:
    with pytest.raises(ConfigError, match="KAPPA_PROCESSING_GUARANTEE"):
        load_settings({"KAPPA_PROCESSING_GUARANTEE": "exactly-once-please"})


def _wrapped_senders(app: Any) -> list[Any]:
    """What each runner's retrying sender wraps (its closure's `send_once`, a sender's bound
    method; the closure also holds its `topics_gone` check, a plain function)."""
    out = []
    for runner in app.kappa_runners:
        cells = [c.cell_contents for c in runner.send.__closure__ or ()]
        out.extend(c for c in cells if callable(c) and hasattr(c, "__self__"))
    return out


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
async def test_the_worker_sends_transactionally_only_under_exactly_once(
    guarantee: str, tmp_path: Any
) -> None:
    from app.worker import create_app

    settings = load_settings(
        {"KAPPA_PROCESSING_GUARANTEE": guarantee, "KAPPA_STATE_DIR": str(tmp_path)}
    )
    app = create_app(settings, 1)
    exactly_once = guarantee == "exactly_once"
    assert app.kappa_read_committed is exactly_once
    transactional = [
        isinstance(getattr(s, "__self__", None), TransactionalSender) for s in _wrapped_senders(app)
    ]
    assert transactional and all(t is exactly_once for t in transactional)
    # A partition's previous owner is fenced before its state is restored, not at the first send.
    fences = [getattr(r._opener.before_open, "__self__", None) for r in app.kappa_runners]
    assert all(isinstance(f, TransactionalSender) is exactly_once for f in fences)
    assert exactly_once or fences == [None] * len(fences)


async def test_the_worker_consumer_gets_the_fetch_wait_and_isolation_settings(
    tmp_path: Any,
) -> None:
    """faust hard-codes both; Kappa's consumer thread applies the settings to its consumer."""
    from app.batch_delivery import KappaConsumerThread
    from app.raw_records import RAW_RECORDS
    from app.worker import create_app

    settings = load_settings(
        {
            "KAPPA_PROCESSING_GUARANTEE": "exactly_once",
            "KAPPA_FETCH_MAX_WAIT_MS": "7",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )
    app = create_app(settings, 1)
    thread = app.consumer._thread
    assert isinstance(thread, KappaConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 7
        assert consumer._isolation_level == "read_committed"
        assert consumer._value_deserializer is RAW_RECORDS  # no ConsumerRecord per record
    finally:
        await consumer.stop()


async def test_each_worker_pipeline_sends_through_its_own_producer(tmp_path: Any) -> None:
    from app.batch_producer import OwnProducerSender
    from app.worker import create_app

    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    owners = [getattr(s, "__self__", None) for s in _wrapped_senders(app)]
    assert len(owners) == len(app.kappa_runners) == 4
    assert all(isinstance(o, OwnProducerSender) for o in owners)
    assert len({id(o) for o in owners}) == 4
    assert all(r.one_request for r in app.kappa_runners)  # a cycle's partitions in one request


async def test_the_worker_freezes_its_start_up_heap(tmp_path: Any) -> None:
    import gc

    from app.collector import YOUNG_THRESHOLD
    from app.worker import create_app, freeze_startup_heap

    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    assert freeze_startup_heap in [t.__wrapped__ for t in app._app_tasks]  # runs at start
    before = gc.get_threshold()
    try:
        await freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_fenced_worker_stops_instead_of_retrying(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer producer with the same transactional id fenced this one: the worker is a zombie
    and must stop, not retry the batch as if the broker were briefly away."""
    import asyncio
    import json

    from aiokafka.errors import ProducerFenced
    from faust.types import TP

    from agents.base import SourceRecord
    from app import worker

    attempts = []

    async def fenced(self: TransactionalSender, records: Any, commit: Any) -> None:
        attempts.append(1)
        raise ProducerFenced()

    monkeypatch.setattr(TransactionalSender, "send", fenced)
    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_PROCESSING_GUARANTEE": "exactly_once"}
    )
    app = worker.create_app(settings, 1, ["orders"])
    stopped: list[BaseException] = []

    async def stop_on_error(exc: BaseException, line: str) -> None:
        stopped.append(exc)

    monkeypatch.setattr(app, "kappa_stop_on_error", stop_on_error)
    app._consumer = _NoConsumer()  # type: ignore[assignment]
    for runner in app.kappa_runners:  # no broker here: nothing to restore or fence
        runner._opener.changelog_source = None
        runner._opener.before_open = None
    await app.kappa_runners[0].state(0)  # open: a revoke finishes only open partitions
    (source, buffer), *_ = app.kappa_batch_buffers.items()
    order = {"order_id": "1", "user_id": "u", "product_id": "p", "category": "c"}
    value = json.dumps({**order, "amount": 1.0, "quantity": 1, "ts": 1_700_000_000_000})
    await buffer.put_many(0, [SourceRecord(source, 0, 0, None, b"p", value.encode())])
    await asyncio.wait_for(app.on_partitions_revoked.send({TP(source, 0)}), 10)
    assert len(attempts) == 1 and isinstance(stopped[0], ProducerFenced)


class _NoConsumer:
    def highwater(self, tp: Any) -> None:
        return None


async def test_a_revoked_partitions_transactional_producer_is_let_go(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker taking the partition over fences its transactional id: a producer kept for
    it would be fenced when the partition comes back, and the worker stop as a zombie."""
    import asyncio

    from faust.types import TP

    from app import worker

    stopped: list[str] = []

    class _Producer:
        def __init__(self, name: str) -> None:
            self.name = name

        async def stop(self) -> None:
            stopped.append(self.name)

    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_PROCESSING_GUARANTEE": "exactly_once"}
    )
    app = worker.create_app(settings, 1, ["orders"])
    app._consumer = _NoConsumer()  # type: ignore[assignment]
    (sender,) = [s.__self__ for s in _wrapped_senders(app)]
    sender._producers = {0: (_Producer("p0"), None), 1: (_Producer("p1"), None)}
    (source, _), *_ = app.kappa_batch_buffers.items()
    await asyncio.wait_for(app.on_partitions_revoked.send({TP(source, 0)}), 10)
    assert stopped == ["p0"] and list(sender._producers) == [1]


async def test_a_fence_the_broker_refuses_for_good_is_said_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without Write on the transactional id the fence can never succeed: stop in one line,
    as a refused send does, rather than retry it as broker trouble."""
    from aiokafka.errors import KafkaConnectionError, TransactionalIdAuthorizationFailed

    from app.send_refusals import SendRefused

    errors: list[BaseException] = [TransactionalIdAuthorizationFailed(), KafkaConnectionError()]

    async def failing(self: TransactionalSender, partition: int) -> Any:
        raise errors.pop(0)

    monkeypatch.setattr(TransactionalSender, "_for", failing)
    sender = TransactionalSender("127.0.0.1:1", "kappa-v1-orders")
    with pytest.raises(SendRefused, match="transactional id kappa-v1-orders-3"):
        await sender.fence(3)
    with pytest.raises(KafkaConnectionError):  # passing trouble: the caller retries
        await sender.fence(3)


async def test_a_closed_transactional_sender_starts_no_producer() -> None:
    """A batch sending as the worker stops started a new transactional producer after
    `close()`, which nothing stopped; now it fails as closed (`retrying` then gives up)."""
    sender = TransactionalSender("127.0.0.1:1", "kappa-v1-orders")
    await sender.close()
    with pytest.raises(ProducerClosed):
        await sender.send([], SourceCommit("orders", 0, 1, "kappa-v1"))
    assert sender._producers == {}

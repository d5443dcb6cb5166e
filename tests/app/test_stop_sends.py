"""A stop (the worker's, a replay's): a replay's batch under way is finished, and every
pipeline's held changelog entries go out at once, all in one deadline."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from app.kafka_runner import StopDeadline, close_on_stop, finish_on_stop, send_held_on_stop
from app.runtime import PipelineRunner
from tests.support.fakes import until


@dataclass
class FakeRunner:
    """The two calls the stop makes, with what happened to them."""

    name: str
    send: Any  # async () -> None
    sent: bool = False
    stopped: bool = False
    pipeline: Any = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = type("P", (), {"name": self.name})()

    async def send_held(self) -> None:
        await self.send()
        self.sent = True

    def stop_sending_held(self) -> None:
        self.stopped = True


def as_runners(*fakes: FakeRunner) -> list[PipelineRunner]:
    return cast(list[PipelineRunner], list(fakes))


async def test_pipelines_send_their_held_entries_at_the_same_time() -> None:
    """The first pipeline's send finishes only once the second's has started: one after the
    other, the first would run out its deadline waiting."""
    second_started = asyncio.Event()

    async def wait_for_second() -> None:
        await second_started.wait()

    async def start() -> None:
        second_started.set()

    first, second = FakeRunner("orders", wait_for_second), FakeRunner("user-totals", start)
    await send_held_on_stop(as_runners(first, second), StopDeadline(10))
    assert first.sent and second.sent
    assert first.stopped and second.stopped


async def test_a_send_that_never_ends_is_cut_at_the_deadline_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    async def refused() -> None:
        raise OSError("connection refused")

    async def fine() -> None:
        return None

    hung, failed, ok = FakeRunner("a", never), FakeRunner("b", refused), FakeRunner("c", fine)
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        await send_held_on_stop(as_runners(hung, failed, ok), StopDeadline(0.05))
    assert (hung.sent, failed.sent, ok.sent) == (False, False, True)
    assert hung.stopped and failed.stopped and ok.stopped  # background sends cancelled too
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("a: held changelog entries not sent on stop") for m in said)
    assert any("b: held changelog entries not sent on stop" in m and "refused" in m for m in said)


async def test_a_stop_lets_the_batch_under_way_finish_then_stops() -> None:
    """Cancelled while its outputs are on their way, the batch is still made durable (else a
    resumed replay writes its copies again); then the cancel goes on."""
    sending, acknowledged, done = asyncio.Event(), asyncio.Event(), []

    async def batch() -> int:
        sending.set()
        await acknowledged.wait()
        done.append("committed")
        return 7

    stage = asyncio.ensure_future(finish_on_stop(batch(), StopDeadline(10)))
    await sending.wait()
    stage.cancel()  # Ctrl-C
    acknowledged.set()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert done == ["committed"]


async def test_a_batch_that_does_not_finish_by_the_deadline_is_cancelled() -> None:
    deadline = StopDeadline(0.05)
    cancelled = []

    async def batch() -> None:
        try:
            await asyncio.Event().wait()  # a broker that does not answer
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    stage = asyncio.ensure_future(finish_on_stop(batch(), deadline))
    await asyncio.sleep(0)  # the batch starts: a cancel before would not run it at all
    stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert cancelled == [True]


async def test_a_batch_without_a_stop_gives_its_result() -> None:
    async def batch() -> int:
        return 7

    assert await finish_on_stop(batch(), StopDeadline()) == 7


async def test_a_second_stop_while_the_batch_finishes_cancels_the_batch_too() -> None:
    """It does not outlive the stage, whose runner closes next."""
    cancelled, started = [], asyncio.Event()

    async def batch() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    stage = asyncio.ensure_future(finish_on_stop(batch(), StopDeadline(10)))
    await started.wait()
    stage.cancel()  # the first stop: the stage waits for the batch
    await asyncio.sleep(0)
    stage.cancel()  # the second
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert cancelled == [True]


async def test_a_batch_failing_as_a_second_stop_cancels_it_is_said_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def batch() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    stage = asyncio.ensure_future(finish_on_stop(batch(), StopDeadline(10)))
    await started.wait()
    stage.cancel()
    await asyncio.sleep(0)  # the first stop reaches the stage, which waits for the batch
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        stage.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stage
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the batch under way at the stop failed (RuntimeError('cleanup failed'))"]


async def test_a_worker_stop_gives_the_held_entries_their_own_time_after_a_stuck_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One pipeline's batch runs its deadline out (a restore, a broker not answering): the
    others' held entries still go out. Sharing one deadline, they got none and were read, and
    copied, again."""
    from app import worker

    monkeypatch.setattr("app.kafka_runner.HELD_SEND_ON_STOP_S", 0.05)

    class StuckDriver:
        async def finish_batch(self) -> None:
            with contextlib.suppress(TimeoutError):  # what `finish_batch` does: wait it out
                await asyncio.wait_for(asyncio.Event().wait(), StopDeadline().remaining_s())

    async def fine() -> None:
        return None

    others = FakeRunner("user-totals", fine)
    await worker.finish_and_send_held([StuckDriver()], as_runners(others))  # type: ignore[list-item]
    assert others.sent


async def test_a_second_stop_before_the_close_runs_leaves_no_close_never_awaited() -> None:
    """A second Ctrl-C ends `asyncio.run`, which cancels every task left: the close's among
    them, possibly before it first ran. A `producer.stop()` made before then was never
    awaited (a warning at garbage collection); a close is made only once its task runs."""
    made: list[Coroutine[Any, Any, None]] = []

    async def stop() -> None:
        pass

    def close() -> Coroutine[Any, Any, None]:
        made.append(stop())
        return made[-1]

    others = asyncio.all_tasks()
    closing = asyncio.ensure_future(close_on_stop([close], "closing the producer"))
    me = asyncio.current_task()
    await until(lambda: bool(asyncio.all_tasks() - others - {me, closing}), "the close's task made")
    for task in asyncio.all_tasks() - others - {asyncio.current_task()}:
        task.cancel()  # as `asyncio.run` does, in the order it finds them
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert made == []
    await close_on_stop([close], "closing the producer")  # without a stop: made and awaited
    assert [inspect.getcoroutinestate(c) for c in made] == [inspect.CORO_CLOSED]


async def test_closes_at_a_normal_end_past_the_deadline_say_so_without_a_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A command's end (every batch acknowledged) closes its clients within the same deadline,
    a broker gone quiet since costing no 40 s; the warning names no stop there was not."""
    closed: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def closes() -> None:
        closed.append("closed")

    async def fails() -> None:
        raise OSError("connection reset")

    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        await close_on_stop([hangs, closes, fails], "closing the producers", StopDeadline(0.05))
    assert closed == ["closed"]
    assert sorted(r.getMessage() for r in caplog.records) == [
        "closing the producers did not end within 0.05s; cancelled",
        "closing the producers failed (OSError('connection reset'))",
    ]

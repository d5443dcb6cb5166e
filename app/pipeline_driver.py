"""Feeds one pipeline's delivered batches to its `PipelineRunner`, and hands its partitions
over on a rebalance, so that a worker does not write for partitions the group may have given
to someone else.

Under `at_least_once` nothing fences a worker that lost its partitions, so two rules here
keep it from writing for them (a late changelog entry would land after the next owner's):
- a batch goes to the runner only if no revoke is waiting once its partitions are open (a
  restore can take minutes; by then the group may have moved on);
- a revoke must finish within `revoke_deadline_s` of its start (half the rebalance timeout);
  past it, the partitions are let go without sending more (record batches already handed to
  the producer still go out). What was not sent is read again, exactly, by the next owner
  (README "Guarantees").
A worker's pipelines are revoked at once (`revoke_all`), each within that deadline.
A stop ends the drain loop as a replay's stop ends a stage (`finish_on_stop`): the batch under
way finishes within the stop's deadline, else it is cancelled and read again on restart.
Client-agnostic: the worker adapts faust's consumer and signals to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError, ProducerFenced

from agents.base import Record
from app.batch_buffer import BatchBuffer
from app.kafka_runner import StopDeadline, finish_on_stop
from app.runtime import PipelineRunner, SenderClosed, SourceEndBehind
from app.send_refusals import ReadRefused, SendRefused, read_refusal
from app.topic_reader import TopicMissing
from tables.rocks import StateError

# Errors that stop the worker in order, said in one line (no traceback: they are not bugs).
ONE_LINE_STOPS = (StateError, SendRefused, ReadRefused, TopicMissing)

log = logging.getLogger(__name__)
# Backoff (s) between attempts to open an assigned partition's state that broker trouble failed.
OPEN_RETRY_FIRST_S = 0.5
OPEN_RETRY_MAX_S = 10.0


class SourceConsumer(Protocol):
    """The consumer of the pipeline's source topic, by partition number."""

    def highwater(self, partition: int) -> int | None: ...

    def assigned(self) -> set[int]: ...

    def ack(self, partition: int, offsets: list[int]) -> None: ...


async def revoke_all(drivers: Sequence[PipelineDriver], parts: Sequence[set[int]]) -> None:
    """Revoke every pipeline's partitions at once: one after the other, a pipeline still
    draining would keep sending for partitions being revoked, and the deadlines would add up."""
    await asyncio.gather(*(d.on_revoked(p) for d, p in zip(drivers, parts, strict=True)))


class PipelineDriver:
    def __init__(
        self,
        runner: PipelineRunner,
        buffer: BatchBuffer,
        consumer: SourceConsumer,
        *,
        linger_s: float,
        revoke_deadline_s: float,
        release: Callable[[set[int]], Awaitable[None]],
        fail: Callable[[BaseException, str], Awaitable[None]],
        crash: Callable[[BaseException], Awaitable[None]],
        should_stop: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        stop_deadline_s: float | None = None,
    ) -> None:
        self.runner = runner
        self.name = runner.pipeline.name
        self.buffer = buffer
        self.consumer = consumer
        self.linger_s = linger_s
        self.revoke_deadline_s = revoke_deadline_s
        self.release = release
        self.fail = fail  # says the error in one line and stops the worker
        self.crash = crash  # stops it on a bug, with its traceback
        self.should_stop = should_stop
        self.clock = clock
        self.lock = asyncio.Lock()  # one batch, open or hand-over at a time
        self.revokes_waiting = 0
        self.rebalances = 0  # revokes seen: an open scheduled before the latest one is stale
        self._opening: set[asyncio.Future[None]] = set()
        self._in_flight: asyncio.Future[None] | None = None  # the batch being processed
        self._draining: asyncio.Future[Any] | None = None  # the task of the drain loop
        # How long the batch under way at a stop may take to finish (`finish_batch`)
        self.stop_deadline = StopDeadline(stop_deadline_s)
        # Backoff of a partition open that broker trouble failed: (first, longest) delay in s.
        self.open_retry_s = (OPEN_RETRY_FIRST_S, OPEN_RETRY_MAX_S)

    async def drain(self) -> None:
        """Take what is buffered as one batch, process it, repeat until the worker stops
        (`finish_batch`)."""
        self._draining = asyncio.current_task()
        try:
            while not self.should_stop():
                if not self.buffer.size:  # idle: the last batch's changelog need not wait
                    self.runner.send_held_soon()
                await self.buffer.wait_for_batch(self.linger_s)
                async with self.lock:
                    taken = self.buffer.take()  # empty if a revoke took it meanwhile
                    if taken:
                        await self._process_abandonable(taken)
        except asyncio.CancelledError:
            raise
        except SenderClosed:  # the worker stops: nothing can send this batch, read it again
            log.info("%s: stopping; the batch in progress is left to be read again", self.name)
        except ONE_LINE_STOPS as exc:
            await self._stop(exc)
        except ProducerFenced as exc:
            await self._stop(exc, f"{self.name}: fenced by a newer producer; stopping")
        except Exception as exc:  # a bug, not bad data (that goes to the DLQ): stop loudly
            log.exception("pipeline %s failed", self.name)
            await self.crash(exc)

    async def _stop(self, exc: BaseException, line: str | None = None) -> None:
        """Stop the worker, saying why in one ERROR line (`line`, else the error itself)."""
        await self.fail(exc, str(exc) if line is None else line)

    async def _process_abandonable(self, taken: dict[int, Sequence[Record]]) -> None:
        """Process a batch in a task of its own, which a revoke past its deadline cancels
        (`abandon_batch`): a send still being retried then sends nothing more, so no entry of
        a revoked partition lands after its next owner's. The drain loop cancelled (the worker
        stops: `finish_batch`), the batch finishes within the stop's deadline, else it is
        cancelled too: not acknowledged, its state not committed, its records read again."""
        work = asyncio.ensure_future(self._process_with_retry(taken))
        self._in_flight = work
        try:
            await finish_on_stop(
                work, self.stop_deadline, f"{self.name}: the batch under way at the stop"
            )
            return
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker stops
        finally:
            self._in_flight = None
        # abandoned: not acknowledged, its records read again
        log.warning("%s: batch abandoned for a revoke past its deadline", self.name)
        for partition in taken:  # a reopened partition reads the gap
            self.runner.close_partition(partition)

    async def finish_batch(self) -> None:
        """On stop, before the senders close: end the drain loop, so that no batch starts
        any more, once the batch under way finished, within the stop's deadline, or was
        cancelled past it (`finish_on_stop`). Left running instead, it met the closed senders
        and was read again all the same, after the stop had waited for it in vain."""
        draining = self._draining
        if draining is not None and not draining.done():
            draining.cancel()
            await asyncio.wait({draining})  # its outcome is the drain loop's owner's (faust)

    def abandon_batch(self) -> None:
        """Cancel the batch in progress, if any (its state changes are discarded)."""
        if self._in_flight is not None:
            self._in_flight.cancel()

    async def _process(self, taken: dict[int, Sequence[Record]]) -> None:
        for partition in taken:  # opens (maybe restores) the partitions' states
            if self.revokes_waiting:
                break
            await self.runner.check_log_kept(partition, self.consumer.highwater(partition))
        if self.revokes_waiting:
            # Not sent, not acknowledged. The partitions are closed too: records delivered
            # after these must not be applied past them (a reopened partition reads the gap).
            log.info("%s: a revoke is waiting; batch left to be read again", self.name)
            for partition in taken:
                self.runner.close_partition(partition)
            return
        await self.runner.handle_many(taken)  # one produce round trip for all partitions
        for partition, records in taken.items():
            self.consumer.ack(partition, [r.offset for r in records])

    async def _process_with_retry(self, taken: dict[int, Sequence[Record]]) -> None:
        """Broker trouble (unreachable, restarting) is waited out with backoff. Retrying the
        whole batch is safe: records already applied are skipped, and state is committed only
        after its outputs were acknowledged."""
        delay = 0.2
        while True:
            try:
                await self._process(taken)
                return
            except ProducerFenced:  # another worker owns these partitions now: a zombie stops
                raise
            except SourceEndBehind as e:
                log.warning("%s: %s; waiting for the broker to catch up", self.name, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except (TimeoutError, KafkaError, OSError) as e:
                refused = read_refusal(e, self.name)
                if refused is not None:
                    raise refused from e
                log.warning(
                    "%s: broker trouble (%s); retrying in %.1fs", self.name, type(e).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def on_assigned(self, parts: set[int]) -> None:
        """Open the assigned partitions' states in the background: a restore can take long,
        and the rebalance must not wait for it."""
        if parts:
            opening = asyncio.ensure_future(self._open_assigned(parts, self.rebalances))
            self._opening.add(opening)
            opening.add_done_callback(self._opening.discard)

    async def _open_assigned(self, parts: set[int], scheduled_at: int) -> None:
        """Open (restoring where the changelog is ahead) the states of assigned partitions
        before their first record: queries answer at once after a restart or a rebalance,
        not only once each partition gets new input.

        A partition that broker trouble keeps from opening does not hold up the others, and is
        tried again, with backoff, while it stays assigned and no newer rebalance came: the
        first batch would open it too, but a quiet partition may get none for long, and the
        worker is not ready (`/ready`) meanwhile."""
        delay_s, max_delay_s = self.open_retry_s
        said = False
        try:
            while True:
                failed: BaseException | None = None
                refused: BaseException | None = None
                async with self.lock:
                    for partition in sorted(parts & self.consumer.assigned()):
                        if self._open_is_stale(scheduled_at):
                            return
                        if self.runner.open_state(partition) is not None:
                            continue
                        try:
                            await self.runner.state(partition)
                        except (TimeoutError, KafkaError, OSError) as e:
                            failed, refused = e, read_refusal(e, self.name)
                            if refused is not None:
                                break  # retrying cannot fix it
                if refused is not None:  # stopped outside the lock: a revoke may need it
                    await self._stop(refused)
                    return
                if failed is None:
                    return
                if not said:  # once: the retries go on quietly
                    log.warning(
                        "%s: assigned partitions not opened yet (%r); trying again",
                        self.name,
                        failed,
                    )
                    said = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, max_delay_s)
                if self._open_is_stale(scheduled_at):
                    return
        except asyncio.CancelledError:
            raise
        except ONE_LINE_STOPS as exc:
            await self._stop(exc)
        except Exception as exc:  # a bug: stop loudly, as the drain loop does
            log.exception("pipeline %s: opening assigned partitions failed", self.name)
            await self.crash(exc)

    def _open_is_stale(self, scheduled_at: int) -> bool:
        """A revoke came since the open was scheduled (or is waiting), or the worker stops."""
        return scheduled_at != self.rebalances or bool(self.revokes_waiting) or self.should_stop()

    async def on_revoked(self, parts: set[int]) -> None:
        """Finish what was delivered for the revoked partitions and send their held changelog
        entries, then let them go; or, past the deadline, let them go at once."""
        self.rebalances += 1
        if not parts:
            return
        started = self.clock()
        for opening in self._opening:  # a restore in progress: the partitions may be going
            opening.cancel()
        self.revokes_waiting += 1
        try:
            acquiring = asyncio.ensure_future(self.lock.acquire())
            try:
                left = self.revoke_deadline_s - (self.clock() - started)
                if not (await asyncio.wait({acquiring}, timeout=max(left, 0.0)))[0]:
                    self.abandon_batch()  # past the deadline: it must send nothing more
                await acquiring
            except asyncio.CancelledError:
                if acquiring.done() and not acquiring.cancelled():
                    self.lock.release()  # granted just before the cancel
                else:
                    acquiring.cancel()
                raise
        finally:
            self.revokes_waiting -= 1
        try:
            taken = self.buffer.take(parts)
            left = self.revoke_deadline_s - (self.clock() - started)
            try:
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._hand_over(parts, taken), left)
            except SenderClosed:  # the worker stops: let go unsent, as past the deadline
                log.info("%s: stopping; partitions %s let go unsent", self.name, sorted(parts))
                for partition in parts:
                    self.runner.close_partition(partition)
            except TimeoutError:
                log.warning(
                    "%s: partitions %s revoked but not handed over within %.1fs (half "
                    "KAPPA_REBALANCE_TIMEOUT_MS); let go unsent: their next owner reads the "
                    "last batches again",
                    self.name,
                    sorted(parts),
                    self.revoke_deadline_s,
                )
                self.runner.stop_sending_held()  # the next batch or idle time sends the rest
                for partition in parts:
                    self.runner.close_partition(partition)
        except ProducerFenced as exc:
            await self._stop(exc, f"{self.name}: fenced by a newer producer; stopping")
            return
        except ONE_LINE_STOPS as exc:  # as in the drain loop, not out into faust's rebalance
            await self._stop(exc)
            return
        finally:
            self.lock.release()
        await self.release(parts)

    async def _hand_over(self, parts: set[int], taken: dict[int, Sequence[Record]]) -> None:
        # Records of partitions not opened yet are left to the next owner: opening one could
        # mean a restore, for a partition that is going away.
        opened = {p: recs for p, recs in taken.items() if self.runner.open_state(p) is not None}
        if opened:
            await self._process_with_retry(opened)
        await self.runner.hand_over(parts)

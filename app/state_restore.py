"""Opening a partition's state: the local RocksDB copy, or a restore from the changelog.

A partition processed elsewhere (a rebalance moved it, or this machine's copy is old) has a
changelog ahead of the local state. The local copy then catches up from the changelog entries
after its own last batch, when the log still holds that batch and is the one the copy came from
(its origin); otherwise it is dropped and the changelog read whole. A changelog *behind* the
local state means the broker lost its data, which is refused.

Opening a RocksDB directory, removing one and writing a restore's chunks are file work that can
take seconds on a big state: it runs in a thread, so the worker's heartbeats, fetches and
/metrics go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from agents.base import Pipeline
from app import metrics
from app.state_guard import changelog_behind, state_identity, version_topic_gone
from app.topic_reader import TopicMissing
from app.topology import Topology
from tables.partition_state import PartitionState
from tables.rocks import RocksStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# A restore says how far it got this often (s), so a long one is not taken for a hang.
RESTORE_PROGRESS_EVERY_S = 10.0


class ChangelogSource(Protocol):
    """Where a partition's state can be restored from (the changelog topic)."""

    async def last_applied(self, partition: int, fresh: bool = False) -> int:
        """The source offset the changelog's newest complete batch reflects (-1: empty).
        `fresh`: ask the broker now, not a cached end of the log."""
        ...

    def entries(
        self, partition: int, start: int = 0
    ) -> AsyncGenerator[list[tuple[bytes, bytes | None]], None]:
        """The partition's changelog entries from offset `start`, oldest first, in chunks."""
        ...

    async def resume_point(self, partition: int, applied: int, origin: bytes) -> int | None:
        """The changelog offset after the batch that applied `applied`, on the log that
        `origin` started (None: not there, restore the whole log)."""
        ...


async def off_loop(work: Callable[[], T], undo: Callable[[T], None] | None = None) -> T:
    """`work()` in a thread. A thread cannot be stopped: if the caller is cancelled meanwhile,
    the work still ends (and `undo` releases what it made, such as an opened store) before the
    cancellation goes on, so a retry finds nothing half done or still locked."""
    done = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():
            try:
                await asyncio.wait({done})
            except asyncio.CancelledError:
                continue  # cancelled again: it is going on all the same
        if undo is not None and done.exception() is None:
            undo(done.result())
        raise


def _close(store: RocksStore) -> None:
    store.close()


class StateOpener:
    """Opens one pipeline's partition states for one version, restoring where needed."""

    def __init__(
        self,
        pipeline: Pipeline,
        topology: Topology,
        changelog: str,
        changelog_source: ChangelogSource | None = None,
        before_open: Callable[[int], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock  # s: how long a restore has taken
        self.name = pipeline.name
        self.topology = topology
        self.changelog = changelog  # its physical name, for messages
        self.changelog_source = changelog_source  # None: the local state is all there is
        # Awaited before a partition's state is opened (restored): exactly_once fences the
        # partition's previous owner there (`TransactionalSender.fence`).
        self.before_open = before_open

    async def open(self, partition: int) -> PartitionState:
        """The partition's state, restored first when the changelog is ahead of it. On any
        failure the store is closed again: a retry must find the directory unlocked."""
        if self.before_open is not None:
            await self.before_open(partition)
        path = self.topology.state_path(self.pipeline, partition)
        identity = self._identity(partition)
        store = await off_loop(lambda: RocksStore(path, identity), _close)
        try:
            st = PartitionState(store, partition, pipeline=self.name, directory=path)
            if self.changelog_source is None:
                return st
            try:
                remote = await self.changelog_source.last_applied(partition)
                if remote < st.applied_offset:  # impossible unless the log was lost: look again
                    remote = await self.changelog_source.last_applied(partition, fresh=True)
            except TopicMissing:  # it was there when the worker started
                raise version_topic_gone(self.changelog, self.topology.state_root()) from None
            if remote < st.applied_offset:
                raise changelog_behind(
                    self.changelog,
                    partition,
                    remote,
                    st.applied_offset,
                    self.topology.state_root(),
                )
            if remote == st.applied_offset:
                return st
            start = await self._resume_point(st)
        except BaseException:  # closed, not left to the collector: the traceback holds it
            store.close()
            raise
        if start is None:
            store.close()
            return await self._restore(partition, path, st.applied_offset, remote)
        return await self._restore(partition, path, st.applied_offset, remote, (store, start))

    async def _resume_point(self, st: PartitionState) -> int | None:
        """Where a local copy behind the changelog can catch up from (None: it cannot)."""
        assert self.changelog_source is not None
        origin = st.origin()
        if st.applied_offset < 0 or origin is None:
            return None
        return await self.changelog_source.resume_point(st.partition, st.applied_offset, origin)

    async def _restore(
        self,
        partition: int,
        path: Path,
        local: int,
        remote: int,
        resume: tuple[RocksStore, int] | None = None,
    ) -> PartitionState:
        """Apply the changelog to a new store from the log's start, or with `resume`, to the
        local copy's store from the offset after its last batch (it catches up)."""
        assert self.changelog_source is not None
        log.info(
            "%s p%d: local state at offset %d, changelog at %d: %s",
            self.name,
            partition,
            local,
            remote,
            f"catching up from {self.changelog} offset {resume[1]}"
            if resume is not None
            else f"restoring from {self.changelog}",
        )
        t0 = self.clock()
        said_at = t0
        if resume is not None:
            store, start = resume
        else:
            identity = self._identity(partition)
            await off_loop(lambda: shutil.rmtree(path, ignore_errors=True))
            store, start = await off_loop(lambda: RocksStore(path, identity), _close), 0
        restored = metrics.RESTORED.labels(self.name, str(self.topology.version))
        n = 0
        try:
            entries = contextlib.aclosing(self.changelog_source.entries(partition, start))
            async with entries as chunks:
                async for chunk in chunks:
                    await off_loop(functools.partial(store.write, dict(chunk)))
                    n += len(chunk)
                    restored.inc(len(chunk))  # as it goes: a long restore shows on the dashboard
                    if self.clock() - said_at >= RESTORE_PROGRESS_EVERY_S:
                        said_at = self.clock()
                        log.info(
                            "%s p%d: restoring, %d changelog entries so far (%.0fs)",
                            self.name,
                            partition,
                            n,
                            said_at - t0,
                        )
            st = PartitionState(store, partition, pipeline=self.name, directory=path)
        except BaseException:
            store.close()
            raise
        log.info(
            "%s p%d: restored %d changelog entries in %.1fs (state at offset %d)",
            self.name,
            partition,
            n,
            self.clock() - t0,
            st.applied_offset,
        )
        return st

    def _identity(self, partition: int) -> dict[str, object]:
        """Recorded in the partition directory, so a foreign directory is refused."""
        return state_identity(self.topology, self.name, partition)

"""Startup checks that protect a worker's local state, run before Faust starts.

- One process per version's state directory: an advisory `flock` on `<state_dir>/vN/LOCK`, held
  for the life of the process. Two workers on the same RocksDB partitions would overwrite each
  other's state and applied offsets.
- Every existing partition directory must open as this app's RocksDB database. A corrupt or
  foreign directory is refused with the command that rebuilds it.
- The broker must still hold what the state says was applied. The embedded broker forgets
  everything when it restarts, and records at offsets at or below the state's applied offset
  would then be skipped as "already applied".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from app.file_lock import try_lock
from app.topology import Topology
from tables.partition_state import PartitionState
from tables.rocks import RocksStore, StateError, StateLockedError, unreadable

log = logging.getLogger(__name__)

LOCK_FILE = "LOCK"
_PARTITION_DIR = re.compile(r"p(\d+)")


class BrokerDataLost(StateError):
    """The local state has applied source offsets the broker's log does not reach."""


# Why a log is shorter than the state, or gone, and what a dev-broker restart means for the rest.
BROKER_LOST = "the broker lost its data (the embedded broker keeps nothing across restarts)"


def _after_a_restart(state_dir: Path) -> str:
    return (
        f"after a dev-broker restart, remove all of {state_dir}: every version is gone, and "
        "version 1 is live again"
    )


def broker_data_lost(observed: str, state_root: Path) -> BrokerDataLost:
    """The one-line refusal, after `observed` (what was compared with what)."""
    return BrokerDataLost(
        f"{observed}: {BROKER_LOST} — stop the workers and remove {state_root} to start over "
        f"({_after_a_restart(state_root.parent)})"
    )


def changelog_behind(
    changelog: str, partition: int, reflected: int, applied: int, state_root: Path
) -> BrokerDataLost:
    """The one-line refusal of local state ahead of its changelog partition."""
    return broker_data_lost(
        f"{changelog}[{partition}]: the changelog reflects source offset {reflected} but the "
        f"local state has applied up to {applied}",
        state_root,
    )


class VersionTopicGone(StateError):
    """A topic the worker checked at start is no longer on the broker."""


# Given topics the broker refused as unknown, raises VersionTopicGone (a one-line stop) if
# some of them are really gone; returns if they are all there (the broker was catching up).
TopicsCheck = Callable[[set[str]], Awaitable[None]]


def version_topic_gone(topic: str, state_root: Path) -> VersionTopicGone:
    """The one-line stop when a version's topic vanishes under a running worker."""
    return VersionTopicGone(
        f"topic {topic} is gone from the broker: {BROKER_LOST} or the version was dropped — "
        f"stop the workers; {_after_a_restart(state_root.parent)}; then run `kappa topics`"
    )


def topic_gone(topic: str, topology: Topology) -> VersionTopicGone:
    """The one-line stop when `topic` vanishes under a running worker: one of the version's
    own, or a source it reads from outside (`orders`), deleted or lost with the broker's data."""
    if topic not in {topology.physical(t) for t in topology.external_sources}:
        return version_topic_gone(topic, topology.state_root())
    return VersionTopicGone(
        f"source topic {topic} is gone from the broker: it was deleted, or {BROKER_LOST} — "
        f"stop the workers; {_after_a_restart(topology.settings.state_dir)}; then run "
        "`kappa topics` (a source recreated empty is refused under state that read past its end)"
    )


@dataclass
class StateDirLock:
    """An exclusive flock on `root/LOCK`; released when the process exits (or by `release`)."""

    root: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None
            with contextlib.suppress(ValueError):
                _held.remove(self)


_held: list[StateDirLock] = []  # keeps the descriptors (and so the locks) for the process lifetime


def lock_state_dir(root: Path, shared: bool = False) -> StateDirLock:
    """Take the lock of one version's state directory or raise `StateLockedError` at once.

    A worker (and `kappa drop`) takes it exclusively. The processes of one replay take it
    shared (each has its own partitions), which still keeps workers and drop out.
    flock locks belong to the open file description, so a second lock of the same directory
    fails even from the same process.
    """
    try:
        fd, taken = try_lock(root, LOCK_FILE, shared)
    except OSError as e:
        raise StateError(f"cannot use state directory {root}: {e.strerror or e}") from None
    if not taken:
        holder = _read_pid(fd)
        os.close(fd)
        who = f" (pid {holder})" if holder else ""
        raise StateLockedError(
            f"state directory {root} is in use by another kappa worker or replay{who}; "
            "run one worker per KAPPA_STATE_DIR, and no worker beside a replay of its version"
        )
    os.ftruncate(fd, 0)
    if not shared:  # shared holders would overwrite each other's pid
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    lock = StateDirLock(root, fd)
    _held.append(lock)
    return lock


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(raw) if raw.isdigit() else None


def state_identity(topology: Topology, pipeline: str, partition: int) -> dict[str, object]:
    """What a partition directory's `KAPPA` marker records (see `tables.rocks`)."""
    return {
        "app_id": topology.settings.app_id,
        "topic_prefix": topology.settings.topic_prefix,  # names the changelog it mirrors
        "version": topology.version,
        "pipeline": pipeline,
        "partition": partition,
    }


def read_applied_offset(path: Path, partition: int, identity: dict[str, object]) -> int:
    """Open a partition's store, read its applied offset, close it (-1: nothing applied)."""
    store = RocksStore(path, identity)
    try:
        return PartitionState(store, partition).applied_offset
    except Exception as e:  # a readable directory whose content is not
        first = (str(e).splitlines() or [""])[0]
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise unreadable(path, reason) from None
    finally:
        store.close()


def check_partition_dirs(
    topology: Topology, share: tuple[int, int] = (0, 1)
) -> dict[tuple[str, int], int]:
    """Open and close every existing partition directory of the selected pipelines (with
    `share` = (I, N): only the partitions p with p % N == I, a replay process's).

    Returns (pipeline, partition) → applied offset; raises `StateError` for a directory that
    is corrupt, foreign or locked. Creates no partition directory.
    """
    index, count = share
    applied: dict[tuple[str, int], int] = {}
    for pipeline in topology.pipelines:
        base = topology.state_root() / pipeline.name
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            m = _PARTITION_DIR.fullmatch(entry.name)
            if m is None:
                continue
            partition = int(m.group(1))
            if partition % count != index:
                continue
            identity = state_identity(topology, pipeline.name, partition)
            applied[(pipeline.name, partition)] = read_applied_offset(entry, partition, identity)
    return applied


def local_source_partitions(topology: Topology) -> list[tuple[str, int]]:
    """(physical source topic, partition) for every partition directory of the selected
    pipelines: what this worker would only catch up on, not restore, if handed it. Only
    lists directories (it opens none: some are open in this process)."""
    found: set[tuple[str, int]] = set()
    for pipeline in topology.pipelines:
        base = topology.state_root() / pipeline.name
        if not base.is_dir():
            continue
        source = topology.physical(pipeline.source)
        for entry in base.iterdir():
            m = _PARTITION_DIR.fullmatch(entry.name)
            if m is not None and entry.is_dir():
                found.add((source, int(m.group(1))))
    return sorted(found)


async def check_broker_has_state(
    bootstrap: str, topology: Topology, applied: dict[tuple[str, int], int]
) -> None:
    """Refuse state whose applied offset is at or past its source partition's high watermark.

    The high watermark comes from a fetch response (right on the embedded broker, unlike
    ListOffsets). It only stays behind when the log really is gone (dev-broker restart, topic
    deleted and recreated, another cluster); a new partition leader can report an older one
    for a moment (KIP-207), so it is asked again for up to `KAPPA_SOURCE_END_GRACE_MS`.
    """
    from app.topic_reader import high_watermarks

    sources = {p.name: topology.physical(p.source) for p in topology.pipelines}
    by_topic: dict[str, dict[int, int]] = {}
    for (name, partition), offset in applied.items():
        if offset < 0 or name not in sources:
            continue
        parts = by_topic.setdefault(sources[name], {})
        parts[partition] = max(offset, parts.get(partition, -1))
    loop = asyncio.get_running_loop()
    grace_s = topology.settings.source_end_grace_ms / 1000
    deadline: float | None = None  # the grace runs from the first sight of a lost end
    while True:
        lost: list[tuple[str, int, int, int]] = []
        for topic, parts in sorted(by_topic.items()):
            ends = await high_watermarks(bootstrap, topic)
            lost.extend(
                (topic, p, a, ends[p])
                for p, a in sorted(parts.items())
                if p in ends and a >= ends[p]
            )
        if not lost or (deadline is not None and loop.time() >= deadline):
            break
        if deadline is None:
            deadline = loop.time() + grace_s
            if grace_s <= 0:
                break
            topic, p, a, end = lost[0]
            log.warning(
                "%s[%d] ends at offset %d, at or before the state's applied offset %d: asking "
                "the broker again for up to %.0f s (KAPPA_SOURCE_END_GRACE_MS)",
                topic,
                p,
                end,
                a,
                grace_s,
            )
        await asyncio.sleep(max(0.0, min(1.0, deadline - loop.time())))
    if lost:
        topic, p, a, h = lost[0]
        more = f" (and {len(lost) - 1} more partitions)" if len(lost) > 1 else ""
        raise broker_data_lost(
            f"local state for {topic}[{p}] has applied offset {a} but the broker's log ends at "
            f"{h}{more}",
            topology.state_root(),
        )


async def check_changelogs_have_state(
    bootstrap: str, topology: Topology, applied: dict[tuple[str, int], int]
) -> None:
    """Refuse local state ahead of its changelog (`applied`: from `check_partition_dirs`), as
    opening it would (`app.state_restore`), for a replay to ask before it records a version:
    a broker that lost its data (a dev-broker restart) forgot the registry too, so the version
    looks new while its state directory remains. A changelog the broker does not have
    reflects nothing (-1); it is not read, nor created, here."""
    from app.admin import existing_topics
    from app.changelog import KafkaChangelog

    wanted = [(name, p, a) for (name, p), a in sorted(applied.items()) if a >= 0]
    if not wanted:
        return
    present = await existing_topics(bootstrap)
    changelogs = {p.name: topology.changelog(p) for p in topology.pipelines}
    readers: dict[str, KafkaChangelog] = {}
    for name, partition, offset in wanted:
        topic = changelogs.get(name)
        if topic is None:
            continue
        reflected = -1
        if topic in present:
            reader = readers.setdefault(topic, KafkaChangelog(bootstrap, topic))
            reflected = await reader.last_applied(partition)
        if reflected < offset:
            raise changelog_behind(topic, partition, reflected, offset, topology.state_root())

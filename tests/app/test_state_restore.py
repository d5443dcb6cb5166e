"""A restore from the changelog shows its progress: in the metric as it goes, and in a log line
every `RESTORE_PROGRESS_EVERY_S`, so a long one is not taken for a hang. Its file work runs off
the event loop, and a cancelled open leaves nothing locked."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app import metrics, state_restore
from app.settings import load_settings
from app.state_restore import RESTORE_PROGRESS_EVERY_S, StateOpener, off_loop
from app.topology import Topology
from tables.partition_state import APPLIED_OFFSET
from tables.rocks import RocksStore
from tests.support.fakes import ManualClock


class _Chunks:
    """Three chunks of entries, the applied offset (7) last; the clock moves on between them,
    and what the metric showed before each chunk is noted."""

    def __init__(self, clock: ManualClock, counted: object) -> None:
        self.clock = clock
        self.counted = counted
        self.seen: list[float] = []
        self.chunks = [
            [(b"K" + bytes([i]), b"v") for i in range(3)],
            [(b"K" + bytes([i]), b"w") for i in range(3, 5)],
            [(APPLIED_OFFSET, struct.pack(">q", 7))],
        ]

    async def last_applied(self, partition: int, fresh: bool = False) -> int:
        return 7

    async def entries(
        self, partition: int, start: int = 0
    ) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
        for chunk in self.chunks:
            self.seen.append(self.counted._value.get())  # type: ignore[attr-defined]
            yield chunk  # type: ignore[misc]
            self.clock.now += RESTORE_PROGRESS_EVERY_S * 0.6


async def test_a_restore_counts_as_it_goes_and_says_how_far_it_got(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 31).select(["orders"])  # a version no other test counts
    pipeline = topology.pipelines[0]
    counted = metrics.RESTORED.labels(pipeline.name, "31")
    clock = ManualClock()
    source = _Chunks(clock, counted)
    opener = StateOpener(pipeline, topology, "changelog", source, clock=clock)
    with caplog.at_level(logging.INFO, logger="app.state_restore"):
        state = await opener.open(0)
    state.store.close()
    assert state.applied_offset == 7
    assert source.seen == [0, 3, 5]  # counted chunk by chunk, not once at the end
    said = [r.getMessage() for r in caplog.records if r.name == "app.state_restore"]
    # chunks read at 0, 6 and 12 s: a progress line once 10 s have passed since the last
    assert said[1:] == [
        "orders p0: restoring, 6 changelog entries so far (12s)",
        "orders p0: restored 6 changelog entries in 18.0s (state at offset 7)",
    ]
    # INFO, not WARNING: every restart restores or catches up, and log alerts fired on it
    assert {r.levelname for r in caplog.records if r.name == "app.state_restore"} == {"INFO"}


async def test_file_work_runs_off_the_event_loop() -> None:
    """Heartbeats, fetches and /metrics go on while a big state opens: the work waits for the
    loop to run a coroutine, which it could not do if it held the loop."""
    loop_ran = threading.Event()

    async def on_the_loop() -> None:
        loop_ran.set()

    other = asyncio.ensure_future(on_the_loop())
    assert await off_loop(lambda: loop_ran.wait(timeout=30)) is True
    await other


async def test_an_open_cancelled_midway_leaves_the_directory_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partition was revoked while its store opened in a thread: the open still ends, and
    the store is closed, so the next owner in this process can open it."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 32).select(["orders"])
    opener = StateOpener(topology.pipelines[0], topology, "changelog")
    started, release = threading.Event(), threading.Event()

    class SlowStore(RocksStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.set()
            release.wait(timeout=30)

    monkeypatch.setattr(state_restore, "RocksStore", SlowStore)
    opening = asyncio.ensure_future(opener.open(0))
    assert await asyncio.to_thread(started.wait, 30)
    opening.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not opening.done()  # waits for the thread, which cannot be stopped
    release.set()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await opening
    monkeypatch.setattr(state_restore, "RocksStore", RocksStore)
    # closed, not left to the collector: the cancellation's traceback still holds the store
    assert cancelled.value.__traceback__ is not None
    state = await opener.open(0)  # not locked by the cancelled open
    state.store.close()


class _GoneChangelog:
    """A changelog topic deleted under the worker (a dev-broker restart, `kappa drop`)."""

    async def last_applied(self, partition: int, fresh: bool = False) -> int:
        from app.topic_reader import TopicMissing

        raise TopicMissing("topic kappa-v32-orders-changelog does not exist")


async def test_a_changelog_gone_under_the_worker_is_one_line_that_says_what_to_do(
    tmp_path: Path,
) -> None:
    """Each pipeline said only "topic ... does not exist", which hid the usual cause."""
    from app.state_guard import VersionTopicGone

    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 32).select(["orders"])
    pipeline = topology.pipelines[0]
    gone = _GoneChangelog()
    opener = StateOpener(pipeline, topology, "kappa-v32-orders-changelog", gone)  # type: ignore[arg-type]
    with pytest.raises(VersionTopicGone) as refused:
        await opener.open(0)
    assert str(refused.value) == (
        "topic kappa-v32-orders-changelog is gone from the broker: the broker lost its data "
        "(the embedded broker keeps nothing across restarts) or the version was dropped — stop "
        f"the workers; after a dev-broker restart, remove all of {tmp_path}: every version is "
        "gone, and version 1 is live again; then run `kappa topics`"
    )
    opener.changelog_source = None
    (await opener.open(0)).store.close()  # the failed open left it unlocked

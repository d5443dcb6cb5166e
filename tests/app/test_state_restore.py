"""A restore from the changelog shows its progress: in the metric as it goes, and in a log line
every `RESTORE_PROGRESS_EVERY_S`, so a long one is not taken for a hang."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app import metrics
from app.settings import load_settings
from app.state_restore import RESTORE_PROGRESS_EVERY_S, StateOpener
from app.topology import Topology
from tables.partition_state import APPLIED_OFFSET
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
    with caplog.at_level(logging.WARNING, logger="app.state_restore"):
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

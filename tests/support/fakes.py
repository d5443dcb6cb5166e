"""Stand-ins for unit tests that run without a broker: a clock the test sets, a fetched record
that has only what the batch buffer and the consumer's bookkeeping read, a changelog kept in a
list, a record of where the changelog reader reads, and a wait for a condition in loop steps."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app import changelog as changelog_module
from tables.partition_state import APPLIED_OFFSET, ORIGIN

Entry = tuple[bytes, bytes | None]


class ManualClock:
    """A monotonic clock (s) that moves only when the test sets `now`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Msg:
    partition: int
    offset: int


class ListChangelog:
    """A `ChangelogSource` over one partition's entries, a list index standing for the offset,
    with the same rules as `KafkaChangelog`: restores end at the newest marker, and a local copy
    resumes after its own marker (the only one of its offset) on a log that starts with its
    origin. `entries_of` gives the
    entries as they are now (a list that a test's sender appends to). Record timestamps, and
    so the age of a tail, are not modelled."""

    def __init__(self, entries: list[Entry] | Callable[[], list[Entry]]) -> None:
        self.entries_of = entries if callable(entries) else lambda: entries

    def _markers(self) -> list[tuple[int, int]]:
        """(offset, applied offset) of every marker, oldest first."""
        return [
            (i, struct.unpack(">q", v)[0])
            for i, (k, v) in enumerate(self.entries_of())
            if k == APPLIED_OFFSET and v is not None
        ]

    async def last_applied(self, partition: int, fresh: bool = False) -> int:
        markers = self._markers()
        return markers[-1][1] if markers else -1

    async def entries(self, partition: int, start: int = 0) -> AsyncIterator[list[Entry]]:
        markers = self._markers()
        end = markers[-1][0] + 1 if markers else 0
        if start < end:
            yield self.entries_of()[start:end]

    async def resume_point(self, partition: int, applied: int, origin: bytes) -> int | None:
        entries = self.entries_of()
        if not entries or entries[0] != (ORIGIN, origin):
            return None
        own = [i + 1 for i, a in self._markers() if a == applied]
        return own[0] if len(own) == 1 else None  # a flush repeats a marker: which is it?


def changelog_read_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The start offset of every range `app.changelog` reads from now on, in order."""
    starts: list[int] = []
    real_read_range = changelog_module.read_range

    def recording_read_range(*args: Any, **kwargs: Any) -> Any:
        starts.append(args[3])
        return real_read_range(*args, **kwargs)

    monkeypatch.setattr(changelog_module, "read_range", recording_read_range)
    return starts


async def until(condition: Callable[[], bool], what: str = "so", steps: int = 100) -> None:
    """Let the loop run until `condition` holds (a failure, not a hang, if it never does within
    `steps` loop steps): for code whose steps take a few loop turns each, no real time."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not {what} after {steps} loop steps")

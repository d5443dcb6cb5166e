"""The top k keys of each window over every source partition, emitted once, final.

Each source partition reports the windows it closed, with its watermark after them. A window
is final once every partition's watermark has passed its end (the minimum over the inputs, as
Flink combines watermarks): by then each partition has reported its part of that window. So
the ranking does not depend on how the partitions' reports interleave, which differs between
a live run and a replay. A report re-sent after a crash changes nothing: a key's entry in a
window is the largest reported (for one key, all reports agree), and a window once emitted is
never opened again.

A partition's reports may start late (a source partition processed before reports existed):
each report says the watermark its batch started from, and a window ending at or before where
some partition's reports started is dropped, not emitted, as that partition may have closed
its part unreported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Entry = tuple[str, float, int]  # key, value, count
WindowId = tuple[int, int]  # start, end (exclusive), epoch ms
ClosedWindow = tuple[str, int, int, float, int]  # key, start, end, value, count


def ranked(entries: Iterable[Entry], k: int) -> list[Entry]:
    """The k largest by value; ties by key, so the order is total and the result unique."""
    return sorted(entries, key=lambda e: (-e[1], e[0]))[:k]


@dataclass(slots=True)
class Ranking:
    """Each partition's watermark and start, and the top k of the open windows it holds.

    `open` need not hold every open window: a caller keeping them in a store loads the ones a
    report touches, and, before `take_final`, those ending at or before `final_bound()`.
    `final_until`: every window ending at or before it has been emitted or dropped.
    """

    k: int
    partitions: int  # source partitions that must all pass a window before it is final
    watermarks: dict[int, int] = field(default_factory=dict)
    starts: dict[int, int | None] = field(default_factory=dict)  # None: from the first event
    final_until: int | None = None
    open: dict[WindowId, list[Entry]] = field(default_factory=dict)

    def report(
        self,
        partition: int,
        since: int | None,
        watermark: int | None,
        windows: Sequence[ClosedWindow],
    ) -> None:
        """Fold in one partition's closed windows, the watermark its batch started from
        (`since`) and, if any, its watermark after them."""
        if partition not in self.starts:
            self.starts[partition] = since
        else:  # the lowest seen (None, from the first event, is lowest): a re-sent report
            first = self.starts[partition]
            if first is not None and (since is None or since < first):
                self.starts[partition] = since
        done = self.final_until
        for key, start, end, value, count in windows:
            if done is not None and end <= done:
                continue  # emitted already: this is a re-sent report
            top = self.open.setdefault((start, end), [])
            if len(top) >= self.k and (-value, key) > (-top[-1][1], top[-1][0]):
                continue  # ranks below a full top k (its last entry is the lowest)
            entries = {e[0]: e for e in top}
            seen = entries.get(key)
            if seen is None or (value, count) > (seen[1], seen[2]):
                entries[key] = (key, value, count)
                self.open[(start, end)] = ranked(entries.values(), self.k)
        if watermark is not None and watermark > self.watermarks.get(partition, watermark - 1):
            self.watermarks[partition] = watermark

    def final_bound(self) -> int | None:
        """The watermark every partition has passed, if windows up to it are yet to go."""
        if len(self.watermarks) < self.partitions:
            return None  # a partition that never reported may still hold any window
        low = min(self.watermarks.values())
        if self.final_until is not None and low <= self.final_until:
            return None
        return low

    def take_final(self) -> list[tuple[WindowId, list[Entry]]]:
        """Remove the windows every partition has passed; return those to emit, in (end,
        start) order (the others ended before some partition's reports started)."""
        low = self.final_bound()
        if low is None:
            return []
        self.final_until = low
        started = max((s for s in self.starts.values() if s is not None), default=None)
        final = sorted((w for w in self.open if w[1] <= low), key=lambda w: (w[1], w[0]))
        out = []
        for w in final:
            top = self.open.pop(w)
            if started is None or w[1] > started:
                out.append((w, ranked(top, self.k)))
        return out

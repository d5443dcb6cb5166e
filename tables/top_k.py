"""The top k keys of each window over every source partition, emitted once, final.

Each source partition reports the windows it closed, with its watermark after them. A window
is final once every partition's watermark has passed its end (the minimum over the inputs, as
Flink combines watermarks): by then each partition has reported its part of that window. So
the ranking does not depend on how the partitions' reports interleave, which differs between
a live run and a replay. Reports are upserts by (window, key): a report re-sent after a crash
changes nothing, and a window already emitted is never opened again.
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
    """The state of a ranking: each partition's watermark, and the open windows' top k.

    `final_until`: every window ending at or before it has been emitted (None: none yet).
    """

    k: int
    partitions: int  # source partitions that must all pass a window before it is final
    watermarks: dict[int, int] = field(default_factory=dict)
    final_until: int | None = None
    open: dict[WindowId, list[Entry]] = field(default_factory=dict)

    def report(
        self, partition: int, watermark: int | None, windows: Sequence[ClosedWindow]
    ) -> None:
        """Fold in one partition's closed windows and (if any) its watermark after them."""
        done = self.final_until
        for key, start, end, value, count in windows:
            if done is not None and end <= done:
                continue  # emitted already: this is a re-sent report
            top = self.open.get((start, end))
            if top is None:
                self.open[(start, end)] = [(key, value, count)]
                continue
            entries = {e[0]: e for e in top}
            entries[key] = (key, value, count)
            self.open[(start, end)] = ranked(entries.values(), self.k)
        if watermark is not None and watermark > self.watermarks.get(partition, watermark - 1):
            self.watermarks[partition] = watermark

    def take_final(self) -> list[tuple[WindowId, list[Entry]]]:
        """Remove and return the windows every partition has passed, in (end, start) order."""
        if len(self.watermarks) < self.partitions:
            return []  # a partition that never reported may still hold any window
        low = min(self.watermarks.values())
        if self.final_until is not None and low <= self.final_until:
            return []
        self.final_until = low
        final = sorted((w for w in self.open if w[1] <= low), key=lambda w: (w[1], w[0]))
        return [(w, ranked(self.open.pop(w), self.k)) for w in final]

"""The order `kappa demo` prints its lines in: a window's `top` line after every product line of
that window, and an `ANOMALY` line after its product's line of that window.

The demo reads them from different topics (and partitions), each at its own pace, so a line can
be read before the lines it comes from. A ranking of a window is final once every source
partition's watermark passed the window's end, but the orders pipeline writes a window's
revenue records in the same produce call as the report (onto `orders.by-window`) that tells the
ranking so: not acknowledged before it, and on a cluster of several brokers a separate request
to another leader. No offset or high watermark of the revenue topic can therefore mark where
a window's lines end; what does is the reports themselves: each lists every window its batch
closed, and its watermark after them.

So a ranking is held until (1) for every source partition a report with a watermark at or past
the window's end has been read: each partition's reports arrive in the order it sent them, so
every report listing that window's products from it has been read; and (2) every product those
reports list for the window has had its closed window read. An anomaly is held until its
product's window has been read. Neither can wait forever as long as the caller reads every
topic from its beginning (printing only what is new): the ranking pipeline emits a ranking only
after reading those reports, each report's windows are written in the same produce call as the
report (retried until acknowledged), and an anomaly is computed from the window it is about.

Pure: no Kafka here. Lines are opaque strings; None stands for a record read but not printed
(one written before the demo started), which still counts as read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Window:
    """What is known of one window (by its start, epoch ms) while its ranking is not out."""

    listed: set[str] = field(default_factory=set)  # products the reports say closed
    read: set[str] = field(default_factory=set)  # products whose closed window was read
    end: int | None = None  # exclusive, epoch ms; set once its ranking was read
    ranking: str | None = None  # its `top` line (None: read, not to be printed)
    anomalies: dict[str, list[str]] = field(default_factory=dict)  # held, by product


class LineOrder:
    """Takes the demo's records as it reads them and returns the lines to print now, in order.

    `partitions`: the source (`orders`) partitions every ranking waits for."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.watermarks: dict[int, int] = {}  # source partition → highest reported (ms)
        self.windows: dict[int, _Window] = {}  # by start
        self.ranked: set[int] = set()  # starts of windows whose ranking was read, not out yet
        self.done: set[int] = set()  # starts of windows whose ranking went out

    def held(self) -> int:
        """How many lines are held back (rankings and anomalies)."""
        return sum(
            (w.end is not None and w.ranking is not None)
            + sum(len(a) for a in w.anomalies.values())
            for w in self.windows.values()
        )

    def window(self, product: str, start: int, closed: bool, line: str | None) -> list[str]:
        """A product's window (`orders.revenue-1m`); `closed` False for a running update
        (`KAPPA_EMIT_UPDATES`), which is printed but is not the window's line that counts."""
        out = [line] if line is not None else []
        if not closed or start in self.done:
            return out
        w = self.windows.setdefault(start, _Window())
        w.read.add(product)
        out.extend(w.anomalies.pop(product, ()))
        out.extend(self._release(start))
        return out

    def report(
        self, partition: int, watermark: int | None, windows: Iterable[tuple[str, int]]
    ) -> list[str]:
        """A report of the orders pipeline (`orders.by-window`): the (product, start) windows
        a batch of `partition` closed and, in its last record, its watermark after them."""
        for product, start in windows:
            if start not in self.done:
                self.windows.setdefault(start, _Window()).listed.add(product)
        if watermark is not None and watermark > self.watermarks.get(partition, watermark - 1):
            self.watermarks[partition] = watermark
        out = []
        for start in sorted(self.ranked):
            out.extend(self._release(start))
        return out

    def ranking(self, start: int, end: int, line: str | None) -> list[str]:
        """A window's ranking (`orders.top-products`), `end` exclusive (ms)."""
        if start in self.done:  # re-sent: its window's lines went out before the first one
            return [line] if line is not None else []
        w = self.windows.setdefault(start, _Window())
        w.end, w.ranking = end, line
        self.ranked.add(start)
        return self._release(start)

    def anomaly(self, product: str, start: int, line: str | None) -> list[str]:
        """An anomaly of a product's window (`orders.anomalies`)."""
        if line is None:
            return []
        if start in self.done:
            return [line]
        w = self.windows.setdefault(start, _Window())
        if product in w.read:
            return [line]
        w.anomalies.setdefault(product, []).append(line)
        return []

    def _release(self, start: int) -> list[str]:
        """The window's ranking (and anything still held of it), if it can go out now."""
        w = self.windows[start]
        end = w.end
        if end is None or not w.listed <= w.read:
            return []
        marks = self.watermarks
        if any(marks.get(p, end - 1) < end for p in range(self.partitions)):
            return []
        del self.windows[start]
        self.ranked.discard(start)
        self.done.add(start)
        out = [line for held in w.anomalies.values() for line in held]
        if w.ranking is not None:
            out.append(w.ranking)
        return out

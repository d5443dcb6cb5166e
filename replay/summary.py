"""The one line a replay ends with: what it counted, printed by `kappa replay` and read back by
`kappa replay --processes N` (which sums its children's) and by the benchmark."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from agents.base import BatchCounts

_LINE = re.compile(
    r"replay v(?P<version>\d+): (?P<events>[\d,]+) events, (?P<windows>[\d,]+) windows closed, "
    r"(?P<provisional>[\d,]+) provisional, (?P<late>[\d,]+) late, (?P<dlq>[\d,]+) DLQ "
    r"in (?P<seconds>[\d.]+) s \([\d,]+ events/s\)(?: across \d+ processes)?(?P<resumed>; resumed)?"
)


@dataclass
class ReplaySummary:
    version: int
    events: int = 0
    windows: int = 0  # closed: emitted final
    provisional: int = 0  # still open at the end, emitted provisional by the flush
    late: int = 0
    dlq: int = 0
    seconds: float = 0.0
    resumed: bool = False  # the version had been replayed in part: counts are this run's only

    def add(self, counts: BatchCounts) -> None:
        c = counts
        self.add_summary(
            ReplaySummary(
                self.version, c.events, c.windows_closed, c.windows_provisional, c.late, c.dlq
            )
        )

    def add_summary(self, other: ReplaySummary) -> None:
        """Count another process's part of the same replay (the seconds are not summed)."""
        self.events += other.events
        self.windows += other.windows
        self.provisional += other.provisional
        self.late += other.late
        self.dlq += other.dlq
        self.resumed = self.resumed or other.resumed

    def line(self, where: str = "") -> str:
        """The line, with `where` (" across 2 processes") after the rate."""
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        return (
            f"replay v{self.version}: {self.events:,} events, {self.windows:,} windows closed, "
            f"{self.provisional:,} provisional, {self.late:,} late, {self.dlq:,} DLQ "
            f"in {self.seconds:.1f} s ({rate:,.0f} events/s){where}"
            + ("; resumed: these count only what this run read" if self.resumed else "")
        )

    @classmethod
    def parse(cls, text: str) -> ReplaySummary | None:
        """The summary in `text` that `line()` printed (None when there is none)."""
        found = _LINE.search(text)
        if found is None:
            return None
        raw = found.groupdict()
        numbers = [f.name for f in fields(cls) if f.name not in ("seconds", "resumed")]
        values: dict[str, object] = {k: int(raw[k].replace(",", "")) for k in numbers}
        values["seconds"] = float(raw["seconds"])
        values["resumed"] = raw["resumed"] is not None
        return cls(**values)  # type: ignore[arg-type]

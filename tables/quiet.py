"""Products gone quiet: a silence its own order rate makes unlikely.

A product that stops selling emits no window at all, so nothing downstream of its windows
(trends, anomalies) can see it stop. Here each product keeps its rate of orders per window, a
mean over every window since its first one, the empty ones included, each weighted by `decay`
per newer window. With rate λ, a run of g empty windows has probability e^(−λg) under that
rate; the product is quiet once g windows passed empty where e^(−λg) < `p_quiet`. A product
that sells 50 orders a window is quiet after one empty window, one that sells one every ten
windows after 52 (with decay 0.5^(1/10) and p_quiet 0.001): λ is taken at its last window
with orders, which weighs most, so it reads 0.13 rather than 0.1.

When a silence is established follows stream time only: a window is empty once the watermark
of the source partition the product is read from has passed its end (`Activity.due`). A
product's windows, and its partition's watermarks, arrive in order, however batched; a silence
is said before any later window of the product is folded in. So the same windows give the same
silences, live or replayed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

# The longest silence (windows) worth waiting for: a rate so low that it would take longer
# is no rate to judge by.
MAX_QUIET_WINDOWS = 1_000_000


@dataclass(frozen=True, slots=True)
class QuietConfig:
    """`decay`: per newer window, how much a window's orders weigh less in the rate (0–1).
    `warmup_windows`: windows with orders a product needs before its silences count.
    `p_quiet`: a silence this unlikely under the product's own rate makes it quiet."""

    decay: float = 0.5 ** (1 / 10)
    warmup_windows: int = 10
    p_quiet: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must be between 0 and 1, got {self.decay}")
        if not 0.0 < self.p_quiet < 1.0:
            raise ValueError(f"p_quiet must be between 0 and 1, got {self.p_quiet}")
        if self.warmup_windows < 1:
            raise ValueError(f"warmup_windows must be at least 1, got {self.warmup_windows}")

    def quiet_windows(self, rate: float) -> int | None:
        """How many empty windows in a row make a product of `rate` orders a window quiet;
        None if that would be more than `MAX_QUIET_WINDOWS`."""
        if not rate > 0.0:
            return None
        g = math.ceil(math.log(1.0 / self.p_quiet) / rate)
        return max(1, g) if g <= MAX_QUIET_WINDOWS else None


@dataclass(frozen=True, slots=True)
class QuietPoint:
    """A silence established: no order from `quiet_from` (the end of the product's last
    window) to `quiet_until` (exclusive), `windows` windows, where its rate expected
    `expected_orders`."""

    product: str
    partition: int  # the source partition it is read from
    last_start: int  # its last window with orders
    quiet_from: int
    quiet_until: int
    windows: int
    rate: float  # orders per window before the silence
    expected_orders: float


# partition, last_start, last_end, window_ms, windows, rate_num, rate_den, due (or -2^63: none)
_STATE = struct.Struct(">iqqqqddq")
_NO_DUE = -(1 << 63)


@dataclass(slots=True)
class Activity:
    """One product's order rate and the silence being waited for (`due`)."""

    partition: int
    last_start: int
    last_end: int
    window_ms: int
    windows: int = 0  # windows with orders
    rate_num: float = 0.0  # Σ w·orders over every window since the first (w: decay per newer)
    rate_den: float = 0.0  # Σ w over the same windows
    due: int | None = None  # quiet once the watermark reaches this (end of the last empty one)

    @classmethod
    def first(
        cls, partition: int, start: int, end: int, count: int, config: QuietConfig
    ) -> Activity:
        """A product's activity from its first window."""
        a = cls(partition, start, end, end - start)
        a._fold(1, count, config)
        return a

    @property
    def rate(self) -> float:
        return self.rate_num / self.rate_den

    def observe(
        self, partition: int, start: int, end: int, count: int, config: QuietConfig
    ) -> bool:
        """Fold in the product's next window; False (nothing changed) if it is not after the
        last one (a report re-sent after a crash upstream)."""
        if start <= self.last_start:
            return False
        elapsed = (start - self.last_start) // self.window_ms  # windows since the last, ≥ 1
        self.partition, self.last_start, self.last_end = partition, start, end
        self._fold(elapsed, count, config)
        return True

    def _fold(self, elapsed: int, count: int, config: QuietConfig) -> None:
        d = config.decay
        fade = d**elapsed
        self.rate_num = self.rate_num * fade + count
        self.rate_den = self.rate_den * fade + (1.0 - fade) / (1.0 - d)
        self.windows += 1
        g = config.quiet_windows(self.rate) if self.windows >= config.warmup_windows else None
        self.due = None if g is None else self.last_end + g * self.window_ms

    def silence(self, product: str) -> QuietPoint:
        """The silence `due` marks, said once: `due` is cleared."""
        assert self.due is not None
        windows = (self.due - self.last_end) // self.window_ms
        point = QuietPoint(
            product,
            self.partition,
            self.last_start,
            self.last_end,
            self.due,
            windows,
            self.rate,
            self.rate * windows,
        )
        self.due = None
        return point

    def to_bytes(self) -> bytes:
        due = _NO_DUE if self.due is None else self.due
        return _STATE.pack(
            self.partition,
            self.last_start,
            self.last_end,
            self.window_ms,
            self.windows,
            self.rate_num,
            self.rate_den,
            due,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Activity:
        p, start, end, size, windows, num, den, due = _STATE.unpack(raw)
        return cls(p, start, end, size, windows, num, den, None if due == _NO_DUE else due)

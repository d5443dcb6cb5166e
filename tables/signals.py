"""Per key, over its series of trend points: the demand level of each window (clustering) and
whether the next window will bring more than this one (classification).

- **Level:** the window's log revenue joins one of `levels` centres learned by online k-means
  (`tables/clustering.py`): 0 is the key's lowest demand level so far, `levels - 1` its
  highest. Log scale, so levels are ratios (a quiet and a busy regime), not amounts.
- **Direction:** online logistic regression (`tables/classification.py`) gives the
  probability that the next window's revenue is above this one's, from where this window
  stands against its moving average, where the trend forecast goes, and its level. When the
  next window arrives its label is known: the prediction is scored (prequential accuracy),
  then learned from.

Pure and sequential, folded one trend point at a time in window order: the same points give
the same bits however they were batched, live, replayed or after a restart. A point at or
before the last one folded (re-sent upstream after a crash) is skipped.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from tables.classification import OnlineLogistic
from tables.clustering import LineKMeans

FEATURES = 4  # bias, log(revenue / moving average), log(forecast / revenue), level position
_FORMAT = 1
_HEAD = struct.Struct(">BBqdqq")  # format, levels, last start, last revenue, scored, correct


@dataclass(slots=True)  # not frozen: made once per window, and a frozen init costs 2x
class TrendInput:
    """What a trend point says of one window (the fields the signals read)."""

    window_start: int
    window_end: int  # exclusive
    revenue: float
    moving_average: float
    forecast_next: float


@dataclass(slots=True)  # not frozen: made once per window, and a frozen init costs 2x
class SignalPoint:
    window_start: int
    window_end: int
    revenue: float
    level: int  # 0 = the lowest of the key's demand levels
    level_revenue: float  # the revenue at the centre of that level
    levels: int  # levels learned so far (up to the configured number)
    p_up_next: float  # P(the next window's revenue > this one's)
    accuracy: float | None  # of the direction predictions scored so far; None before one
    scored: int


@dataclass(slots=True)
class Signals:
    """One key's demand levels and direction classifier, and the features awaiting their
    label (this window's, labelled by the next window)."""

    levels: int = 3
    kmeans: LineKMeans = field(init=False)
    classifier: OnlineLogistic = field(init=False)
    last_start: int | None = None
    last_revenue: float = 0.0
    pending: list[float] | None = None  # features of the last window, labelled by the next
    # the classifier's probability for `pending` (the weights have not changed since); not
    # stored: recomputed after a restart, to the same bits
    pending_p: float | None = None

    def __post_init__(self) -> None:
        self.kmeans = LineKMeans(self.levels)
        self.classifier = OnlineLogistic(FEATURES)

    def observe(self, t: TrendInput) -> SignalPoint | None:
        """Fold in the next trend point; None if it is not after the last one (re-sent).
        ValueError for a negative or non-finite value, which no trend point carries."""
        if self.last_start is not None and t.window_start <= self.last_start:
            return None
        if not all(0.0 <= v < math.inf for v in (t.revenue, t.moving_average, t.forecast_next)):
            raise ValueError(f"trend values must be finite and >= 0: {t}")
        if self.pending is not None:
            self.classifier.learn(self.pending, t.revenue > self.last_revenue, self.pending_p)
        log_revenue = math.log1p(t.revenue)
        level = self.kmeans.add(log_revenue)
        known = len(self.kmeans.centres)
        features = [
            1.0,
            log_revenue - math.log1p(t.moving_average),
            math.log1p(t.forecast_next) - log_revenue,
            level / (known - 1) - 0.5 if known > 1 else 0.0,
        ]
        self.pending = features
        self.pending_p = p = self.classifier.probability(features)
        self.last_start, self.last_revenue = t.window_start, t.revenue
        return SignalPoint(
            t.window_start,
            t.window_end,
            t.revenue,
            level,
            math.expm1(self.kmeans.centres[level]),
            known,
            p,
            self.classifier.accuracy,
            self.classifier.scored,
        )

    def to_bytes(self) -> bytes:
        c = self.classifier
        head = _HEAD.pack(
            _FORMAT,
            self.levels,
            self.last_start if self.last_start is not None else -(1 << 63),
            self.last_revenue,
            c.scored,
            c.correct,
        )
        known = len(self.kmeans.centres)
        pending = self.pending or []
        body = struct.pack(
            f">{FEATURES}dB{known}d{known}qB{len(pending)}d",
            *c.weights,
            known,
            *self.kmeans.centres,
            *self.kmeans.counts,
            len(pending),
            *pending,
        )
        return head + body

    @classmethod
    def from_bytes(cls, raw: bytes) -> Signals:
        """ValueError for bytes `to_bytes` did not write."""
        try:
            return cls._unpacked(raw)
        except (struct.error, IndexError):
            raise ValueError(
                f"signals state of {len(raw)} bytes does not match its layout"
            ) from None

    @classmethod
    def _unpacked(cls, raw: bytes) -> Signals:
        fmt, levels, last_start, last_revenue, scored, correct = _HEAD.unpack_from(raw)
        if fmt != _FORMAT:
            raise ValueError(f"unknown signals state format {fmt}")
        s = cls(levels)
        s.last_start = None if last_start == -(1 << 63) else last_start
        s.last_revenue = last_revenue
        s.classifier.scored, s.classifier.correct = scored, correct
        at = _HEAD.size
        s.classifier.weights = list(struct.unpack_from(f">{FEATURES}d", raw, at))
        at += 8 * FEATURES
        known = raw[at]
        at += 1
        s.kmeans.centres = list(struct.unpack_from(f">{known}d", raw, at))
        at += 8 * known
        s.kmeans.counts = list(struct.unpack_from(f">{known}q", raw, at))
        at += 8 * known
        n = raw[at]
        if len(raw) != at + 1 + 8 * n:
            raise ValueError(f"signals state of {len(raw)} bytes does not match its layout")
        s.pending = list(struct.unpack_from(f">{n}d", raw, at + 1)) if n else None
        return s

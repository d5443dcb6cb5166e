"""Mergeable aggregates: count, sum, mean, min, max and std in one pass (Welford / Chan)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_PACK = struct.Struct("<qddddd")


@dataclass(slots=True)
class Moments:
    """Running count/sum/min/max/mean/M2 of a series; `merge` combines two partial results.

    M2 is the sum of squared deviations from the mean, so population variance is M2/n and
    sample variance M2/(n-1). Merging uses Chan et al.'s parallel formula, so any split of a
    series into batches gives the same result (up to float rounding).
    """

    count: int = 0
    total: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, x: float) -> None:
        self.count += 1
        self.total += x
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def add_many(self, xs: Sequence[float]) -> None:
        """`add` for each value in order, bit for bit, at a fraction of the cost (hot path).

        Values must not be NaN (min/max are taken over the whole batch at once).
        """
        if not xs:
            return
        n, total, mean, m2 = self.count, self.total, self.mean, self.m2
        for x in xs:
            n += 1
            total += x
            delta = x - mean
            mean += delta / n
            m2 += delta * (x - mean)
        self.count, self.total, self.mean, self.m2 = n, total, mean, m2
        lo, hi = min(xs), max(xs)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    def merge(self, other: Moments) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.total, self.mean = other.count, other.total, other.mean
            self.m2, self.min, self.max = other.m2, other.min, other.max
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / n
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def std(self) -> float:
        """Population standard deviation (0.0 for fewer than one value)."""
        return math.sqrt(max(self.m2, 0.0) / self.count) if self.count else 0.0

    @property
    def sample_std(self) -> float:
        """Sample (n-1) standard deviation; 0.0 for fewer than two values."""
        return math.sqrt(max(self.m2, 0.0) / (self.count - 1)) if self.count > 1 else 0.0

    def to_bytes(self) -> bytes:
        return _PACK.pack(self.count, self.total, self.mean, self.m2, self.min, self.max)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Moments:
        count, total, mean, m2, lo, hi = _PACK.unpack(raw)
        return cls(count, total, mean, m2, lo, hi)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.total,
            "mean": self.mean if self.count else 0.0,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "std": self.std,
        }

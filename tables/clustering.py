"""Online k-means on a line: one key's values grouped into k levels (clusters), learned as
the values arrive.

Sequential (MacQueen) k-means: the first k distinct values become the centres; after that
each value joins the nearest centre (the lower one on a tie), which moves to the running
mean of its members. On a line a centre never passes its neighbour, so the centres stay
sorted and a level's index means the same thing (0 lowest) for as long as the key lives.
Pure and deterministic: the same values in the same order give the same bits.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class LineKMeans:
    """k sorted centres and how many values each has taken in."""

    k: int
    centres: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 100:
            raise ValueError(f"k must be from 1 to 100, got {self.k}")

    def nearest(self, x: float) -> int:
        """The index of the centre nearest to x (the lower on a tie); -1 with no centre.

        Only x's two neighbours are candidates: a centre moving towards x then never passes
        another, even where rounding makes two distances tie."""
        if not self.centres:
            return -1
        j = bisect.bisect_left(self.centres, x)
        if j == 0:
            return 0
        if j == len(self.centres):
            return j - 1
        return j if self.centres[j] - x < x - self.centres[j - 1] else j - 1

    def add(self, x: float) -> int:
        """Take x in; returns its level (the index of the centre it joined). ValueError for a
        value that is not finite (it would break the centres' order)."""
        if not math.isfinite(x):
            raise ValueError(f"a value to cluster must be finite, got {x}")
        if len(self.centres) < self.k and x not in self.centres:
            i = sum(1 for c in self.centres if c < x)
            self.centres.insert(i, x)
            self.counts.insert(i, 1)
            return i
        i = self.nearest(x)
        self.counts[i] += 1
        self.centres[i] += (x - self.centres[i]) / self.counts[i]
        return i

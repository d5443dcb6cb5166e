"""Online binary classification: logistic regression learned by stochastic gradient steps,
evaluated prequentially (each prediction is scored against its label before the model learns
from it), as streaming learners such as River's are.

Pure and deterministic: the same examples in the same order give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

_MAX_MARGIN = 30.0  # |w·x| beyond this is certainty either way; keeps exp() finite


@dataclass(slots=True)
class OnlineLogistic:
    """Weights over a fixed number of features, and the prequential score so far."""

    features: int
    learning_rate: float = 0.05
    weights: list[float] = field(default_factory=list)
    scored: int = 0  # predictions whose label is known
    correct: int = 0  # of those, how many were on the right side of 0.5

    def __post_init__(self) -> None:
        if not self.weights:
            self.weights = [0.0] * self.features
        if len(self.weights) != self.features:
            raise ValueError(f"{len(self.weights)} weights for {self.features} features")

    def probability(self, x: Sequence[float]) -> float:
        """P(label 1 | x): 0.5 before anything was learned."""
        margin = 0.0
        for w, v in zip(self.weights, x):  # one add at a time, in feature order: the same
            margin += w * v  # bits on every Python (3.12's sum() compensates, 3.11's does not)
        if not math.isfinite(margin):
            raise ValueError(f"features or weights are not finite: {list(x)}, {self.weights}")
        margin = max(-_MAX_MARGIN, min(_MAX_MARGIN, margin))
        return 1.0 / (1.0 + math.exp(-margin))

    def learn(self, x: Sequence[float], label: bool, p: float | None = None) -> None:
        """Score the prediction for x against its label, then take one gradient step.
        `p`: `probability(x)` if the caller has it (the weights unchanged since)."""
        if p is None:
            p = self.probability(x)
        self.scored += 1
        self.correct += (p >= 0.5) == label
        step = self.learning_rate * ((1.0 if label else 0.0) - p)
        self.weights = [w + step * v for w, v in zip(self.weights, x)]

    @property
    def accuracy(self) -> float | None:
        """Share of scored predictions that were right; None before the first label."""
        return self.correct / self.scored if self.scored else None

"""Online logistic regression, scored prequentially."""

from __future__ import annotations

import math

import pytest

from tables.classification import OnlineLogistic


def test_it_learns_a_separable_rule_and_scores_each_prediction_before_learning() -> None:
    model = OnlineLogistic(2, learning_rate=0.5)
    assert model.probability([1.0, 3.0]) == 0.5 and model.accuracy is None
    examples = [([1.0, x], x > 0) for x in (2.0, -1.5, 0.5, -3.0, 1.0, -0.5) * 20]
    for x, label in examples:
        model.learn(x, label)
    assert model.scored == len(examples)
    assert model.probability([1.0, 2.0]) > 0.9 and model.probability([1.0, -2.0]) < 0.1
    assert model.accuracy is not None and model.accuracy > 0.9


def test_one_step_is_the_gradient_of_the_log_loss() -> None:
    model = OnlineLogistic(2, learning_rate=0.1, weights=[0.2, -0.4])
    x = [1.0, 2.0]
    p = 1 / (1 + math.exp(-(0.2 - 0.8)))
    model.learn(x, True)
    assert model.weights == pytest.approx([0.2 + 0.1 * (1 - p), -0.4 + 0.1 * (1 - p) * 2])
    assert (model.scored, model.correct) == (1, 0)  # p < 0.5 said "no"


def test_huge_features_give_a_certain_probability_not_an_overflow() -> None:
    model = OnlineLogistic(1, weights=[1.0])
    assert model.probability([1e300]) == pytest.approx(1.0)
    assert model.probability([-1e300]) == pytest.approx(0.0)


def test_the_margin_is_added_one_term_at_a_time_in_feature_order() -> None:
    """The same bits on every Python: 3.12's sum() compensates rounding, which would give 1.0
    here (p = 0.73) where a plain left-to-right sum gives 0.0 (p = 0.5)."""
    model = OnlineLogistic(3, weights=[1e16, 1.0, -1e16])
    assert model.probability([1.0, 1.0, 1.0]) == 0.5


def test_a_feature_that_is_not_finite_is_an_error_not_a_certainty() -> None:
    model = OnlineLogistic(2)
    with pytest.raises(ValueError, match="not finite"):
        model.learn([1.0, math.inf], True)
    assert model.weights == [0.0, 0.0] and model.scored == 0
    with pytest.raises(ValueError, match="not finite"):
        model.probability([math.nan, 1.0])

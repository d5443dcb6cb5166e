"""What a batch's counts add to the Prometheus counters."""

from __future__ import annotations

from prometheus_client import REGISTRY

from agents.base import BatchCounts
from app import metrics


def _value(name: str) -> float:
    labels = {"pipeline": "orders", "version": "7"}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_provisional_windows_are_not_counted_as_closed() -> None:
    closed, provisional = (
        _value("kappa_windows_closed_total"),
        _value("kappa_windows_provisional_total"),
    )
    metrics.record_batch("orders", 7, BatchCounts(windows_closed=2), produced=2)
    metrics.record_batch("orders", 7, BatchCounts(windows_provisional=3), produced=3)
    assert _value("kappa_windows_closed_total") - closed == 2
    assert _value("kappa_windows_provisional_total") - provisional == 3


def test_silences_said_are_counted() -> None:
    before = _value("kappa_quiet_products_total")
    metrics.record_batch("orders", 7, BatchCounts(quiet=2), produced=2)
    assert _value("kappa_quiet_products_total") - before == 2

"""The consumer lag a worker exports, without a broker: per partition, from the last fetch's high
watermark and the state's applied offset; series of partitions gone from the worker removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from app.consumer_lag import LagExport, partition_lag, source_lag
from app.settings import load_settings
from app.worker import _applied_offset_of, _FaustSource, create_app


def test_the_lag_is_what_the_state_has_not_applied() -> None:
    assert partition_lag(100, 99) == 0  # the last record (offset 99) applied
    assert partition_lag(100, 89) == 10
    assert partition_lag(100, -1) == 100  # nothing applied yet
    assert partition_lag(0, -1) == 0  # an empty partition
    assert partition_lag(None, 5) is None  # no fetch answered yet


def test_a_state_ahead_of_the_last_fetch_has_no_lag() -> None:
    """The high watermark is as of the last fetch response; records applied since a newer one
    are not negative lag."""
    assert partition_lag(50, 70) == 0


class _Consumer:
    def __init__(self, highwaters: dict[int, int | None], assigned: set[int]) -> None:
        self.highwaters, self._assigned = highwaters, assigned

    def highwater(self, partition: int) -> int | None:
        return self.highwaters.get(partition)

    def assigned(self) -> set[int]:
        return self._assigned


def test_only_open_partitions_with_a_known_end_have_a_lag() -> None:
    consumer = _Consumer({0: 10, 1: 20, 2: None, 3: 40}, assigned={0, 1, 2, 3})
    applied = {0: 9, 1: 4, 2: 0}  # 3's state is still restoring
    assert source_lag(consumer, applied.get) == {0: 0, 1: 15}


def _gauge() -> tuple[Gauge, CollectorRegistry]:
    registry = CollectorRegistry()
    gauge = Gauge("lag", "test", ["pipeline", "version", "partition"], registry=registry)
    return gauge, registry


def _series(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["pipeline"], s.labels["version"], s.labels["partition"]): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_each_scrape_exports_the_lags_it_measured() -> None:
    gauge, registry = _gauge()
    export = LagExport(3, gauge)
    export.export({"orders": {0: 5, 1: 0}, "user-totals": {2: 7}})
    assert _series(registry) == {
        ("orders", "3", "0"): 5,
        ("orders", "3", "1"): 0,
        ("user-totals", "3", "2"): 7,
    }
    export.export({"orders": {0: 1, 1: 0}, "user-totals": {2: 0}})
    assert _series(registry)[("orders", "3", "0")] == 1


def test_a_partition_no_longer_measured_loses_its_series() -> None:
    """Revoked (another worker holds it now), or restoring again: a series left at its last
    value would claim a lag this worker no longer has."""
    gauge, registry = _gauge()
    export = LagExport(1, gauge)
    export.export({"orders": {0: 5, 1: 3}})
    export.export({"orders": {1: 2}})
    assert _series(registry) == {("orders", "1", "1"): 2}
    export.export({})
    assert _series(registry) == {}


def test_a_worker_whose_consumer_has_not_started_knows_no_high_watermark(tmp_path: Path) -> None:
    """A scrape before the consumer's thread starts (or while it rejoins) must not raise."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    assert _FaustSource(app, "orders").highwater(0) is None


@pytest.mark.parametrize(
    "raised",
    [
        AssertionError("Partition is not assigned"),  # aiokafka, for a partition revoked since
        AttributeError("'NoneType' object has no attribute 'state_value'"),  # while rejoining
    ],
)
def test_a_scrape_racing_a_rebalance_knows_no_high_watermark(
    tmp_path: Path, raised: Exception
) -> None:
    """`assigned()` and `highwater()` are two calls: the partition can leave between them."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)

    def highwater(tp: object) -> int:
        raise raised

    app.consumer.highwater = highwater  # type: ignore[method-assign]
    assert _FaustSource(app, "orders").highwater(0) is None


class _State:
    applied_offset = 41


class _Runner:
    def open_state(self, partition: int) -> _State | None:
        return _State() if partition == 1 else None


def test_the_applied_offset_is_the_open_states() -> None:
    applied = _applied_offset_of(_Runner())  # type: ignore[arg-type]
    assert applied(1) == 41
    assert applied(0) is None  # not open here: restoring, or not assigned

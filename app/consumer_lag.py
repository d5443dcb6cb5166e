"""How far each pipeline's state trails its source partitions: `kappa_consumer_lag_records`.

Kafka Streams' `records-lag`, from the worker's own view, so it needs no broker-side exporter:
the high watermark of the partition's last fetch response minus the next offset the state
applies. Records fetched but not yet processed count as lag: only applied records are done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from prometheus_client import Gauge

from app.metrics import CONSUMER_LAG


class LagSource(Protocol):
    """The source consumer (`app.pipeline_driver.SourceConsumer`), as far as the lag needs it."""

    def highwater(self, partition: int) -> int | None: ...

    def assigned(self) -> set[int]: ...


def partition_lag(highwater: int | None, applied_offset: int) -> int | None:
    """Records not applied yet: `highwater` is the offset the next record written will get,
    `applied_offset` the last one applied (-1: none). None until a fetch has told the high
    watermark. With transactions a partition at rest keeps a lag of 1: its last transaction's
    commit marker takes an offset, and no record follows it."""
    if highwater is None:
        return None
    return max(0, highwater - applied_offset - 1)


def source_lag(consumer: LagSource, applied_offset: Callable[[int], int | None]) -> dict[int, int]:
    """The lag of each assigned partition whose state is open (`applied_offset` answers None
    for one that is not: still restoring) and whose high watermark is known."""
    lags = {}
    for partition in consumer.assigned():
        applied = applied_offset(partition)
        if applied is None:
            continue
        lag = partition_lag(consumer.highwater(partition), applied)
        if lag is not None:
            lags[partition] = lag
    return lags


class LagExport:
    """Sets the gauge from each scrape's lags, and removes the series of partitions no longer
    measured here: a series left behind would claim a partition another worker now holds."""

    def __init__(self, version: int, gauge: Gauge = CONSUMER_LAG) -> None:
        self.version = str(version)
        self.gauge = gauge
        self._exported: set[tuple[str, str]] = set()

    def export(self, lags: Mapping[str, Mapping[int, int]]) -> None:
        now = set()
        for pipeline, partitions in lags.items():
            for partition, lag in partitions.items():
                labels = (pipeline, str(partition))
                self.gauge.labels(pipeline, self.version, labels[1]).set(lag)
                now.add(labels)
        for pipeline, partition in self._exported - now:
            self.gauge.remove(pipeline, self.version, partition)
        self._exported = now

"""Prometheus series of `kappa sink` (`--metrics-port`): how far behind its topics it is, and
what it has finished. Labelled by version and output, so sinks of several versions can share
one Prometheus."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LAG = Gauge(
    "kappa_sink_lag_records",
    "Sink: records of the output partition not read yet (its high watermark minus the "
    "sink's position; records of a transaction still open count)",
    ["version", "output", "partition"],
)
RESULTS = Counter(
    "kappa_sink_results",
    "Sink: results written into finished files (lines)",
    ["version", "output"],
)
FILES = Counter("kappa_sink_files", "Sink: files finished", ["version", "output"])


class SinkMetrics:
    """One sink's series."""

    def __init__(self, version: int, outputs: list[str]) -> None:
        self.version = str(version)
        for output in outputs:  # series from the start, 0 until a file is finished
            FILES.labels(self.version, output)
            RESULTS.labels(self.version, output)

    def lag(self, output: str, partition: int, end: int, position: int) -> None:
        """The partition's end (high watermark) and the next offset the sink reads."""
        LAG.labels(self.version, output, str(partition)).set(max(end - position, 0))

    def finished(self, output: str, results: int) -> None:
        FILES.labels(self.version, output).inc()
        RESULTS.labels(self.version, output).inc(results)

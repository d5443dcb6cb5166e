"""Prometheus metrics, served on the worker's `/metrics`. Labels never carry record values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from agents.base import BatchCounts

EVENTS_IN = Counter("kappa_events_in_total", "Source records processed", ["pipeline", "version"])
SKIPPED = Counter(
    "kappa_events_skipped_total", "Records skipped as already applied", ["pipeline", "version"]
)
DLQ = Counter(
    "kappa_dlq_total", "Records sent to the dead-letter topic", ["pipeline", "version", "reason"]
)
LATE = Counter(
    "kappa_late_total",
    "Events behind the watermark, sent to the late topic",
    ["pipeline", "version"],
)
WINDOWS_CLOSED = Counter(
    "kappa_windows_closed_total", "Windows emitted final", ["pipeline", "version"]
)
WINDOWS_PROVISIONAL = Counter(
    "kappa_windows_provisional_total",
    "Open windows emitted provisional by the flush at the end of a bounded replay",
    ["pipeline", "version"],
)
ANOMALIES = Counter(
    "kappa_anomalies_total",
    "Windows far off their key's forecast, sent to the anomalies topic",
    ["pipeline", "version"],
)
QUIET_PRODUCTS = Counter(
    "kappa_quiet_products_total",
    "Products said quiet: no order for longer than their own rate makes likely",
    ["pipeline", "version"],
)
SOURCE_OFFSETS_MISSING = Counter(
    "kappa_source_offsets_missing_total",
    "Offsets of a source partition passed over with no record, after the first record a "
    "pipeline took from it: a transaction's commit marker each on a source written in "
    "transactions, else records lost on the way (compacted away, or a bug)",
    ["pipeline", "version"],
)
RECORDS_OUT = Counter("kappa_records_out_total", "Records produced", ["pipeline", "version"])
BATCH_SECONDS = Histogram(
    "kappa_batch_seconds",
    "Time to process and commit one partition batch",
    ["pipeline", "version"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECORD_AGE = Histogram(
    "kappa_record_age_seconds",
    "Wall-clock age of each committed partition batch's first record when the batch became "
    "durable (commit time minus the record's Kafka timestamp): how far outputs trail input",
    ["pipeline", "version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
STREAM_TIME = Gauge(
    "kappa_stream_time_ms",
    "Max event time seen (ms) per partition",
    ["pipeline", "version", "partition"],
)
RESTORED = Counter(
    "kappa_changelog_restored_total",
    "State entries restored from changelogs",
    ["pipeline", "version"],
)
SOURCE_HELD = Gauge(
    "kappa_source_held",
    "1 while the pipeline's source is left out of the worker's fetches: its buffer is full and "
    "the pipeline is not keeping up (its state restoring, a batch retrying, slow batches)",
    ["pipeline", "version"],
)
SEND_RETRIES = Counter(
    "kappa_send_retries_total", "Produce attempts retried", ["pipeline", "version"]
)
CONSUMER_LAG = Gauge(
    "kappa_consumer_lag_records",
    "Records of the source partition not applied to the pipeline's state yet (the high "
    "watermark of the last fetch minus the next offset to apply); set at each scrape",
    ["pipeline", "version", "partition"],
)
WORKER_READY = Gauge(
    "kappa_worker_ready",
    "1 while GET /ready would answer 200 (in its group, no rebalance under way, every assigned "
    "partition's state open), 0 while joining, rebalancing or restoring; set at each scrape",
    ["version"],
)


def record_batch(pipeline: str, version: int, counts: BatchCounts, produced: int) -> None:
    v = str(version)
    EVENTS_IN.labels(pipeline, v).inc(counts.events)
    if counts.skipped:
        SKIPPED.labels(pipeline, v).inc(counts.skipped)
    for reason, n in counts.dlq_reasons.items():
        DLQ.labels(pipeline, v, reason).inc(n)
    if counts.late:
        LATE.labels(pipeline, v).inc(counts.late)
    if counts.windows_closed:
        WINDOWS_CLOSED.labels(pipeline, v).inc(counts.windows_closed)
    if counts.windows_provisional:
        WINDOWS_PROVISIONAL.labels(pipeline, v).inc(counts.windows_provisional)
    if counts.anomalies:
        ANOMALIES.labels(pipeline, v).inc(counts.anomalies)
    if counts.quiet:
        QUIET_PRODUCTS.labels(pipeline, v).inc(counts.quiet)
    RECORDS_OUT.labels(pipeline, v).inc(produced)


def record_age(pipeline: str, version: str, timestamp_ms: int | None, now_s: float) -> None:
    """Observe one batch's first-record age; records without a timestamp are not observed,
    and a producer clock ahead of this one counts as zero."""
    if timestamp_ms is not None and timestamp_ms >= 0:
        RECORD_AGE.labels(pipeline, version).observe(max(0.0, now_s - timestamp_ms / 1000))

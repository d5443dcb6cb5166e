"""The pre-loaded workload: N generated orders in one topic, and what a correct run must find.

No late and no malformed records, so every event lands in exactly one window: the windows'
counts must add up to N and their sums to the generator's total of amount × quantity.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiokafka.partitioner import DefaultPartitioner

from app.admin import ensure_topics
from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from app.topic_reader import high_watermarks

# Event times of the pre-loaded orders: one hour from this instant (epoch ms).
START_MS = 1_700_000_000_000
SPAN_MS = 3_600_000


@dataclass
class Dataset:
    """A produced topic and its expected totals; per-partition facts come from the partitioner."""

    topic: str
    count: int
    good: int
    late: int
    bad: int
    total_value: float  # sum of amount × quantity over the good orders
    per_partition: dict[int, int] = field(default_factory=dict)  # partition → records
    last_ts: dict[int, int] = field(default_factory=dict)  # partition → largest event time (ms)
    produce_s: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "events": self.count,
            "good": self.good,
            "late": self.late,
            "bad": self.bad,
            "total_value": self.total_value,
            "per_partition": {str(p): n for p, n in sorted(self.per_partition.items())},
            "produce_seconds": round(self.produce_s, 2),
        }


def build_records(
    spec: GeneratorSpec, partitions: int
) -> tuple[list[tuple[bytes | None, bytes]], Dataset]:
    """The records to produce and their expectations (topic left empty for the caller)."""
    partitioner = DefaultPartitioner()
    all_parts = list(range(partitions))
    part_of: dict[bytes, int] = {}
    records: list[tuple[bytes | None, bytes]] = []
    per_partition = dict.fromkeys(all_parts, 0)
    last_ts: dict[int, int] = {}
    total = 0.0
    good = late = bad = 0
    for rec in generate(spec):
        records.append((rec.key, rec.value))
        p = part_of.get(rec.key)
        if p is None:
            p = part_of[rec.key] = partitioner(rec.key, all_parts, all_parts)
        per_partition[p] += 1
        if rec.kind == "bad":
            bad += 1
            continue
        order = json.loads(rec.value)
        if rec.kind == "late":
            late += 1
            continue
        good += 1
        total += float(order["amount"]) * int(order["quantity"])
        last_ts[p] = max(last_ts.get(p, order["ts"]), order["ts"])
    dataset = Dataset("", spec.count, good, late, bad, total, per_partition, last_ts)
    return records, dataset


async def preload(bootstrap: str, topic: str, spec: GeneratorSpec, partitions: int) -> Dataset:
    """Create `topic`, produce the spec's orders into it (acks=all), check the partition counts."""
    records, dataset = build_records(spec, partitions)
    dataset.topic = topic
    await ensure_topics(bootstrap, {topic: (partitions, {})})
    t0 = time.perf_counter()
    await produce_records(bootstrap, topic, records, progress=False, total=len(records))
    dataset.produce_s = time.perf_counter() - t0
    ends = await high_watermarks(bootstrap, topic)
    if ends != dataset.per_partition:
        raise RuntimeError(
            f"{topic}: partition ends {ends} differ from the partitioner's {dataset.per_partition}"
        )
    return dataset


def orders_spec(count: int, seed: int, keys: int) -> GeneratorSpec:
    """N orders over one hour of event time, in order (no disorder), no late or bad records."""
    return GeneratorSpec(count=count, seed=seed, keys=keys, start_ms=START_MS, span_ms=SPAN_MS)

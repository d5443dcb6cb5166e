"""Generated order streams for the broker tests: some disorder, some late, some malformed."""

from __future__ import annotations

from typing import Any

from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records

START_MS = 1_700_000_000_000


def orders_spec(
    count: int,
    seed: int,
    start_ms: int = START_MS,
    *,
    keys: int,
    users: int,
    ms_per_event: int = 300,
    disorder_ms: int = 5_000,
) -> GeneratorSpec:
    """`count` orders from `start_ms`, one every `ms_per_event` of event time on average;
    disorder within grace, 1 % late by construction, 2 % malformed."""
    return GeneratorSpec(
        count=count,
        seed=seed,
        keys=keys,
        users=users,
        start_ms=start_ms,
        span_ms=count * ms_per_event,
        disorder_ms=disorder_ms,
        late_fraction=0.01,
        bad_fraction=0.02,
    )


async def produce_orders(broker: str, topic: str, spec: GeneratorSpec, **options: Any) -> None:
    """Produce the spec's orders to `topic` (`options`: `produce_records`', e.g. a rate)."""
    records = ((r.key, r.value) for r in generate(spec))
    await produce_records(broker, topic, records, progress=False, **options)


# One well-formed order, as the orders pipeline accepts it (unit tests of both pipelines).
GOOD_ORDER = {
    "order_id": "o1",
    "user_id": "u1",
    "product_id": "p1",
    "category": "books",
    "amount": 2.5,
    "quantity": 2,
    "ts": 1_700_000_000_000,
}

"""The orders pipeline: clean raw orders, per-product event-time revenue windows, DLQ, late.

Source `orders` must be keyed by `product_id` (the loader does this): windows close on the
stream time of the source partition, so all of a product's events have to share a partition.
Valid orders are also re-keyed by `user_id` onto `orders.by-user` for the user-totals pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from agents.base import BatchOutput, OutRecord, SourceRecord, source_headers
from tables.aggregates import Moments
from tables.cleaning import (
    InvalidRecord,
    require_event_time_ms,
    require_number,
    require_positive_int,
    require_text,
)
from tables.partition_state import PartitionState
from tables.window_processor import TimedValue, WindowKey, WindowProcessor
from tables.windows import TumblingWindows

SOURCE = "orders"
REVENUE = "orders.revenue-1m"
DLQ = "orders.dlq"
LATE = "orders.late"
BY_USER = "orders.by-user"


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    user_id: str
    product_id: str
    category: str
    amount: float
    quantity: int
    ts: int

    @property
    def total(self) -> float:
        return self.amount * self.quantity


def parse_order(rec: SourceRecord) -> Order:
    """Validate and convert one raw record; raises `InvalidRecord` with the DLQ reason."""
    raw = rec.value
    if not raw:
        raise InvalidRecord("empty_value")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRecord("not_utf8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRecord("not_json") from None
    if not isinstance(obj, dict):
        raise InvalidRecord("not_an_object", type(obj).__name__)
    amount = require_number(obj, "amount")
    if amount < 0:
        raise InvalidRecord("out_of_range", "amount must be >= 0")
    order = Order(
        order_id=require_text(obj, "order_id"),
        user_id=require_text(obj, "user_id"),
        product_id=require_text(obj, "product_id"),
        category=require_text(obj, "category"),
        amount=amount,
        quantity=require_positive_int(obj, "quantity"),
        ts=require_event_time_ms(obj, "ts"),
    )
    if rec.key is None:
        raise InvalidRecord("null_key", "orders must be keyed by product_id")
    if rec.key != order.product_id.encode():
        raise InvalidRecord("key_mismatch", "record key must equal product_id")
    return order


def dlq_record(rec: SourceRecord, err: InvalidRecord) -> OutRecord:
    """The original bytes, with the reason and the source position in headers."""
    headers = [("kappa.error", err.reason.encode()), *source_headers(rec)]
    if err.detail:
        headers.append(("kappa.error.detail", err.detail.encode()[:512]))
    return OutRecord(DLQ, rec.key, rec.value, rec.timestamp, headers)


def revenue_value(product_id: str, key: WindowKey, m: Moments, final: bool | None = None) -> bytes:
    """Deterministic JSON (fixed field order), so a re-sent window is byte-identical."""
    d = {"product_id": product_id, "window_start": key[1], "window_end": key[0], **m.as_dict()}
    if final is not None:
        d["final"] = final
    return json.dumps(d, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class OrdersConfig:
    window_ms: int = 60_000
    grace_ms: int = 10_000
    emit_updates: bool = False  # also emit each window's running value whenever it changes


class OrdersPipeline:
    """Per product: tumbling revenue windows of `total = amount × quantity`."""

    name = "orders"
    source = SOURCE
    outputs = (REVENUE, DLQ, LATE, BY_USER)

    def __init__(self, config: OrdersConfig | None = None) -> None:
        self.config = config or OrdersConfig()
        spec = TumblingWindows(self.config.window_ms)
        self.processor = WindowProcessor(spec, self.config.grace_ms)
        self.store_name = f"revenue-{spec.name}"

    def process(self, state: PartitionState, records: Sequence[SourceRecord]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        emit = out.records.append
        applied = state.applied_offset
        events: list[TimedValue[tuple[SourceRecord, Order]]] = []
        forwards: list[OutRecord] = []
        for rec in records:
            if rec.offset <= applied:
                counts.skipped += 1
                continue
            counts.events += 1
            try:
                order = parse_order(rec)
            except InvalidRecord as err:
                counts.dlq += 1
                counts.dlq_reasons[err.reason] = counts.dlq_reasons.get(err.reason, 0) + 1
                emit(dlq_record(rec, err))
                continue
            events.append(TimedValue(order.product_id, order.ts, order.total, (rec, order)))
            forwards.append(_forward_to_user(rec, order))

        clock = state.clock(self.store_name, self.config.grace_ms)
        windows = state.windows(self.store_name)
        result = self.processor.process(events, clock, windows)
        for late in result.late:
            rec = late.record[0]
            headers = [
                ("kappa.late-by-ms", str(late.late_by_ms).encode()),
                ("kappa.watermark", str(late.watermark).encode()),
                *source_headers(rec),
            ]
            emit(OutRecord(LATE, rec.key, rec.value, rec.timestamp, headers))
        counts.late = len(result.late)
        if self.config.emit_updates:
            for key, m in sorted(result.updated.items()):
                emit(
                    OutRecord(
                        REVENUE, key[2].encode(), revenue_value(key[2], key, m, False), key[0] - 1
                    )
                )
        windows.put(result.updated)
        self._emit_closed(out, windows, result.closed)
        out.records.extend(forwards)
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        out = BatchOutput()
        windows = state.windows(self.store_name)
        self._emit_closed(out, windows, self.processor.flush(windows, {}))
        return out

    def _emit_closed(
        self, out: BatchOutput, windows, closed: list[tuple[WindowKey, Moments]]
    ) -> None:
        final = True if self.config.emit_updates else None
        for key, m in closed:
            product = key[2]
            out.records.append(
                OutRecord(
                    REVENUE, product.encode(), revenue_value(product, key, m, final), key[0] - 1
                )
            )
        windows.delete(k for k, _ in closed)
        out.counts.windows_closed += len(closed)


def _forward_to_user(rec: SourceRecord, order: Order) -> OutRecord:
    """Re-key by user_id; the source position lets the next step drop re-sent duplicates."""
    value = json.dumps(
        {
            "user_id": order.user_id,
            "total": order.total,
            "ts": order.ts,
            "src": [rec.partition, rec.offset],
        },
        separators=(",", ":"),
    ).encode()
    return OutRecord(BY_USER, order.user_id.encode(), value, order.ts)

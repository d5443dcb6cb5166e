"""The orders pipeline: clean raw orders, per-product event-time revenue windows, DLQ, late.

Source `orders` must be keyed by `product_id` (the loader does this): windows close on the
stream time of the source partition, so all of a product's events have to share a partition.
Per user, this partition's cumulative order count and spend are kept here and forwarded, once
per user per batch, onto `orders.by-user` (keyed by user_id) for the user-totals pipeline: an
absolute running value, not a delta, so a re-sent or re-batched forward can never double-count.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from agents.base import BatchOutput, OutRecord, Record, json_str
from agents.user_state import decode_partial, encode_partial
from agents.window_reports import BY_WINDOW, BY_WINDOW_KEY, report_values
from tables.aggregates import Moments
from tables.cleaning import (
    DEFAULT_MAX_TS_AHEAD_MS,
    MAX_EVENT_MS,
    MAX_TEXT_CHARS,
    MIN_EVENT_MS,
    InvalidRecord,
    json_float,
    json_long_int,
    numeral_value,
    require_event_time_ms,
    require_not_ahead,
    require_number,
    require_positive_int,
    require_text,
)
from tables.partition_state import PartitionState
from tables.window_processor import LateEvent, WindowKey, WindowProcessor
from tables.windows import HoppingWindows, TumblingWindows, WindowsFrom

SOURCE = "orders"
REVENUE = "orders.revenue-1m"
REVENUE_HOPPING = "orders.revenue-hopping"  # empty unless hopping windows are configured
# `kappa.late-for` of a late order's copy, with hopping windows: what it is missing from.
LATE_FOR_REVENUE = REVENUE.encode()
LATE_FOR_BOTH = f"{REVENUE},{REVENUE_HOPPING}".encode()
PROVISIONAL_HEADER = "kappa.provisional"  # a window emitted open, by a replay's final flush
DLQ = "orders.dlq"
LATE = "orders.late"
BY_USER = "orders.by-user"
USER_PARTIALS = "user-partials"
# Bounds of a plausible order. Beyond them a value is almost surely a unit or parsing error
# (DLQ `out_of_range`), and with them no sum, mean or std of totals can leave the float
# range: totals are at most 1e24, so even 2**63 of them sum to about 1e43 and their M2 to 1e67.
# Nor can they sink below it: squares of deviations under about 1e-154 round to 0 (a window's
# std reads 0, a trend's spread too, and every window of the product is an anomaly); a
# positive amount under 1e-100 is refused, far above that.
MAX_AMOUNT = 1e15
MIN_POSITIVE_AMOUNT = 1e-100
MAX_QUANTITY = 1_000_000_000


class Order(NamedTuple):  # a tuple: constructed once per event on the hot path
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


_raw_decode = json.JSONDecoder().raw_decode
_INF = math.inf


def quick_order(
    raw: bytes | None, key: bytes | None, record_ms: int = 0, ahead_ms: int = MAX_EVENT_MS
) -> tuple[str, str, float, int] | None:
    """(product_id, user_id, total, ts) of a well-formed, well-typed order, else None.

    The hot path: one decode, one dict lookup per field and one combined check, no object per
    event; an amount sent as a numeral string ("12.50") is converted here too. Anything it
    does not accept outright (a missing field, a word for an amount, non-ASCII ids, ...)
    returns None and goes through `parse_order`, which converts what it can and names the DLQ
    reason. Whatever this accepts, `parse_order` accepts identically.

    `ts` must also be at most `ahead_ms` after `record_ms` (`quick_ahead_ms` of the guard's
    setting), in one comparison: an order past it is `parse_order`'s to judge exactly, as is,
    mostly, one of a record without a timestamp (passed as 0, which parse_order does not check).
    """
    try:
        text = raw.decode()  # type: ignore[union-attr]
        obj, end = _raw_decode(text)  # json.loads minus its two whitespace regex passes
        oid, uid, pid, cat = obj["order_id"], obj["user_id"], obj["product_id"], obj["category"]
        amount, qty, ts = obj["amount"], obj["quantity"], obj["ts"]
    except Exception:  # anything unusual is parse_order's to judge and name
        return None
    if type(amount) is str and (amount := numeral_value(amount)) is None:  # "12.50": coerced
        return None
    if (
        end == len(text)
        and type(oid) is str
        and type(uid) is str
        and type(pid) is str
        and type(cat) is str
        and type(amount) is float
        and type(qty) is int
        and type(ts) is int
        and 0 < len(oid) <= MAX_TEXT_CHARS
        and 0 < len(uid) <= MAX_TEXT_CHARS
        and 0 < len(pid) <= MAX_TEXT_CHARS
        and 0 < len(cat) <= MAX_TEXT_CHARS
        and (amount >= MIN_POSITIVE_AMOUNT or amount == 0.0)  # -0.0 == 0.0
        and amount <= MAX_AMOUNT
        and 1 <= qty <= MAX_QUANTITY
        and MIN_EVENT_MS <= ts < MAX_EVENT_MS
        and ts - ahead_ms <= record_ms
        and pid.isascii()  # ASCII: encodable (no lone surrogates), and O(1) to check
        and uid.isascii()
        and key == pid.encode()
    ):
        return pid, uid, amount * qty + 0.0, ts  # + 0.0: an amount of -0.0 counts as 0.0
    return None


def quick_ahead_ms(max_ts_ahead_ms: int) -> int:
    """`quick_order`'s `ahead_ms` for the guard's setting: off (0) is `MAX_EVENT_MS`, which no
    valid `ts` is ahead of a record timestamp >= 0 by."""
    return max_ts_ahead_ms if max_ts_ahead_ms > 0 else MAX_EVENT_MS


def parse_order(rec: Record, max_ts_ahead_ms: int = 0) -> Order:
    """Validate and convert one raw record; raises `InvalidRecord` with the DLQ reason.

    With `max_ts_ahead_ms`, a `ts` further than that after the record's timestamp is refused
    (`timestamp_ahead`, see `require_not_ahead`), after every other rule."""
    raw = rec.value
    if not raw:
        raise InvalidRecord("empty_value")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRecord("not_utf8") from None
    try:  # Decimal: `ts` fractions are floored exactly; amounts become the same floats
        obj = json.loads(text, parse_float=json_float)
    except RecursionError:
        raise InvalidRecord("not_json") from None
    except ValueError:  # not JSON, or an integer past Python's 4,300-digit limit
        try:
            obj = json.loads(text, parse_float=json_float, parse_int=json_long_int)
        except (ValueError, RecursionError):
            raise InvalidRecord("not_json") from None
    if type(obj) is not dict:
        raise InvalidRecord("not_an_object", type(obj).__name__)
    order = _parse_fields(obj)
    try:  # JSON can carry lone surrogates ("\ud800"): ids become keys, so must be UTF-8
        product_key = order.product_id.encode()
        order.user_id.encode()
    except UnicodeEncodeError:
        raise InvalidRecord("not_utf8", "product_id or user_id") from None
    key = rec.key
    if key is None:
        raise InvalidRecord("null_key", "orders must be keyed by product_id")
    if key != product_key:
        raise InvalidRecord("key_mismatch", "record key must equal product_id")
    require_not_ahead(order.ts, rec.timestamp, max_ts_ahead_ms)
    return order


def _parse_fields(obj: dict[str, object]) -> Order:
    """Field by field, converting what can be converted and naming what cannot."""
    amount = require_number(obj, "amount") + 0.0  # -0.0 counts as 0.0
    if amount < 0:
        raise InvalidRecord("out_of_range", "amount must be >= 0")
    if amount > MAX_AMOUNT:
        raise InvalidRecord("out_of_range", "amount must be <= 1e15")
    if 0 < amount < MIN_POSITIVE_AMOUNT:
        raise InvalidRecord("out_of_range", "amount must be 0 or >= 1e-100")
    order_id = require_text(obj, "order_id")
    user_id = require_text(obj, "user_id")
    product_id = require_text(obj, "product_id")
    category = require_text(obj, "category")
    quantity = require_positive_int(obj, "quantity")
    if quantity > MAX_QUANTITY:
        raise InvalidRecord("out_of_range", "quantity must be <= 1e9")
    ts = require_event_time_ms(obj, "ts")
    return Order(order_id, user_id, product_id, category, amount, quantity, ts)


def revenue_value(product_id: str, key: WindowKey, m: Moments, final: bool | None = None) -> bytes:
    """Deterministic JSON (fixed field order), so a re-sent window is byte-identical.

    Formatted directly (the same bytes `json.dumps(..., separators=(",", ":"))` gives: floats
    by repr); a closed window always has count >= 1, so min and max are finite numbers.
    """
    if m.count == 0:
        d = {"product_id": product_id, "window_start": key[1], "window_end": key[0], **m.as_dict()}
        if final is not None:
            d["final"] = final
        return json.dumps(d, separators=(",", ":")).encode()
    tail = "}" if final is None else (',"final":true}' if final else ',"final":false}')
    return (
        f'{{"product_id":{json_str(product_id)},"window_start":{key[1]},"window_end":{key[0]},'
        f'"count":{m.count},"sum":{m.total!r},"mean":{m.mean!r},"min":{m.min!r},'
        f'"max":{m.max!r},"std":{m.std!r}{tail}'
    ).encode()


@dataclass(frozen=True, slots=True)
class OrdersConfig:
    window_ms: int = 60_000
    grace_ms: int = 10_000
    emit_updates: bool = False  # also emit each window's running value whenever it changes
    since_ms: int | None = None  # replay --since: skip events in windows starting before this
    hopping: tuple[int, int] | None = None  # (size, step) ms of orders.revenue-hopping
    # DLQ (`timestamp_ahead`) an order whose ts is further than this after its record's
    # timestamp, instead of letting it move stream time on (0: off)
    max_ts_ahead_ms: int = DEFAULT_MAX_TS_AHEAD_MS


class OrdersPipeline:
    """Per product: tumbling revenue windows of `total = amount × quantity`, and optionally
    hopping ones."""

    name = "orders"
    source = SOURCE
    outputs = (REVENUE, DLQ, LATE, BY_USER, BY_WINDOW, REVENUE_HOPPING)
    dlq = DLQ

    def __init__(self, config: OrdersConfig | None = None) -> None:
        self.config = config or OrdersConfig()
        spec = TumblingWindows(self.config.window_ms)
        self.processor = WindowProcessor(spec, self.config.grace_ms)
        self.store_name = f"revenue-{spec.name}"
        self.hopping: WindowProcessor | None = None
        self.hopping_from: WindowsFrom | None = None  # with --since
        if self.config.hopping is not None:
            hops = HoppingWindows(*self.config.hopping)
            self.hopping_store = f"revenue-{hops.name}"  # its own clock and windows
            since = self.config.since_ms
            self.hopping_from = None if since is None else WindowsFrom(hops, since)
            self.hopping = WindowProcessor(self.hopping_from or hops, self.config.grace_ms)

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        emit = out.records.append
        applied = state.applied_offset
        done = 0
        while done < len(records) and records[done].offset <= applied:  # offset order
            done += 1
        if done:
            counts.skipped += done
            records = records[done:]
        counts.events += len(records)
        # The batch as columns (no object per event), for the window processor.
        keys: list[str] = []
        times: list[int] = []
        values: list[float] = []
        rows: list[Record] = []
        users: dict[str, list[float]] = {}  # user → [latest ts, total, total, ...] in order
        since = self.config.since_ms
        window_ms = self.config.window_ms
        # With --since, the hopping windows get the events their own windows keep.
        hop_from = self.hopping_from
        hopped = _Columns() if hop_from is not None else None
        max_ahead = self.config.max_ts_ahead_ms
        ahead = quick_ahead_ms(max_ahead)
        for rec in records:
            fields = quick_order(rec.value, rec.key, rec.timestamp or 0, ahead)
            if fields is None:
                try:
                    order = parse_order(rec, max_ahead)
                except InvalidRecord as err:
                    out.add_dead_letter(DLQ, rec, err.reason, err.detail)
                    continue
                fields = (order.product_id, order.user_id, order.total, order.ts)
            product, user, total, ts = fields
            if hopped is not None and hop_from is not None and hop_from.covers(ts):
                hopped.add(product, ts, total, rec)
            if since is not None and ts - ts % window_ms < since:
                counts.skipped += 1
                continue
            keys.append(product)
            times.append(ts)
            values.append(total)
            rows.append(rec)
            spent = users.get(user)
            if spent is None:
                users[user] = [ts, total]
            else:
                spent.append(total)
                if ts > spent[0]:
                    spent[0] = ts

        clock = state.clock(self.store_name, self.config.grace_ms)
        windows = state.windows(self.store_name)
        watermark_before = clock.watermark
        result = self.processor.process_columns(keys, times, values, clock, windows)
        late_copies = [_late_copy(rows[late.record], late) for late in result.late]
        counts.late = len(result.late)
        if self.config.emit_updates:
            for key, m in sorted(result.updated.items()):
                emit(
                    OutRecord(
                        REVENUE, key[2].encode(), revenue_value(key[2], key, m, False), key[0] - 1
                    )
                )
        windows.put(result.updated)
        self._emit_closed(out, result.closed)
        created = result.created  # born and closed in this batch: never stored, nothing to delete
        windows.delete(k for k, _ in result.closed if k not in created)
        watermark = clock.watermark
        if result.closed or (
            watermark is not None
            and (
                watermark_before is None or watermark // window_ms != watermark_before // window_ms
            )
        ):
            out.records.extend(
                _report_windows(state.partition, watermark_before, watermark, result.closed)
            )
        if self.hopping is not None:
            if hopped is None:  # no --since: the same events as the tumbling windows
                hopped = _Columns(keys, times, values, rows)
            late_already = {copy.source_offset for copy in late_copies}
            late_for_hopping, hopping_late = self._process_hopping(state, out, hopped, late_already)
            for copy in late_copies:  # late for the tumbling window: for the hopping ones too?
                both = copy.source_offset in hopping_late
                copy.headers.append(("kappa.late-for", LATE_FOR_BOTH if both else LATE_FOR_REVENUE))
            if late_for_hopping:  # one stream in source order, whatever the batching
                late_copies = list(heapq.merge(late_copies, late_for_hopping, key=_source_offset))
        out.records.extend(late_copies)
        if users:
            out.records.extend(_forward_user_partials(state, users, rows[-1].offset))
        return out

    def _process_hopping(
        self, state: PartitionState, out: BatchOutput, cols: _Columns, late_already: set[int]
    ) -> tuple[list[OutRecord], set[int]]:
        """orders.revenue-hopping: an order counts in each of its windows still open. One
        late for all of them goes to orders.late (header `kappa.late-for`) unless it is
        there already, late for its tumbling window too. Returns those copies, in source
        order, and the source offsets of every order late for all its hopping windows."""
        assert self.hopping is not None
        clock = state.clock(self.hopping_store, self.config.grace_ms)
        windows = state.windows(self.hopping_store)
        result = self.hopping.process_columns(cols.keys, cols.times, cols.values, clock, windows)
        late_offsets = {cols.rows[late.record].offset for late in result.late}
        late_copies = [
            _late_copy(cols.rows[late.record], late, late_for=REVENUE_HOPPING)
            for late in result.late
            if cols.rows[late.record].offset not in late_already
        ]
        out.counts.late += len(late_copies)
        if self.config.emit_updates:
            for key, m in sorted(result.updated.items()):
                value = revenue_value(key[2], key, m, False)
                out.records.append(OutRecord(REVENUE_HOPPING, key[2].encode(), value, key[0] - 1))
        windows.put(result.updated)
        self._emit_closed(out, result.closed, output=REVENUE_HOPPING)
        windows.delete(k for k, _ in result.closed if k not in result.created)
        return late_copies, late_offsets

    def flush(self, state: PartitionState) -> BatchOutput:
        """Emit every open window, marked provisional (header `kappa.provisional`).

        The windows stay in the state: if this version later runs live (after a promote), each
        is emitted again, final, when the watermark really passes it; consumers upserting by
        (key, window) end with the final value.
        """
        out = BatchOutput()
        windows = state.windows(self.store_name)
        self._emit_closed(out, self.processor.flush(windows, {}), provisional=True)
        if self.hopping is not None:
            hopping = self.hopping.flush(state.windows(self.hopping_store), {})
            self._emit_closed(out, hopping, provisional=True, output=REVENUE_HOPPING)
        return out

    def _emit_closed(
        self,
        out: BatchOutput,
        closed: list[tuple[WindowKey, Moments]],
        provisional: bool = False,
        output: str = REVENUE,
    ) -> None:
        # A provisional window says so in its value too, for readers that drop the headers.
        final = False if provisional else (True if self.config.emit_updates else None)
        headers = [(PROVISIONAL_HEADER, b"1")] if provisional else []
        for key, m in closed:
            product = key[2]
            value = revenue_value(product, key, m, final)
            out.records.append(OutRecord(output, product.encode(), value, key[0] - 1, headers))
        if provisional:
            out.counts.windows_provisional += len(closed)
        else:
            out.counts.windows_closed += len(closed)


@dataclass(slots=True)
class _Columns:
    """A batch's valid orders as columns, for a window processor."""

    keys: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rows: list[Record] = field(default_factory=list)

    def add(self, key: str, ts: int, value: float, row: Record) -> None:
        self.keys.append(key)
        self.times.append(ts)
        self.values.append(value)
        self.rows.append(row)


def _late_copy(rec: Record, late: LateEvent[int], late_for: str | None = None) -> OutRecord:
    """The copy of a late order for orders.late. With hopping windows, `kappa.late-for` names
    the outputs whose windows had all closed (the order counted in the others); without
    them there is none: late for orders.revenue-1m."""
    headers = [
        ("kappa.late-by-ms", str(late.late_by_ms).encode()),
        ("kappa.watermark", str(late.watermark).encode()),
    ]
    if late_for is not None:
        headers.append(("kappa.late-for", late_for.encode()))
    return OutRecord(LATE, rec.key, rec.value, rec.timestamp, headers, rec.offset)


def _source_offset(copy: OutRecord) -> int:
    assert copy.source_offset is not None
    return copy.source_offset


def _report_windows(
    partition: int,
    since: int | None,
    watermark: int | None,
    closed: list[tuple[WindowKey, Moments]],
) -> list[OutRecord]:
    """The windows this batch closed and the watermark before and after it, for the
    top-products ranking; also sent with no window when the watermark passes a window
    boundary, so the ranking learns that this partition has nothing more for the windows
    before it. Stamped with the watermark (not below 0: Kafka has no earlier timestamps)."""
    reported = [(k[2], k[1], k[0], m.total, m.count) for k, m in closed]
    stamp = max(watermark or 0, 0)
    return [
        OutRecord(BY_WINDOW, BY_WINDOW_KEY, value, stamp, in_order=True)
        for value in report_values(partition, since, watermark, reported)
    ]


def _forward_user_partials(
    state: PartitionState, users: dict[str, list[float]], last_offset: int
) -> list[OutRecord]:
    """Update this partition's per-user running totals; forward each touched user's once.

    `users` maps a user to [latest ts, then each order's total in offset order]: the totals
    are added one by one onto the stored running sum, so the value is the same bit for bit
    however the stream was batched (live, replay, after a restart).
    """
    names = list(users)
    out = []
    for user, raw in zip(names, state.get_values(USER_PARTIALS, names)):
        try:
            count, spend, ts = decode_partial(raw) if raw is not None else (0, 0.0, 0)
        except Exception as e:  # the state's fault, not the orders': see `raise_undecodable`
            state.raise_undecodable(USER_PARTIALS, [(user, raw)], decode_partial, e)
        batch = users[user]
        for total in itertools.islice(batch, 1, None):
            spend += total
        count += len(batch) - 1
        ts = max(ts, int(batch[0]))
        if spend < _INF:  # formatted directly: what json.dumps gives, at a fraction of the cost
            value = (
                f'{{"user_id":{json_str(user)},"src":[{state.partition},{last_offset}],'
                f'"orders":{count},"spend":{spend!r},"ts":{ts}}}'
            )
        else:  # a sum past the float range: json.dumps spells it `Infinity`
            value = json.dumps(
                {
                    "user_id": user,
                    "src": [state.partition, last_offset],
                    "orders": count,
                    "spend": spend,
                    "ts": ts,
                },
                separators=(",", ":"),
            )
        state.put_value(USER_PARTIALS, user, encode_partial(count, spend, ts))
        out.append(OutRecord(BY_USER, user.encode(), value.encode(), ts))
    return out

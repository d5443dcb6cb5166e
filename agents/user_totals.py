"""Per-user cumulative order count and spend, from the re-keyed `orders.by-user` topic.

Each forwarded record is one source partition's absolute running total for a user, tagged
with the source offset it reflects. Per user we keep the newest value per source partition and
sum them: a re-sent, re-ordered or re-batched forward can neither double-count nor go back.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from agents.base import BatchOutput, OutRecord, Record, json_str, unapplied
from agents.orders import BY_USER, DLQ
from agents.user_state import Parts, decode_parts, encode_parts
from tables.partition_state import PartitionState

USER_TOTALS = "orders.user-totals"
_raw_decode = json.JSONDecoder().raw_decode
USER_TOTALS_STORE = "user-totals"  # the per-user state table
# A forward's largest spend: the sum over every source partition (fewer than 2^31) stays
# finite (two near the float maximum once summed to Infinity, written out as no JSON
# number). Not what orders can reach (`total_orders_can_reach`): releases before 94a07b2
# took unbounded amounts, and a user's running total built then must still be forwarded.
_MAX_SPEND = sys.float_info.max / (1 << 31)


class UserTotalsPipeline:
    name = "user-totals"
    source = BY_USER
    outputs = (USER_TOTALS, DLQ)
    dlq = DLQ

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        parsed: list[tuple[str, int, int, int, float, int]] = []
        for rec in unapplied(records, state.applied_offset, counts):
            try:
                d = _decode_forward(rec.value)
                src = d["src"]
                if type(src) is not list or len(src) != 2 or type(d["spend"]) not in _NUMBER:
                    raise TypeError("not a forward")
                row = (
                    d["user_id"],
                    _exact_int(src[0]),
                    _exact_int(src[1]),
                    _exact_int(d["orders"]),
                    float(d["spend"]),
                    _exact_int(d["ts"]),
                )
                if not (
                    type(row[0]) is str
                    and row[0] != ""
                    # ASCII is O(1) to check; otherwise UnicodeEncodeError for a lone
                    # surrogate, which can be no state key
                    and (row[0].isascii() or row[0].encode())
                    and 0 <= row[1] < 1 << 31
                    and 0 <= row[2] < 1 << 63
                    and 0 <= row[3] < 1 << 63
                    # spend: a sum of amounts >= 0, so NaN, inf or negative is foreign
                    and 0.0 <= row[4] <= _MAX_SPEND
                    and -(1 << 63) <= row[5] < 1 << 63
                ):
                    raise ValueError("out of range")  # what the stored format holds
                parsed.append(row)
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
                out.add_dead_letter(DLQ, rec, "bad_forward")
        if not parsed:
            return out
        users = list(dict.fromkeys(p[0] for p in parsed))
        stored = state.get_values(USER_TOTALS_STORE, users)
        try:
            current = {
                u: (decode_parts(raw) if raw is not None else {}) for u, raw in zip(users, stored)
            }
        except Exception as e:  # the state's fault, not the forwards': see `raise_undecodable`
            state.raise_undecodable(USER_TOTALS_STORE, zip(users, stored), decode_parts, e)
        changed: dict[str, None] = {}
        for user, src_p, src_o, n, spend, ts in parsed:
            parts = current[user]
            seen = parts.get(src_p)
            if seen is not None and src_o <= seen[0]:
                counts.skipped += 1
                continue
            parts[src_p] = (src_o, n, spend, ts)
            changed[user] = None
        for user in changed:
            parts = current[user]
            state.put_value(USER_TOTALS_STORE, user, encode_parts(parts))
            orders, spend, ts = totals(parts)
            if math.isfinite(spend):  # formatted directly: what json.dumps gives
                value = f'{{"user_id":{json_str(user)},"orders":{orders},"spend":{spend!r}}}'
            else:
                value = json.dumps(
                    {"user_id": user, "orders": orders, "spend": spend}, separators=(",", ":")
                )
            out.records.append(OutRecord(USER_TOTALS, user.encode(), value.encode(), ts))
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        return BatchOutput()


def settled_totals(state: PartitionState, user_id: str) -> tuple[int, float] | None:
    """A user's (orders, spend) as of the last acknowledged batch; None if it has no orders."""
    raw = state.settled_values(USER_TOTALS_STORE, [user_id])[0]
    if raw is None:
        return None
    try:
        parts = decode_parts(raw)
    except Exception as e:  # the state's fault: see `raise_undecodable`
        state.raise_undecodable(USER_TOTALS_STORE, [(user_id, raw)], decode_parts, e)
    orders, spend, _ = totals(parts)
    return orders, spend


def totals(parts: Parts) -> tuple[int, float, int]:
    """Sum over source partitions, in a fixed order so the float result is deterministic."""
    orders, spend, ts = 0, 0.0, 0
    for key in sorted(parts):
        _, n, s, t = parts[key]
        orders += n
        spend += s
        ts = max(ts, t)
    return orders, spend, ts


_NUMBER = (int, float)


def _exact_int(v: object) -> int:
    """A JSON integer as the orders pipeline writes it (no bool, string or float)."""
    if type(v) is not int:
        raise TypeError("not an integer")
    return v


def _decode_forward(raw: bytes | None) -> dict[str, Any]:
    """A forward's JSON object; the orders pipeline writes them compact, which one
    `raw_decode` takes without `json.loads`' encoding detection and whitespace passes."""
    text = (raw or b"").decode()
    try:
        obj, end = _raw_decode(text)
        if end == len(text):
            return obj  # type: ignore[no-any-return]
    except ValueError:
        pass
    return json.loads(text)  # type: ignore[no-any-return]

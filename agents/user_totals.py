"""Per-user cumulative order count and spend, from the re-keyed `orders.by-user` topic.

Each forwarded record is one source partition's absolute running total for a user, tagged
with the source offset it reflects. Per user we keep the newest value per source partition and
sum them: a re-sent, re-ordered or re-batched forward can neither double-count nor go back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from agents.base import BatchOutput, OutRecord, Record
from agents.orders import BY_USER, DLQ, dlq_record
from tables.cleaning import InvalidRecord
from tables.partition_state import PartitionState

USER_TOTALS = "orders.user-totals"
_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
TABLE = "user-totals"


class UserTotalsPipeline:
    name = "user-totals"
    source = BY_USER
    outputs = (USER_TOTALS, DLQ)

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        applied = state.applied_offset
        parsed: list[tuple[str, str, int, int, float, int]] = []
        for rec in records:
            if rec.offset <= applied:
                counts.skipped += 1
                continue
            counts.events += 1
            try:
                d = json.loads(rec.value or b"")
                src_p, src_o = d["src"]
                parsed.append(
                    (
                        d["user_id"],
                        str(src_p),
                        int(src_o),
                        int(d["orders"]),
                        float(d["spend"]),
                        int(d["ts"]),
                    )
                )
            except (ValueError, KeyError, TypeError, OverflowError):
                counts.dlq += 1
                counts.dlq_reasons["bad_forward"] = counts.dlq_reasons.get("bad_forward", 0) + 1
                out.records.append(dlq_record(rec, InvalidRecord("bad_forward")))
        if not parsed:
            return out
        users = list(dict.fromkeys(p[0] for p in parsed))
        current = {
            u: (json.loads(raw) if raw is not None else {})
            for u, raw in zip(users, state.get_values(TABLE, users))
        }
        changed: dict[str, None] = {}
        for user, src_p, src_o, n, spend, ts in parsed:
            parts = current[user]
            seen = parts.get(src_p)
            if seen is not None and src_o <= seen[0]:
                counts.skipped += 1
                continue
            parts[src_p] = [src_o, n, spend, ts]
            changed[user] = None
        for user in changed:
            parts = current[user]
            state.put_value(TABLE, user, state_json(parts).encode())
            orders, spend, ts = totals(parts)
            if math.isfinite(spend):  # formatted directly: what json.dumps gives
                value = f'{{"user_id":{_json_str(user)},"orders":{orders},"spend":{spend!r}}}'
            else:
                value = json.dumps(
                    {"user_id": user, "orders": orders, "spend": spend}, separators=(",", ":")
                )
            out.records.append(OutRecord(USER_TOTALS, user.encode(), value.encode(), ts))
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        return BatchOutput()


def state_json(parts: dict[str, list[float]]) -> str:
    """A user's stored value, `json.dumps(parts, sort_keys=True)` to the byte, formatted
    directly (a few times cheaper per user per batch)."""
    items = []
    for key in sorted(parts):
        offset, n, spend, ts = parts[key]
        if not (isinstance(spend, float) and math.isfinite(spend)):
            return json.dumps(parts, sort_keys=True)  # `Infinity`, or a value of another type
        items.append(f"{_json_str(key)}: [{offset!r}, {n!r}, {spend!r}, {ts!r}]")
    return "{" + ", ".join(items) + "}"


def totals(parts: dict[str, list[float]]) -> tuple[int, float, int]:
    """Sum over source partitions, in a fixed order so the float result is deterministic."""
    orders, spend, ts = 0, 0.0, 0
    for key in sorted(parts, key=int):
        _, n, s, t = parts[key]
        orders += int(n)
        spend += s
        ts = max(ts, int(t))
    return orders, spend, ts

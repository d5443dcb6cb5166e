"""Per-user cumulative order count and spend, from the re-keyed `orders.by-user` topic.

Cumulative sums do not depend on order, so this step has no windows; each forwarded record
carries its source (partition, offset), and per user we keep the highest applied offset per
source partition, so a record forwarded twice (after a crash upstream) is counted once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agents.base import BatchOutput, OutRecord, SourceRecord
from agents.orders import BY_USER, DLQ, dlq_record
from tables.cleaning import InvalidRecord
from tables.partition_state import PartitionState

USER_TOTALS = "orders.user-totals"
TABLE = "user-totals"


class UserTotalsPipeline:
    name = "user-totals"
    source = BY_USER
    outputs = (USER_TOTALS, DLQ)

    def process(self, state: PartitionState, records: Sequence[SourceRecord]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        applied = state.applied_offset
        parsed: list[tuple[str, float, int, str, int]] = []
        for rec in records:
            if rec.offset <= applied:
                counts.skipped += 1
                continue
            counts.events += 1
            try:
                obj = json.loads(rec.value or b"")
                src_p, src_o = obj["src"]
                parsed.append(
                    (obj["user_id"], float(obj["total"]), int(obj["ts"]), str(src_p), int(src_o))
                )
            except (ValueError, KeyError, TypeError):
                counts.dlq += 1
                counts.dlq_reasons["bad_forward"] = counts.dlq_reasons.get("bad_forward", 0) + 1
                out.records.append(dlq_record(rec, InvalidRecord("bad_forward")))
        if not parsed:
            return out
        users = list(dict.fromkeys(p[0] for p in parsed))
        current = {
            u: (
                json.loads(raw)
                if raw is not None
                else {"orders": 0, "spend": 0.0, "src": {}, "ts": 0}
            )
            for u, raw in zip(users, state.get_values(TABLE, users))
        }
        changed: dict[str, None] = {}
        for user, total, ts, src_p, src_o in parsed:
            t = current[user]
            if src_o <= t["src"].get(src_p, -1):
                counts.skipped += 1
                continue
            t["src"][src_p] = src_o
            t["orders"] += 1
            t["spend"] += total
            t["ts"] = max(t["ts"], ts)
            changed[user] = None
        for user in changed:
            t = current[user]
            state.put_value(TABLE, user, json.dumps(t, separators=(",", ":")).encode())
            out.records.append(
                OutRecord(USER_TOTALS, user.encode(), totals_value(user, t), t["ts"])
            )
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        return BatchOutput()


def totals_value(user: str, t: dict) -> bytes:  # type: ignore[type-arg]
    return json.dumps(
        {"user_id": user, "orders": t["orders"], "spend": t["spend"]}, separators=(",", ":")
    ).encode()

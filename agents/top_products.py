"""The top products by revenue of each window, over all of `orders`' partitions.

The orders pipeline reports every window it closes, and its watermark, onto `orders.by-window`
under one key, so a single partition of it sees every source partition's reports in order
(the re-key a global ranking needs). A window's ranking is emitted once, final, when every
source partition's watermark has passed it (`tables/top_k.py`). Until every partition of
`orders` has reported at least once, nothing is final: an idle partition holds the rankings
back, as it holds back its own windows. A replay's final flush emits no ranking: a window
still open somewhere is not final anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from agents.base import BatchOutput, OutRecord, Record
from agents.orders import DLQ
from agents.window_reports import BY_WINDOW, parse_report
from tables.partition_state import PartitionState
from tables.top_k import ClosedWindow, Entry, Ranking, WindowId

TOP_PRODUCTS = "orders.top-products"
RANKING_STORE = "top-products"
_META = "meta"  # watermarks, final_until and the open windows


class TopProductsPipeline:
    name = "top-products"
    source = BY_WINDOW
    outputs = (TOP_PRODUCTS, DLQ)
    dlq = DLQ

    def __init__(self, k: int = 10, partitions: int = 4) -> None:
        self.k = k
        self.partitions = partitions

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        applied = state.applied_offset
        reports: list[tuple[int, int | None, list[ClosedWindow]]] = []
        for rec in records:
            if rec.offset <= applied:
                counts.skipped += 1
                continue
            counts.events += 1
            try:
                reports.append(parse_report(rec.value, self.partitions))
            except ValueError as err:
                out.add_dead_letter(DLQ, rec, "bad_report", str(err))
        if not reports:
            return out
        ranking = load_ranking(state, self.k, self.partitions)
        before = {w: list(top) for w, top in ranking.open.items()}
        for partition, watermark, windows in reports:
            ranking.report(partition, watermark, windows)
        final = ranking.take_final()
        for (start, end), top in final:
            key = str(start).encode()
            out.records.append(
                OutRecord(TOP_PRODUCTS, key, ranking_value(start, end, top), end - 1)
            )
        store_ranking(state, ranking, before)
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        return BatchOutput()  # see the module docstring


def ranking_value(start: int, end: int, top: Iterable[Entry]) -> bytes:
    """Deterministic JSON (fixed field order), so a re-sent ranking is byte-identical."""
    body = {
        "window_start": start,
        "window_end": end,
        "top": [{"product_id": p, "revenue": v, "count": c} for p, v, c in top],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _window_key(w: WindowId) -> str:
    return f"w{w[0]}:{w[1]}"


def load_ranking(state: PartitionState, k: int, partitions: int) -> Ranking:
    ranking = Ranking(k, partitions)
    raw = state.get_values(RANKING_STORE, [_META])[0]
    if raw is None:
        return ranking
    meta: dict[str, Any] = json.loads(raw)
    ranking.watermarks = {int(p): wm for p, wm in meta["wm"].items()}
    ranking.final_until = meta["final"]
    windows = [(s, e) for s, e in meta["open"]]
    for w, stored in zip(
        windows, state.get_values(RANKING_STORE, [_window_key(w) for w in windows])
    ):
        ranking.open[w] = [(p, v, c) for p, v, c in json.loads(stored or b"[]")]
    return ranking


def store_ranking(
    state: PartitionState, ranking: Ranking, before: dict[WindowId, list[Entry]]
) -> None:
    """Write the open windows that changed (each its own entry) and the meta entry; delete
    the emitted ones."""
    for w in before.keys() - ranking.open.keys():
        state.put_value(RANKING_STORE, _window_key(w), None)
    for w, top in ranking.open.items():
        if before.get(w) != top:
            state.put_value(RANKING_STORE, _window_key(w), json.dumps(top).encode())
    meta = {
        "wm": {str(p): wm for p, wm in sorted(ranking.watermarks.items())},
        "final": ranking.final_until,
        "open": sorted(ranking.open),
    }
    state.put_value(RANKING_STORE, _META, json.dumps(meta).encode())

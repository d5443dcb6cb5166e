"""The top products by revenue of each window, over all of `orders`' partitions; and the
products gone quiet (`agents/quiet_products.py`), from the same reports.

The orders pipeline reports every window it closes, and its watermark, onto `orders.by-window`
under one key, so a single partition of it sees every source partition's reports in order
(the re-key a global ranking needs). A window's ranking is emitted once, final, when every
source partition's watermark has passed it (`tables/top_k.py`). Until every partition of
`orders` has reported at least once, nothing is final: an idle partition holds the rankings
back, as it holds back its own windows. A replay's final flush emits no ranking: a window
still open somewhere is not final anywhere.

State: each open window's top k under a key ordered by window end, so a batch reads only the
windows its reports touch and those that became final (a range scan), however many wait
behind an idle partition; and one small entry with each partition's watermark and start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from agents.base import BatchOutput, OutRecord, Record, unapplied
from agents.orders import DLQ
from agents.quiet_products import QUIET_PRODUCTS, quiet_records
from agents.window_reports import BY_WINDOW, Report, parse_report
from tables.partition_state import PartitionState
from tables.quiet import QuietConfig
from tables.top_k import Entry, Ranking, WindowId

TOP_PRODUCTS = "orders.top-products"
RANKING_STORE = "top-products"
_META = "meta"  # each partition's watermark and start, and final_until
_BIAS = 1 << 63  # window keys: unsigned, fixed width, so that key order is end order


class TopProductsPipeline:
    name = "top-products"
    source = BY_WINDOW
    outputs = (TOP_PRODUCTS, QUIET_PRODUCTS, DLQ)
    dlq = DLQ

    def __init__(
        self,
        k: int = 10,
        partitions: int = 4,
        window_ms: int = 60_000,
        quiet: QuietConfig | None = None,
    ) -> None:
        self.k = k
        self.partitions = partitions
        self.window_ms = window_ms
        self.quiet = quiet or QuietConfig()

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        reports: list[Report] = []
        for rec in unapplied(records, state.applied_offset, counts):
            try:
                reports.append(parse_report(rec.value, self.partitions, self.window_ms))
            except ValueError as err:
                out.add_dead_letter(DLQ, rec, "bad_report", str(err))
        if not reports:
            return out
        ranking = load_ranking(state, self.k, self.partitions)
        touched = sorted({(w[1], w[2]) for _, _, _, windows in reports for w in windows})
        ranking.open = load_windows(state, touched)
        before = {w: list(top) for w, top in ranking.open.items()}
        for partition, since, watermark, windows in reports:
            ranking.report(partition, since, watermark, windows)
        bound = ranking.final_bound()
        if bound is not None:  # the stored windows that became final
            for w, top in scan_windows(state, bound).items():
                if w not in ranking.open:
                    ranking.open[w] = before[w] = top
        for (start, end), top in ranking.take_final():
            value = ranking_value(start, end, top)
            out.records.append(OutRecord(TOP_PRODUCTS, str(start).encode(), value, end - 1))
        store_ranking(state, ranking, before)
        quiet = quiet_records(state, self.quiet, reports)
        out.records.extend(quiet)
        counts.quiet = len(quiet)
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
    return f"w{w[1] + _BIAS:020d}:{w[0] + _BIAS:020d}"


def _window_of(key: str) -> WindowId:
    end, start = key[1:].split(":")
    return int(start) - _BIAS, int(end) - _BIAS


def _shown_window_key(key: str) -> str:
    """A stored window key as an error names it (itself), once it decodes (else it raises)."""
    _window_of(key)
    return key


def _decode_top(raw: bytes) -> list[Entry]:
    return [(p, v, c) for p, v, c in json.loads(raw)]


def _decode_meta(raw: bytes) -> tuple[dict[int, int], dict[int, int | None], int | None]:
    """The meta entry: each partition's watermark and start, and final_until."""
    meta: dict[str, Any] = json.loads(raw)
    watermarks = {int(p): wm for p, wm in meta["wm"].items()}
    starts = {int(p): s for p, s in meta["starts"].items()}
    return watermarks, starts, meta["final"]


def load_ranking(state: PartitionState, k: int, partitions: int) -> Ranking:
    """The ranking's watermarks and starts (no window: see `load_windows`, `scan_windows`)."""
    ranking = Ranking(k, partitions)
    raw = state.get_values(RANKING_STORE, [_META])[0]
    if raw is not None:
        try:
            ranking.watermarks, ranking.starts, ranking.final_until = _decode_meta(raw)
        except Exception as e:  # the state's fault, not the reports': see `raise_undecodable`
            state.raise_undecodable(RANKING_STORE, [(_META, raw)], _decode_meta, e)
    return ranking


def load_windows(state: PartitionState, windows: list[WindowId]) -> dict[WindowId, list[Entry]]:
    keys = [_window_key(w) for w in windows]
    found = state.get_values(RANKING_STORE, keys)
    try:
        return {w: _decode_top(raw) for w, raw in zip(windows, found) if raw is not None}
    except Exception as e:
        state.raise_undecodable(RANKING_STORE, zip(keys, found), _decode_top, e)


def scan_windows(state: PartitionState, bound: int) -> dict[WindowId, list[Entry]]:
    """The stored windows ending at or before `bound`."""
    stop = f"w{bound + 1 + _BIAS:020d}"
    found = state.scan_values(RANKING_STORE, "w", stop)
    try:
        return {_window_of(k): _decode_top(v) for k, v in found}
    except Exception as e:  # a window's key or its ranking: see `raise_undecodable`
        state.raise_undecodable(RANKING_STORE, found, _decode_top, e, _shown_window_key)


def store_ranking(
    state: PartitionState, ranking: Ranking, before: dict[WindowId, list[Entry]]
) -> None:
    """Write the windows that changed, delete the emitted ones, and the meta entry."""
    for w in before.keys() - ranking.open.keys():
        state.put_value(RANKING_STORE, _window_key(w), None)
    for w, top in ranking.open.items():
        if before.get(w) != top:
            state.put_value(RANKING_STORE, _window_key(w), json.dumps(top).encode())
    meta = {
        "wm": {str(p): wm for p, wm in sorted(ranking.watermarks.items())},
        "starts": {str(p): s for p, s in sorted(ranking.starts.items())},
        "final": ranking.final_until,
    }
    state.put_value(RANKING_STORE, _META, json.dumps(meta).encode())

"""orders.quiet-products: products whose orders stopped, from the orders pipeline's reports.

The top-products pipeline reads every source partition's reports (`orders.by-window`): each
partition's closed windows in order, and its watermark after them. That is what a silence
needs (`tables/quiet.py`): a product's windows, and the watermark of the partition it is read
from. Each product's activity is stored under `p<product>`, and the silence it waits for under
`d<partition>:<due>:<product>`, in key order by when it is due, so a watermark finds every
silence it establishes with one range read, however many products wait.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from agents.base import OutRecord, json_number, json_str
from agents.window_reports import Report
from tables.partition_state import PartitionState
from tables.quiet import Activity, QuietConfig, QuietPoint

QUIET_PRODUCTS = "orders.quiet-products"
QUIET_STORE = "quiet-products"
_BIAS = 1 << 63  # due times: unsigned, fixed width, so that key order is time order


def _due_key(partition: int, due: int) -> str:
    return f"d{partition:05d}:{due + _BIAS:020d}:"


def _due_of(key: str) -> tuple[int, str]:
    """(due, product) of a stored key `_due_key(partition, due) + product`."""
    _, at, product = key.split(":", 2)
    return int(at) - _BIAS, product


def _shown_due_key(key: str) -> str:
    """A stored due key as an error names it (itself), once it decodes (else it raises)."""
    _due_of(key)
    return key


class QuietWatch:
    """One batch's reports, folded into the products' activities in order; `close` gives the
    silences they established. Activities are read once per batch, and each product's entries
    (its activity, its awaited silence) are written once per batch, at `close`: a replay's
    batch folds many windows of a product, and would otherwise write a due key per window."""

    def __init__(self, state: PartitionState, config: QuietConfig) -> None:
        self.state = state
        self.config = config
        self._activities: dict[str, Activity | None] = {}
        self._stored: dict[str, tuple[int, int] | None] = {}  # (partition, due) as stored
        self._awaited: dict[int, list[tuple[int, str]]] = {}  # per partition: (due, product)
        self._scanned: dict[int, int] = {}  # per partition: stored dues read up to this
        self._changed: dict[str, None] = {}
        self.points: list[QuietPoint] = []

    def report(self, report: Report) -> None:
        """Fold in one partition's report: before each window, the silences due by its start
        (the partition has passed them); after them, those due by its watermark."""
        partition, _, watermark, windows = report
        said_until: int | None = None
        for product, start, end, _value, count in sorted(windows, key=lambda w: (w[2], w[1])):
            if said_until is None or start > said_until:
                self._say(partition, start)
                said_until = start
            self._observe(product, partition, start, end, count)
        if watermark is not None:
            self._say(partition, watermark)

    def load(self, products: list[str]) -> None:
        """Read the activities of `products` at once (a batch's reports name them all)."""
        found = self.state.get_values(QUIET_STORE, ["p" + p for p in products])
        for product, raw in zip(products, found):
            self._loaded(product, raw)

    def _loaded(self, product: str, raw: bytes | None) -> Activity | None:
        try:
            activity = Activity.from_bytes(raw) if raw is not None else None
        except Exception as e:  # the state's fault, not the reports': see `raise_undecodable`
            self.state.raise_undecodable(
                QUIET_STORE, [("p" + product, raw)], Activity.from_bytes, e
            )
        self._activities[product] = activity
        stored = None
        if activity is not None and activity.due is not None:
            stored = (activity.partition, activity.due)
        self._stored[product] = stored
        return activity

    def _activity(self, product: str) -> Activity | None:
        if product in self._activities:
            return self._activities[product]
        return self._loaded(product, self.state.get_values(QUIET_STORE, ["p" + product])[0])

    def _observe(self, product: str, partition: int, start: int, end: int, count: int) -> None:
        activity = self._activity(product)
        if activity is None:
            activity = Activity.first(partition, start, end, count, self.config)
            self._activities[product] = activity
        elif not activity.observe(partition, start, end, count, self.config):
            return  # a re-sent report
        if activity.due is not None:
            heapq.heappush(self._awaited.setdefault(partition, []), (activity.due, product))
        self._changed[product] = None

    def _say(self, partition: int, until: int) -> None:
        """The silences of `partition`'s products due at or before `until`, in due order: those
        stored before the batch, and those set in it."""
        due: list[tuple[int, str]] = []
        scanned = self._scanned.get(partition)
        if scanned is None or until > scanned:
            low = _due_key(partition, scanned + 1) if scanned is not None else f"d{partition:05d}:"
            high = _due_key(partition, min(until, _BIAS - 2) + 1)
            found = self.state.scan_values(QUIET_STORE, low, high)
            try:
                for key, _ in found:
                    due.append(_due_of(key))
            except Exception as e:  # the state's fault, not the reports': see `raise_undecodable`
                keys = ((k, None) for k, _ in found)
                self.state.raise_undecodable(QUIET_STORE, keys, bytes, e, _shown_due_key)
            self._scanned[partition] = until
        awaited = self._awaited.get(partition)
        while awaited and awaited[0][0] <= until:
            due.append(heapq.heappop(awaited))
        for at, product in sorted(due):
            activity = self._activity(product)
            if activity is None or activity.partition != partition or activity.due != at:
                continue  # no longer awaited: a later window of the product came first
            self.points.append(activity.silence(product))
            self._changed[product] = None

    def close(self) -> list[OutRecord]:
        """Write the activities that changed and their awaited silences; the silences said,
        as records."""
        put = self.state.put_value
        for product in self._changed:
            activity = self._activities[product]
            assert activity is not None
            put(QUIET_STORE, "p" + product, activity.to_bytes())
            stored = self._stored.get(product)
            now = None if activity.due is None else (activity.partition, activity.due)
            if stored != now:
                if stored is not None:
                    put(QUIET_STORE, _due_key(*stored) + product, None)
                if now is not None:
                    put(QUIET_STORE, _due_key(*now) + product, b"")
        return [
            OutRecord(QUIET_PRODUCTS, p.product.encode(), quiet_value(p), p.quiet_until - 1)
            for p in self.points
        ]


def quiet_records(
    state: PartitionState, config: QuietConfig, reports: Sequence[Report]
) -> list[OutRecord]:
    """The silences `reports` establish, in the order they were established."""
    watch = QuietWatch(state, config)
    watch.load(list(dict.fromkeys(w[0] for report in reports for w in report[3])))
    for report in reports:
        watch.report(report)
    return watch.close()


def quiet_value(p: QuietPoint) -> bytes:
    """Deterministic JSON (fixed field order), so a re-sent silence is byte-identical."""
    return (
        f'{{"product_id":{json_str(p.product)},"last_window_start":{p.last_start},'
        f'"quiet_from":{p.quiet_from},"quiet_until":{p.quiet_until},"windows":{p.windows},'
        f'"orders_per_window":{json_number(p.rate)},'
        f'"expected_orders":{json_number(p.expected_orders)}}}'
    ).encode()

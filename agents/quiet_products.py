"""orders.quiet-products: products whose orders stopped, from the orders pipeline's reports.

The top-products pipeline reads every source partition's reports (`orders.by-window`): each
partition's closed windows in order, and its watermark after them. That is what a silence
needs (`tables/quiet.py`): a product's windows, and the watermark of the partition it is read
from. Each product's activity is stored under `p<product>`, and the silence it waits for under
`d<partition>:<due>:<product>`, in key order by when it is due, so a watermark finds every
silence it establishes with one range read, however many products wait.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.base import OutRecord, json_str
from agents.product_trends import json_number
from agents.window_reports import Report
from tables.partition_state import PartitionState
from tables.quiet import Activity, QuietConfig, QuietPoint

QUIET_PRODUCTS = "orders.quiet-products"
QUIET_STORE = "quiet-products"
_BIAS = 1 << 63  # due times: unsigned, fixed width, so that key order is time order


def _due_key(partition: int, due: int) -> str:
    return f"d{partition:05d}:{due + _BIAS:020d}:"


class QuietWatch:
    """One batch's reports, folded into the products' activities in order; `records` the
    silences they established. Activities are read once per batch and written at `close`."""

    def __init__(self, state: PartitionState, config: QuietConfig) -> None:
        self.state = state
        self.config = config
        self._activities: dict[str, Activity | None] = {}
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
            self._activities[product] = Activity.from_bytes(raw) if raw is not None else None

    def _activity(self, product: str) -> Activity | None:
        if product not in self._activities:
            raw = self.state.get_values(QUIET_STORE, ["p" + product])[0]
            self._activities[product] = Activity.from_bytes(raw) if raw is not None else None
        return self._activities[product]

    def _observe(self, product: str, partition: int, start: int, end: int, count: int) -> None:
        activity = self._activity(product)
        if activity is None:
            activity = Activity.first(partition, start, end, count, self.config)
            self._activities[product] = activity
        else:
            was_partition, was_due = activity.partition, activity.due
            if not activity.observe(partition, start, end, count, self.config):
                return  # a re-sent report
            if was_due is not None:
                self.state.put_value(QUIET_STORE, _due_key(was_partition, was_due) + product, None)
        if activity.due is not None:
            self.state.put_value(QUIET_STORE, _due_key(partition, activity.due) + product, b"")
        self._changed[product] = None

    def _say(self, partition: int, until: int) -> None:
        """The silences of `partition`'s products due at or before `until`, in due order."""
        low = f"d{partition:05d}:"
        high = _due_key(partition, min(until, _BIAS - 2) + 1)
        for key, _ in self.state.scan_values(QUIET_STORE, low, high):
            self.state.put_value(QUIET_STORE, key, None)
            product = key.split(":", 2)[2]
            activity = self._activity(product)
            if activity is None or activity.due is None:
                continue  # not its silence any more (never left by `_observe`)
            self.points.append(activity.silence(product))
            self._changed[product] = None

    def close(self) -> list[OutRecord]:
        """Write the activities that changed; the silences as records."""
        for product in self._changed:
            activity = self._activities[product]
            assert activity is not None
            self.state.put_value(QUIET_STORE, "p" + product, activity.to_bytes())
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

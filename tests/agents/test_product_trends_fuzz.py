"""Fuzz the product-trends pipeline with anything a writer of `orders.revenue-1m` can put there:
each record is folded, skipped (a running update, a provisional window) or dead-lettered as
`bad_window`, the state stays decodable, no output holds NaN or infinity, and the
dead-lettered records change nothing for the others."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.orders import REVENUE
from agents.product_trends import SIGNALS_STORE, TRENDS_STORE, ProductTrendsPipeline
from tables.partition_state import APPLIED_OFFSET, KV_PREFIX
from tables.signals import Signals
from tables.trends import Trend, TrendConfig
from tests.support.fuzz import HEADERS, check_batch, json_bytes, source_records, values

SIZE = 60_000
GOOD_WINDOW = {
    "product_id": "p1",
    "window_start": 1_700_000_040_000,
    "window_end": 1_700_000_100_000,
    "count": 2,
    "sum": 25.0,
    "mean": 12.5,
    "min": 5.0,
    "max": 20.0,
    "std": 7.5,
}
# The default, and one quick to warm up, so that anomalies and the bound spikes are reached.
CONFIGS = {
    "default": TrendConfig(),
    "quick": TrendConfig(average_windows=2, half_life_windows=1.0, anomaly_z=1.0, warmup_windows=1),
}


def decode_state(entries: list[tuple[bytes, bytes]]) -> None:
    for key, value in entries:
        if key == APPLIED_OFFSET:
            continue
        table, _, product = key[len(KV_PREFIX) :].partition(b"\0")
        assert key.startswith(KV_PREFIX) and product, key
        product.decode()
        if table == TRENDS_STORE.encode():
            Trend.from_bytes(value)
        else:
            assert table == SIGNALS_STORE.encode(), key
            Signals.from_bytes(value)


# Windows as the orders pipeline may write them, over the whole range they can take: far
# apart, huge counts and sums, sums of 0.
_good = st.builds(
    lambda product, index, count, total, final: (
        product.encode(),
        json_bytes(
            {
                **GOOD_WINDOW,
                "product_id": product,
                "window_start": index * SIZE,
                "window_end": (index + 1) * SIZE,
                "count": count,
                "sum": total * count,
                **({} if final is None else {"final": final}),
            }
        ),
        [],
    ),
    st.sampled_from(["p1", "p2", "é"]),
    st.one_of(st.integers(0, 40), st.sampled_from([28_333_334, 10**12, (1 << 62) // SIZE - 1])),
    st.one_of(st.integers(1, 5), st.just(1 << 40)),
    st.sampled_from([0.0, 1e-100, 3.5, 1e15, 1e24]),
    st.sampled_from([None, None, True, False]),
)
_junk = st.tuples(st.sampled_from([b"p1", None, b"", b"\xff"]), values(GOOD_WINDOW), HEADERS)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@settings(max_examples=150, deadline=None)
@given(batch=st.lists(st.one_of(_good, _good, _junk), max_size=14))
def test_any_batch_is_folded_skipped_or_dead_lettered_as_bad_window(
    config: TrendConfig, batch: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]
) -> None:
    check_batch(
        lambda: ProductTrendsPipeline(config),
        source_records(REVENUE, batch),
        {"bad_window"},
        decode_state,
    )

"""Fuzz the top-products pipeline (rankings and quiet products) with anything a writer of
`orders.by-window` can put there: each record is folded in or dead-lettered as `bad_report`,
the state stays decodable, and the dead-lettered records change nothing for the others."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.quiet_products import QUIET_STORE, _due_of
from agents.top_products import RANKING_STORE, TopProductsPipeline, _decode_meta, _decode_top
from agents.window_reports import BY_WINDOW, BY_WINDOW_KEY
from tables.partition_state import APPLIED_OFFSET, KV_PREFIX
from tables.quiet import Activity, QuietConfig
from tests.support.fuzz import (
    HEADERS,
    JSON_VALUES,
    SURROGATES,
    check_batch,
    json_bytes,
    source_records,
    values,
)

SIZE = 60_000
PARTITIONS = 2
GOOD_REPORT = {"src": 0, "from": None, "wm": 70_000, "w": [["p1", 0, SIZE, 5.0, 1]]}
QUIET = QuietConfig(warmup_windows=1)


def decode_state(entries: list[tuple[bytes, bytes]]) -> None:
    for raw_key, value in entries:
        if raw_key == APPLIED_OFFSET:
            continue
        table, _, raw = raw_key[len(KV_PREFIX) :].partition(b"\0")
        key = raw.decode()
        if table == RANKING_STORE.encode():
            if key == "meta":
                _decode_meta(value)
            else:
                assert key.startswith("w"), key
                json.dumps(_decode_top(value), allow_nan=False)
        else:
            assert table == QUIET_STORE.encode(), raw_key
            if key.startswith("p"):
                Activity.from_bytes(value)
            else:
                assert key.startswith("d") and value == b"", raw_key
                _due_of(key)


def _report(src: int, since: int | None, wm: int | None, windows: list[list[object]]) -> bytes:
    return json_bytes({"src": src, "from": since, "wm": wm, "w": windows})


# Reports as the orders pipeline may write them (products, windows far apart, huge counts and
# totals), and as they may be almost: one window with a field replaced by anything.
_window = st.builds(
    lambda product, index, count, total: [product, index * SIZE, (index + 1) * SIZE, total, count],
    st.sampled_from(["p1", "p2", "é", "a:b"]),
    st.one_of(st.integers(-3, 40), st.sampled_from([10**12, (1 << 62) // SIZE - 1])),
    st.one_of(st.integers(1, 60), st.just(1 << 40)),
    st.sampled_from([0.0, 1e-100, 3.5, 1e24]),
)
_watermark = st.one_of(
    st.none(), st.integers(-(10**6), 3_000_000), st.sampled_from([(1 << 62) - 1, -(1 << 62) + 1])
)
_good = st.builds(
    lambda src, since, wm, windows: (BY_WINDOW_KEY, _report(src, since, wm, windows), []),
    st.integers(0, PARTITIONS - 1),
    _watermark,
    _watermark,
    st.lists(_window, max_size=4),
)


@st.composite
def _near_report(draw: st.DrawFn) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    window = list(draw(_window))
    if draw(st.booleans()):
        window[draw(st.integers(0, 4))] = draw(st.one_of(JSON_VALUES, st.sampled_from(SURROGATES)))
    else:
        window = window[: draw(st.integers(0, 4))] or [*window, 1]
    return BY_WINDOW_KEY, _report(0, None, draw(_watermark), [window]), []


_junk = st.one_of(
    _near_report(),
    st.tuples(st.sampled_from([BY_WINDOW_KEY, None, b"\xff"]), values(GOOD_REPORT), HEADERS),
)


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(st.one_of(_good, _good, _junk), max_size=12))
def test_any_batch_is_folded_in_or_dead_lettered_as_bad_report(
    batch: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    check_batch(
        lambda: TopProductsPipeline(k=2, partitions=PARTITIONS, window_ms=SIZE, quiet=QUIET),
        source_records(BY_WINDOW, batch),
        {"bad_report"},
        decode_state,
    )

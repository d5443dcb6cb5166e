"""The demo's line order: a window's `top` line after all its product lines, an anomaly after
its product's line, whatever order the records are read in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.line_order import LineOrder

W = 60_000  # one window (ms)


def test_a_ranking_read_before_a_window_line_waits_for_it() -> None:
    order = LineOrder(partitions=2)
    assert order.report(0, W, [("a", 0)]) == []
    assert order.report(1, W, [("b", 0)]) == []
    assert order.window("a", 0, True, "a [0]") == ["a [0]"]
    assert order.ranking(0, W, "top [0]") == []  # b's window not read yet
    assert order.held() == 1
    assert order.window("b", 0, True, "b [0]") == ["b [0]", "top [0]"]
    assert order.held() == 0


def test_a_ranking_waits_for_every_partition_to_report_past_its_window() -> None:
    """Until a partition's report past the window is read, its products are unknown."""
    order = LineOrder(partitions=2)
    order.report(0, W, [("a", 0)])
    order.window("a", 0, True, "a [0]")
    assert order.ranking(0, W, "top [0]") == []
    assert order.report(1, W - 1, []) == []  # not past the window's end yet
    assert order.report(1, None, [("b", 0)]) == []  # a report's first part, no watermark
    assert order.report(1, W, []) == []  # its last: b is listed, not read
    assert order.window("b", 0, True, "b [0]") == ["b [0]", "top [0]"]


def test_a_ranking_whose_window_lines_were_all_read_goes_out_at_once() -> None:
    order = LineOrder(partitions=1)
    order.window("a", 0, True, "a [0]")
    order.report(0, W + 5, [("a", 0)])
    assert order.ranking(0, W, "top [0]") == ["top [0]"]


def test_a_running_update_is_printed_but_is_not_the_window_line() -> None:
    order = LineOrder(partitions=1)
    order.report(0, W, [("a", 0)])
    order.ranking(0, W, "top [0]")
    assert order.window("a", 0, False, "a [0] running") == ["a [0] running"]
    assert order.window("a", 0, True, "a [0]") == ["a [0]", "top [0]"]


def test_an_anomaly_waits_for_its_own_window_line() -> None:
    order = LineOrder(partitions=1)
    assert order.anomaly("a", 0, "a [0] ANOMALY") == []
    assert order.window("b", 0, True, "b [0]") == ["b [0]"]  # another product's
    assert order.window("a", 0, True, "a [0]") == ["a [0]", "a [0] ANOMALY"]
    assert order.anomaly("b", 0, "b [0] ANOMALY") == ["b [0] ANOMALY"]  # b's was read


def test_records_from_before_the_start_count_as_read_and_print_nothing() -> None:
    order = LineOrder(partitions=1)
    order.report(0, W, [("a", 0), ("b", 0)])
    assert order.window("a", 0, True, None) == []
    assert order.ranking(0, W, "top [0]") == []
    assert order.window("b", 0, True, "b [0]") == ["b [0]", "top [0]"]
    # a ranking from before the start, its window's lines read since, prints nothing
    order.report(0, 2 * W, [("a", W)])
    assert order.ranking(W, 2 * W, None) == []
    assert order.window("a", W, True, "a [1]") == ["a [1]"]
    assert order.anomaly("a", W, None) == []
    assert order.held() == 0 and not order.windows


def test_what_is_re_sent_after_the_ranking_went_out_is_not_held() -> None:
    order = LineOrder(partitions=1)
    order.report(0, W, [("a", 0)])
    order.window("a", 0, True, "a [0]")
    assert order.ranking(0, W, "top [0]") == ["top [0]"]
    assert order.report(0, W, [("a", 0)]) == []
    assert order.window("a", 0, True, "a [0]") == ["a [0]"]
    assert order.ranking(0, W, "top [0]") == ["top [0]"]
    assert order.anomaly("a", 0, "a [0] ANOMALY") == ["a [0] ANOMALY"]
    assert not order.windows


@st.composite
def _reads(draw: st.DrawFn) -> tuple[int, list[tuple[object, ...]]]:
    """Records as the orders, top-products and product-trends pipelines write them, for a few
    windows, in any order a reader of their topics could read them: each source partition's
    reports in the order it sent them (one partition of orders.by-window), all else in any
    order (other topics and partitions, each read at its own pace)."""
    partitions = draw(st.integers(1, 3))
    windows = draw(st.integers(1, 3))
    products = {p: [f"p{p}-{i}" for i in range(draw(st.integers(0, 3)))] for p in range(partitions)}
    reports: dict[int, list[tuple[object, ...]]] = {p: [] for p in range(partitions)}
    others: list[tuple[object, ...]] = []
    for n in range(windows):
        start, ranked = n * W, False
        for p in range(partitions):
            closed = [k for k in products[p] if draw(st.booleans())]
            if draw(st.booleans()):  # a report cut in two: the watermark comes with the last
                reports[p].append(("report", p, None, [(k, start) for k in closed[:1]]))
                closed_rest = closed[1:]
            else:
                closed_rest = closed
            reports[p].append(("report", p, start + W, [(k, start) for k in closed_rest]))
            for k in closed:
                ranked = True
                others.append(("window", k, start))
                if draw(st.booleans()):
                    others.append(("anomaly", k, start))
        if ranked:  # the ranking pipeline emits windows that had an order
            others.append(("ranking", start))
    slots = [("slot", p) for p in reports for _ in reports[p]]  # where p's next report goes
    shuffled = draw(st.permutations([*others, *slots]))
    nexts = {p: iter(reports[p]) for p in reports}
    reads = [next(nexts[r[1]]) if r[0] == "slot" else r for r in shuffled]  # type: ignore[index]
    return partitions, reads


@given(_reads())
def test_any_read_order_prints_every_line_once_in_window_order(
    case: tuple[int, list[tuple[object, ...]]],
) -> None:
    partitions, reads = case
    order = LineOrder(partitions)
    printed: list[str] = []
    for r in reads:
        match r:
            case ("report", int(p), wm, list(ws)):
                printed += order.report(p, wm, ws)  # type: ignore[arg-type]
            case ("window", str(k), int(start)):
                printed += order.window(k, start, True, f"window {k} {start}")
            case ("anomaly", str(k), int(start)):
                printed += order.anomaly(k, start, f"anomaly {k} {start}")
            case ("ranking", int(start)):
                printed += order.ranking(start, start + W, f"top {start}")
    expected = [r for r in reads if r[0] != "report"]
    assert len(printed) == len(set(printed)) == len(expected)  # each once, none held
    at = {line: i for i, line in enumerate(printed)}
    for r in expected:
        if r[0] == "ranking":
            lines = [
                at[f"window {w[1]} {w[2]}"] for w in expected if w[0] == "window" and w[2] == r[1]
            ]
            assert max(lines) < at[f"top {r[1]}"]
        elif r[0] == "anomaly":
            assert at[f"window {r[1]} {r[2]}"] < at[f"anomaly {r[1]} {r[2]}"]

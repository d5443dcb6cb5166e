"""The ranking without a broker: whatever the interleaving of the partitions' reports, and
with reports re-sent, each window is emitted once, final, equal to a plain batch ranking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tables.top_k import ClosedWindow, Ranking, ranked

Report = tuple[int, int | None, int | None, list[ClosedWindow]]

SIZE = 10
PARTITIONS = 3


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[Report], dict]:
    """Each partition's reports in its order, interleaved at random, some re-sent later."""
    per_partition: list[list[Report]] = []
    all_windows: list[ClosedWindow] = []
    finals = []
    for p in range(PARTITIONS):
        products = [f"p{p}-{i}" for i in range(draw(st.integers(1, 4)))]
        windows = [
            (product, start * SIZE, (start + 1) * SIZE, float(draw(st.integers(0, 5))), 1)
            for product in products
            for start in sorted(draw(st.sets(st.integers(0, 8), max_size=5)))
        ]
        marks = sorted(draw(st.lists(st.integers(0, 100), min_size=1, max_size=6)))
        reports, before = [], None
        for wm in marks:
            closed = [w for w in windows if w[2] <= wm and (before is None or w[2] > before)]
            reports.append((p, before, wm, closed))
            before = wm
        all_windows += [w for w in windows if w[2] <= marks[-1]]
        finals.append(marks[-1])
        per_partition.append(reports)
    order: list[Report] = []
    cursors = [0] * PARTITIONS
    while any(c < len(per_partition[p]) for p, c in enumerate(cursors)):
        p = draw(st.sampled_from([p for p, c in enumerate(cursors) if c < len(per_partition[p])]))
        order.append(per_partition[p][cursors[p]])
        cursors[p] += 1
        if draw(st.booleans()):  # a crash upstream: an earlier report of p sent again
            order.append(per_partition[p][draw(st.integers(0, cursors[p] - 1))])
    low = min(finals)
    by_window: dict[tuple[int, int], list[tuple[str, float, int]]] = {}
    for key, start, end, value, count in all_windows:
        if end <= low:
            by_window.setdefault((start, end), []).append((key, value, count))
    return order, by_window


@given(runs(), st.integers(1, 4))
def test_each_window_is_ranked_once_as_a_batch_ranking_would(run: tuple, k: int) -> None:
    order, by_window = run
    ranking = Ranking(k, PARTITIONS)
    emitted: list[tuple[tuple[int, int], list[tuple[str, float, int]]]] = []
    for partition, since, watermark, windows in order:
        ranking.report(partition, since, watermark, windows)
        emitted += ranking.take_final()
    assert [w for w, _ in emitted] == sorted(by_window, key=lambda w: (w[1], w[0]))
    assert dict(emitted) == {w: ranked(entries, k) for w, entries in by_window.items()}


def test_nothing_is_final_before_every_partition_has_reported() -> None:
    ranking = Ranking(2, 2)
    ranking.report(0, None, 100, [("a", 0, 10, 1.0, 1)])
    assert ranking.take_final() == []
    ranking.report(1, None, 5, [])
    assert ranking.take_final() == []  # partition 1 has not passed the window's end
    ranking.report(1, None, 10, [("b", 0, 10, 3.0, 2)])
    assert ranking.take_final() == [((0, 10), [("b", 3.0, 2), ("a", 1.0, 1)])]


def test_a_watermark_going_back_is_ignored_and_ties_rank_by_key() -> None:
    ranking = Ranking(3, 1)
    ranking.report(0, None, 50, [("b", 0, 10, 2.0, 1), ("a", 0, 10, 2.0, 1), ("c", 0, 10, 5.0, 1)])
    assert ranking.take_final() == [((0, 10), [("c", 5.0, 1), ("a", 2.0, 1), ("b", 2.0, 1)])]
    ranking.report(0, None, 20, [("a", 0, 10, 9.0, 1)])  # re-sent, older: window already emitted
    assert ranking.watermarks == {0: 50} and ranking.open == {} and ranking.take_final() == []


def test_only_the_top_k_of_a_window_are_kept() -> None:
    ranking = Ranking(2, 1)
    ranking.report(0, None, None, [(f"p{i}", 0, 10, float(i), 1) for i in range(5)])
    ranking.report(0, None, None, [("p1", 0, 10, 1.0, 1)])  # re-sent: still out of the top 2
    assert ranking.open == {(0, 10): [("p4", 4.0, 1), ("p3", 3.0, 1)]}


def test_windows_a_partition_closed_before_its_reports_started_are_dropped() -> None:
    """A source partition processed before reports existed (an upgrade): its first report
    starts from watermark 25, so it may have closed windows ending by then unreported."""
    ranking = Ranking(3, 2)
    ranking.report(0, None, 50, [("a", 10, 20, 1.0, 1), ("a", 30, 40, 2.0, 1)])
    ranking.report(1, 25, 50, [("b", 30, 40, 5.0, 1)])
    assert ranking.take_final() == [((30, 40), [("b", 5.0, 1), ("a", 2.0, 1)])]
    assert ranking.open == {}


def test_one_key_reported_by_two_partitions_ranks_the_same_in_any_order() -> None:
    """Against the keying rule (a product on two partitions); still no order dependence."""
    results = []
    for order in ((0, 1), (1, 0)):
        ranking = Ranking(2, 2)
        for p in order:
            ranking.report(p, None, 50, [("a", 0, 10, 5.0 * (p + 1), 1)])
        results.append(ranking.take_final())
    assert results[0] == results[1] == [((0, 10), [("a", 10.0, 1)])]

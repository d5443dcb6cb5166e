"""The benchmark's report: the relay floor appears beside the bare and live latencies; each of
the issue's targets is judged from the same run."""

from __future__ import annotations

from benchmarks import report

CFG = {"events": 10, "keys": 1, "partitions": 4, "repeats": 1, "rate": 5000.0}
CFG["latency_seconds"] = 30.0


def _latency(p50: float, p99: float) -> dict[str, object]:
    return {"latency": {"p50_ms": p50, "p99_ms": p99}, "correct": {"ok": True}}


def test_the_relay_floor_is_summarised_and_shown() -> None:
    runs = [
        {"latency_bare": _latency(10.0, 90.0), "latency_relay": _latency(30.0, 120.0)},
        {"latency_bare": _latency(12.0, 80.0), "latency_relay": _latency(34.0, 140.0)},
    ]
    summary = report.summarise(runs)
    assert summary["relay_p50_ms"] == {"median": 32.0, "min": 30.0, "max": 34.0, "n": 2}
    table = report.markdown(summary, report.targets(summary), CFG)
    assert "| relay latency p99 (ms) | 130.0 | 120.0–140.0 |" in table


def test_without_a_relay_run_there_is_no_relay_row() -> None:
    summary = report.summarise([{"latency_bare": _latency(10.0, 90.0)}])
    assert summary["relay_p99_ms"] is None
    assert "relay" not in report.markdown(summary, report.targets(summary), CFG)


def _live(events_per_s: float) -> dict[str, object]:
    return {
        "events_per_s": events_per_s,
        "peak_rss_mb": 100.0,
        "cpu_s": 1.0,
        "reprocessed": 0,
        "correct": {"ok": True},
    }


def test_two_workers_are_judged_against_one() -> None:
    met = report.summarise([{"live": _live(100_000.0), "live2": _live(190_000.0)}])
    tgt = report.targets(met)
    assert tgt["two_workers"]["met"] is True
    assert "≥ 1.6 × one: **met** (1.90×)" in report.markdown(met, tgt, CFG)
    missed = report.summarise([{"live": _live(100_000.0), "live2": _live(150_000.0)}])
    assert report.targets(missed)["two_workers"]["met"] is False
    alone = report.summarise([{"live": _live(100_000.0)}])
    assert report.targets(alone)["two_workers"]["met"] is None  # not measured: no verdict

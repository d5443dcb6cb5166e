"""The benchmark's report: the relay floor appears beside the bare and live latencies."""

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

"""The benchmark harness runs end to end at a tiny size and checks what it measured.

No speed assertions (speed is the benchmark's output, not a test): only that every phase
completed and that the outputs it checked were correct.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS, RATE, SECONDS = 3_000, 500, 2


def test_quick_benchmark_completes_with_correct_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    args = ["--quick", "--events", str(EVENTS), "--repeats", "1"]
    args += ["--latency-seconds", str(SECONDS), "--rate", str(RATE), "--out", str(out)]
    args += ["--bare-beside-live"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "| `kappa replay`" in done.stdout

    result = json.loads(out.read_text())
    assert result["failures"] == [] and "aborted" not in result
    [run] = result["runs"]
    assert run["ceiling"]["events"] >= EVENTS
    replay = run["replay"]
    assert replay["correct"]["ok"], replay["correct"]
    assert replay["correct"]["count"] == EVENTS
    assert replay["usage"]["returncode"] == 0 and replay["summary"] is not None
    live = run["live"]
    assert live["correct"]["ok"] and live["events_in"] == EVENTS, live
    for phase in ("latency_bare", "latency_relay", "latency_live"):
        lat = run[phase]
        assert lat["events"] == RATE * SECONDS and lat["missing"] == 0, lat
        assert lat["latency"]["count"] == RATE * SECONDS
        assert lat["over_time"] and all(s["p99_ms"] >= s["p50_ms"] for s in lat["over_time"])
    assert run["latency_live"]["correct"]["ok"], run["latency_live"]["correct"]
    assert run["latency_relay"]["correct"]["ok"], run["latency_relay"]["correct"]
    assert "| relay latency p99 (ms)" in done.stdout
    beside = run["latency_live"]["bare_beside"]  # the same events, tailed during the live run
    assert beside["missing"] == 0 and beside["latency"]["count"] == RATE * SECONDS, beside
    assert "| bare consumer beside the live worker, p99 (ms)" in done.stdout
    written = run["latency_live"]["written"]  # to the acknowledgement of the event's batch
    assert written["missing"] == 0 and written["latency"]["count"] == RATE * SECONDS, written
    assert "| live worker latency to its outputs written (acknowledged) p99 (ms)" in done.stdout
    assert all(v is not None for k, v in result["summary"].items() if not k.startswith("live2"))

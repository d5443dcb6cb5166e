"""One `kappa replay` into a fresh version, timed as a child process, then checked.

A replay flushes every open window at the end (marked `kappa.provisional`), so the version's
revenue topic holds every window: their counts must add up to the good orders and their sums
to the generator's total.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.orders import PROVISIONAL_HEADER
from app.topic_reader import read_to_end
from benchmarks.dataset import Dataset
from benchmarks.processes import KAPPA, MeasuredProcess
from replay.summary import ReplaySummary

# Relative tolerance of the revenue total: windows add floats in a different order.
SUM_REL_TOL = 1e-6


def parse_summary(output: str) -> dict[str, float] | None:
    """The numbers of the replay's summary line (None if it printed none)."""
    found = ReplaySummary.parse(output)
    return None if found is None else {k: float(v) for k, v in asdict(found).items()}


def run_replay(
    version: int,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float,
    profile: Path | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Run `kappa replay --version V --no-progress [--processes N]`; wall time, usage, summary.

    With N > 1 the usage (RSS, CPU) is the parent's only; wall time covers all children."""
    args = [*KAPPA, "replay", "--version", str(version), "--no-progress"]
    if processes > 1:
        args += ["--processes", str(processes)]
    if profile is not None:
        pyspy = Path(sys.executable).with_name("py-spy")
        args = [str(pyspy), "record", "--format", "raw", "-o", str(profile), "--", *args]
    child = MeasuredProcess(args, env, cwd, cwd / f"replay-v{version}.log")
    usage = child.wait(timeout_s)
    output = child.output()
    if usage.returncode != 0:
        raise RuntimeError(f"kappa replay v{version} exited {usage.returncode}:\n{output[-3000:]}")
    return {"version": version, "usage": usage.as_dict(), "summary": parse_summary(output)}


async def check_replay(bootstrap: str, topic: str, dataset: Dataset) -> dict[str, Any]:
    """Sum of window counts == good orders, sum of window sums ≈ the generator's total."""
    windows: dict[tuple[str, int, int], dict[str, Any]] = {}
    provisional = 0
    for records in (await read_to_end(bootstrap, topic, stall_timeout_s=300)).values():
        for r in records:
            w = json.loads(r.value)
            windows[(w["product_id"], w["window_start"], w["window_end"])] = w
            provisional += any(k == PROVISIONAL_HEADER for k, _ in r.headers or ())
    count = sum(int(w["count"]) for w in windows.values())
    total = sum(float(w["sum"]) for w in windows.values())
    errors = []
    if count != dataset.good:
        errors.append(f"window counts add up to {count:,}, expected {dataset.good:,}")
    if not math.isclose(total, dataset.total_value, rel_tol=SUM_REL_TOL):
        errors.append(f"window sums add up to {total:,.2f}, expected {dataset.total_value:,.2f}")
    return {
        "ok": not errors,
        "errors": errors,
        "windows": len(windows),
        "provisional_records": provisional,
        "count": count,
        "sum": total,
    }

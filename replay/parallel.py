"""`kappa replay --processes N`: one replay split over N processes (`--process i/N` each).

A replay is CPU-bound Python; processes are how it uses more than one core. The children
coordinate through the version registry exactly as separately started processes would.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

SUMMARY = re.compile(
    r"replay v(\d+): ([\d,]+) events, ([\d,]+) windows emitted, ([\d,]+) late, ([\d,]+) DLQ"
)


def run_parallel(replay_args: list[str], processes: int) -> tuple[int, str]:
    """Run the children; return (exit code, combined summary line)."""
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "replay",
                *replay_args,
                "--no-progress",
                "--process",
                f"{i}/{processes}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    totals = [0, 0, 0, 0]
    version = "?"
    code = 0
    for child in children:
        out, _ = child.communicate()
        code = code or child.returncode
        for line in out.splitlines():
            m = SUMMARY.search(line)
            if m:
                version = m.group(1)
                for i in range(4):
                    totals[i] += int(m.group(i + 2).replace(",", ""))
            else:
                print(line, flush=True)
    seconds = time.monotonic() - started
    events, windows, late, dlq = totals
    rate = events / seconds if seconds > 0 else 0.0
    summary = (
        f"replay v{version}: {events:,} events, {windows:,} windows emitted, {late:,} late, "
        f"{dlq:,} DLQ in {seconds:.1f} s ({rate:,.0f} events/s) across {processes} processes"
    )
    return code, summary

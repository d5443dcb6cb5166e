"""`kappa replay --processes N`: one replay split over N processes (`--process i/N` each).

A replay is CPU-bound Python; processes are how it uses more than one core. The children
coordinate through the version registry exactly as separately started processes would.
"""

from __future__ import annotations

import subprocess
import sys
import time

from replay.summary import ReplaySummary


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
    total: ReplaySummary | None = None
    code = 0
    for child in children:
        out, _ = child.communicate()
        code = code or child.returncode
        for line in out.splitlines():
            part = ReplaySummary.parse(line)
            if part is None:
                print(line, flush=True)
            elif total is None:
                total = part
            else:
                total.add_summary(part)
    if total is None:
        return code or 1, "replay: no process finished its part"
    total.seconds = time.monotonic() - started
    return code, f"{total.line()} across {processes} processes"

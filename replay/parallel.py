"""`kappa replay --processes N`: one replay split over N processes (`--process i/N` each).

A replay is CPU-bound Python; processes are how it uses more than one core. The children
coordinate through the version registry exactly as separately started processes would.
"""

from __future__ import annotations

import subprocess
import sys
import threading
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
    outputs = [""] * processes

    def collect(i: int) -> None:
        outputs[i] = children[i].communicate()[0]

    readers = [threading.Thread(target=collect, args=(i,), daemon=True) for i in range(processes)]
    for reader in readers:
        reader.start()
    code = _wait_all_or_first_failure(children, readers)
    total: ReplaySummary | None = None
    for out in outputs:
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


def _wait_all_or_first_failure(
    children: list[subprocess.Popen[str]], readers: list[threading.Thread]
) -> int:
    """Wait for every child; if one fails, stop the others: they would wait forever for its
    partitions (a later stage starts when every partition of the one before is done)."""
    while any(reader.is_alive() for reader in readers):
        failed = [c for c in children if c.poll() not in (None, 0)]
        if failed:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for reader in readers:
                reader.join()
            index = children.index(failed[0])
            print(
                f"replay: process {index}/{len(children)} failed (exit {failed[0].returncode}); "
                "stopped the others. Run the same command again to resume",
                file=sys.stderr,
                flush=True,
            )
            return failed[0].returncode
        time.sleep(0.1)
    return next((c.returncode for c in children if c.returncode), 0)

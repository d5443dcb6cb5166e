"""A bare consumer that notes when each record arrives, run as its own process.

`python -m benchmarks.tailer BOOTSTRAP TOPIC MODE OUT --stop-file F`: reads TOPIC from the
beginning (no group) and records, per record, `[partition, offset, receive time]` (mode
`source`) or, for `orders.by-user` forwards, `[src partition, src offset, receive time]` (mode
`forward`): every source record at or below that offset has been processed when it arrives.
Receive times are `time.time()`, comparable with the producer's send times on the same machine.

It prints `ready` once it has fetched from every partition, and stops when the stop file
(JSON `{partition: offset}`, written by the harness after producing) exists and every listed
offset has been seen, or after --timeout seconds (exit 3); then writes OUT as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.bare_reader import read_from_beginning

# A low fetch wait: the dev broker answers a fetch only when its max wait expires, not when
# data arrives, so this bounds what the observer itself adds to every latency it measures.
DEFAULT_FETCH_WAIT_MS = 10


def read_targets(stop_file: Path) -> dict[int, int] | None:
    """The last offsets to wait for, or None while the stop file is missing or not yet whole
    (the harness renames it into place, but a reader must not die on a partial write)."""
    try:
        return {int(p): int(o) for p, o in json.loads(stop_file.read_text()).items()}
    except (FileNotFoundError, json.JSONDecodeError):
        return None


async def tail(
    bootstrap: str, topic: str, mode: str, stop_file: Path, timeout_s: float, fetch_wait_ms: int
) -> tuple[list[list[float]], bool]:
    consumer = await read_from_beginning(bootstrap, topic, fetch_max_wait_ms=fetch_wait_ms)
    seen: list[list[float]] = []
    highest: dict[int, int] = {}
    targets: dict[int, int] | None = None
    forward = mode == "forward"
    try:
        # The first fetch resolves positions and warms the connection; what it returns counts.
        first = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            if first:
                print("ready", flush=True)
                first = False
            for records in batches.values():
                for r in records:
                    if forward:
                        p, o = json.loads(r.value)["src"]
                    else:
                        p, o = r.partition, r.offset
                    seen.append([p, o, now])
                    if o > highest.get(p, -1):
                        highest[p] = o
            if targets is None:
                targets = read_targets(stop_file)
            if targets is not None and all(highest.get(p, -1) >= o for p, o in targets.items()):
                return seen, True
        return seen, False
    finally:
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("mode", choices=("source", "forward"))
    p.add_argument("out", type=Path)
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--fetch-wait-ms", type=int, default=DEFAULT_FETCH_WAIT_MS)
    a = p.parse_args()
    # What it keeps only grows (one small list per record) and holds no cycles: without the
    # collector no pause, growing with that list, is added to the receive times it notes.
    gc.freeze()
    gc.disable()
    seen, complete = asyncio.run(
        tail(a.bootstrap, a.topic, a.mode, a.stop_file, a.timeout, a.fetch_wait_ms)
    )
    tmp = a.out.with_name(a.out.name + ".tmp")  # renamed into place: never read half written
    tmp.write_text(json.dumps({"complete": complete, "records": seen}))
    os.replace(tmp, a.out)
    sys.exit(0 if complete else 3)


if __name__ == "__main__":
    main()

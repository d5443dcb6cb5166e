"""The ceiling: a bare aiokafka consumer that reads N records and json.loads each value.

No group, no state, no outputs: what one Python process can read and decode from the broker.
Run as a child (`python -m benchmarks.ceiling BOOTSTRAP TOPIC N`) so that its CPU seconds and
peak RSS are measured the same way as the replay's; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bare_reader import read_from_beginning

# Records per getmany, as in the reference measurement.
MAX_RECORDS = 50_000


async def read_and_decode(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    """Seconds from consumer start until `count` records are read and decoded."""
    t0 = time.perf_counter()
    consumer = await read_from_beginning(
        bootstrap,
        topic,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        read = 0
        loads = json.loads
        while read < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            for records in batches.values():
                for r in records:
                    loads(r.value)
                read += len(records)
        seconds = time.perf_counter() - t0
    finally:
        await consumer.stop()
    return {"events": read, "seconds": seconds}


def run_child(
    bootstrap: str, topic: str, count: int, env: dict[str, str], cwd: Path, timeout_s: float
) -> dict[str, Any]:
    """One ceiling measurement in a child process: its result plus its Usage."""
    from benchmarks.processes import MeasuredProcess

    child = MeasuredProcess(
        [sys.executable, "-m", "benchmarks.ceiling", bootstrap, topic, str(count)],
        env,
        cwd,
        cwd / "ceiling.log",
    )
    usage = child.wait(timeout_s)
    lines = [ln for ln in child.output().splitlines() if ln.startswith("{")]
    if usage.returncode != 0 or not lines:
        raise RuntimeError(f"ceiling child failed ({usage.returncode}):\n{child.tail_log()}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["events_per_s"] = result["events"] / result["seconds"]
    result["usage"] = usage.as_dict()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("count", type=int)
    a = p.parse_args()
    print(json.dumps(asyncio.run(read_and_decode(a.bootstrap, a.topic, a.count))), flush=True)


if __name__ == "__main__":
    main()

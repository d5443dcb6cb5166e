"""`kappa` that logs when each orders batch became durable: the moment its outputs were
acknowledged by the broker (the `orders.by-user` forwards among them) and its state committed,
which is when an output record is *written*. The latency benchmark runs its live worker with
this, to tell the worker's latency from the extra fetch an observer of the output topic pays.

One line per partition batch to the file named by `BENCH_ACK_LOG`: partition, last source
offset applied, time.time(). Benchmark instrumentation only: the engine knows nothing of it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from app.runtime import PipelineRunner

PIPELINE = "orders"
KAPPA_ACKED = [sys.executable, "-m", "benchmarks.acked_worker"]  # `kappa` with the log


def instrument(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
    send_and_commit = PipelineRunner._send_and_commit

    async def logged(self: PipelineRunner, batches: Sequence[tuple[Any, Any, int]]) -> None:
        await send_and_commit(self, batches)
        if self.pipeline.name == PIPELINE:
            t = time.time()
            out.write("".join(f"{st.partition} {applied} {t}\n" for st, _, applied in batches))

    PipelineRunner._send_and_commit = logged  # type: ignore[method-assign]


def read_acks(path: str) -> list[list[float]]:
    """The log's [partition, offset, time] rows (the shape of the tailer's forwards)."""
    try:
        with open(path) as f:
            return [[float(x) for x in line.split()] for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    instrument(os.environ["BENCH_ACK_LOG"])
    from app.cli import main

    sys.argv = ["kappa", *sys.argv[1:]]
    sys.exit(main())

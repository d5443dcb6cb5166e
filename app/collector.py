"""Python's cyclic garbage collector, set for batch processing.

A batch allocates tens of thousands of short-lived objects and frees nearly all of them by
reference counting. CPython's default (a young-generation pass every 700 net allocations) then
runs the cyclic collector thousands of times a second for almost nothing. Measured side by side
(benchmarks/RESULTS.md, after Run 7): with the passes below a replay spent ~6% less CPU
and a live worker ~9% less.
"""

from __future__ import annotations

import gc

# Net container allocations between two young-generation passes (CPython's default: 700).
YOUNG_THRESHOLD = 50_000
# Passes of the younger generation between two of the next one (CPython's default: 10).
OLDER_THRESHOLD = 20


def tune_for_batches() -> None:
    """Call once start-up is done. What exists now (modules, clients, settings) is frozen out
    of every later pass: a full pass over it paused a live worker ~40 ms every few seconds.
    Passes over new objects become rarer; cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)

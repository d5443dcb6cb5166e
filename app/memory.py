"""Process-wide malloc tuning for Kappa's commands (worker and replay hold RocksDB state).

glibc gives each thread that contends for malloc an arena of its own (up to 8 per core), and
memory freed in one arena is not reused by another: RocksDB's flush and compaction threads, the
consumer's thread and the event loop each grow one, and peak RSS grows with them. Two arenas
is the usual cure (as for JVMs and Ruby on glibc); measured on the live worker with 1,000,000
distinct keys: 492 → 447 MiB peak RSS at the same rate (benchmarks/RESULTS.md, Run 23).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

# glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(env: Mapping[str, str], arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless the environment sets MALLOC_ARENA_MAX (glibc read it
    at start; it wins). Call before threads start. False where there is nothing to set (not
    glibc: musl, macOS)."""
    if "MALLOC_ARENA_MAX" in env:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_ARENA_MAX, arenas))

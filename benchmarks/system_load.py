"""How much CPU the rest of the machine used while a measurement ran (Linux /proc).

The benchmark's numbers are only comparable when nothing else competes for the cores, so each
phase records the machine's busy CPU seconds, the benchmark's own (this process, the broker
and every measured child, alive or reaped) and the difference: what other processes used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds all cores spent not idle since boot (user, nice, system, irq, softirq, steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, None if it is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICKS


def own_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and every live descendant."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    stats = {pid: s for pid in os.listdir("/proc") if pid.isdigit() and (s := _stat(pid))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(int(pid))
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += stats[str(pid)][1]
        todo.extend(children.get(pid, []))
    return total


class LoadMeter:
    """Started before a measurement; `result()` after it says what others used meanwhile
    (and, given the broker's pid, what the broker used)."""

    def __init__(self, broker_pid: int | None = None) -> None:
        self.broker_pid = broker_pid
        self.t0 = time.perf_counter()
        self.busy0 = busy_cpu_s()
        self.own0 = own_cpu_s()
        self.broker0 = self._broker_cpu()

    def _broker_cpu(self) -> float:
        found = _stat(str(self.broker_pid)) if self.broker_pid is not None else None
        return found[1] if found else 0.0

    def result(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        busy = busy_cpu_s() - self.busy0
        own = own_cpu_s() - self.own0
        other = max(0.0, busy - own)
        return {
            "wall_s": round(wall, 2),
            "busy_cpu_s": round(busy, 2),
            "own_cpu_s": round(own, 2),
            "other_cpu_s": round(other, 2),
            "other_cores": round(other / wall, 3) if wall > 0 else 0.0,
            "broker_cpu_s": round(self._broker_cpu() - self.broker0, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


def other_cores(seconds: float) -> float:
    """Cores' worth of CPU other processes use over the next `seconds` (a quick probe)."""
    meter = LoadMeter()
    time.sleep(seconds)
    return float(meter.result()["other_cores"])

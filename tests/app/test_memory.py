"""glibc's malloc arenas are capped for Kappa's commands, unless the environment says otherwise."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
import textwrap

import pytest

from app import cli
from app.memory import MALLOC_ARENAS, limit_malloc_arenas

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Threads that each malloc while others do, then the number of arenas glibc made for them.
COUNT_ARENAS = """
import ctypes, os, sys, threading
{limit}
def work():
    for _ in range(2000):
        [ctypes.create_string_buffer(1000) for _ in range(50)]
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
sys.stderr.flush()
ctypes.CDLL(None).malloc_stats()  # writes to fd 2
"""


def _arenas(limit: str) -> int:
    script = textwrap.dedent(COUNT_ARENAS).format(limit=limit)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return sum(line.startswith("Arena ") for line in run.stderr.splitlines())


@glibc
def test_threads_share_two_arenas_once_limited() -> None:
    """Without the cap, every thread contending for malloc got an arena of its own, and memory
    freed in one was not reused by another (the live worker's peak RSS grew with them)."""
    limit = "from app.memory import limit_malloc_arenas; limit_malloc_arenas(os.environ)"
    assert _arenas("") > MALLOC_ARENAS
    assert _arenas(limit) == MALLOC_ARENAS


def test_an_arena_limit_the_environment_sets_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[tuple[int, ...]] = []
    libc = type("Libc", (), {"mallopt": lambda *args: called.append(args)})
    monkeypatch.setattr(ctypes, "CDLL", lambda _: libc)
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is False
    assert called == []


def test_every_kappa_command_limits_them_before_it_parses_its_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []
    monkeypatch.setattr(cli, "limit_malloc_arenas", seen.append)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert len(seen) == 1

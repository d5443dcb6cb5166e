"""The embedded broker does not outlive the process that started it, even one killed by SIGKILL
(`kill -9` of `kappa demo`, `kappa broker`, the benchmark or a test process): left running in its
own session, it would hold its port and memory for good."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys

import pytest

from tests.support.workers import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's"),
]

# Starts a broker, says its pid, then waits to be killed.
_STARTER = (
    "import sys; from app.broker import DevBroker, free_port; "
    "broker = DevBroker('127.0.0.1', free_port()).start(); "
    "print(broker.proc.pid, flush=True); sys.stdin.read()"
)


def test_the_broker_stops_when_the_process_that_started_it_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert starter.stdout is not None and starter.stderr is not None
        line = starter.stdout.readline()
        assert line, starter.stderr.read()
        # A pidfd, taken while the broker surely runs, names that process even if its pid is
        # reused; it reads ready once the process exits (reaped by its new parent or not).
        broker = os.pidfd_open(int(line))
    finally:
        starter.kill()
        starter.wait()
    try:
        ready, _, _ = select.select([broker], [], [], 60)
        assert ready, "the broker outlived the process that started it"
    finally:
        with contextlib.suppress(ProcessLookupError):  # it exited
            signal.pidfd_send_signal(broker, signal.SIGKILL)
        os.close(broker)

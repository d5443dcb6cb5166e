"""What a worker writes when its output is a file (`kappa worker > w.log 2>&1`, the demo's
worker.log): lines of text, no terminal control sequences."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.checks import eventually
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = pytest.mark.integration

# Control characters other than newline and tab: escape sequences (ESC), backspaces, bells.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


async def test_a_worker_writing_to_a_file_writes_no_terminal_control_sequences(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """At KAPPA_LOG_LEVEL=warning (or error): below it faust leaves its spinner out anyway."""
    env = kappa_env(broker, unique, tmp_path / "state", KAPPA_LOG_LEVEL="warning")
    assert run_kappa(["topics"], env).returncode == 0
    worker = Worker(env, tmp_path / "worker.log").start()  # stdout and stderr: the file

    async def ready() -> None:
        url = f"http://127.0.0.1:{worker.web_port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert json.loads(r.read())["status"] == "ready"
        except (urllib.error.URLError, ConnectionError) as e:
            raise AssertionError(f"not ready: {e}") from None

    def alive() -> None:
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail_log()

    try:  # through start-up (faust's spinner spins on it) to a stop and the process's exit
        await eventually(ready, timeout=90, alive=alive, explain=worker.tail_log)
    finally:
        code = worker.stop()
    written = worker.log_path.read_text()
    assert code == 0, written[-3000:]
    assert "kappa worker: version 1" in written  # it did write to the file
    assert _CONTROL.search(written) is None, repr(written[:300])

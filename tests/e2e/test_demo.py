"""`kappa demo` (what `make run` runs) and a terminal's Ctrl-C, which signals the whole
foreground process group: the demo stops its worker and generator before its broker, and
leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from app.broker import free_port
from tests.support.processes import child_pids, taken_port
from tests.support.workers import KAPPA, ROOT

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    """Running (not exited, nor an exited child not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _is_broker(pid: int) -> bool:
    return b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes()


def _demo_env(tmp_path: Path, web_port: int) -> dict[str, str]:
    """A demo of its own: its broker on a free port, its state under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAPPA_")}
    env.update(
        KAPPA_BROKER=f"127.0.0.1:{free_port()}",
        KAPPA_STATE_DIR=str(tmp_path / "state"),
        KAPPA_WEB_PORT=str(web_port),
        PYTHONPATH=str(ROOT),
    )
    return env


def test_ctrl_c_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    web_port = free_port()
    env = _demo_env(tmp_path, web_port)
    demo = subprocess.Popen(
        [*KAPPA, "demo", "--rate", "50"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while True:  # the worker is up once it serves its metrics
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo's worker never came up"
                time.sleep(0.2)
        started = child_pids(demo.pid)
        assert len(started) == 3  # broker, generator, worker
        (broker,) = [pid for pid in started if _is_broker(pid)]
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        clients = [pid for pid in started if pid != broker]
        deadline = time.monotonic() + 60
        while True:  # the broker outlives its clients (looked at first: it stops last)
            broker_alive = _alive(broker)
            if not any(_alive(pid) for pid in clients):
                break
            assert broker_alive, "the broker stopped before the worker and generator"
            assert time.monotonic() < deadline, "the worker or generator did not stop"
            time.sleep(0.01)
        out, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        strays = [pid for pid in started if _alive(pid)]
        for pid in strays:  # clean up after a failure; the assertion below reports it
            os.kill(pid, signal.SIGKILL)
    assert not strays
    assert demo.returncode == 0, out
    assert "stopping…" in out
    assert "Traceback" not in out


def test_a_demo_whose_worker_cannot_start_fails_saying_why(tmp_path: Path) -> None:
    with taken_port() as port:
        demo = subprocess.run(
            [*KAPPA, "demo", "--rate", "50"],
            env=_demo_env(tmp_path, port),
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
        )
    assert demo.returncode == 1, demo.stdout + demo.stderr
    (line,) = demo.stderr.strip().splitlines()
    assert line.startswith("kappa demo: error: the worker exited with code 2: kappa worker: ")
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in line
    assert "Traceback" not in demo.stdout + demo.stderr

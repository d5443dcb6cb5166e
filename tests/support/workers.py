"""Run real `kappa worker` processes against the test broker and observe them via /metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.broker import free_port
from app.topic_reader import read_to_end

KAPPA = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[2]
SCRAPE_RETRY_S = 20  # how long a metric asserted on may take to be scraped


def patched_kappa(patch: str) -> list[str]:
    """A `kappa` command that first runs `patch` (Python source) in the process: for tests
    that need a worker slowed or reconfigured where no setting reaches. Its exit code is
    kappa's."""
    run = "from app.cli import main\nsys.argv = ['kappa', *sys.argv[1:]]\nsys.exit(main())\n"
    return [sys.executable, "-c", f"import sys\n{textwrap.dedent(patch)}\n{run}"]


def kappa_env(broker: str, prefix: str, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAPPA_")}
    env.update(
        KAPPA_BROKER=broker,
        KAPPA_TOPIC_PREFIX=f"{prefix}.",
        KAPPA_APP_ID=f"kappa-{prefix}",
        KAPPA_STATE_DIR=str(state_dir),
        KAPPA_LOG_LEVEL="warning",
        KAPPA_REBALANCE_TIMEOUT_MS="2000",
        KAPPA_SESSION_TIMEOUT_MS="6000",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_kappa(
    args: list[str], env: dict[str, str], timeout: float = 120, command: list[str] = KAPPA
) -> subprocess.CompletedProcess[str]:
    """`kappa ARGS` to its end (`command`: e.g. a `patched_kappa`), its output captured."""
    return subprocess.run(
        [*command, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def start_kappa(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`kappa ARGS` started, its stdout and stderr piped (text): for commands that run until
    stopped."""
    return subprocess.Popen(
        [*KAPPA, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every sample on 127.0.0.1:PORT/metrics as (name, labels, value); empty if nothing
    answers (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return []
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


@dataclass
class Worker:
    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    command: list[str] = field(default_factory=lambda: list(KAPPA))  # what runs `worker ARGS`

    def start(self, *args: str) -> Worker:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, "worker", "--web-port", str(self.web_port), *args],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def ready(self) -> tuple[int, dict[str, Any]]:
        """`GET /ready`: its status code and body (URLError: not serving yet)."""
        url = f"http://127.0.0.1:{self.web_port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def _samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample on /metrics (empty if the worker is not up yet)."""
        return scrape(self.web_port)

    def metrics(self) -> dict[str, float]:
        """Sum of each sample name over all label sets (empty if the worker is not up yet)."""
        out: dict[str, float] = {}
        for name, _, value in self._samples():
            out[name] = out.get(name, 0.0) + value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample summed over the label sets that match `labels`. Asserted on, so a scrape
        that fails (a busy worker's answer slower than 2 s) is tried again, not read as 0."""
        deadline = time.monotonic() + SCRAPE_RETRY_S
        while not (samples := self._samples()):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no /metrics from the worker\n{self.tail_log()}")
            time.sleep(0.2)
        return sum(
            v
            for n, lab, v in samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def wait_until(
        self, predicate: Callable[[dict[str, float]], bool], timeout: float = 120
    ) -> dict[str, float]:
        """Poll /metrics until `predicate` holds; fail with the worker's log on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m and predicate(m):
                return m
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail_log()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not reached in {timeout}s; metrics {m}\n{self.tail_log()}"
                )
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def tail_log(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def check_stopped(worker: Worker, code: int, never_logged: str) -> None:
    """A stopped worker exited 0 and its log never said `never_logged`."""
    log = worker.log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert never_logged not in log, log[-3000:]


def stopped_in_one_error(worker: Worker) -> tuple[str, str]:
    """(the line, the log) of a worker that exited 1 saying why in one ERROR line, with no
    traceback and nothing else at ERROR or CRITICAL."""
    assert worker.proc is not None
    code = worker.proc.wait(60)
    log = worker.log_path.read_text(errors="replace")
    assert code == 1, log[-3000:]
    said = [line for line in log.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line]
    assert len(said) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    return said[0], log


def group_warnings(log: str) -> list[str]:
    """The WARNING lines of a worker's log about its consumer group."""
    warned = [line for line in log.splitlines() if "[WARNING]" in line]
    return [w for w in warned if "roup" in w or "oordinator" in w or "eartbeat" in w]


async def read_records(
    broker: str, topic: str
) -> dict[int, list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]]]:
    parts = await read_to_end(broker, topic)
    return {
        p: [(r.offset, r.key, r.value, dict(r.headers or ())) for r in recs]
        for p, recs in parts.items()
    }


async def read_source(
    broker: str, topic: str
) -> dict[int, list[tuple[int, bytes | None, bytes | None, int | None]]]:
    """A source topic as the reference computation takes it: (offset, key, value, timestamp)."""
    parts = await read_to_end(broker, topic)
    return {p: [(r.offset, r.key, r.value, r.timestamp) for r in recs] for p, recs in parts.items()}


async def read_windows(broker: str, topic: str) -> dict[tuple[str, int, int], dict[str, float]]:
    """Window results keyed by (product, start, end); a re-sent window must be byte-identical."""
    seen: dict[tuple[str, int, int], bytes] = {}
    for recs in (await read_records(broker, topic)).values():
        for _, _, value, _ in recs:
            assert value is not None
            d = json.loads(value)
            k = (d["product_id"], d["window_start"], d["window_end"])
            assert seen.setdefault(k, value) == value, (
                f"window {k} emitted twice with different values"
            )
    return {k: json.loads(v) for k, v in seen.items()}


def source_positions(
    recs: dict[int, list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]]],
) -> list[tuple[int, int]]:
    """(partition, offset) of each record, from the kappa.source.* headers."""
    return [
        (int(h["kappa.source.partition"]), int(h["kappa.source.offset"]))
        for rs in recs.values()
        for _, _, _, h in rs
    ]

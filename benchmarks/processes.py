"""Child processes whose wall time, CPU seconds and peak RSS the benchmark measures.

Linux only: a running child is sampled through /proc/<pid>; an exited one is reaped with
`os.wait4`, whose rusage is that child's own (not every child's, as RUSAGE_CHILDREN would be).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
KAPPA = [sys.executable, "-m", "app.cli"]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Children started and not yet reaped, so that an interrupted run can stop them all.
_RUNNING: set[MeasuredProcess] = set()
# While waiting (every 5 ms), sample the child's VmHWM every this many polls.
HWM_EVERY = 10


def kappa_env(
    broker: str, prefix: str, app_id: str, state_dir: Path, partitions: int, **extra: str
) -> dict[str, str]:
    """The environment of a `kappa` child: its own topic prefix, app id and state directory.

    Every other KAPPA_* variable is dropped so that the engine runs with its defaults.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAPPA_")}
    env.update(
        KAPPA_BROKER=broker,
        KAPPA_TOPIC_PREFIX=f"{prefix}.",
        KAPPA_APP_ID=app_id,
        KAPPA_STATE_DIR=str(state_dir),
        KAPPA_PARTITIONS=str(partitions),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def python_env() -> dict[str, str]:
    """Environment for the benchmark's own helper children (`python -m benchmarks.…`)."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass
class Usage:
    """What a child cost: wall seconds, CPU seconds (user + system), peak RSS in MiB.

    `peak_rss_mb` is the child's VmHWM sampled every 50 ms while it ran. The rusage
    `ru_maxrss` is kept beside it but misleads: Linux folds in the parent's RSS at fork (before
    the exec), so it is never below the harness's own size.
    """

    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    ru_maxrss_mb: float
    returncode: int | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class MeasuredProcess:
    """A child started with Popen, output to a log file, reaped with os.wait4 for its rusage."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        self.usage: Usage | None = None
        self._hwm = 0.0
        _RUNNING.add(self)

    def running(self) -> bool:
        if self.usage is not None:
            return False
        self._reap(os.WNOHANG)
        return self.usage is None

    def cpu_now(self) -> float:
        """CPU seconds (user + system) used so far by the running child; 0.0 once it is gone."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def peak_rss_now(self) -> float:
        """VmHWM (peak resident set) of the running child in MiB; 0.0 once it is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def sample_peak_rss(self) -> float:
        """Note the child's VmHWM now (it only grows); the largest seen goes into its Usage."""
        self._hwm = max(self._hwm, self.peak_rss_now())
        return self._hwm

    def wait(self, timeout_s: float) -> Usage:
        """Wait for the child to exit on its own; kill it after `timeout_s` (returncode -9)."""
        deadline = time.monotonic() + timeout_s
        polls = 0
        while self.running():
            if polls % HWM_EVERY == 0:
                self.sample_peak_rss()
            polls += 1
            if time.monotonic() > deadline:
                self.proc.kill()
                self._reap(0)
                break
            time.sleep(0.005)
        assert self.usage is not None
        return self.usage

    def stop(self, timeout_s: float = 30.0) -> Usage:
        """SIGTERM, then SIGKILL if it has not exited after `timeout_s`."""
        if self.running():
            self.sample_peak_rss()
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def tail_log(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def output(self) -> str:
        """Everything the child wrote to stdout and stderr so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _reap(self, options: int) -> None:
        try:
            pid, status, ru = os.wait4(self.pid, options)
        except ChildProcessError:  # already reaped elsewhere: no rusage to be had
            pid, status, ru = self.pid, 0, None
        if pid == 0:
            return
        wall = time.perf_counter() - self.started
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # tell Popen, so it does not try to reap it again
        self._log.close()
        _RUNNING.discard(self)
        if ru is None:
            self.usage = Usage(wall, 0.0, 0.0, 0.0, self._hwm, 0.0, code)
        else:
            cpu = ru.ru_utime + ru.ru_stime
            maxrss = ru.ru_maxrss / 1024
            self.usage = Usage(wall, cpu, ru.ru_utime, ru.ru_stime, self._hwm, maxrss, code)


def stop_all(timeout_s: float = 10.0) -> None:
    """Stop every child this process started and has not reaped (an interrupted run)."""
    for child in list(_RUNNING):
        child.stop(timeout_s)

"""`kappa replay --processes N`: one replay split over N processes (`--process i/N` each).

A replay is CPU-bound Python; processes are how it uses more than one core. The children
coordinate through the version registry exactly as separately started processes would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

from app.kafka_runner import HELD_SEND_ON_STOP_S
from replay.summary import ReplaySummary

# Exit codes of a replay stopped by SIGTERM or SIGINT (128 + the signal, as a shell reports it).
TERMINATED = 128 + signal.SIGTERM
INTERRUPTED = 128 + signal.SIGINT
# How long (s) the children may take to exit once told to stop, one deadline for them all
# (they stop side by side; 20 s, within a supervisor's 30 s grace whatever N), before those
# left are killed. A child's stop finishes the batch under way, sends the changelog entries it
# holds and closes its producer, each within `HELD_SEND_ON_STOP_S`; killed meanwhile, its
# held entries' batches are read and their DLQ and late copies written again on resume.
CHILD_STOP_S = 3 * HELD_SEND_ON_STOP_S + 5.0


class Terminated(Exception):
    """SIGTERM (a supervisor, `timeout`, `kill`) reached the parent."""


class StopHandler:
    """The parent's SIGTERM and SIGINT handler: raises `Terminated` (SIGTERM) or
    `KeyboardInterrupt` (SIGINT, Ctrl-C), except while a child is being started. Raised inside
    `Popen` (the child forked, `Popen` not yet returned), either would leave a running child the
    parent does not know of; so it is held until the children are all started."""

    def __init__(self) -> None:
        self.spawning = False
        # The children are being stopped (one failed): a first signal adds nothing to that
        # stop and is held, so that the children finish it; a second kills them at once.
        self.stopping = False
        self.pending: int | None = None  # the first signal held

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.spawning or (self.stopping and self.pending is None):
            self.pending = self.pending or signum
        else:
            _raise_for(signum)

    def spawned(self) -> None:
        """The children are started: a signal held meanwhile is raised now."""
        self.spawning = False
        if self.pending is not None:
            _raise_for(self.pending)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


def run_parallel(replay_args: list[str], processes: int) -> tuple[int, str | None]:
    """Run the children; return (exit code, combined summary line, if any process finished).

    SIGTERM stops every child before the parent exits: left running, they would go on
    replaying with nobody reading their output (and hold the version's state directory)."""
    started = time.monotonic()
    children: list[subprocess.Popen[str]] = []
    on_stop = StopHandler()
    on_stop.spawning = True
    previous: dict[int, Any] = {}  # signal -> the handler to restore
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT first: one between them is held
        if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
            continue  # a background job (`&` in a script): Ctrl-C is not for it
        previous[sig] = signal.signal(sig, on_stop)
    try:
        try:
            for i in range(processes):
                children.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "app.cli",
                            "replay",
                            *replay_args,
                            "--no-progress",
                            "--process",
                            f"{i}/{processes}",
                            "--parent-pid",
                            str(os.getpid()),
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
        finally:  # a signal held meanwhile wins over a failure to start a child
            on_stop.spawned()
        outputs = [""] * processes

        def collect(i: int) -> None:
            outputs[i] = children[i].communicate()[0]

        readers = [
            threading.Thread(target=collect, args=(i,), daemon=True) for i in range(processes)
        ]
        for reader in readers:
            reader.start()
        code = _wait_all_or_first_failure(children, readers, on_stop)
    except (Terminated, KeyboardInterrupt) as e:  # KeyboardInterrupt: SIGINT (Ctrl-C)
        _restore(previous)  # a second signal ends the parent at once
        return _stop_on_signal(children, isinstance(e, Terminated)), None
    finally:
        _restore(previous)
        _stop(children)
    total: ReplaySummary | None = None
    for out in outputs:
        for line in out.splitlines():
            part = ReplaySummary.parse(line)
            if part is None:
                print(line, flush=True)
            elif total is None:
                total = part
            else:
                total.add_summary(part)
    if code:  # said on stderr; the parts that finished are no summary of the replay
        return code, None
    if total is None:
        return 1, "replay: no process finished its part"
    total.seconds = time.monotonic() - started
    return code, total.line(f" across {processes} processes")


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def stopped_line(terminated: bool, processes: int | None = None) -> str:
    """What a replay stopped by SIGTERM (`terminated`) or SIGINT says: state is committed batch
    by batch, so the same command resumes it. `processes`: the `--processes N` parent's."""
    how = "terminated (SIGTERM)" if terminated else "interrupted (SIGINT)"
    children = "" if processes is None else f"; stopped its {processes} processes"
    return f"replay: {how}{children}. Run the same command again to resume"


# prctl(2) option: a signal for this process when the thread that started it exits.
PR_SET_PDEATHSIG = 1


def stop_with_parent(parent_pid: int) -> None:
    """In a child of `--processes N`: be sent SIGTERM (which stops a replay in order) when the
    parent dies, even by SIGKILL. Left running, children would hold the version's state
    directory, and running the command again to resume would be refused. Linux only."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before that
        os.kill(os.getpid(), signal.SIGTERM)


def _stop(children: list[subprocess.Popen[str]]) -> None:
    """Terminate the children still running and wait for them, all within one
    `CHILD_STOP_S` (a supervisor's grace period covers the command, not each child); those
    still running then are killed."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + CHILD_STOP_S
    try:
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.0, deadline - time.monotonic()))
    finally:  # past the deadline, or a second Ctrl-C meanwhile (it ends the parent at once)
        for child in children:
            if child.poll() is None:
                child.kill()
    for child in children:
        child.wait()


def _stop_on_signal(children: list[subprocess.Popen[str]], terminated: bool) -> int:
    """Stop the children on the parent's SIGTERM (`terminated`) or SIGINT, and say so; the exit
    code. Said even when a second signal cuts the stop short (the children killed)."""
    try:
        _stop(children)
    finally:
        print(stopped_line(terminated, len(children)), file=sys.stderr, flush=True)
    return TERMINATED if terminated else INTERRUPTED


def _wait_all_or_first_failure(
    children: list[subprocess.Popen[str]],
    readers: list[threading.Thread],
    on_stop: StopHandler | None = None,
) -> int:
    """Wait for every child; if one fails, stop the others: they would wait forever for its
    partitions (a later stage starts when every partition of the one before is done). A
    signal during that stop is held (`StopHandler.stopping`): the failure is said either way."""
    while True:
        running = any(reader.is_alive() for reader in readers)
        codes = [c.poll() for c in children]  # one look: a child may exit meanwhile
        failed = [c for c, code in zip(children, codes) if code not in (None, 0)]
        if failed:
            alive = [c for c, code in zip(children, codes) if code is None]
            if on_stop is not None:
                on_stop.stopping = True
            try:
                _stop(alive)  # one that does not stop is killed: its output would never end
                for reader in readers:
                    reader.join()
            finally:  # a second signal cut it short: the failure is said all the same
                rc = failed[0].returncode
                indexes = [children.index(c) for c in failed]
                line = failure_line(indexes, rc, len(children), len(alive))
                print(line, file=sys.stderr, flush=True)
            return exit_code(rc)
        if not running:
            for child in children:
                child.wait()
            if all(c.returncode == 0 for c in children):
                return 0
            continue  # one failed as its output ended: said above
        time.sleep(0.1)


def failure_line(failed: list[int], returncode: int, processes: int, stopped: int) -> str:
    """What the parent says when children failed: which (`failed`, by index), how the first
    did, and whether it stopped the `stopped` others or they had finished."""
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    names = ", ".join(f"{i}/{processes}" for i in failed)
    what = (
        f"process {names} failed ({how})"
        if len(failed) == 1
        else f"processes {names} failed (the first: {how})"
    )
    if stopped:
        what += "; stopped the others"
    elif len(failed) < processes:
        what += "; the others had finished"
    return f"replay: {what}. Run the same command again to resume"


def exit_code(returncode: int) -> int:
    """A child's return code as the parent's exit code: killed by signal N (negative here)
    is 128 + N, as a shell reports it (`sys.exit(-9)` would exit 247)."""
    return 128 - returncode if returncode < 0 else returncode

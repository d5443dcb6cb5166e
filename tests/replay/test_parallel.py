"""`kappa replay --processes N` when no child gets as far as its summary line, or its parent
dies first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.kafka_runner import HELD_SEND_ON_STOP_S
from replay.parallel import (
    CHILD_STOP_S,
    INTERRUPTED,
    TERMINATED,
    StopHandler,
    Terminated,
    _stop,
    _stop_on_signal,
    _wait_all_or_first_failure,
    exit_code,
    failure_line,
    run_parallel,
)
from tests.support.processes import exited

ROOT = Path(__file__).resolve().parents[2]


def test_children_that_all_fail_give_their_exit_status_and_say_so(
    capfd: pytest.CaptureFixture[str],
) -> None:
    code, summary = run_parallel(["--version", "not-a-number"], 2)  # argparse: exit 2
    assert code == 2
    assert summary is None  # no summary line of a replay that failed
    said = capfd.readouterr().err
    assert "failed (exit 2)" in said or "failed (the first: exit 2)" in said
    assert "the others had finished" not in said


def test_the_failure_line_says_which_processes_failed_and_what_became_of_the_others() -> None:
    """Two failed children were reported as one failed and "the others had finished"."""
    again = ". Run the same command again to resume"
    assert failure_line([1], 2, 2, stopped=1) == (
        f"replay: process 1/2 failed (exit 2); stopped the others{again}"
    )
    assert failure_line([0, 1], 2, 2, stopped=0) == (
        f"replay: processes 0/2, 1/2 failed (the first: exit 2){again}"
    )
    assert failure_line([2], -9, 3, stopped=0) == (
        f"replay: process 2/3 failed (killed by signal 9); the others had finished{again}"
    )


def test_a_child_killed_by_a_signal_exits_as_a_shell_reports_it() -> None:
    assert (exit_code(-9), exit_code(-15), exit_code(2), exit_code(0)) == (137, 143, 2, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_stops_when_its_parent_is_killed() -> None:
    """`kill -9` of `kappa replay --processes N` must not leave its children replaying: they
    would hold the version's state directory, and running the command again would be refused."""
    child = (
        "import sys, time; from replay.parallel import stop_with_parent; "
        "stop_with_parent(int(sys.argv[1])); print('ready', flush=True); time.sleep(120)"
    )
    parent = (
        "import os, subprocess, sys, time; "
        f"c = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())], "
        "stdout=subprocess.PIPE, text=True); "
        "c.stdout.readline(); print(c.pid, flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())
        assert not exited(child_pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while not exited(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exited(child_pid), "the child outlived its parent"
    finally:
        proc.kill()


def test_a_command_whose_reader_went_away_exits_quietly() -> None:
    """`kappa tail ... | head`, or a `--processes` child whose parent died: no traceback."""
    script = (
        "import sys; from app import cli\n"
        "def chatty(args):\n"
        "    for _ in range(1_000_000):\n"
        "        print('x' * 100)\n"
        "cli.cmd_status = chatty\n"
        "sys.exit(cli.main(['status']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    assert proc.wait(60) == 128 + signal.SIGPIPE
    assert proc.stderr.read() == ""


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)]
)
def test_a_signal_while_children_start_is_held_until_all_are_started(
    signum: int, raised: type[BaseException]
) -> None:
    # Raised inside Popen, it would orphan a child that has forked but is not yet listed.
    on_stop = StopHandler()
    on_stop.spawning = True
    on_stop(signum, None)  # does not raise
    with pytest.raises(raised):
        on_stop.spawned()
    with pytest.raises(raised):  # once started, at once
        on_stop(signum, None)


def test_the_first_signal_held_is_the_one_raised() -> None:
    on_stop = StopHandler()
    on_stop.spawning = True
    on_stop(signal.SIGINT, None)
    on_stop(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        on_stop.spawned()


def test_without_a_signal_starting_the_children_raises_nothing() -> None:
    on_stop = StopHandler()
    on_stop.spawning = True
    on_stop.spawned()  # would raise if a signal were held
    assert (on_stop.spawning, on_stop.pending) == (False, None)
    with pytest.raises(Terminated):  # and from now on a SIGTERM stops the parent at once
        on_stop(signal.SIGTERM, None)


def test_a_sigterm_held_while_a_child_failed_to_start_still_stops_the_replay(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    real_popen = subprocess.Popen
    started: list[subprocess.Popen[str]] = []

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        if started:  # the second child: a SIGTERM arrives, then starting it fails
            os.kill(os.getpid(), signal.SIGTERM)
            raise BlockingIOError(11, "Resource temporarily unavailable")
        child = real_popen([sys.executable, "-c", "import time; time.sleep(60)"], text=True)
        started.append(child)
        return child

    monkeypatch.setattr(subprocess, "Popen", popen)
    code, summary = run_parallel(["--version", "3"], 2)
    assert (code, summary) == (TERMINATED, None)
    assert "terminated (SIGTERM); stopped its 1 processes" in capfd.readouterr().err
    assert started[0].poll() is not None  # the child that did start was stopped


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [
        (signal.SIGTERM, TERMINATED, "terminated (SIGTERM)"),
        (signal.SIGINT, INTERRUPTED, "interrupted (SIGINT)"),
    ],
)
def test_a_signal_inside_popen_leaves_no_child_unknown_to_the_parent(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    signum: int,
    code: int,
    said: str,
) -> None:
    real_popen = subprocess.Popen
    started: list[subprocess.Popen[str]] = []

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        child = real_popen([sys.executable, "-c", "import time; time.sleep(60)"], text=True)
        started.append(child)
        if len(started) == 1:  # the child runs, and Popen has not yet returned it
            os.kill(os.getpid(), signum)
        return child

    monkeypatch.setattr(subprocess, "Popen", popen)
    assert run_parallel(["--version", "3"], 2) == (code, None)
    assert f"{said}; stopped its 2 processes" in capfd.readouterr().err
    assert all(child.poll() is not None for child in started)


def test_a_parent_started_ignoring_sigint_goes_on_ignoring_it(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A background job (`kappa replay --processes 2 &` in a script) starts with SIGINT
    ignored: a Ctrl-C at the terminal is not for it, nor for its children."""
    real_popen = subprocess.Popen
    started: list[subprocess.Popen[str]] = []

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        child = real_popen([sys.executable, "-c", "pass"], text=True, stdout=subprocess.PIPE)
        started.append(child)
        os.kill(os.getpid(), signal.SIGINT)  # ignored: it neither stops nor is held
        return child

    monkeypatch.setattr(subprocess, "Popen", popen)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = run_parallel(["--version", "3"], 2)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result == (1, "replay: no process finished its part")  # ran to the children's end
    assert "interrupted" not in capfd.readouterr().err


def test_a_stopped_child_has_time_for_each_step_of_its_stop_before_it_is_killed() -> None:
    """The batch under way, the held changelog entries and the producer's close each get
    `HELD_SEND_ON_STOP_S`: a child killed at 10 s could lose its held send, and its batches'
    DLQ and late copies were written again on resume."""
    assert CHILD_STOP_S > 3 * HELD_SEND_ON_STOP_S


# A child whose stop never ends: it ignores SIGTERM (says so once it does), until killed.
_IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring', flush=True); time.sleep(60)"
)


def test_children_that_do_not_stop_are_all_killed_after_one_shared_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each child waited for `CHILD_STOP_S` in turn, two stuck ones took 40 s: past a
    supervisor's 30 s grace (then the parent is SIGKILLed, and its children only get
    SIGTERM from the kernel). Told to stop together, they share one deadline."""
    monkeypatch.setattr("replay.parallel.CHILD_STOP_S", 0.2)
    children: list[subprocess.Popen[str]] = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], text=True),
        *(
            subprocess.Popen(
                [sys.executable, "-c", _IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ),
    ]
    events: list[tuple[str, int, float | None]] = []  # (what, child, wait timeout)
    real_wait, real_kill = subprocess.Popen.wait, subprocess.Popen.kill

    def wait(child: subprocess.Popen[str], timeout: float | None = None) -> int:
        try:
            return real_wait(child, timeout)
        except subprocess.TimeoutExpired:
            events.append(("cut", children.index(child), timeout))
            raise

    def kill(child: subprocess.Popen[str]) -> None:
        events.append(("kill", children.index(child), None))
        real_kill(child)

    try:
        for stuck in children[1:]:
            assert stuck.stdout is not None
            assert stuck.stdout.readline() == "ignoring\n"
        monkeypatch.setattr(subprocess.Popen, "wait", wait)
        monkeypatch.setattr(subprocess.Popen, "kill", kill)
        _stop(children)
    finally:
        for child in children:
            real_kill(child)
            real_wait(child)
            if child.stdout is not None:
                child.stdout.close()
    cuts = [e for e in events if e[0] == "cut"]
    assert sum(timeout or 0.0 for _, _, timeout in cuts) <= 0.2  # one deadline, not one each
    assert [what for what, _, _ in events] == ["cut"] * len(cuts) + ["kill", "kill"]
    assert [e[1] for e in events if e[0] == "kill"] == [1, 2]
    returncodes = [child.returncode for child in children]
    assert returncodes == [-signal.SIGTERM, -signal.SIGKILL, -signal.SIGKILL]


_REAL_WAIT = subprocess.Popen.wait  # tests below patch it


@contextmanager
def _stuck_child() -> Iterator[subprocess.Popen[str]]:
    """A child that ignores SIGTERM, its handler set; killed and reaped at the end."""
    stuck = subprocess.Popen(
        [sys.executable, "-c", _IGNORES_SIGTERM.replace("60", "600")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stuck.stdout is not None
    try:
        assert stuck.stdout.readline() == "ignoring\n"
        yield stuck
    finally:
        stuck.kill()
        _REAL_WAIT(stuck)
        stuck.stdout.close()


def _reading(child: subprocess.Popen[str]) -> threading.Thread:
    """A thread reading the child's output to its end, as the parent's readers do."""
    assert child.stdout is not None
    reader = threading.Thread(target=child.stdout.read, daemon=True)
    reader.start()
    return reader


def _failed(code: int) -> subprocess.Popen[str]:
    failing = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"], text=True)
    assert failing.wait(60) == code
    return failing


def test_a_child_failing_stops_the_others_within_the_deadline_and_kills_one_that_ignores_it(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The others were told to stop, then their output waited for with no bound: one that
    did not stop held the parent for ever."""
    monkeypatch.setattr("replay.parallel.CHILD_STOP_S", 0.2)
    with _stuck_child() as stuck:
        failing, reader = _failed(3), _reading(stuck)
        codes: list[int] = []
        waiting = threading.Thread(
            target=lambda: codes.append(_wait_all_or_first_failure([failing, stuck], [reader])),
            daemon=True,
        )
        waiting.start()
        waiting.join(60)  # a failure, not a hang, if the parent never gets past the stuck one
        assert codes == [3] and stuck.returncode == -signal.SIGKILL
    assert "process 0/2 failed (exit 3); stopped the others" in capfd.readouterr().err


def _interrupted(child: subprocess.Popen[str], timeout: float | None = None) -> int:
    """`Popen.wait` with Ctrl-C pressed again during a stop's wait (one with a timeout)."""
    if timeout is not None:
        raise KeyboardInterrupt
    return _REAL_WAIT(child, timeout)


def test_a_second_ctrl_c_while_the_children_stop_kills_them_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It raised out of the wait, and the parent's cleanup waited for them all over again, a
    whole deadline more, where a second Ctrl-C is to end the parent at once."""
    with _stuck_child() as stuck:
        monkeypatch.setattr(subprocess.Popen, "wait", _interrupted)
        with pytest.raises(KeyboardInterrupt):
            _stop([stuck])
        monkeypatch.undo()
        assert stuck.wait(60) == -signal.SIGKILL


def test_a_signal_while_a_failed_childs_others_stop_lets_them_finish_and_says_the_failure(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The parent's handler raised inside the stop: the others were killed at once, cut short,
    and the parent said it was interrupted, not which process failed."""
    monkeypatch.setattr("replay.parallel.CHILD_STOP_S", 0.2)
    on_stop = StopHandler()
    signalled: list[bool] = []

    def wait(child: subprocess.Popen[str], timeout: float | None = None) -> int:
        if timeout is not None and not signalled:  # Ctrl-C once, during the stop's wait
            signalled.append(True)
            on_stop(signal.SIGINT, None)
        return _REAL_WAIT(child, timeout)

    with _stuck_child() as stuck:
        failing, reader = _failed(3), _reading(stuck)
        monkeypatch.setattr(subprocess.Popen, "wait", wait)
        try:
            code = _wait_all_or_first_failure([failing, stuck], [reader], on_stop)
        except KeyboardInterrupt:
            pytest.fail("the signal was raised inside the stop")
    assert code == 3
    assert signalled and on_stop.pending == signal.SIGINT
    assert "process 0/2 failed (exit 3); stopped the others" in capfd.readouterr().err


def test_a_second_signal_cutting_the_stop_short_still_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    with _stuck_child() as stuck:
        monkeypatch.setattr(subprocess.Popen, "wait", _interrupted)
        with pytest.raises(KeyboardInterrupt):
            _stop_on_signal([stuck], terminated=False)
    assert capfd.readouterr().err.splitlines()[-1] == (
        "replay: interrupted (SIGINT); stopped its 1 processes. Run the same command again to "
        "resume"
    )

"""SIGTERM (a supervisor, `timeout`, `kill`) stops a command as Ctrl-C does, including as PID 1
in a container, where a process with no handler for it ignores it until the SIGKILL."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.broker import free_port
from app.topic_reader import high_watermarks
from tests.support.checks import check_copies_applied
from tests.support.datasets import orders_spec, produce_orders
from tests.support.processes import child_pids, exited
from tests.support.workers import KAPPA, ROOT, kappa_env, patched_kappa, run_kappa, start_kappa

pytestmark = pytest.mark.integration


@contextmanager
def _kappa(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A `kappa` command running, killed on the way out if it is still there."""
    proc = start_kappa(args, env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _sigterm(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then what it said on stderr once it exited."""
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)[1]


async def test_sigterm_stops_a_running_command_with_status_143(
    broker: str, unique: str, tmp_path: Path
) -> None:
    topic = f"{unique}.orders"
    cmd = ["produce", topic, "--generate", "1000000", "--rate", "200", "--no-progress"]
    with _kappa(cmd, kappa_env(broker, unique, tmp_path / "state")) as proc:
        while sum((await _ends(broker, topic)).values()) == 0:  # producing: past its start
            assert proc.poll() is None, proc.communicate()
        err = _sigterm(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "kappa produce: stopped; up to " in err and f" went to {topic} (producing" in err, err


# A supervisor that stops the broker as soon as it has said it listens: the SIGTERM lands while
# the line is printed, before the command waits on the broker.
SIGTERM_ON_THE_LISTENING_LINE = """
import builtins, os, signal
said = builtins.print
def print_then_stop(*args, **kwargs):
    said(*args, **kwargs)
    if args and "listening on" in str(args[0]):
        os.kill(os.getpid(), signal.SIGTERM)
builtins.print = print_then_stop
"""


def test_a_sigterm_right_after_the_broker_says_it_listens_is_its_orderly_end(
    tmp_path: Path,
) -> None:
    """It came before the stop handler and ended the command with 143 (seen under load)."""
    env = kappa_env("127.0.0.1:1", "sig", tmp_path / "state")
    command = patched_kappa(SIGTERM_ON_THE_LISTENING_LINE)
    done = run_kappa(["broker", "--address", f"127.0.0.1:{free_port()}"], env, command=command)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


async def _ends(broker: str, topic: str) -> dict[int, int]:
    try:
        return await high_watermarks(broker, topic, timeout_s=5)
    except ValueError:  # not created yet
        await asyncio.sleep(0.1)
        return {}


def test_sigterm_stops_the_embedded_broker_command_and_its_broker(tmp_path: Path) -> None:
    env = kappa_env("127.0.0.1:1", "sig", tmp_path / "state")
    with _kappa(["broker", "--address", f"127.0.0.1:{free_port()}"], env) as proc:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()  # up
        brokers = child_pids(proc.pid)
        assert brokers
        err = _sigterm(proc)
    assert proc.returncode == 0, err
    assert not [pid for pid in brokers if Path(f"/proc/{pid}").exists()]


def test_the_broker_command_says_so_when_its_broker_dies(tmp_path: Path) -> None:
    env = kappa_env("127.0.0.1:1", "sig", tmp_path / "state")
    with _kappa(["broker", "--address", f"127.0.0.1:{free_port()}"], env) as proc:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()  # up
        [broker] = child_pids(proc.pid)
        os.kill(broker, signal.SIGKILL)
        err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1, err
    assert err.strip() == "kappa broker: error: the embedded broker was killed by signal 9"


def _ignoring_sigint() -> None:
    """As a script's background job runs (`kappa replay ... &`): asyncio.run then leaves
    SIGINT, and with it Ctrl-C's orderly path, alone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def test_a_replay_whose_parent_is_killed_stops_its_processes_quietly(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """`kill -9` of `replay --processes 2`: each child gets SIGTERM (its parent's death signal)
    and stops in order. Raised as KeyboardInterrupt wherever it landed, it left tracebacks
    from inside aiokafka's sender and tasks destroyed while pending."""
    env = kappa_env(broker, unique, tmp_path / "state") | {"KAPPA_REPLAY_BATCH_MAX": "100"}
    produced = subprocess.run(
        [*KAPPA, "produce", f"{unique}.orders", "--generate", "100000", "--no-progress"],
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    assert produced.returncode == 0, produced.stderr
    parent = subprocess.Popen(
        [*KAPPA, "replay", "--version", "2", "--processes", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignoring_sigint,
    )
    try:
        output = f"{unique}.orders.revenue-1m.v2"
        while sum((await _ends(broker, output)).values()) == 0:  # replaying
            assert parent.poll() is None, parent.communicate()
        children = child_pids(parent.pid)
        assert len(children) == 2
        parent.kill()
        _, err = parent.communicate(timeout=60)  # at its end once the children have exited too
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    deadline = time.monotonic() + 30  # their output ends a moment before they do
    while not all(exited(pid) for pid in children):
        assert time.monotonic() < deadline, "a child outlived its parent"
        await asyncio.sleep(0.05)
    for noise in ("Traceback", "destroyed but it is pending", "never retrieved"):
        assert noise not in err, err


# SIGTERM's exception raised inside a weakref callback, as a garbage collection pass can run
# one at any point: Python drops it, so only the remembered SIGTERM can stop the command.
DROPPED_SIGTERM = """
import signal, weakref
from app import command_loop, demo, worker_main

def dropping_sigterm(step):
    def step_after_a_dropped_sigterm(*args):
        class Dropped: pass
        obj = Dropped()
        ref = weakref.ref(obj, lambda _: command_loop.stop_outside_loop(signal.SIGTERM, None))
        del obj
        return step(*args)
    return step_after_a_dropped_sigterm

worker_main.require_free_address = dropping_sigterm(worker_main.require_free_address)
demo.port_open = dropping_sigterm(demo.port_open)
"""


@pytest.mark.parametrize("command", [["worker"], ["demo"]])
def test_a_sigterm_dropped_during_start_up_stops_the_command_quietly(
    broker: str, unique: str, tmp_path: Path, command: list[str]
) -> None:
    """Started anyway, a worker or a demo would run until killed: their faust loop or their
    own takes SIGTERM over only once they are up."""
    env = kappa_env(broker, unique, tmp_path / "state", KAPPA_WEB_PORT=str(free_port()))
    done = run_kappa([*command], env, timeout=60, command=patched_kappa(DROPPED_SIGTERM))
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# SIGTERM at the moment the worker asks to join its group (the dev broker holds every join ~3 s).
SIGTERM_WHILE_JOINING = """
import os, signal
from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance
join = CoordinatorGroupRebalance.perform_group_join
async def perform_group_join(self):
    os.kill(os.getpid(), signal.SIGTERM)
    return await join(self)
CoordinatorGroupRebalance.perform_group_join = perform_group_join
"""


def test_a_worker_stopped_while_joining_its_group_stops_when_the_join_answers(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """mode joined the consumer thread blocking the event loop, while the thread's assignment
    callback waited for that loop: the worker hung until its shutdown deadline (here a minute,
    past this test's timeout). Python's development mode gives the timing where that happened
    every time (without it the thread usually stopped first)."""
    env = kappa_env(
        broker,
        unique,
        tmp_path / "state",
        KAPPA_WEB_PORT=str(free_port()),
        KAPPA_SHUTDOWN_TIMEOUT_MS="60000",
        PYTHONDEVMODE="1",
    )
    done = run_kappa(["worker"], env, timeout=45, command=patched_kappa(SIGTERM_WHILE_JOINING))
    assert done.returncode == 0, done.stderr
    assert "did not finish" not in done.stderr and "Traceback" not in done.stderr, done.stderr


# SIGTERM while the command waits for a broker that is not there (yet).
SIGTERM_WHILE_WAITING_FOR_THE_BROKER = """
import os, signal
import app.admin
wait_for_broker = app.admin.wait_for_broker
async def waiting(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return await wait_for_broker(*args, **kwargs)
app.admin.wait_for_broker = waiting
"""


def test_a_sink_stopped_while_it_waits_for_the_broker_stops_as_it_would_later(
    tmp_path: Path,
) -> None:
    """A sink runs until stopped, so SIGTERM is its orderly end (0), before it starts too."""
    env = kappa_env(f"127.0.0.1:{free_port()}", "nobody", tmp_path / "state")  # no broker
    done = run_kappa(
        ["sink", str(tmp_path / "out")],
        env,
        timeout=60,
        command=patched_kappa(SIGTERM_WHILE_WAITING_FOR_THE_BROKER),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


# Ctrl-C or a supervisor's SIGTERM once the replay runs its first stage (sent by the process to
# itself there, so that it lands in the replay and not before or after it).
SIGNAL_IN_THE_FIRST_STAGE = """
import os, signal
from replay import runner
run_stage = runner._run_stage
async def signalled(*args, **kwargs):
    os.kill(os.getpid(), signal.{name})
    return await run_stage(*args, **kwargs)
runner._run_stage = signalled
"""


@pytest.mark.parametrize(
    ("name", "code", "how"),
    [("SIGINT", 130, "interrupted (SIGINT)"), ("SIGTERM", 143, "terminated (SIGTERM)")],
)
async def test_a_stopped_replay_says_that_running_it_again_resumes(
    broker: str, unique: str, tmp_path: Path, name: str, code: int, how: str
) -> None:
    """It said nothing, where `--processes` said how to go on."""
    from app.admin import ensure_topics

    await ensure_topics(broker, {f"{unique}.orders": (4, {})})
    env = kappa_env(broker, unique, tmp_path / "state")
    command = patched_kappa(SIGNAL_IN_THE_FIRST_STAGE.format(name=name))
    done = run_kappa(["replay", "--version", "2", "--no-progress"], env, command=command)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"replay: {how}. Run the same command again to resume", done.stderr
    assert done.stderr.count("Run the same command") == 1, done.stderr
    # a process of `--processes N` leaves it to its parent, whose command it is not
    child = ["replay", "--version", "2", "--no-progress", "--parent-pid", str(os.getpid())]
    done = run_kappa(child, env, command=command)
    assert done.returncode == code, done.stderr
    assert "Run the same command" not in done.stderr, done.stderr


# Ctrl-C reaching the parent of `--processes N` once its processes are started.
SIGINT_ONCE_STARTED = """
import os, signal
from replay import parallel
wait = parallel._wait_all_or_first_failure
def interrupted(*args):
    os.kill(os.getpid(), signal.SIGINT)
    return wait(*args)
parallel._wait_all_or_first_failure = interrupted
"""


async def test_ctrl_c_stops_a_split_replay_saying_that_running_it_again_resumes(
    broker: str, unique: str, tmp_path: Path
) -> None:
    from app.admin import ensure_topics

    await ensure_topics(broker, {f"{unique}.orders": (4, {})})
    env = kappa_env(broker, unique, tmp_path / "state")
    done = run_kappa(
        ["replay", "--version", "2", "--processes", "2"],
        env,
        command=patched_kappa(SIGINT_ONCE_STARTED),
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "replay: interrupted (SIGINT); stopped its 2 processes. Run the same command again to "
        "resume"
    )


async def _stopped_replay_env(broker: str, unique: str, state: Path) -> dict[str, str]:
    """Orders to replay, and the settings of a replay that Ctrl-C stops (`KAPPA_CHAOS_STOP`)
    once its third fetch of orders is done, changelog entries held."""
    from app.admin import ensure_topics

    await ensure_topics(broker, {f"{unique}.orders": (4, {})})
    await produce_orders(broker, f"{unique}.orders", orders_spec(3_000, 5, keys=40, users=30))
    return kappa_env(
        broker, unique, state, KAPPA_REPLAY_BATCH_MAX="400", KAPPA_CHAOS_STOP="orders:3:SIGINT"
    )


# The SIGTERM of a `--processes N` parent that Ctrl-C reached too, landing as the process it
# stops sends the changelog entries it holds.
SIGTERM_AS_THE_HELD_ENTRIES_GO_OUT = """
import os, signal
from app.runtime import PipelineRunner
send_held = PipelineRunner.send_held
async def after_a_sigterm(self, partitions=None):
    os.kill(os.getpid(), signal.SIGTERM)
    return await send_held(self, partitions)
PipelineRunner.send_held = after_a_sigterm
"""


async def test_a_replay_process_stopped_by_ctrl_c_and_its_parent_still_sends_what_it_holds(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """At a terminal, Ctrl-C reaches every process of `--processes N`, and their parent then
    sends each a SIGTERM: cancelling it again cut short the sending of its held changelog
    entries, so their batches were written again on resume. It is the same stop."""
    env = await _stopped_replay_env(broker, unique, tmp_path / "state")
    child = ["replay", "--version", "2", "--no-progress", "--parent-pid", str(os.getpid())]
    done = run_kappa(child, env, command=patched_kappa(SIGTERM_AS_THE_HELD_ENTRIES_GO_OUT))
    assert done.returncode == 130, done.stderr  # Ctrl-C came first
    assert "Traceback" not in done.stderr, done.stderr
    assert await check_copies_applied(env, 2)


# The held entries' send never answered, as a broker gone quiet would not.
HELD_SEND_NEVER_ANSWERED = """
import asyncio, os, signal, sys
from app.runtime import PipelineRunner
from app import kafka_runner
kafka_runner.HELD_SEND_ON_STOP_S = {deadline_s}
async def never_answered(self, partitions=None):
    print("sending the held entries", file=sys.stderr, flush=True)
    if {second_ctrl_c}:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGINT)
    await asyncio.Event().wait()
PipelineRunner.send_held = never_answered
"""


@pytest.mark.parametrize(
    ("deadline_s", "second_ctrl_c", "warned"),
    [
        (0.2, False, True),  # given up at the deadline, with a warning
        # a second Ctrl-C stops it at once (the deadline, an hour: `run_kappa` gives up first)
        (3600, True, False),
    ],
)
async def test_a_stopped_replay_sending_its_held_entries_still_exits(
    broker: str, unique: str, tmp_path: Path, deadline_s: float, second_ctrl_c: bool, warned: bool
) -> None:
    env = await _stopped_replay_env(broker, unique, tmp_path / "state")
    patch = HELD_SEND_NEVER_ANSWERED.format(deadline_s=deadline_s, second_ctrl_c=second_ctrl_c)
    done = run_kappa(
        ["replay", "--version", "2", "--no-progress"], env, command=patched_kappa(patch)
    )
    assert done.returncode == 130, done.stderr
    assert "sending the held entries" in done.stderr, done.stderr
    timed_out = "orders: held changelog entries not sent on stop (TimeoutError())"
    assert (timed_out in done.stderr) == warned, done.stderr
    for noise in ("Traceback", "destroyed but it is pending", "never retrieved"):
        assert noise not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "replay: interrupted (SIGINT). Run the same command again to resume"
    )


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_produce_reading_a_pipe_whose_writer_stalls_stops_when_told(
    broker: str, unique: str, tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """The file was read inside the event loop: a read waiting for a writer that had stalled
    part way held the stop (and the records read before it) until more data came, for ever if
    none did. A pipe read in a thread, the loop sends what came and takes the stop."""
    pipe = tmp_path / "orders.jsonl"
    os.mkfifo(pipe)
    # read and write: the open does not wait for the command to open it, and the command sees
    # a writer that neither writes more nor closes
    writer = os.open(pipe, os.O_RDWR)
    try:
        lines = [json.dumps({"order_id": f"o{i}", "product_id": f"p{i % 7}"}) for i in range(300)]
        data = ("\n".join(lines) + "\n").encode()
        assert 4096 < len(data) < 65536  # past the head kappa produce looks at; in the pipe
        assert os.write(writer, data) == len(data)
        topic = f"{unique}.piped"
        cmd = ["produce", topic, "--file", str(pipe), "--no-progress"]
        with _kappa(cmd, kappa_env(broker, unique, tmp_path / "state")) as proc:
            deadline = time.monotonic() + 60
            while sum((await _ends(broker, topic)).values()) < len(lines):  # all sent
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the lines in the pipe were not sent"
            proc.send_signal(stop)
            try:
                err = proc.communicate(timeout=60)[1]
            except subprocess.TimeoutExpired:
                pytest.fail(f"kappa produce did not stop on {stop.name} while its pipe stalled")
    finally:
        os.close(writer)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"kappa produce: stopped; up to 300 records went to {topic} (producing the same again "
        "sends them again)"
    )


def _waits_for_a_writer(pid: int) -> bool:
    """Whether a thread of process `pid` waits in opening a named pipe for its writer."""
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        try:
            if wchan.read_text() == "wait_for_partner":
                return True
        except OSError:  # the thread ended
            continue
    return False


def _kernel_names_wait_channels() -> bool:
    """Whether /proc says where a sleeping process waits (`wchan`): a kernel without symbol
    lookup says 0 for every process, and `_waits_for_a_writer` could never see the wait."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(500):  # until it sleeps: a few ms
            try:
                named = Path(f"/proc/{sleeper.pid}/wchan").read_text()
            except OSError:
                return False
            if named not in ("", "0"):
                return True
            time.sleep(0.01)
        return False
    finally:
        sleeper.kill()
        sleeper.wait()


def _unread(fd: int) -> int:
    """Bytes written to the pipe open as `fd` and not read yet."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)


@pytest.mark.parametrize("waits_for", ["its writer", "its first line"])
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_produce_waiting_for_its_pipes_first_line_stops_saying_so(
    tmp_path: Path, stop: signal.Signals, code: int, waits_for: str
) -> None:
    """The pipe was opened, and its head read, before the command's loop: a stop there ended
    it (143, 130) without the line saying how many records went. Opened and read by the thread
    that reads the rest, the loop takes the stop."""
    if waits_for == "its writer" and not _kernel_names_wait_channels():
        pytest.skip("this kernel's /proc does not say where a process waits")
    pipe = tmp_path / "orders.jsonl"
    os.mkfifo(pipe)
    writer: int | None = None
    if waits_for == "its first line":
        # read and write: a writer there before the command, which neither writes more nor
        # closes; the first line cut short
        writer = os.open(pipe, os.O_RDWR)
        os.write(writer, b'{"order_id": "o1", ')
    cmd = ["produce", "orders", "--file", str(pipe), "--no-progress"]
    try:
        with _kappa(cmd, kappa_env("127.0.0.1:1", "sig", tmp_path / "state")) as proc:
            deadline = time.monotonic() + 60
            # waiting in its open; or it read what was written, and waits for the rest
            while not (_waits_for_a_writer(proc.pid) if writer is None else _unread(writer) == 0):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"kappa produce never waited for {waits_for}"
                time.sleep(0.01)
            proc.send_signal(stop)
            err = proc.communicate(timeout=60)[1]
    finally:
        if writer is not None:
            os.close(writer)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1:] == [
        "kappa produce: stopped; up to 0 records went to orders (producing the same again "
        "sends them again)"
    ], err

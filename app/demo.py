"""`kappa demo` (what `make run` runs): broker, topics, a generator and a worker; prints windows,
anomalies and each window's top products.

It reads its topics from their beginning and prints what was written after it started: a
window's `top` line waits for that window's product lines, which the reports on
`orders.by-window` name, and those may have been written before (`app.line_order`).

Starts the embedded broker unless one already answers on KAPPA_BROKER. Everything it starts
is stopped on Ctrl-C. Because the embedded broker keeps nothing across restarts, a demo that
starts a fresh broker also clears the local state from the previous run (it would describe
topics that no longer exist).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

from agents.orders import REVENUE
from agents.product_trends import ANOMALIES
from agents.quiet_products import QUIET_PRODUCTS
from agents.top_products import TOP_PRODUCTS
from agents.window_reports import BY_WINDOW
from app import command_loop
from app.admin import ensure_version_topics
from app.broker import BrokerError, DevBroker, port_open, split_address
from app.demo_lines import DemoTopics, demo_handlers, print_lines
from app.kafka_clients import new_consumer
from app.line_order import LineOrder
from app.settings import ConfigError, Settings
from app.topology import Topology
from replay.registry import Registry, refuse_if_dropped

KAPPA = [sys.executable, "-m", "app.cli"]


def broker_answering(
    bootstrap: list[str], answers: Callable[[str, int], bool] | None = None
) -> tuple[str, int, bool]:
    """(host, port, whether a broker answers there): the first address of `KAPPA_BROKER` that
    answers, else its only address, for the embedded broker. In a list, an address that does
    not resolve (or that the IPv4 probe cannot reach) is one that does not answer; a list none
    of which answers names a cluster that is down: the demo refuses it rather than stand a
    broker in for it. `answers`: `port_open`, read when called."""
    probe = answers or port_open
    if len(bootstrap) == 1:
        host, port = split_address(bootstrap[0])
        return host, port, probe(host, port)
    for address in bootstrap:
        host, _, port = address.rpartition(":")
        try:
            if probe(host.strip("[]"), int(port)):
                return host, int(port), True
        except (BrokerError, ValueError):
            continue
    raise ConfigError(
        f"no broker of KAPPA_BROKER={','.join(bootstrap)} answers: the demo starts the "
        "embedded broker only for a single address"
    )


async def demo_topology(settings: Settings) -> Topology:
    """The live version's topics: the worker the demo starts runs that version (on a broker
    where a replay was promoted, not version 1). A version whose drop started is refused: its
    topics would be made anew."""
    view = await Registry(settings).load(create=False)
    refuse_if_dropped(view, view.live)
    return Topology(settings, view.live)


def run_demo(settings: Settings, rate: float) -> int:
    host, port, answered = broker_answering(settings.bootstrap)
    with ExitStack() as stack:
        if not answered:
            broker = DevBroker(host, port).start()
            stack.callback(broker.stop)
            with _files_of("the state directory", settings.state_dir):
                clear_state(settings.state_dir)
            print(f"started the embedded broker on {broker.address} (memory only)", flush=True)
        else:
            print(f"using the broker already listening on {host}:{port}", flush=True)
        topology = command_loop.run(demo_topology(settings))
        command_loop.run(ensure_version_topics(settings.kafka, topology))
        log_dir = settings.state_dir.parent
        logs = {name: log_dir / f"{name}.log" for name in ("generator", "worker")}
        with _files_of("the log directory", log_dir):
            log_dir.mkdir(parents=True, exist_ok=True)
            # The logs are appended to: what this run's children write starts here.
            starts = {name: _open_log(log) for name, log in logs.items()}
        generator = _spawn(
            [
                "produce",
                topology.physical("orders"),
                "--generate",
                "100000000",
                "--rate",
                str(rate),
                "--disorder-ms",
                "3000",
                "--late-fraction",
                "0.002",
                "--bad-fraction",
                "0.005",
                "--keys",
                "20",
                "--no-progress",
            ],
            logs["generator"],
        )
        stack.callback(_stop, generator)
        worker = _spawn(["worker"], logs["worker"])
        stack.callback(_stop, worker)
        print(
            f"generator: {rate:g} orders/s → {topology.physical('orders')}; worker (version "
            f"{topology.version}) metrics on "
            f"http://{settings.web_host}:{settings.web_port}/metrics; logs in {log_dir}/",
            flush=True,
        )
        print(
            f"windows are {settings.window_ms // 1000} s with {settings.grace_ms // 1000} s grace: "
            f"the first ones close about {(settings.window_ms + settings.grace_ms) // 1000} s "
            "after start. Ctrl-C stops everything.",
            flush=True,
        )
        children = {"worker": worker, "generator": generator}
        topics = DemoTopics(
            windows=topology.physical(REVENUE),
            anomalies=topology.physical(ANOMALIES),
            rankings=topology.physical(TOP_PRODUCTS),
            quiet=topology.physical(QUIET_PRODUCTS),
            reports=topology.physical(BY_WINDOW),
        )
        command_loop.raise_if_sigterm_seen()
        asyncio.run(_print_windows(settings, topics, children))
        # Its loop's close left SIGTERM at its default: while the children are stopped, a
        # second one is ignored, as during any command's cleanup (they would be orphaned).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, child in children.items():
            code = child.returncode
            if code is not None:  # it stopped on its own: the demo failed
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                why = stop_reason(logs[name], starts[name])
                print(
                    f"kappa demo: error: the {name} {how}"
                    + (f": {why}" if why else "")
                    + f" (its log: {logs[name]})",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
    return 0


@contextmanager
def _files_of(what: str, path: Path) -> Iterator[None]:
    """A file system error while preparing the demo, as one line naming the path."""
    try:
        yield
    except OSError as e:
        where = e.filename or path
        raise ConfigError(
            f"cannot use {what} {path} ({where}: {e.strerror or e}); "
            "set KAPPA_STATE_DIR to a writable directory"
        ) from None


def _open_log(log: Path) -> int:
    """The log's size (where this run's lines start), after checking it can be appended to."""
    with log.open("ab") as f:
        return f.tell()


def stop_reason(log: Path, start: int) -> str | None:
    """Why a child stopped, from what it wrote to its log since `start` (bytes): its one-line
    error (`kappa COMMAND: error: ...`), else a traceback's last line; None if neither."""
    with log.open("rb") as f:
        f.seek(start)
        lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    said = [ln for ln in lines if ln.startswith("kappa ") and ": error: " in ln]
    if said:
        return said[-1]
    raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", ln)]
    return raised[-1] if raised else None


def clear_state(root: Path) -> None:
    """Remove what Kappa keeps under `root` (each version's `vN` directory, faust's data
    directory), never anything else: KAPPA_STATE_DIR may name a directory that holds more."""
    if not root.is_dir():
        return
    for child in root.iterdir():
        kappas = child.name == "faust" or (child.name[:1] == "v" and child.name[1:].isdigit())
        if kappas and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)


def _spawn(args: list[str], log_path: object) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
    # Its own session, so a terminal's Ctrl-C reaches only the demo, which then stops the
    # worker and the generator before the broker, in that order.
    return subprocess.Popen(
        [*KAPPA, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _print_windows(
    settings: Settings,
    topics: DemoTopics,
    children: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Print windows as they close, anomalies as they are found, each window's top products
    once every partition passed it and products gone quiet, until Ctrl-C (or SIGTERM), or
    until a child (the worker, the generator) exits. A window's `top` line comes after all its
    product lines, an anomaly after its product's line (`app.line_order`).

    The signals set a flag the loop checks: cancelling the task instead would be swallowed by
    a consumer fetch in progress, and the demo would go on printing."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    order = LineOrder(settings.partitions)
    handlers = demo_handlers(order, topics, settings.partitions, settings.window_ms)
    consumer = new_consumer(settings.kafka, *handlers, group_id=None, auto_offset_reset="earliest")

    def going() -> bool:
        return all(c.poll() is None for c in children.values()) and not stop.is_set()

    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        await print_lines(consumer, handlers, going, partial(print, flush=True))
        if stop.is_set():
            print("\nstopping…", flush=True)
    finally:
        await consumer.stop()

"""`kappa worker`: check the broker, topics and local state, then hand over to Faust's worker.

Before Faust starts: the pipeline names are checked (no broker needed), the worker waits for
the broker for as long as it takes (a worker is a long-running service that may start before
its broker), takes the lock of its version's state directory, validates every existing
partition directory and makes sure the broker still holds what that state has applied.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import sys

from app import command_loop
from app.admin import (
    check_then_create_version_topics,
    copy_max_bytes,
    wait_for_broker,
    warn_time_retention,
    warn_timestamp_limits,
)
from app.settings import ConfigError, Settings
from app.state_guard import check_broker_has_state, check_partition_dirs, lock_state_dir
from app.topology import Topology, registry_topic

log = logging.getLogger("kappa.worker")

# Longest pause (s) between attempts while the worker waits for its broker.
BROKER_MAX_BACKOFF_S = 10.0


def run_worker(
    settings: Settings, version: int | None, pipelines: list[str], web_port: int | None
) -> int:
    if web_port is not None:
        settings = dataclasses.replace(settings, web_port=web_port)
    named = Topology(settings, version or 1).select(pipelines)  # unknown names fail at once
    require_free_address(settings.web_host, settings.web_port)
    if version is not None:  # its state directory is checked before any waiting for a broker
        lock = lock_state_dir(named.state_root())  # held until the process exits
        applied = check_partition_dirs(named)
    else:  # the live version, known only from the broker
        lock, applied = None, None
    given = settings
    version, since_ms, settings = command_loop.run(version_to_run(settings, version))
    topology = Topology(settings, version, since_ms=since_ms).select(pipelines)
    if lock is None:
        lock = lock_state_dir(topology.state_root())
        applied = check_partition_dirs(topology)
    settings = command_loop.run(prepare_topics(settings, topology, applied))
    command_loop.run(record_definition(settings, version))

    from app.worker import BoundedStopWorker, create_app
    from replay.registry import taken_from_record

    app = create_app(settings, version, pipelines, since_ms)
    worker = BoundedStopWorker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        stop_timeout_s=settings.shutdown_timeout_ms / 1000,
        stop_on_error=app.kappa_stop_on_error,
    )
    names = ", ".join(p.name for p in topology.pipelines)
    print(
        f"kappa worker: version {version}, pipelines {names}, "
        f"broker {settings.broker}, metrics on http://{settings.web_host}:{settings.web_port}/metrics",
        flush=True,
    )
    taken = taken_from_record(given, settings)
    if taken:
        print(f"kappa worker: version {version}'s recorded settings: {taken}", flush=True)
    try:
        command_loop.raise_if_sigterm_seen()  # from here on, faust's handlers take SIGTERM
        worker.execute_from_commandline()
    except SystemExit as e:
        return int(e.code or 0) or worker.stop_on_error.exit_code
    finally:
        for runner in getattr(app, "kappa_runners", []):
            runner.close()
        lock.release()
    return 0


def require_free_address(host: str, port: int) -> None:
    """The web server (metrics, health, queries) binds only once Faust has started, and an
    address in use would then stop the worker with a traceback: checked first, in one line.
    Bound as aiohttp binds it (SO_REUSEADDR), so only a listening socket counts as in use."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as e:  # socket.gaierror included: a host that does not resolve
        hint = "KAPPA_WEB_PORT or --web-port" if e.errno == errno.EADDRINUSE else "KAPPA_WEB_HOST"
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {e.strerror or e} (set {hint})"
        ) from None


async def wait_for_broker_forever(bootstrap: str) -> None:
    """Wait for the broker with backoff (capped at BROKER_MAX_BACKOFF_S), saying so once."""

    def announce(error: str) -> None:
        print(
            f"kappa worker: waiting for the Kafka broker at {bootstrap} ({error}); "
            "retrying with backoff",
            file=sys.stderr,
            flush=True,
        )

    await wait_for_broker(
        bootstrap, timeout_s=None, max_delay_s=BROKER_MAX_BACKOFF_S, on_wait=announce
    )


async def prepare_topics(
    settings: Settings,
    topology: Topology,
    applied: dict[tuple[str, int], int] | None = None,
) -> Settings:
    """Create what is missing once the topics that exist passed their checks; refuse sources
    whose partitioning the state cannot follow, and state that has applied records the broker
    no longer has (`applied`: from `check_partition_dirs`). Returns the settings with the copy
    size the topics accept."""
    await wait_for_broker_forever(settings.kafka)
    await check_then_create_version_topics(settings.kafka, topology, registry_topic(settings))
    if applied:
        await check_broker_has_state(settings.kafka, topology, applied)
    await warn_time_retention(settings.kafka, topology.kept_topics())
    await warn_timestamp_limits(settings.kafka, topology.output_topics())
    limit = await copy_max_bytes(settings.kafka, settings.copy_max_bytes, topology.output_topics())
    return dataclasses.replace(settings, copy_max_bytes=limit)


async def version_to_run(
    settings: Settings, version: int | None
) -> tuple[int, int | None, Settings]:
    """The version to run (None: the one `kappa promote` made live, 1 before any promote), the
    `--since` its replay was cut at, which it keeps applying live, and the settings to run it
    with (its recorded ones where the environment gives none). A dropped version's number is
    refused: running it would recreate its topics and state under the same names. Window
    settings other than the version's are refused here, but a first run's are recorded only
    once its topics pass their checks (`record_definition`): a refused run leaves none."""
    from replay.registry import (
        Registry,
        refuse_if_dropped,
        require_definition,
        settings_to_run,
    )

    await wait_for_broker_forever(settings.kafka)
    view = await Registry(settings).load()
    if version is None:
        version = view.live
    rec = refuse_if_dropped(view, version)
    settings = await settings_to_run(settings, view, version)
    await require_definition(Registry(settings), view, version, record=False)
    return version, rec.since_ms if rec is not None else None, settings


async def record_definition(settings: Settings, version: int) -> None:
    """Record the version's window settings if no run has yet (and refuse them if another
    first run recorded others meanwhile)."""
    from replay.registry import Registry, require_definition

    registry = Registry(settings)
    await require_definition(registry, await registry.load(), version)

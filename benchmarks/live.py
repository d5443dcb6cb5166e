"""Live `kappa worker` processes observed through their /metrics, and the sustained-rate run.

Sustained rate: workers of a fresh version (new consumer group, empty state) start on the
pre-loaded topic; the rate is the orders processed between the first poll that shows any and
the poll that shows all of them, over the time between those polls (poll every POLL_S). That
is the orders pipeline's rate: the pipelines downstream of it (reading its outputs) may still
be behind then. The rate with every pipeline caught up (`all_pipelines`) is the same orders
over the time until every pipeline's consumer lag is 0, what a replay's rate compares with.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.broker import free_port
from benchmarks.dataset import Dataset
from benchmarks.processes import KAPPA, MeasuredProcess

POLL_S = 0.2
ORDERS = "orders"


@dataclass
class WorkerMetrics:
    """The orders pipeline's counters and per-partition stream time of one scrape, and every
    pipeline's consumer lag."""

    events: float = 0.0
    skipped: float = 0.0
    late: float = 0.0
    dlq: float = 0.0
    stream_time: dict[int, float] = field(default_factory=dict)
    # every pipeline's, by (pipeline, partition); and the pipelines that processed records
    lag: dict[tuple[str, int], float] = field(default_factory=dict)
    pipelines_in: set[str] = field(default_factory=set)

    def caught_up(self) -> bool:
        """Every pipeline that processed records has a lag, and all of it is 0."""
        lagging = {pipeline for pipeline, _ in self.lag}
        return self.pipelines_in <= lagging and not any(self.lag.values())


def scrape(port: int) -> WorkerMetrics | None:
    """One /metrics scrape of a worker (None while its web server is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = WorkerMetrics()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "kappa_consumer_lag_records":
                m.lag[(s.labels["pipeline"], int(s.labels["partition"]))] = s.value
            elif s.name == "kappa_events_in_total" and s.value > 0:
                m.pipelines_in.add(s.labels["pipeline"])
            if s.labels.get("pipeline") != ORDERS:
                continue
            if s.name == "kappa_events_in_total":
                m.events += s.value
            elif s.name == "kappa_events_skipped_total":
                m.skipped += s.value
            elif s.name == "kappa_late_total":
                m.late += s.value
            elif s.name == "kappa_dlq_total":
                m.dlq += s.value
            elif s.name == "kappa_stream_time_ms":
                m.stream_time[int(s.labels["partition"])] = s.value
    return m


def worker_command(
    port: int, version: int | None, pipelines: Sequence[str], kappa: Sequence[str] = KAPPA
) -> list[str]:
    """`kappa worker` on `port`; no pipelines named: every pipeline, as it runs by default."""
    args = [*kappa, "worker", "--web-port", str(port)]
    if version is not None:
        args += ["--version", str(version)]
    for pipeline in pipelines:
        args += ["--pipeline", pipeline]
    return args


class LiveWorker:
    """One `kappa worker` child with its own web port."""

    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        name: str,
        version: int | None = None,
        pipelines: Sequence[str] = (),
        kappa: Sequence[str] = KAPPA,
    ) -> None:
        self.port = free_port()
        args = worker_command(self.port, version, pipelines, kappa)
        self.process = MeasuredProcess(args, env, cwd, cwd / f"{name}.log")

    def metrics(self) -> WorkerMetrics | None:
        if not self.process.running():
            raise RuntimeError(
                f"worker exited {self.process.proc.returncode}:\n{self.process.tail_log()}"
            )
        return scrape(self.port)

    def wait_until(
        self, predicate: Callable[[WorkerMetrics], bool], timeout_s: float
    ) -> WorkerMetrics:
        deadline = time.monotonic() + timeout_s
        while True:
            m = self.metrics()
            if m is not None and predicate(m):
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"worker did not get there in {timeout_s:.0f} s (last metrics {m}):\n"
                    f"{self.process.tail_log()}"
                )
            time.sleep(POLL_S)


def sustained(
    workers_env: list[dict[str, str]],
    cwd: Path,
    version: int,
    dataset: Dataset,
    timeout_s: float,
) -> dict[str, Any]:
    """Start len(workers_env) workers of `version` together and time them through the topic.

    Done when their orders counters add up to N and, for every partition, some worker's stream
    time reached that partition's last event time (a partition moved by a rebalance is
    re-processed by its new owner, so the counters alone could reach N early).
    """
    workers = [
        LiveWorker(env, cwd, f"worker-v{version}-{i}", version) for i, env in enumerate(workers_env)
    ]
    t_start = time.perf_counter()
    t_up: float | None = None
    first: tuple[float, float, float] | None = None  # (time, events, cpu seconds)
    t_zero = t_start  # the last poll that saw no event processed yet
    last = [WorkerMetrics() for _ in workers]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            now = time.perf_counter()
            scraped = [w.metrics() for w in workers]
            if t_up is None and all(m is not None for m in scraped):
                t_up = now
            last = [m or prev for m, prev in zip(scraped, last)]
            events = sum(m.events for m in last)
            if first is None and events > 0:
                first = (now, events, sum(w.process.cpu_now() for w in workers))
            elif first is None:
                t_zero = now
            reached = {
                p: max(m.stream_time.get(p, 0.0) for m in last) >= ts
                for p, ts in dataset.last_ts.items()
            }
            if events >= dataset.count and all(reached.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(workers)} worker(s) processed {events:,.0f}/{dataset.count:,} in "
                    f"{timeout_s:.0f} s:\n{workers[0].process.tail_log()}"
                )
            time.sleep(POLL_S)
        t_done = time.perf_counter()
        assert first is not None and t_up is not None
        cpu_done = sum(w.process.cpu_now() for w in workers)
        peak_rss = [w.process.peak_rss_now() for w in workers]
        # Counters settle: a second scrape after completion shows nothing counted twice.
        time.sleep(POLL_S)
        final = [w.metrics() or m for w, m in zip(workers, last)]
        all_done = _all_caught_up(workers, deadline)
        cpu_all = sum(w.process.cpu_now() for w in workers)
        peak_rss_all = max(w.process.peak_rss_now() for w in workers)
    finally:
        exits = [w.process.stop() for w in workers]
    events = sum(m.events for m in final)
    seconds = t_done - first[0]
    # Too few events to see them being processed (the first poll already shows most): fall
    # back to all of them over the time since the last poll that showed none (a lower bound).
    coarse = seconds <= 0 or first[1] > dataset.count / 2
    rate = dataset.count / (t_done - t_zero) if coarse else (events - first[1]) / seconds
    result: dict[str, Any] = {
        "version": version,
        "workers": len(workers),
        "events_per_s": rate,
        "coarse": coarse,
        "seconds_first_to_done": seconds,
        "events_at_first_poll": first[1],
        "startup_s": t_up - t_start,
        "first_event_after_start_s": first[0] - t_start,
        "cpu_s": cpu_done - first[2],
        "cpu_per_worker_total_s": [u.cpu_s for u in exits],
        "peak_rss_mb": max(peak_rss),
        "peak_rss_mb_per_worker": peak_rss,
        "exit_codes": [u.returncode for u in exits],
        "events_in": events,
        "skipped": sum(m.skipped for m in final),
        "late": sum(m.late for m in final),
        "dlq": sum(m.dlq for m in final),
        "all_pipelines": None  # not caught up in time (the orders' rate still counts)
        if all_done is None
        else {
            "events_per_s": (dataset.count if coarse else dataset.count - first[1])
            / (all_done - (t_zero if coarse else first[0])),
            "seconds_after_orders": all_done - t_done,
            "cpu_s": cpu_all - first[2],
            "peak_rss_mb": peak_rss_all,
        },
    }
    errors = []
    if len(workers) == 1 and events != dataset.count:
        errors.append(f"orders pipeline counted {events:,.0f} events, expected {dataset.count:,}")
    if events < dataset.count:
        errors.append(f"orders pipeline counted {events:,.0f} < {dataset.count:,} events")
    if result["late"] != dataset.late or result["dlq"] != dataset.bad:
        errors.append(
            f"late {result['late']:.0f} / DLQ {result['dlq']:.0f}, "
            f"expected {dataset.late} / {dataset.bad}"
        )
    result["reprocessed"] = events - dataset.count
    result["correct"] = {"ok": not errors, "errors": errors}
    return result


def _all_caught_up(workers: list[LiveWorker], deadline: float) -> float | None:
    """When every pipeline of every worker had no lag, two polls in a row (a lag is as of a
    pipeline's last fetch: the second poll sees fetches made after the first); None if not
    by `deadline`."""
    seen_at: float | None = None
    while time.monotonic() <= deadline:
        now = time.perf_counter()
        scraped = [w.metrics() for w in workers]
        if all(m is not None and m.caught_up() for m in scraped):
            if seen_at is not None:
                return seen_at
            seen_at = now
        else:
            seen_at = None
        time.sleep(POLL_S)
    return None

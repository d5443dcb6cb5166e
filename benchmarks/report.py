"""Summaries over repeats (median, min–max), the issue's targets, and the markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

# Targets from the issue.
REPLAY_VS_CEILING = 0.5  # replay events/s >= this × the ceiling's
LIVE_SUSTAINED_EV_S = 13_500.0  # one live worker, events/s
LIVE_P99_OVER_BARE_MS = 50.0  # live p99 <= bare consumer p99 + this
TWO_WORKERS_VS_ONE = 1.6  # two live workers' events/s >= this × one's
# Above this many cores' worth of CPU used by other processes, a phase's numbers are suspect.
OTHER_CORES_WARN = 0.1

Run = dict[str, Any]


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min and max (None when no run produced a value)."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def collect(runs: list[Run], phase: str, get: Callable[[Run], float | None]) -> list[float]:
    """One number from every run of `phase` that completed, passed its check and has it."""
    out = []
    for run in runs:
        r = run.get(phase)
        if r and "error" not in r and r.get("correct", {}).get("ok", True):
            value = get(r)
            if value is not None:
                out.append(float(value))
    return out


def _all_pipelines(r: Run, measure: str) -> float | None:
    """The live run's figure with every pipeline caught up, if they caught up in time."""
    caught_up = r.get("all_pipelines")
    return None if caught_up is None else float(caught_up[measure])


def _beside(r: Run, percentile: str) -> float | None:
    """The bare consumer's latency beside the live worker, if it was measured."""
    beside = r.get("bare_beside")
    return None if beside is None else float(beside["latency"][percentile])


def _written(r: Run, percentile: str) -> float | None:
    """The live worker's latency to its outputs' acknowledgement, if it was measured."""
    written = r.get("written")
    return None if written is None else written["latency"].get(percentile)


def p99_over_bare(runs: list[Run], measure: str = "latency") -> list[float]:
    """Per repeat, the live worker's p99 (`measure`: read by an observer, "latency", or
    "written") minus the bare consumer's from the same repeat (ms): the medians of the two can
    pair a calm repeat with a slow one."""
    out = []
    for run in runs:
        bare = collect([run], "latency_bare", lambda r: r["latency"]["p99_ms"])
        live = collect(
            [run],
            "latency_live",
            lambda r: r["latency"]["p99_ms"] if measure == "latency" else _written(r, "p99_ms"),
        )
        if bare and live:
            out.append(live[0] - bare[0])
    return out


def summarise(runs: list[Run]) -> dict[str, Any]:
    def s(phase: str, get: Callable[[Run], float | None]) -> dict[str, float] | None:
        return spread(collect(runs, phase, get))

    return {
        "ceiling_ev_s": s("ceiling", lambda r: r["events_per_s"]),
        "ceiling_rss_mb": s("ceiling", lambda r: r["usage"]["peak_rss_mb"]),
        "ceiling_cpu_s": s("ceiling", lambda r: r["usage"]["cpu_s"]),
        "replay_ev_s": s("replay", lambda r: r["events_per_s"]),
        "replay_internal_ev_s": s("replay", lambda r: r["internal_events_per_s"]),
        "replay_wall_s": s("replay", lambda r: r["usage"]["wall_s"]),
        "replay_rss_mb": s("replay", lambda r: r["usage"]["peak_rss_mb"]),
        "replay_cpu_s": s("replay", lambda r: r["usage"]["cpu_s"]),
        "live_ev_s": s("live", lambda r: r["events_per_s"]),
        "live_rss_mb": s("live", lambda r: r["peak_rss_mb"]),
        "live_cpu_s": s("live", lambda r: r["cpu_s"]),
        "live_all_ev_s": s("live", lambda r: _all_pipelines(r, "events_per_s")),
        "live_all_rss_mb": s("live", lambda r: _all_pipelines(r, "peak_rss_mb")),
        "live_all_cpu_s": s("live", lambda r: _all_pipelines(r, "cpu_s")),
        "live2_ev_s": s("live2", lambda r: r["events_per_s"]),
        "live2_rss_mb": s("live2", lambda r: r["peak_rss_mb"]),
        "live2_cpu_s": s("live2", lambda r: r["cpu_s"]),
        "live2_reprocessed": s("live2", lambda r: r["reprocessed"]),
        "bare_p50_ms": s("latency_bare", lambda r: r["latency"]["p50_ms"]),
        "bare_p99_ms": s("latency_bare", lambda r: r["latency"]["p99_ms"]),
        "relay_p50_ms": s("latency_relay", lambda r: r["latency"]["p50_ms"]),
        "relay_p99_ms": s("latency_relay", lambda r: r["latency"]["p99_ms"]),
        "live_p50_ms": s("latency_live", lambda r: r["latency"]["p50_ms"]),
        "live_p99_ms": s("latency_live", lambda r: r["latency"]["p99_ms"]),
        "live_p99_over_bare_per_repeat_ms": p99_over_bare(runs),
        "written_p50_ms": s("latency_live", lambda r: _written(r, "p50_ms")),
        "written_p99_ms": s("latency_live", lambda r: _written(r, "p99_ms")),
        "written_p99_over_bare_per_repeat_ms": p99_over_bare(runs, "written"),
        "beside_p50_ms": s("latency_live", lambda r: _beside(r, "p50_ms")),
        "beside_p99_ms": s("latency_live", lambda r: _beside(r, "p99_ms")),
        "live_latency_rss_mb": s("latency_live", lambda r: r["worker"]["peak_rss_mb"]),
        "live_latency_cpu_s": s("latency_live", lambda r: r["worker"]["cpu_s"]),
        "other_cores": spread(
            [
                float(r["system"]["other_cores"])
                for run in runs
                for r in run.values()
                if isinstance(r, dict) and "system" in r
            ]
        ),
    }


def _median(summary: dict[str, Any], key: str) -> float | None:
    v = summary.get(key)
    return None if v is None else float(v["median"])


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured value (medians) and whether it is met (None: no data)."""
    ceiling = _median(summary, "ceiling_ev_s")
    replay = _median(summary, "replay_ev_s")
    live = _median(summary, "live_ev_s")
    bare_p99 = _median(summary, "bare_p99_ms")
    replay_ratio = replay / ceiling if replay is not None and ceiling else None
    live2 = _median(summary, "live2_ev_s")
    two_ratio = live2 / live if live2 is not None and live else None
    return {
        "replay_vs_ceiling": {
            "target": f">= {REPLAY_VS_CEILING} × ceiling",
            "measured": replay_ratio,
            "met": None if replay_ratio is None else replay_ratio >= REPLAY_VS_CEILING,
        },
        "live_sustained": {
            "target": f">= {LIVE_SUSTAINED_EV_S:,.0f} events/s",
            "measured": live,
            "met": None if live is None else live >= LIVE_SUSTAINED_EV_S,
        },
        "two_workers": {
            "target": f">= {TWO_WORKERS_VS_ONE} × one worker",
            "measured": two_ratio,
            "met": None if two_ratio is None else two_ratio >= TWO_WORKERS_VS_ONE,
        },
        "live_p99": _p99_target(summary, "live", bare_p99),
        "written_p99": _p99_target(summary, "written", bare_p99),
    }


def _p99_target(summary: dict[str, Any], measure: str, bare_p99: float | None) -> dict[str, Any]:
    """Live p99 (`measure`: "live", read by an observer, or "written") against the bare
    consumer's: met at the medians and in most repeats (each against its own bare run)."""
    p99 = _median(summary, f"{measure}_p99_ms")
    per_repeat = summary.get(f"{measure}_p99_over_bare_per_repeat_ms") or []
    within = sum(d <= LIVE_P99_OVER_BARE_MS for d in per_repeat)
    return {
        "target": f"<= bare p99 + {LIVE_P99_OVER_BARE_MS:.0f} ms",
        "measured": None if p99 is None or bare_p99 is None else p99 - bare_p99,
        "met": None
        if p99 is None or bare_p99 is None
        else p99 <= bare_p99 + LIVE_P99_OVER_BARE_MS and 2 * within > len(per_repeat),
        "repeats_within": within,
        "repeats": len(per_repeat),
    }


def _num(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _range(s: dict[str, float] | None, digits: int = 0) -> tuple[str, str]:
    if s is None:
        return "–", "–"
    return _num(s["median"], digits), f"{_num(s['min'], digits)}–{_num(s['max'], digits)}"


def _within(t: dict[str, Any]) -> str:
    n = t.get("repeats")
    return f" (in {t['repeats_within']} of {n} repeats)" if n else ""


def _met(t: dict[str, Any]) -> str:
    return {True: "**met**", False: "**missed**", None: "–"}[t["met"]]


def markdown(summary: dict[str, Any], tgt: dict[str, Any], cfg: dict[str, Any]) -> str:
    ceiling = _median(summary, "ceiling_ev_s")

    def ratio(key: str) -> str:
        v = _median(summary, key)
        return "–" if v is None or not ceiling else f"{v / ceiling:.2f}"

    def row(label: str, key: str, rss: str, cpu: str, vs: str, target: str) -> str:
        med, rng = _range(summary.get(key), 1 if key.endswith("_ms") else 0)
        rss_v = _num(_median(summary, rss)) if rss else ""
        cpu_v = _num(_median(summary, cpu), 1) if cpu else ""
        return f"| {label} | {med} | {rng} | {rss_v} | {cpu_v} | {vs} | {target} |"

    n = cfg["events"]
    lines = [
        f"{n:,} events, {cfg['keys']:,} keys, {cfg['partitions']} partitions, "
        f"{cfg['repeats']} repeat(s); medians over the runs that passed their checks.",
        "",
        "| measure | median | min–max | peak RSS (MiB) | CPU (s) | vs ceiling | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        row(
            "ceiling: bare aiokafka getmany + json.loads (ev/s)",
            "ceiling_ev_s",
            "ceiling_rss_mb",
            "ceiling_cpu_s",
            "1.00",
            "",
        ),
        row(
            "`kappa replay` (ev/s = N / process wall time)",
            "replay_ev_s",
            "replay_rss_mb",
            "replay_cpu_s",
            ratio("replay_ev_s"),
            f"≥ {REPLAY_VS_CEILING} × ceiling: {_met(tgt['replay_vs_ceiling'])}",
        ),
        row(
            "`kappa replay` (ev/s from its summary line)",
            "replay_internal_ev_s",
            "",
            "",
            ratio("replay_internal_ev_s"),
            "",
        ),
        row(
            "live worker sustained, 1 process (ev/s)",
            "live_ev_s",
            "live_rss_mb",
            "live_cpu_s",
            ratio("live_ev_s"),
            f"≥ {LIVE_SUSTAINED_EV_S:,.0f}: {_met(tgt['live_sustained'])}",
        ),
        row(
            "live worker, every pipeline caught up (ev/s)",
            "live_all_ev_s",
            "live_all_rss_mb",
            "live_all_cpu_s",
            ratio("live_all_ev_s"),
            "",
        ),
    ]
    if summary.get("live2_ev_s") is not None:
        lines.append(
            row(
                "live workers sustained, 2 processes (ev/s)",
                "live2_ev_s",
                "live2_rss_mb",
                "live2_cpu_s",
                ratio("live2_ev_s"),
                f"≥ {TWO_WORKERS_VS_ONE} × one: {_met(tgt['two_workers'])}"
                f" ({_num(tgt['two_workers']['measured'], 2)}×)",
            )
        )
    rate = f"{cfg['rate']:,.0f} ev/s for {cfg['latency_seconds']:g} s"
    lines += [
        row(f"bare consumer latency p50 (ms) at {rate}", "bare_p50_ms", "", "", "", ""),
        row("bare consumer latency p99 (ms)", "bare_p99_ms", "", "", "", ""),
    ]
    if summary.get("relay_p50_ms") is not None:
        lines += [
            row(
                "relay (consume → produce, no state) latency p50 (ms)",
                "relay_p50_ms",
                "",
                "",
                "",
                "",
            ),
            row("relay latency p99 (ms)", "relay_p99_ms", "", "", "", ""),
        ]
    lines += [
        row(
            "live worker end-to-end latency p50 (ms)",
            "live_p50_ms",
            "live_latency_rss_mb",
            "live_latency_cpu_s",
            "",
            "",
        ),
        row(
            "live worker end-to-end latency p99 (ms)",
            "live_p99_ms",
            "",
            "",
            "",
            f"≤ bare p99 + {LIVE_P99_OVER_BARE_MS:.0f}: {_met(tgt['live_p99'])}"
            + _within(tgt["live_p99"]),
        ),
    ]
    if summary.get("written_p50_ms") is not None:
        lines += [
            row(
                "live worker latency to its outputs written (acknowledged) p50 (ms)",
                "written_p50_ms",
                "",
                "",
                "",
                "",
            ),
            row(
                "live worker latency to its outputs written (acknowledged) p99 (ms)",
                "written_p99_ms",
                "",
                "",
                "",
                f"≤ bare p99 + {LIVE_P99_OVER_BARE_MS:.0f}: {_met(tgt['written_p99'])}"
                + _within(tgt["written_p99"]),
            ),
        ]
    if summary.get("beside_p50_ms") is not None:
        lines += [
            row("bare consumer beside the live worker, p50 (ms)", "beside_p50_ms", "", "", "", ""),
            row("bare consumer beside the live worker, p99 (ms)", "beside_p99_ms", "", "", "", ""),
        ]
    other = summary.get("other_cores")
    if other is not None:
        lines += [
            "",
            f"Other processes on the machine used {other['median']:.2f} cores (median over "
            f"phases; max {other['max']:.2f}) while the measurements ran"
            + (
                ": the numbers are lower than on an idle machine."
                if other["max"] > OTHER_CORES_WARN
                else "."
            ),
        ]
    return "\n".join(lines)

"""argparse types of the `kappa` CLI: bounded numbers, names and times, each refused in one
line that quotes the argument (cut short) and says what it must be."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.settings import MAX_VERSION, topic_name_problem, web_url_problem
from tables.cleaning import (
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    InvalidRecord,
    numeral_value,
    require_event_time_ms,
)


def bounded_number(
    convert: Callable[[str], float], low: float, high: float | None = None, strict: bool = False
) -> Callable[[str], Any]:
    """An argparse type: `convert`, then check low <= value (< when strict) <= high."""
    kind = "an integer" if convert is int else "a number"

    def parse(s: str) -> Any:
        try:
            v = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{echoed(s)} is not {kind}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{echoed(s)} is not a finite number")
        if v < low or (strict and v == low) or (high is not None and v > high):
            bound = f"> {shown(low)}" if strict else f">= {shown(low)}"
            rng = (
                bound
                if high is None
                else (
                    f"> {shown(low)} and <= {shown(high)}"  # "between 0 and 1" would admit 0
                    if strict
                    else f"between {shown(low)} and {shown(high)}"
                )
            )
            raise argparse.ArgumentTypeError(f"{echoed(s)} must be {rng}")
        return v

    return parse


def echoed(arg: str) -> str:
    """An argument quoted back in an error, cut short so that the error stays one line."""
    return repr(arg if len(arg) <= 40 else f"{arg[:20]}…{arg[-8:]}")


def shown(bound: float) -> str:
    """A bound as a person reads it: 1,000,000,000,000 rather than 1e+12 (ports stay 65535)."""
    if isinstance(bound, int):
        return f"{bound:,}" if bound >= 100_000 else str(bound)
    return f"{bound:g}"


# The generator holds its product ids in memory (about 60 bytes each).
MAX_GENERATED_KEYS = 10_000_000
# Beyond what a run could produce (a million a second for ten days), and what floats hold exactly.
MAX_GENERATED = 10**12
# One machine's processes; each has its own consumer, state and Python interpreter.
MAX_PROCESSES = 256
# Slowest generated rate: one order in 1,000 s.
MIN_RATE = 0.001
positive_int = bounded_number(int, 0, strict=True)
non_negative_int = bounded_number(int, 0)
version_number = bounded_number(int, 1, MAX_VERSION)
event_ms = bounded_number(int, MIN_EVENT_MS, MAX_EVENT_MS - 1)
event_span_ms = bounded_number(int, 0, MAX_EVENT_MS, strict=True)
event_disorder_ms = bounded_number(int, 0, MAX_EVENT_MS)
fraction = bounded_number(float, 0.0, 1.0)
seconds = bounded_number(float, 0.0)
wait_seconds = bounded_number(float, 0.0, 3600.0, strict=True)
port_number = bounded_number(int, 1, 65535)


def table_key(s: str) -> str:
    """A key to look up: ids are never empty (cleaning refuses an order without one), and are
    UTF-8 text (they are stored and asked for as UTF-8)."""
    if not s:
        raise argparse.ArgumentTypeError("name a key: ids are never empty")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # argv bytes that are not UTF-8 (held as surrogate escapes)
        raw = s.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        shown = raw if len(raw) <= 40 else f"{raw[:20]}…{raw[-8:]}"  # cut as `echoed` cuts
        raise argparse.ArgumentTypeError(
            f"'{shown}' is not UTF-8: every id is UTF-8 text, so no table holds it"
        ) from None
    return s


def worker_url(s: str) -> str:
    """A worker's web address, as KAPPA_ADVERTISED_URL takes it."""
    problem = web_url_problem(s)
    if problem:
        raise argparse.ArgumentTypeError(
            f"{echoed(s)} {problem} (a worker's web address, e.g. http://127.0.0.1:6066)"
        )
    return s


def topic_name(s: str) -> str:
    problem = topic_name_problem(s)
    if problem:
        raise argparse.ArgumentTypeError(f"topic name {s!r} {problem}")
    return s


def directory_path(s: str) -> Path:
    """A directory to write to: `Path("")` would be the current one, so an empty or blank
    argument (an unset shell variable) is refused."""
    if not s.strip():
        raise argparse.ArgumentTypeError("name a directory to write to")
    return Path(s)


# A whole number of milliseconds, as `--since` takes one (a sign is left to the range check).
_WHOLE = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)


def event_time(s: str) -> int:
    """Whole epoch milliseconds or ISO-8601 with a zone. Unlike `ts` in the orders schema, a
    numeral with a fraction or an exponent is refused: a time typed as `1.5` is more likely
    seconds, or a slip, than milliseconds to floor."""
    if numeral_value(s) is not None and not _WHOLE.fullmatch(s):
        raise argparse.ArgumentTypeError(
            f"{echoed(s)} is not whole epoch milliseconds (no fraction or exponent) or "
            "ISO-8601 with a time zone"
        )
    try:
        return require_event_time_ms({"time": s}, "time")
    except InvalidRecord as e:
        if e.reason == "timestamp_out_of_range":
            raise argparse.ArgumentTypeError(f"{echoed(s)} is outside 1970..2100") from None
        raise argparse.ArgumentTypeError(
            f"{echoed(s)} is not epoch milliseconds or ISO-8601 with a time zone"
        ) from None


def process_slot(s: str) -> tuple[int, int]:
    i, _, n = s.partition("/")
    if not (i.isdigit() and n.isdigit()) or int(n) < 1 or int(i) >= int(n):
        raise argparse.ArgumentTypeError(f"{s!r} must be I/N with 0 <= I < N, e.g. 0/2")
    return int(i), int(n)

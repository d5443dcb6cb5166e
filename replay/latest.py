"""A version's outputs read back as their latest value per key: what `kappa diff` compares
and `kappa export` writes.

An output topic is folded, as it is read, into a temporary RocksDB store of the last value per
key (outputs are upserts), whose key order is the results' order: by product then window start,
by user. The disk holds one copy of the latest values; memory holds one fetch.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from agents.orders import PROVISIONAL_HEADER, REVENUE, REVENUE_HOPPING
from agents.product_trends import SIGNALS, TRENDS
from agents.quiet_products import QUIET_PRODUCTS
from agents.top_products import TOP_PRODUCTS
from agents.user_totals import USER_TOTALS
from app.cli_output import PROGRESS
from app.settings import ConfigError, Settings
from app.topic_reader import read_chunks
from app.topology import Topology
from tables.rocks import RocksStore

LOG_EVERY_S = 5.0

# The outputs read back (compared, exported), and the fields that make a record's key (its
# window, its user).
# Trend points are compared too: their settings (KAPPA_TREND_*, KAPPA_ANOMALY_*) may differ
# between versions with identical windows.
RESULT_OUTPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (REVENUE, ("product_id", "window_start", "window_end")),
    (REVENUE_HOPPING, ("product_id", "window_start", "window_end")),
    (USER_TOTALS, ("user_id",)),
    (TRENDS, ("product_id", "window_start", "window_end")),
    (TOP_PRODUCTS, ("window_start", "window_end")),
    (SIGNALS, ("product_id", "window_start", "window_end")),
    (QUIET_PRODUCTS, ("product_id", "quiet_from")),
)
_FINAL, _PROVISIONAL = b"F", b"P"  # first byte of a stored value

Entry = tuple[bytes, bytes]  # (sort key, flag byte + the record's value)


def sort_key(key: Sequence[Any]) -> bytes:
    """Bytes whose order is the key's order for strings and 64-bit integers, field by field
    (so windows come out by product, then start time); other values sort after, by JSON."""
    out = bytearray()
    for v in key:
        if isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63:
            out += b"\x01" + (v + 2**63).to_bytes(8, "big")
        elif isinstance(v, str):
            out += b"\x02" + _escaped(v.encode("utf-8", "surrogatepass"))
        else:
            out += b"\x03" + _escaped(json.dumps(v, sort_keys=True).encode())
    return bytes(out)


def _escaped(raw: bytes) -> bytes:
    """Prefix-free and order-preserving: NUL becomes NUL 0xFF, and NUL NUL ends the field."""
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


@dataclass(frozen=True)
class OutputRecord:
    """An output record read back: its result's fields (`final` left out: it says how a version
    emits, KAPPA_EMIT_UPDATES, not what it computed), its key, and whether it is still open."""

    fields: dict[str, Any]
    key: tuple[Any, ...]
    provisional: bool


def parse_output_record(record: Any, key_fields: Sequence[str], topic: str) -> OutputRecord | None:
    """A record of a version's output topic as a result; None for a tombstone. A record Kappa
    did not write is reported in one line naming where it is."""
    if record.value is None:
        return None
    try:
        d = json.loads(record.value)
        key = tuple(d[f] for f in key_fields)
        hash(key)
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise ConfigError(
            f"{topic}[{record.partition}] offset {record.offset} is not a Kappa output record "
            f"({type(e).__name__}): only Kappa may write to a version's output topics"
        ) from None
    # Still open: flushed by a replay (the header), or a running value of a version that
    # emits updates (KAPPA_EMIT_UPDATES) whose window has not closed yet.
    provisional = d.pop("final", None) is False or any(
        k == PROVISIONAL_HEADER for k, _ in record.headers or ()
    )
    return OutputRecord(d, key, provisional)


def result_line(fields: dict[str, Any]) -> bytes:
    """A result as one line of compact JSON: how `kappa export` and `kappa sink` write it."""
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def latest_entry(record: ConsumerRecord, key_fields: Sequence[str], topic: str) -> Entry | None:
    """A record's (sort key, stored value); None for a tombstone."""
    parsed = parse_output_record(record, key_fields, topic)
    if parsed is None:
        return None
    flag = _PROVISIONAL if parsed.provisional else _FINAL
    return sort_key(parsed.key), flag + bytes(record.value)


def is_provisional(stored: bytes) -> bool:
    return stored[:1] == _PROVISIONAL


def decode_entry(stored: bytes) -> tuple[dict[str, Any], bool]:
    """(the result's fields, provisional?). `final` says how a version emits
    (KAPPA_EMIT_UPDATES), not what it computed, so it is left out."""
    fields = json.loads(stored[1:])
    fields.pop("final", None)
    return fields, stored[:1] == _PROVISIONAL


async def fold_latest(
    settings: Settings, topic: str, key_fields: Sequence[str], store: RocksStore
) -> int:
    """Read `topic` to its end into `store` (last value per key); returns records read."""
    read = 0
    last_log = time.monotonic()
    async with contextlib.aclosing(read_chunks(settings.kafka, topic)) as chunks:
        async for _, records in chunks:
            changes: dict[bytes, bytes | None] = {}
            for r in records:
                entry = latest_entry(r, key_fields, topic)
                if entry is not None:
                    changes[entry[0]] = entry[1]
            if changes:
                store.write(changes)
            read += len(records)
            if time.monotonic() - last_log >= LOG_EVERY_S:
                last_log = time.monotonic()
                PROGRESS.info("read %d records of %s", read, topic)
    return read


@contextlib.contextmanager
def scratch_dir(settings: Settings) -> Iterator[Path]:
    """A directory for the stores of latest values, beside the state (where there is room),
    removed after."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(prefix="kappa-read-", dir=settings.state_dir)
    except OSError as e:
        # a file there, or on its path: said as a worker says it, not "[Errno 17] File exists"
        why = "Not a directory" if isinstance(e, FileExistsError | NotADirectoryError) else None
        raise ConfigError(
            f"cannot use KAPPA_STATE_DIR={settings.state_dir} for reading outputs (a scratch "
            f"directory in it): {why or e.strerror or e}"
        ) from None
    with scratch as d:
        yield Path(d)


def scratch_store_failed(settings: Settings, topic: str) -> ConfigError:
    """A scratch store of latest values failed (`StateError`: a full disk, most likely): one
    line for `kappa export` and `kappa diff`, not a worker's advice to remove state and restart."""
    return ConfigError(
        f"cannot keep {topic}'s latest values under {settings.state_dir} (is its disk full?)"
    )


def outputs_of(topology: Topology) -> set[str]:
    """The logical output topics the topology's selected pipelines write."""
    return {t for p in topology.pipelines for t in p.outputs}


def unused_outputs(topology: Topology, definition: dict[str, object] | None) -> set[str]:
    """Outputs the version never writes to, by the settings it was built with (`definition`,
    or this process's when none is recorded yet): orders.revenue-hopping without hopping
    windows. Exports and sinks leave them out."""
    size = (
        topology.settings.hopping_size_ms
        if definition is None
        else definition.get("hopping_size_ms")
    )
    return set() if size else {REVENUE_HOPPING}

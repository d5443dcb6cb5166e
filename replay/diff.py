"""`kappa diff`: two versions' outputs compared key by key, in memory that does not grow with them.

Each side's output topic is folded, as it is read, into a temporary RocksDB store of the last
value per key (outputs are upserts); the two stores are then walked side by side in key order.
The disk holds one copy of each side's latest values; memory holds one fetch and one key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from agents.orders import PROVISIONAL_HEADER, REVENUE
from agents.product_trends import TRENDS
from agents.top_products import TOP_PRODUCTS
from agents.user_totals import USER_TOTALS
from app.kafka_clients import new_admin
from app.settings import ConfigError, Settings
from app.topic_reader import read_chunks
from app.topology import Topology
from replay.registry import (
    DROPPED,
    Registry,
    RegistryView,
    VersionRecord,
    require_version,
)
from tables.rocks import RocksStore

log = logging.getLogger("kappa.diff")
LOG_EVERY_S = 5.0

# The outputs compared, and the fields that make a record's key (its window, its user).
# Trend points are compared too: their settings (KAPPA_TREND_*, KAPPA_ANOMALY_*) may differ
# between versions with identical windows.
COMPARED_OUTPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (REVENUE, ("product_id", "window_start", "window_end")),
    (USER_TOTALS, ("user_id",)),
    (TRENDS, ("product_id", "window_start", "window_end")),
    (TOP_PRODUCTS, ("window_start", "window_end")),
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


def latest_entry(record: ConsumerRecord, key_fields: Sequence[str], topic: str) -> Entry | None:
    """A record's (sort key, stored value); None for a tombstone. An output record Kappa did
    not write is reported in one line naming where it is."""
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
    provisional = d.get("final") is False or any(
        k == PROVISIONAL_HEADER for k, _ in record.headers or ()
    )
    return sort_key(key), (_PROVISIONAL if provisional else _FINAL) + bytes(record.value)


def decode_entry(stored: bytes) -> tuple[dict[str, Any], bool]:
    """(the result's fields, provisional?). `final` says how a version emits
    (KAPPA_EMIT_UPDATES), not what it computed, so it is left out."""
    fields = json.loads(stored[1:])
    fields.pop("final", None)
    return fields, stored[:1] == _PROVISIONAL


@dataclass
class OutputDiff:
    """One output's comparison: counts, and the first `limit` differences as report lines."""

    v1: int
    v2: int
    limit: int
    in_a: int = 0
    in_b: int = 0
    only_a: int = 0
    only_b: int = 0
    changed: int = 0
    provisional: int = 0
    shown: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.only_a + self.only_b + self.changed

    def summary(self, topic: str) -> str:
        line = (
            f"{topic}: {self.in_a:,} in v{self.v1}, {self.in_b:,} in v{self.v2}; "
            f"{self.only_a} only in v{self.v1}, {self.only_b} only in v{self.v2}, "
            f"{self.changed} differ"
        )
        if self.provisional:
            line += f"; {self.provisional} provisional (windows still open), not compared"
        return line

    def lines(self, topic: str) -> list[str]:
        hidden = self.differences - len(self.shown)
        return [self.summary(topic), *self.shown] + ([f"  … {hidden} more"] if hidden else [])

    def show(self, line: str) -> None:
        if len(self.shown) < self.limit:
            self.shown.append(line)


def compare_latest(
    a: Iterable[Entry],
    b: Iterable[Entry],
    key_fields: Sequence[str],
    v1: int,
    v2: int,
    limit: int = 20,
) -> OutputDiff:
    """Walk two stores of latest values (each in sort-key order) side by side. A key that is
    provisional (a window still open: flushed by a replay, or an update) on either side is
    counted, not compared."""
    out = OutputDiff(v1, v2, limit)

    def key(fields: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(fields.get(f) for f in key_fields)

    def only_in(stored: bytes, mark: str) -> int:
        """1 if a key on one side only is a difference, 0 if it is provisional there."""
        fields, provisional = decode_entry(stored)
        if provisional:
            out.provisional += 1
            return 0
        out.show(f"  {mark} only {key(fields)}: {json.dumps(fields)}")
        return 1

    ia, ib = iter(a), iter(b)
    ea, eb = next(ia, None), next(ib, None)
    while ea is not None or eb is not None:
        if eb is None or (ea is not None and ea[0] < eb[0]):
            assert ea is not None
            out.in_a += 1
            out.only_a += only_in(ea[1], f"- v{v1}")
            ea = next(ia, None)
        elif ea is None or eb[0] < ea[0]:
            out.in_b += 1
            out.only_b += only_in(eb[1], f"+ v{v2}")
            eb = next(ib, None)
        else:
            out.in_a += 1
            out.in_b += 1
            fa, pa = decode_entry(ea[1])
            fb, pb = decode_entry(eb[1])
            if pa or pb:
                out.provisional += 1
            elif not _same(fa, fb):
                out.changed += 1
                changes = ", ".join(
                    f"{f} {fa.get(f)} → {fb.get(f)}"
                    for f in {**fa, **fb}
                    if not _close(fa.get(f), fb.get(f))
                )
                out.show(f"  ~ {key(fa)}: {changes}")
            ea, eb = next(ia, None), next(ib, None)
    return out


def _close(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))
    return x == y


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_close(a[f], b[f]) for f in a)


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
                log.warning("diff: read %d records of %s", read, topic)
    return read


async def diff(settings: Settings, v1: int, v2: int, limit: int = 20) -> tuple[str, int]:
    """Window-by-window (and user-by-user) differences; returns (report, number of differences)."""
    view = await Registry(settings).load()
    recs = {v: require_version(view, v) for v in (v1, v2)}
    for v, rec in recs.items():
        if rec.status == DROPPED:
            raise ConfigError(f"version {v} was dropped: its outputs are gone")
    # A replay of some pipelines (`kappa replay orders --version 3`) has only their outputs.
    t1, t2 = (Topology(settings, v).select(recs[v].pipelines) for v in (v1, v2))
    lines: list[str] = []
    total = 0
    compared: list[str] = []
    skipped: list[str] = []
    for logical, keys in COMPARED_OUTPUTS:
        lacking = [t for t in (t1, t2) if logical not in _outputs(t)]
        if lacking:
            ran_only = "; ".join(
                f"version {t.version} ran {', '.join(p.name for p in t.pipelines)} only"
                for t in lacking
            )
            lines.append(f"{logical}: skipped ({ran_only})")
            skipped.append(logical)
            continue
        compared.append(logical)
        with _scratch(settings) as scratch:
            stores = [RocksStore(scratch / side) for side in ("a", "b")]
            try:
                for t, store in zip((t1, t2), stores):
                    await fold_latest(settings, t.physical(logical), keys, store)
                result = compare_latest(stores[0].scan(), stores[1].scan(), keys, v1, v2, limit)
            finally:
                for store in stores:
                    store.close()
        total += result.differences
        lines.extend(result.lines(logical))
    if total:
        lines.append(f"{total} differences")
        ahead = await _live_past_snapshot(settings, view, recs)
        lines.extend(_why_they_may_differ(recs, ahead))
    elif skipped:  # "identical" alone would vouch for outputs nobody compared
        lines.append(f"identical in {', '.join(compared)} ({', '.join(skipped)} not compared)")
    else:
        lines.append("identical")
    return "\n".join(lines), total


def _why_they_may_differ(
    recs: dict[int, VersionRecord], live_ahead: tuple[int, int] | None
) -> list[str]:
    """Notes on differences that are expected: a replay not completed, other `--since`, or
    a live version that has read past the other's snapshot (`live_ahead`: (live, other))."""
    notes = [
        f"note: version {v}'s replay has not completed: its outputs may be partial (kappa versions)"
        for v, rec in recs.items()
        if not rec.replay_done
    ]
    (v1, r1), (v2, r2) = recs.items()
    if r1.since_ms != r2.since_ms:
        notes.append(
            f"note: the versions count windows from different times (--since): version {v1} "
            f"{_since(r1.since_ms)}, version {v2} {_since(r2.since_ms)}"
        )
    if live_ahead is not None:
        live, other = live_ahead
        notes.append(
            f"note: version {live} is live and has read orders produced after version {other}'s "
            f"snapshot; windows and totals they reach differ until version {other} runs live too"
        )
    return notes


def _since(since_ms: int | None) -> str:
    return "from the start" if since_ms is None else f"from {since_ms} (epoch ms)"


async def _live_past_snapshot(
    settings: Settings, view: RegistryView, recs: dict[int, VersionRecord]
) -> tuple[int, int] | None:
    """(live, other) if one version is live and its committed source positions are past the
    other version's snapshot, else None."""
    for live, other in (tuple(recs), tuple(recs)[::-1]):
        snapshot = recs[other].snapshot
        if live != view.live or not snapshot:
            continue
        group = Topology(settings, live).group_id
        admin = new_admin(settings.kafka)
        await admin.start()
        try:
            for topic, ends in snapshot.items():
                tps = [TopicPartition(topic, int(p)) for p in ends]  # explicit: DEV-BROKER.md
                committed = await admin.list_consumer_group_offsets(group, partitions=tps)
                if any(
                    meta is not None and meta.offset > ends[str(tp.partition)]
                    for tp, meta in committed.items()
                ):
                    return live, other
        finally:
            await admin.close()
    return None


@contextlib.contextmanager
def _scratch(settings: Settings) -> Iterator[Path]:
    """A directory for the two stores, beside the state (where there is room), removed after."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {settings.state_dir} for the diff: {e}") from None
    with tempfile.TemporaryDirectory(prefix="kappa-diff-", dir=settings.state_dir) as d:
        yield Path(d)


def _outputs(topology: Topology) -> set[str]:
    """The logical output topics the topology's selected pipelines write."""
    return {t for p in topology.pipelines for t in p.outputs}

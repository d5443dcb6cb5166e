"""`kappa diff`: two versions' outputs compared key by key, in memory that does not grow with them.

Each side's outputs are read back as their latest value per key (replay/latest.py), and the two
stores are walked side by side in key order: memory holds one fetch and one key.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from app.cli_output import counted
from app.kafka_clients import new_admin
from app.settings import ConfigError, Settings
from app.topology import Topology
from replay.latest import (
    RESULT_OUTPUTS,
    Entry,
    decode_entry,
    fold_latest,
    outputs_of,
    scratch_dir,
    scratch_store_failed,
    unused_outputs,
)
from replay.registry import (
    DROPPED,
    Registry,
    VersionRecord,
    differing_settings,
    recorded_definition,
    require_listed_version,
)
from tables.rocks import RocksStore, StateError


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
            f"{self.only_a:,} only in v{self.v1}, {self.only_b:,} only in v{self.v2}, "
            f"{self.changed:,} differ"
        )
        if self.provisional:
            line += f"; {self.provisional:,} provisional (windows still open), not compared"
        return line

    def lines(self, topic: str) -> list[str]:
        """The summary, then the differences shown and how many more there are (`limit` 0:
        the counts only, so no "more" line either)."""
        hidden = self.differences - len(self.shown)
        more = [f"  … {hidden:,} more"] if hidden and self.limit else []
        return [self.summary(topic), *self.shown, *more]

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


async def diff(settings: Settings, v1: int, v2: int, limit: int = 20) -> tuple[str, int]:
    """Window-by-window (and user-by-user) differences; returns (report, number of differences)."""
    view = await Registry(settings).load(create=False)  # a reader makes no topic
    recs = {v: await require_listed_version(settings, view, v) for v in (v1, v2)}
    for v, rec in recs.items():
        if rec.status == DROPPED:
            raise ConfigError(f"version {v} was dropped: its outputs are gone")
    # A replay of some pipelines (`kappa replay orders --version 3`) has only their outputs.
    t1, t2 = (Topology(settings, v).select(recs[v].pipelines) for v in (v1, v2))
    lines: list[str] = []
    total = 0
    compared: list[str] = []
    skipped: list[str] = []
    for logical, keys in RESULT_OUTPUTS:
        lacking = [t for t in (t1, t2) if logical not in outputs_of(t)]
        unused = [
            t
            for t in (t1, t2)
            if logical in unused_outputs(t, recorded_definition(view, t.version))
        ]
        if not lacking and len(unused) == 2:  # empty in both: not worth a line
            continue
        if lacking or unused:
            ran_only = "; ".join(
                [
                    f"version {t.version} ran {', '.join(p.name for p in t.pipelines)} only"
                    for t in lacking
                ]
                + [f"version {t.version} was built without hopping windows" for t in unused]
            )
            lines.append(f"{logical}: skipped ({ran_only})")
            skipped.append(logical)
            continue
        compared.append(logical)
        with scratch_dir(settings) as scratch:
            stores: list[RocksStore] = []
            topic = t1.physical(logical)
            try:
                for t, side in zip((t1, t2), ("a", "b")):
                    topic = t.physical(logical)
                    stores.append(RocksStore(scratch / side))
                    await fold_latest(settings, topic, keys, stores[-1])
                result = compare_latest(stores[0].scan(), stores[1].scan(), keys, v1, v2, limit)
            except StateError:
                raise scratch_store_failed(settings, topic) from None
            finally:
                for store in stores:
                    with contextlib.suppress(Exception):  # a failed store may fail to close too
                        store.close()
        total += result.differences
        lines.extend(result.lines(logical))
    if total:
        lines.append(counted(total, "difference"))
        definitions = {v: recorded_definition(view, v) for v in recs}
        read = await _read_positions(settings, recs)
        lines.extend(_why_they_may_differ(recs, definitions, read, view.live))
    elif skipped:  # "identical" alone would vouch for outputs nobody compared
        lines.append(f"identical in {', '.join(compared)} ({', '.join(skipped)} not compared)")
    else:
        lines.append("identical")
    return "\n".join(lines), total


# topic → partition → offset: how far a version has read its sources
Positions = dict[str, dict[str, int]]


def _why_they_may_differ(
    recs: dict[int, VersionRecord],
    definitions: dict[int, dict[str, object] | None],
    read: dict[int, Positions],
    live: int,
) -> list[str]:
    """Notes on differences that are expected: a replay not completed, other settings (the
    `definition` each version's windows and analytics were built with, when both are recorded),
    other `--since`, or sources read to other points (`read`: each version's positions, its
    consumer group's where it has committed, its snapshot's elsewhere), a live version ahead
    of the other most often."""
    notes = [
        f"note: version {v}'s replay has not completed: its outputs may be partial (kappa versions)"
        for v, rec in recs.items()
        if not rec.replay_done
    ]
    (v1, r1), (v2, r2) = recs.items()
    d1, d2 = definitions[v1], definitions[v2]
    if d1 is not None and d2 is not None:
        differ = differing_settings(d1, d2)
        if differ:
            notes.append(
                "note: the versions were built with different settings: "
                + "; ".join(
                    f"KAPPA_{k.upper()} {d1.get(k)} in version {v1}, {d2.get(k)} in version {v2}"
                    for k in differ
                )
            )
    if r1.since_ms != r2.since_ms:
        notes.append(
            f"note: the versions count windows from different times (--since): version {v1} "
            f"{_since(r1.since_ms)}, version {v2} {_since(r2.since_ms)}"
        )
    p1, p2 = read.get(v1, {}), read.get(v2, {})
    common = [(t, p) for t in p1 if t in p2 for p in p1[t] if p in p2[t]]
    if any(p1[t][p] != p2[t][p] for t, p in common):
        ahead = [
            (a, b)
            for (a, pa), (b, pb) in (((v1, p1), (v2, p2)), ((v2, p2), (v1, p1)))
            if a == live and all(pa[t][p] >= pb[t][p] for t, p in common)
        ]
        if ahead:
            (a, b), *_ = ahead
            notes.append(
                f"note: version {a} is live and has read orders version {b} has not (produced "
                f"after its snapshot); windows and totals they reach differ until version {b} "
                "runs live too"
            )
        else:
            n1, n2 = (sum(pos[t][p] for t, p in common) for pos in (p1, p2))
            notes.append(
                f"note: the versions have read their sources to different points (version "
                f"{v1}: {counted(n1, 'record')}, version {v2}: {n2:,}); windows and totals the "
                "records in between reach differ"
            )
    return notes


def _since(since_ms: int | None) -> str:
    return "from the start" if since_ms is None else f"from {since_ms} (epoch ms)"


async def _read_positions(
    settings: Settings, recs: dict[int, VersionRecord]
) -> dict[int, Positions]:
    """How far each version has read the sources of their snapshots: its consumer group's
    committed offsets (a live version goes on past its own snapshot), else its snapshot's ends
    (a replay commits them only as a stage ends)."""
    partitions = sorted(
        {(t, int(p)) for rec in recs.values() for t, ends in rec.snapshot.items() for p in ends}
    )
    if not partitions:
        return {}
    read: dict[int, Positions] = {}
    admin = new_admin(settings.kafka)
    try:
        await admin.start()  # inside: stopped even if cancelled while starting
        for v, rec in recs.items():
            group = Topology(settings, v).group_id
            tps = [TopicPartition(t, p) for t, p in partitions]  # explicit: DEV-BROKER.md
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            positions: Positions = {}
            for t, p in partitions:
                meta = committed.get(TopicPartition(t, p))
                if meta is not None and meta.offset >= 0:
                    positions.setdefault(t, {})[str(p)] = meta.offset
                elif str(p) in rec.snapshot.get(t, {}):
                    positions.setdefault(t, {})[str(p)] = rec.snapshot[t][str(p)]
            read[v] = positions
    finally:
        await admin.close()
    return read

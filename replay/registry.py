"""The version registry: a compacted, single-partition topic with one record per version.

Keys are `version/N` (status, snapshot, pipelines, times), `progress/N/PIPELINE/P` (a
partition of a replay stage that reached its snapshot), so several replay processes of one
version can coordinate through it, `complete/N` (a replay of N finished: it moves a
running version to complete, and nothing else, so it never undoes a promote or a drop that
landed meanwhile; Kafka has no conditional writes), and `definition/N` (the window settings
version N's results are built with, recorded by its first worker or replay), and `split/N`
(how many processes replay it, `--process I/N`: processes of one version that split it
differently would miss or overlap partitions), and `dropping/N` (a drop of N has started: a
promote of N at the same moment backs out, or the drop does; see `replay/versions.py`).

A version's creation, its definition and its split are first-record-wins (Kafka has no
conditional write). Each process claims them under a key of its own (`version/N/ID`,
`definition/N/ID`, `split/N/ID`): compaction keeps only the newest record per key, so under one
shared key a claim that lost the race could outlive the winner's and take its place. A claim
that lost is withdrawn (`Registry.withdraw`): a release from before claims wrote under the
shared keys, and its winner there is replaced by later records.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from app.admin import ensure_topics, existing_topics
from app.cli_output import counted
from app.kafka_clients import new_producer
from app.settings import MAX_VERSION, ConfigError, Settings, validated
from app.topic_reader import high_watermarks, read_to_end
from app.topology import Topology, registry_topic, version_suffix

RUNNING, COMPLETE, LIVE, DROPPED = "running", "complete", "live", "dropped"
# A version whose output topics are on the broker with no registry record: made by `kappa
# topics` or `kappa worker --version N` without a replay (`kappa versions` lists it so).
UNRECORDED = "unrecorded"
T = TypeVar("T")
log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class VersionRecord:
    version: int
    status: str
    pipelines: list[str] = field(default_factory=list)
    snapshot: dict[str, dict[str, int]] = field(default_factory=dict)  # topic → partition → end
    since_ms: int | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    # Whether its replay emits the windows still open at the snapshot (marked provisional);
    # records written before this field existed were all flushed.
    flush: bool = True
    # Whether its replay reached the snapshot (kept when a `promote --force` marks it live, so
    # moved aside again it is `running`, not `complete`); once true, it stays true. Records
    # written before this field existed, and versions made without a replay, count as done.
    replay_done: bool = True


@dataclass
class RegistryView:
    versions: dict[int, VersionRecord]
    progress: dict[tuple[int, str], dict[int, int]]  # (version, pipeline) → partition → end
    # version → position of its newest record among the registry's records (oldest first)
    marked: dict[int, int] = field(default_factory=dict)
    # version → the settings its windows were built with (`definition/N`, the first one wins)
    definitions: dict[int, dict[str, object]] = field(default_factory=dict)
    # version → the number of processes its replay is split over (`split/N`, the first wins)
    splits: dict[int, int] = field(default_factory=dict)
    # versions a drop has started on (`dropping/N`, active until a drop that backed out says so)
    dropping: set[int] = field(default_factory=set)

    @property
    def live(self) -> int:
        """The live version: the one marked live, else version 1 (before any promote). A
        promote marks the new version live before the old one complete: if it stopped in
        between, two are marked and the one marked first (the old one) is still live."""
        live = [v for v, rec in self.versions.items() if rec.status == LIVE]
        return min(live, key=lambda v: self.marked.get(v, 0)) if live else 1

    @property
    def unused_version(self) -> int:
        """A version number nothing in the registry names yet, for hints in refusals (a
        replay that stopped early may have recorded only a version's window settings)."""
        return max([*self.versions, *self.definitions, *self.splits, self.live]) + 1


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = registry_topic(settings)
        self._ensured = False

    async def ensure(self) -> None:
        """Create the registry topic if it is missing: one partition, compacted. Kappa's
        clients never have the broker create a topic they write to (`app.kafka_clients`)."""
        if self._ensured:
            return
        await ensure_topics(
            self.settings.kafka,
            {self.topic: (1, {"cleanup.policy": "compact"})},
            self.settings.replication,
        )
        self._ensured = True

    async def load(self, create: bool = True) -> RegistryView:
        """The registry's current content; with create=False a missing registry reads empty."""
        view = RegistryView({}, {})
        if create:
            await self.ensure()
        elif self.topic not in await existing_topics(self.settings.kafka):
            return view  # at once: a missing topic's partitions are waited for (topic_reader)
        try:
            parts = await read_to_end(self.settings.kafka, self.topic)
        except ValueError:  # the topic does not exist (and create=False)
            return view
        for recs in parts.values():
            for r in recs:
                if r.value is not None:
                    fold_record(view, r.key, r.value, f"{self.topic} offset {r.offset}")
        return view

    async def put(self, *records: tuple[str, dict[str, object] | None]) -> None:
        """Write `records` in order; a None value is a tombstone (compaction removes the key)."""
        await self.ensure()
        producer = new_producer(self.settings.kafka, acks="all")
        try:
            await producer.start()  # inside: stopped even if cancelled while starting
            for key, value in records:
                raw = None if value is None else json.dumps(value, sort_keys=True).encode()
                await producer.send_and_wait(self.topic, raw, key=key.encode())
        finally:
            await producer.stop()

    async def put_version(self, rec: VersionRecord) -> None:
        rec.updated_at = now_iso()
        await self.put((f"version/{rec.version}", asdict(rec)))

    async def claim_version(self, rec: VersionRecord) -> str:
        """Register `rec` as version N's creation; the first claim read back is the one that
        holds (see the module's docstring). Returns the claim's key."""
        rec.updated_at = now_iso()
        return await self._claim(claim_key("version", rec.version), asdict(rec))

    async def put_completion(self, version: int) -> None:
        """The replay of `version` finished: complete, if it is still running when read."""
        await self.put((f"complete/{version}", {"at": now_iso()}))

    async def claim_definition(self, version: int, definition: dict[str, object]) -> str:
        return await self._claim(claim_key("definition", version), definition)

    async def claim_split(self, version: int, processes: int) -> str:
        return await self._claim(claim_key("split", version), {"processes": processes})

    async def _claim(self, key: str, value: dict[str, object]) -> str:
        await self.put((key, value))
        return key

    async def withdraw(self, claim: str) -> None:
        """Remove a claim that lost its race. A release before claims writes the winner under
        the plain key, which later status records replace: left in place, compaction could
        leave the loser's claim as the first record."""
        await self.put((claim, None))

    async def put_dropping(self, version: int, active: bool) -> None:
        """A drop of `version` starts (written before anything is deleted), or backs out."""
        await self.put((f"dropping/{version}", {"active": active, "at": now_iso()}))

    async def put_progress(self, version: int, pipeline: str, partition: int, end: int) -> None:
        await self.put((f"progress/{version}/{pipeline}/{partition}", {"end": end}))


def claim_key(kind: str, version: int) -> str:
    """A first-record-wins key of one claim's own, so that compaction keeps every claim and
    the first one by offset stays first."""
    return f"{kind}/{version}/{uuid.uuid4().hex}"


async def refuse_dropped(settings: Settings, version: int) -> None:
    """A dropped version's number is not used again: a worker or `kappa topics` for it would
    recreate its topics and state under the same names."""
    refuse_if_dropped(await Registry(settings).load(), version)


def refuse_if_dropped(view: RegistryView, version: int) -> VersionRecord | None:
    """The version's record (None if it has none yet); ConfigError if it was dropped."""
    rec = view.versions.get(version)
    if rec is not None and rec.status == DROPPED:
        raise ConfigError(f"version {version} was dropped; use a new version number")
    if version in view.dropping:  # topics deleted in part: they would be made anew, empty
        raise ConfigError(drop_unfinished(version))
    return rec


def drop_unfinished(version: int) -> str:
    return (
        f"a drop of version {version} started and has not finished (its topics may be gone "
        f"in part): run `kappa drop {version}` again to finish it, and use a new version number"
    )


def version_definition(settings: Settings) -> dict[str, object]:
    """The settings a version's results depend on beyond its pipelines and `--since`: its
    windows (their size names the state store), when they close and which orders may move
    their stream time on, and the analytics over them."""
    return {
        "window_ms": settings.window_ms,
        "grace_ms": settings.grace_ms,
        "hopping_size_ms": settings.hopping_size_ms,
        "hopping_step_ms": settings.hopping_step_ms,
        "trend_windows": settings.trend_windows,
        "trend_half_life": settings.trend_half_life,
        "anomaly_z": settings.anomaly_z,
        "anomaly_warmup": settings.anomaly_warmup,
        "top_k": settings.top_k,
        "demand_levels": settings.demand_levels,
        "quiet_p": settings.quiet_p,
        "max_ts_ahead_ms": settings.max_ts_ahead_ms,
    }


# A definition recorded before a setting existed was built with that setting's default at the
# time: the values here never change, even where the setting's default does (a new default
# applies to versions recorded with it, never to one that ran before it existed).
_DEFAULT_DEFINITION: dict[str, object] = {
    "window_ms": 60_000,
    "grace_ms": 10_000,
    "hopping_size_ms": 0,
    "hopping_step_ms": 0,
    "trend_windows": 5,
    "trend_half_life": 10.0,
    "anomaly_z": 3.0,
    "anomaly_warmup": 10,
    "top_k": 10,
    "demand_levels": 3,
    "quiet_p": 0.001,
    "max_ts_ahead_ms": 0,
}


def differing_settings(a: dict[str, object], b: dict[str, object]) -> list[str]:
    """The settings (definition keys, in definition order) two definitions give other values."""
    return [k for k in {**a, **b} if a.get(k) != b.get(k)]


def setting_names(definition: dict[str, object], keys: list[str]) -> str:
    """`KAPPA_X=value, …` for `keys` of a definition: how a user sets them."""
    return ", ".join(f"KAPPA_{k.upper()}={definition.get(k)}" for k in keys)


def recorded_definition(view: RegistryView, version: int) -> dict[str, object] | None:
    """The settings a version was built with (defaults filled in for settings recorded before
    they existed); None if no worker or replay of it has recorded them yet."""
    built = view.definitions.get(version)
    return None if built is None else {**_DEFAULT_DEFINITION, **built}


def settings_for_version(
    settings: Settings, view: RegistryView, version: int, ran_unrecorded: bool = False
) -> Settings:
    """The settings to run `version` with: each setting of its recorded definition that the
    environment does not give (`Settings.given`) is taken from the record, so its workers and
    resumed replays need not repeat how it was built. One the environment gives otherwise is
    refused by `require_definition`, not overridden. `ran_unrecorded`: the version ran under a
    release that recorded no definition (`ran_unrecorded`), so it was built with that
    release's defaults (`_DEFAULT_DEFINITION`), not this one's."""
    built = recorded_definition(view, version)
    if built is None and ran_unrecorded:
        built = dict(_DEFAULT_DEFINITION)
    if built is None:
        return settings
    recorded: dict[str, object] = {}
    for name, value in built.items():
        if name not in _DEFAULT_DEFINITION:
            continue  # a setting of a newer release: `require_definition` refuses it
        want = type(_DEFAULT_DEFINITION[name])
        if type(value) is int and want is float:
            value = float(value)
        if type(value) is not want:
            raise ConfigError(
                f"the version registry records {name}={value!r} for version {version}, not a "
                f"number: only Kappa may write to that topic"
            )
        recorded[name] = value
    try:
        validated(dataclasses.replace(Settings(), **recorded))  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(f"version {version}'s recorded settings are refused: {e}") from None
    taken = {k: v for k, v in recorded.items() if k not in settings.given}
    adopted = dataclasses.replace(settings, **taken)  # type: ignore[arg-type]
    try:
        return validated(adopted)
    except ConfigError:
        # The record is sound but a setting the environment gives does not go with it: say
        # which one differs from the record, rather than blame the record.
        mine = version_definition(settings)
        given = [k for k in built if k in settings.given and k in mine and mine[k] != built[k]]
        if given:
            raise ConfigError(built_otherwise(version, built, mine, given, view)) from None
        raise


async def ran_unrecorded(settings: Settings, view: RegistryView, version: int) -> bool:
    """Whether `version` processed records under a release that recorded no definition: none
    is recorded, yet one of its changelogs holds records. A worker or replay of this release
    records the definition before it processes anything, so only an older release (before
    definitions were recorded) leaves changelog records without one. `view` may be older than
    the records: the registry is read again before saying so (a first run of this release
    that recorded the definition meanwhile, then wrote them)."""
    if version in view.definitions:
        return False
    topology = Topology(settings, version)
    present = await existing_topics(settings.kafka)
    for changelog in sorted({topology.changelog(p) for p in topology.pipelines} & present):
        if any((await high_watermarks(settings.kafka, changelog)).values()):
            return version not in (await Registry(settings).load(create=False)).definitions
    return False


async def settings_to_run(settings: Settings, view: RegistryView, version: int) -> Settings:
    """`settings_for_version`, with a version run by an older release that recorded no
    definition built with that release's defaults (a new default must not switch on mid-life
    for a version that ran before it: its outputs would mix both and no replay could
    reproduce them)."""
    unrecorded = await ran_unrecorded(settings, view, version)
    if unrecorded:
        log.warning(
            "version %d ran under a release that recorded no settings: where the environment "
            "gives none it keeps that release's defaults (its first worker or replay of this "
            "release records them)",
            version,
        )
    return settings_for_version(settings, view, version, unrecorded)


async def live_version_settings(settings: Settings) -> Settings:
    """`settings_to_run` of the live version, for a command that serves no version but must
    apply its rules (`kappa produce --generate`); reads without creating the registry."""
    view = await Registry(settings).load(create=False)
    return await settings_to_run(settings, view, view.live)


def taken_from_record(settings: Settings, adopted: Settings) -> str:
    """`KAPPA_X=value, …` for the settings `settings_for_version` changed: said once when a
    worker or replay starts, so what it runs with is never a guess."""
    mine, theirs = version_definition(settings), version_definition(adopted)
    return setting_names(theirs, differing_settings(mine, theirs))


async def require_definition(
    registry: Registry, view: RegistryView, version: int, record: bool = True
) -> None:
    """Refuse to run `version` with window settings other than those its results were built
    with (its state and outputs would mix both, and a replay could not reproduce them); the
    first worker or replay of a version records them (`record=False`: a check that writes
    nothing). Two first ones at the same moment: the first claim wins, and the other is
    refused here after reading it back."""
    mine = version_definition(registry.settings)
    built, view = await _first_recorded(
        registry,
        view,
        lambda v: v.definitions.get(version),
        partial(registry.claim_definition, version),
        mine,
        record,
    )
    if built is not None:
        built = {**_DEFAULT_DEFINITION, **built}
    if built is not None and built != mine:
        differ = sorted(differing_settings(built, mine))
        raise ConfigError(built_otherwise(version, built, mine, differ, view, registry.settings))


def built_otherwise(
    version: int,
    built: dict[str, object],
    mine: dict[str, object],
    differ: list[str],
    view: RegistryView,
    settings: Settings | None = None,
) -> str:
    """The line refusing to run `version` (built with `built`) with `mine`, which differ in
    `differ`. With `settings`: where every setting that differs was left unset (taken from a
    view read before another first run recorded the version's), starting again takes them."""
    have, was = setting_names(mine, differ), setting_names(built, differ)
    said = f"version {version} is built with {was}, not {have}"
    if settings is not None and all(k in mine and k not in settings.given for k in differ):
        return (
            f"{said}, recorded by another first run of it while this one started: start this "
            "one again to take them (the environment leaves them unset)"
        )
    return (
        f"{said}: a version's windows and analytics never change; replay into a new version "
        f"(kappa replay --version {view.unused_version}) or run it with its own (a setting "
        "the environment leaves unset is taken from the version's record)"
    )


def fold_record(view: RegistryView, key: bytes | None, value: bytes, where: str) -> None:
    """Apply one registry record (oldest first). Only Kappa writes the registry: a record it
    cannot read is reported in one line, naming where it is, instead of a traceback."""
    try:
        name = (key or b"").decode()
        d = json.loads(value)
        if name.startswith("version/"):
            v, claim = int(name.split("/")[1]), name.count("/") == 2
            rec = _version_record(d)
            if claim and v in view.versions:
                return  # a creation that lost the race: it changes nothing
            view.versions[v] = _settled(view.versions.get(v), rec)
            view.marked[v] = max(view.marked.values(), default=0) + 1
        elif name.startswith("complete/"):
            rec = view.versions.get(int(name.split("/")[1]))
            if rec is not None:
                rec.replay_done = True
                if rec.status == RUNNING:  # not a promote or drop after it
                    rec.status, rec.updated_at = COMPLETE, str(d["at"])
        elif name.startswith("definition/"):
            if type(d) is not dict:
                raise TypeError("not a JSON object")
            view.definitions.setdefault(int(name.split("/")[1]), d)
        elif name.startswith("dropping/"):
            v = int(name.split("/")[1])
            if _typed(d["active"], bool):
                view.dropping.add(v)
            else:
                view.dropping.discard(v)
        elif name.startswith("split/"):
            view.splits.setdefault(int(name.split("/")[1]), _typed(d["processes"], int))
        elif name.startswith("progress/"):
            _, v, pipeline, p = name.split("/")
            view.progress.setdefault((int(v), pipeline), {})[int(p)] = _typed(d["end"], int)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as e:
        raise ConfigError(
            f"the version registry holds a record Kappa cannot read ({where}, key {key!r}: "
            f"{type(e).__name__}): only Kappa may write to that topic"
        ) from None


def _typed(value: object, kind: type[T]) -> T:
    """`value` if it is exactly a `kind` as JSON gives it (no bool for an int), else TypeError."""
    if type(value) is not kind:
        raise TypeError(f"not {kind.__name__}")
    return value  # type: ignore[return-value]


def _version_record(d: object) -> VersionRecord:
    """A `version/N` record's value, each field of the type Kappa writes (TypeError if not):
    the commands that read the registry rely on them."""
    if type(d) is not dict:
        raise TypeError("not a JSON object")
    rec = VersionRecord(**d)
    snapshot = rec.snapshot
    if not (
        type(rec.version) is int
        and type(rec.status) is str
        and type(rec.pipelines) is list
        and all(type(p) is str for p in rec.pipelines)
        and type(snapshot) is dict
        and all(type(ends) is dict for ends in snapshot.values())
        and all(
            type(p) is str and p.isascii() and p.isdigit() and type(end) is int
            for ends in snapshot.values()
            for p, end in ends.items()
        )
        and (rec.since_ms is None or type(rec.since_ms) is int)
        and type(rec.created_at) is str
        and type(rec.updated_at) is str
        and type(rec.flush) is bool
        and type(rec.replay_done) is bool
    ):
        raise TypeError("a field of the wrong type")
    return rec


def _settled(first: VersionRecord | None, latest: VersionRecord) -> VersionRecord:
    """A version's definition (snapshot, pipelines, since, flush, creation) is its first record's:
    if two replay processes created the version at the same moment, both end up replaying
    to the same snapshot. Later records change only its status."""
    if first is None:
        return latest
    latest.snapshot, latest.pipelines = first.snapshot, first.pipelines
    latest.since_ms, latest.created_at = first.since_ms, first.created_at
    latest.flush = first.flush
    latest.replay_done = latest.replay_done or first.replay_done
    return latest


def require_version(
    view: RegistryView, version: int, unrecorded: Collection[int] = ()
) -> VersionRecord:
    """The version's record; ConfigError if the registry has none. `unrecorded`: the versions
    whose topics are on the broker with no record (`unrecorded_versions`), named as
    `kappa versions` names them, and a version among them refused as such."""
    rec = view.versions.get(version)
    if rec is None:
        if version == view.live:
            return VersionRecord(version, LIVE)
        if version in unrecorded:
            raise ConfigError(
                f"version {version} is {UNRECORDED}: its topics are on the broker, but no replay "
                f"recorded it (kappa topics or kappa worker --version {version} made them), so "
                f"what it holds is not known; replay it to record it (kappa replay --version "
                f"{version}) or remove it (kappa drop {version}); see `{UNRECORDED}` under "
                "kappa versions in the README"
            )
        known = ", ".join(str(v) for v in sorted({*view.versions, view.live}))
        if unrecorded:
            known += f"; {UNRECORDED}: {', '.join(str(v) for v in sorted(unrecorded))}"
        raise ConfigError(f"version {version} is not in the registry (known: {known})")
    return rec


async def require_listed_version(
    settings: Settings, view: RegistryView, version: int
) -> VersionRecord:
    """`require_version`, with the refusal naming the versions `kappa versions` lists: those
    recorded and those unrecorded (the broker's topics are listed only for a refusal)."""
    if version in view.versions or version == view.live:
        return require_version(view, version)
    topics = await existing_topics(settings.kafka)
    unrecorded = unrecorded_versions(settings, topics, {*view.versions, view.live})
    return require_version(view, version, unrecorded)


def unrecorded_versions(settings: Settings, topics: set[str], recorded: set[int]) -> list[int]:
    """Versions (2 and up) with an output topic among `topics` and no record in the registry."""
    outputs = Topology(settings).produced
    prefix = settings.topic_prefix
    found = set()
    for topic in topics:
        base, n = version_suffix(topic)
        if (
            n
            and base.startswith(prefix)
            and base[len(prefix) :] in outputs
            and 2 <= n <= MAX_VERSION
        ):
            found.add(n)
    return sorted(found - recorded)


@dataclass(frozen=True)
class ReadableVersion:
    """A version whose outputs can be read back (exported, sunk to files), and what it ran."""

    view: RegistryView
    record: VersionRecord
    topology: Topology  # its pipelines only

    @property
    def number(self) -> int:
        return self.record.version


async def readable_version(settings: Settings, version: int | None) -> ReadableVersion:
    """Version `version` (the live one for None); ConfigError if it was dropped, or a drop of
    it has started."""
    view = await Registry(settings).load(create=False)  # a reader makes no topic
    v = view.live if version is None else version
    rec = await require_listed_version(settings, view, v)
    _refuse_dropped(view, v)
    return ReadableVersion(view, rec, Topology(settings, v).select(rec.pipelines))


async def refuse_if_outputs_dropped(settings: Settings, version: int) -> None:
    """ConfigError if `version` was dropped or a drop of it has started; nothing otherwise.
    It reads the registry and never makes it: a reader that finds its topics gone asks why,
    and a restarted dev broker has no registry (its own refusal says what it saw)."""
    _refuse_dropped(await Registry(settings).load(create=False), version)


def _refuse_dropped(view: RegistryView, version: int) -> None:
    rec = view.versions.get(version)
    if rec is not None and rec.status == DROPPED:
        raise ConfigError(f"version {version} was dropped: its outputs are gone")
    if version in view.dropping:
        raise ConfigError(f"a drop of version {version} has started: its outputs may be gone")


async def require_split(
    registry: Registry, view: RegistryView, version: int, processes: int, record: bool = True
) -> None:
    """Refuse to replay a running version split over another number of processes than it was
    started with: each process takes the partitions `p % N == I`, so two splits would miss
    partitions (and every process would wait for them forever) or replay some twice. The first
    process records the split (`record=False`: a check that writes nothing); as for window
    settings, the first claim wins."""
    rec = view.versions.get(version)
    if rec is not None and rec.status != RUNNING:  # replayed to its end: nothing left to split
        return
    started, _ = await _first_recorded(
        registry,
        view,
        lambda v: v.splits.get(version),
        partial(registry.claim_split, version),
        processes,
        record,
    )
    if started is not None and started != processes:
        raise ConfigError(
            f"version {version} is being replayed by {counted(started, 'process', 'processes')} "
            f"(--process I/{started} or --processes {started}), not {processes}: resume every "
            "process of it the same way"
        )


async def _first_recorded(
    registry: Registry,
    view: RegistryView,
    recorded: Callable[[RegistryView], T | None],
    put: Callable[[T], Awaitable[str]],
    mine: T,
    record: bool,
) -> tuple[T | None, RegistryView]:
    """The value of a first-record-wins key: `mine` is claimed if none is (unless `record` is
    False), and the first claim read back wins; a claim that lost is withdrawn."""
    found = recorded(view)
    if found is None and record:
        claim = await put(mine)
        view = await registry.load()
        found = recorded(view)
        if found != mine:
            await registry.withdraw(claim)
    return found, view

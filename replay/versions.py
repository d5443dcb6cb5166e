"""`kappa versions | promote | drop | diff | status`: managing what replays produced."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, UnknownError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from app.admin import existing_topics
from app.kafka_clients import new_admin
from app.settings import ConfigError, Settings
from app.state_guard import StateLockedError, lock_state_dir
from app.topic_reader import read_to_end
from app.topology import Topology
from replay.registry import (
    COMPLETE,
    DROPPED,
    LIVE,
    Registry,
    RegistryView,
    VersionRecord,
    require_version,
)

PROVISIONAL = "__provisional"  # marks a window emitted by a replay's final flush
REVENUE = "orders.revenue-1m"
USER_TOTALS = "orders.user-totals"


async def list_versions(settings: Settings) -> str:
    view = await Registry(settings).load()
    rows = [
        f"{'version':>7}  {'status':<9}  {'pipelines':<22}  {'created':<25}  snapshot (records)"
    ]
    versions = dict(view.versions)
    if view.live not in versions:
        versions[view.live] = VersionRecord(view.live, LIVE, created_at="-")
    for v in sorted(versions):
        rec = versions[v]
        status = shown_status(view, v, rec)
        records = sum(e for parts in rec.snapshot.values() for e in parts.values())
        snap = f"{records:,}" if rec.snapshot else "-"
        rows.append(
            f"{v:>7}  {status:<9}  {','.join(rec.pipelines) or 'all':<22}  "
            f"{rec.created_at:<25}  {snap}"
        )
    return "\n".join(rows)


# A version a promote marked live but that is not (the promote stopped before marking the old
# one complete): running the promote again finishes it.
PROMOTING = "promoting"


def shown_status(view: RegistryView, version: int, rec: VersionRecord) -> str:
    """The status `kappa versions` shows: exactly one version is ever shown live."""
    if version == view.live:
        return LIVE
    return PROMOTING if rec.status == LIVE else rec.status


async def promote(settings: Settings, version: int, force: bool) -> str:
    registry = Registry(settings)
    view = await registry.load()
    rec = require_version(view, version)
    if version == view.live:
        return f"version {version} is already live"
    if rec.status == DROPPED:
        raise ConfigError(f"version {version} was dropped")
    if rec.status not in (COMPLETE, LIVE) and not force:  # LIVE: a promote that stopped halfway
        raise ConfigError(
            f"version {version} is {rec.status}: its replay has not completed (use --force to "
            "promote anyway)"
        )
    previous = view.versions.get(view.live)
    if previous is None:  # version 1 before any promote: live without a record of its own
        previous = VersionRecord(view.live, LIVE)
        await registry.put_version(previous)
    # New first: until the old one is marked complete, it stays live (`RegistryView.live`: the
    # earliest marked wins), so a promote that stops in between changes nothing and can be
    # run again. Every other version still marked live (by such a promote) is then complete.
    rec.status = LIVE
    await registry.put_version(rec)
    for other in view.versions.values():
        if other.status == LIVE and other.version != version:
            other.status = COMPLETE
            await registry.put_version(other)
    if previous.version not in view.versions:
        previous.status = COMPLETE
        await registry.put_version(previous)
    return (
        f"version {version} is live (was {previous.version}); restart workers without --version "
        "to run it"
    )


async def drop(settings: Settings, version: int) -> str:
    registry = Registry(settings)
    view = await registry.load()
    if version == view.live:
        raise ConfigError(f"version {version} is live; promote another version before dropping it")
    # A version made by `kappa topics/worker --version N` without a replay has no record: it is
    # dropped all the same, and recorded as dropped so its number is not used again.
    rec = view.versions.get(version) or VersionRecord(version, DROPPED)
    topology = Topology(settings, version)
    topics = [*topology.output_topics(), *(topology.changelog(p) for p in topology.pipelines)]
    unknown = version not in view.versions and not topology.state_root().exists()
    if unknown and not set(topics) & await existing_topics(settings.kafka):  # a mistyped number
        require_version(view, version)  # refused, naming the versions there are
    try:  # a worker of this version on this machine holds its state directory
        lock = lock_state_dir(topology.state_root())
    except StateLockedError:
        raise ConfigError(
            f"version {version} is running here: a kappa process holds its state directory "
            f"{topology.state_root()}; stop it first"
        ) from None
    admin = new_admin(settings.kafka)
    try:
        await admin.start()
        # The group first: a broker refuses to delete a group with members (workers of this
        # version elsewhere), and then nothing has been deleted yet.
        group_note = await _delete_group(admin, topology.group_id, version)
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            # The broker answers per topic instead of raising (ACLs, delete.topic.enable=false,
            # a timeout): refuse before the state and the registry say the version is gone.
            failed = _undeleted(await admin.delete_topics(doomed))
            if failed:
                raise ConfigError(
                    f"version {version} not dropped: the broker did not delete "
                    + ", ".join(f"{t} ({err})" for t, err in failed)
                    + f"; its state and registry entry are kept, run kappa drop {version} again "
                    "once the broker allows it"
                )
        # Marked dropped and its state removed while the lock is held: a worker of the version
        # starting meanwhile is refused (the lock is taken), and after it as dropped; it can
        # never start between the two and have its state removed underneath it.
        rec.status = DROPPED
        await registry.put_version(rec)
        shutil.rmtree(topology.state_root(), ignore_errors=True)
    finally:
        await admin.close()
        lock.release()
    return (
        f"dropped version {version}: {len(doomed)} topics deleted, {group_note}, "
        f"state {topology.state_root()} removed"
    )


NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
UNKNOWN_TOPIC_OR_PARTITION = 3


class DeleteTopicsResult(Protocol):
    """What `delete_topics` returns (aiokafka's DeleteTopicsResponse, any version)."""

    topic_error_codes: Sequence[tuple[Any, ...]]  # (topic, error code[, error message])


def _undeleted(response: DeleteTopicsResult) -> list[tuple[str, str]]:
    """(topic, error name) of each topic a DeleteTopicsResponse says was not deleted; a topic
    the broker does not know (any more) counts as deleted."""
    failed = []
    for entry in response.topic_error_codes:
        topic, code = entry[0], entry[1]
        if code in (0, UNKNOWN_TOPIC_OR_PARTITION):
            continue
        # aiokafka names only the codes it knows (73 TOPIC_DELETION_DISABLED is UnknownError).
        failed.append((topic, _error_name(code)))
    return failed


# The group's coordinator is loading or moving (a broker restart, a leader change): asked again.
COORDINATOR_BUSY = (14, 15, 16)


async def _delete_group(
    admin: AIOKafkaAdminClient,
    group: str,
    version: int,
    attempts: int = 6,
    first_delay_s: float = 0.5,
) -> str:
    """Delete the version's consumer group, or refuse the drop. The broker's answer is the only
    sign of the version's workers on other machines: it refuses to delete a group with members.
    So the drop goes on only once the group is deleted or never existed; a coordinator that is
    busy is asked again, and any other answer refuses the drop before anything is deleted."""
    delay = first_delay_s
    for attempt in range(attempts):
        try:
            node = await admin.find_coordinator(group)
            # aiokafka's admin has no delete-groups call; the protocol request is there.
            resp = await admin._client.send(node, DeleteGroupsRequest([group]))
            code = resp.results[0][1]
            error = "" if code in (0, GROUP_ID_NOT_FOUND) else _error_name(code)
        except (KafkaError, OSError, TimeoutError) as e:
            code, error = None, type(e).__name__
        if code in (0, GROUP_ID_NOT_FOUND):
            return f"consumer group {group} deleted"
        if code == NON_EMPTY_GROUP:
            raise ConfigError(
                f"version {version} still has running workers (consumer group {group} is not "
                "empty); stop them first"
            )
        if code is not None and code not in COORDINATOR_BUSY:
            break
        if attempt < attempts - 1:
            await asyncio.sleep(delay)
            delay *= 2
    raise ConfigError(
        f"version {version} not dropped: could not delete its consumer group {group} ({error}), "
        "the only check for its workers on other machines; nothing was deleted, run kappa drop "
        f"{version} again"
    )


def _error_name(code: int) -> str:
    error = for_code(code)
    return error.__name__ + (f" (code {code})" if error is UnknownError else "")


async def read_latest(
    settings: Settings, topic: str, key_fields: tuple[str, ...]
) -> dict[tuple, dict]:  # type: ignore[type-arg]
    """Last value per key (upsert semantics) of a JSON output topic."""
    latest: dict[tuple, dict] = {}  # type: ignore[type-arg]
    for recs in (await read_to_end(settings.kafka, topic)).values():
        upsert_latest(latest, recs, key_fields, topic)
    return latest


def upsert_latest(
    latest: dict[tuple, dict],  # type: ignore[type-arg]
    records: Iterable[ConsumerRecord],
    key_fields: tuple[str, ...],
    topic: str,
) -> None:
    """Fold one partition's output records (offset order) into `latest`, by key. An output
    record Kappa did not write is reported in one line naming where it is."""
    for r in records:
        if r.value is None:
            continue
        try:
            d = json.loads(r.value)
            key = tuple(d[f] for f in key_fields)
            hash(key)
        except (ValueError, TypeError, KeyError, RecursionError) as e:
            raise ConfigError(
                f"{topic}[{r.partition}] offset {r.offset} is not a Kappa output record "
                f"({type(e).__name__}): only Kappa may write to a version's output topics"
            ) from None
        # `final` says how the version emits (KAPPA_EMIT_UPDATES), not what it computed.
        d.pop("final", None)
        if any(k == "kappa.provisional" for k, _ in r.headers or ()):
            d[PROVISIONAL] = True
        latest[key] = d


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
    for logical, keys in (
        (REVENUE, ("product_id", "window_start", "window_end")),
        (USER_TOTALS, ("user_id",)),
    ):
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
        a = await read_latest(settings, t1.physical(logical), keys)
        b = await read_latest(settings, t2.physical(logical), keys)
        # A window still open on one side and flushed (provisional) on the other is not a
        # difference in results: it is reported, not counted.
        provisional = {
            k for k in set(a) | set(b) if PROVISIONAL in a.get(k, {}) or PROVISIONAL in b.get(k, {})
        }
        only_a = sorted(set(a) - set(b) - provisional)
        only_b = sorted(set(b) - set(a) - provisional)
        changed = sorted(k for k in (set(a) & set(b)) - provisional if not _same(a[k], b[k]))
        n = len(only_a) + len(only_b) + len(changed)
        total += n
        lines.append(
            f"{logical}: {len(a):,} in v{v1}, {len(b):,} in v{v2}; {len(only_a)} only in v{v1}, "
            f"{len(only_b)} only in v{v2}, {len(changed)} differ"
            + (
                f"; {len(provisional)} provisional (flushed by a replay), not compared"
                if provisional
                else ""
            )
        )
        shown = 0
        for k in only_a:
            if shown < limit:
                lines.append(f"  - v{v1} only {k}: {json.dumps(a[k])}")
                shown += 1
        for k in only_b:
            if shown < limit:
                lines.append(f"  + v{v2} only {k}: {json.dumps(b[k])}")
                shown += 1
        for k in changed:
            if shown < limit:
                fields = {
                    f: (a[k].get(f), b[k].get(f))
                    for f in {**a[k], **b[k]}
                    if not _close(a[k].get(f), b[k].get(f))
                }
                lines.append(
                    f"  ~ {k}: " + ", ".join(f"{f} {x} → {y}" for f, (x, y) in fields.items())
                )
                shown += 1
        if n > shown:
            lines.append(f"  … {n - shown} more")
    if total:
        lines.append(f"{total} differences")
    elif skipped:  # "identical" alone would vouch for outputs nobody compared
        lines.append(f"identical in {', '.join(compared)} ({', '.join(skipped)} not compared)")
    else:
        lines.append("identical")
    return "\n".join(lines), total


def _outputs(topology: Topology) -> set[str]:
    """The logical output topics the topology's selected pipelines write."""
    return {t for p in topology.pipelines for t in p.outputs}


def _close(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))
    return x == y


def _same(a: dict, b: dict) -> bool:  # type: ignore[type-arg]
    return a.keys() == b.keys() and all(_close(a[f], b[f]) for f in a)


async def status(settings: Settings) -> str:
    view = await Registry(settings).load()
    live = Topology(settings, view.live)
    return "\n".join(
        [
            f"live version: {view.live} (consumer group {live.group_id})",
            f"outputs: {', '.join(live.output_topics())}",
            f"state: {live.state_root()}",
        ]
    )

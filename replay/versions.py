"""`kappa versions | promote | drop | status`: managing what replays produced."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, UnknownError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from app.admin import existing_topics
from app.cli_output import counted
from app.kafka_clients import new_admin
from app.settings import ConfigError, Settings
from app.state_guard import StateLockedError, lock_state_dir
from app.topology import Topology
from replay.latest import unused_outputs
from replay.registry import (
    COMPLETE,
    DROPPED,
    LIVE,
    RUNNING,
    UNRECORDED,
    Registry,
    RegistryView,
    VersionRecord,
    differing_settings,
    recorded_definition,
    require_listed_version,
    setting_names,
    unrecorded_versions,
    version_definition,
)


async def list_versions(settings: Settings) -> str:
    view = await Registry(settings).load(create=False)  # a reader makes no topic
    versions = dict(view.versions)
    if view.live not in versions:
        versions[view.live] = VersionRecord(view.live, LIVE, created_at="-")
    topics = await existing_topics(settings.kafka)
    for v in unrecorded_versions(settings, topics, set(versions)):
        versions[v] = VersionRecord(v, UNRECORDED, created_at="-")
    names = {
        v: "-" if rec.status == UNRECORDED else ",".join(rec.pipelines) or "all"
        for v, rec in versions.items()
    }
    wide = max(22, *(len(n) for n in names.values()))
    head = f"{'version':>7}  {'status':<10}  {'pipelines':<{wide}}  {'created':<25}"
    rows = [f"{head}  snapshot (records)"]
    for v in sorted(versions):
        rec = versions[v]
        status = shown_status(view, v, rec)
        records = sum(e for parts in rec.snapshot.values() for e in parts.values())
        snap = f"{records:,}" if rec.snapshot else "-"
        rows.append(f"{v:>7}  {status:<10}  {names[v]:<{wide}}  {rec.created_at:<25}  {snap}")
    if any(rec.status == UNRECORDED for rec in versions.values()):
        rows.append(
            f"{UNRECORDED}: its topics are on the broker, but no replay recorded it (made by "
            "kappa topics or kappa worker --version N); kappa drop N removes them"
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
    # Not created to refuse a version it does not know (a mistyped KAPPA_APP_ID left a stray
    # registry topic); a missing one reads empty, and the first write below creates it.
    view = await registry.load(create=False)
    rec = await require_listed_version(settings, view, version)
    if version == view.live:
        return f"version {version} is already live"
    if rec.status == DROPPED:
        raise ConfigError(f"version {version} was dropped")
    if version in view.dropping:
        raise ConfigError(_being_dropped(version))
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
    was = rec.status
    rec.status = LIVE
    await registry.put_version(rec)
    # A drop of this version at the same moment: each writes before it reads again, so at
    # least one of the two sees the other and backs out. The old version is still live here.
    if version in (await registry.load()).dropping:
        rec.status = was
        await registry.put_version(rec)
        raise ConfigError(_being_dropped(version))
    for other in view.versions.values():
        if other.status == LIVE and other.version != version:
            # A version promoted with --force before its replay ended is not complete.
            other.status = COMPLETE if other.replay_done else RUNNING
            await registry.put_version(other)
    if previous.version not in view.versions:
        previous.status = COMPLETE
        await registry.put_version(previous)
    # Two promotes at once (of different versions) both read the same live version: the one
    # marked first is live (`RegistryView.live`), and the other takes its mark back.
    live = (await registry.load()).live
    if live != version:
        rec.status = was
        await registry.put_version(rec)
        raise ConfigError(
            f"version {live} was promoted at the same time and is live; version {version} was "
            f"not promoted (run kappa promote {version} again to make it live)"
        )
    return f"version {version} is live (was {previous.version}); " + _restart_advice(
        settings, view, version
    )


def _restart_advice(settings: Settings, view: RegistryView, version: int) -> str:
    """How to run the promoted version: workers without --version. Where this environment's
    settings differ from those it was built with, those it sets must change (a worker refuses
    other ones); those it leaves unset are taken from the version's record."""
    built = recorded_definition(view, version) or {}
    differ = differing_settings(built, version_definition(settings)) if built else []
    given = [k for k in differ if k in settings.given]
    if given:
        return (
            f"restart workers without --version, with {setting_names(built, given)} (the "
            "settings it was built with) or with those unset, to run it"
        )
    if differ:
        taken = setting_names(built, differ)
        return (
            f"restart workers without --version to run it (they take {taken}, the settings it "
            "was built with, from its record)"
        )
    return "restart workers without --version to run it"


def _being_dropped(version: int) -> str:
    return (
        f"version {version} is being dropped, or a drop of it stopped part way (run kappa drop "
        f"{version} again to finish it); not promoted"
    )


async def drop(settings: Settings, version: int) -> str:
    registry = Registry(settings)
    view = await registry.load(create=False)  # as promote: created by the first write only
    if version == view.live:
        raise ConfigError(f"version {version} is live; promote another version before dropping it")
    # A version made by `kappa topics/worker --version N` without a replay has no record: it is
    # dropped all the same, and recorded as dropped so its number is not used again.
    rec = view.versions.get(version) or VersionRecord(version, DROPPED)
    if rec.status == LIVE:  # marked by a promote that has not finished (`promoting`)
        raise ConfigError(
            f"version {version} is being promoted, or a promote of it stopped part way: run "
            f"kappa promote {version} again, or promote another version, before dropping it"
        )
    topology = Topology(settings, version)
    topics = [*topology.output_topics(), *(topology.changelog(p) for p in topology.pipelines)]
    root = topology.state_root()
    unknown = version not in view.versions and not root.exists()
    # Before the lock, which creates the directory: what a worker or replay left there.
    had_state = root.is_dir() and any(p.name != "LOCK" for p in root.iterdir())
    if unknown and not set(topics) & await existing_topics(settings.kafka):  # a mistyped number
        await require_listed_version(settings, view, version)  # refused, naming those there are
    try:  # a worker of this version with this KAPPA_STATE_DIR holds its state directory
        lock = lock_state_dir(topology.state_root())
    except StateLockedError:
        raise ConfigError(
            f"version {version} is running here: a kappa process holds its state directory "
            f"{topology.state_root()}; stop it first"
        ) from None
    admin = new_admin(settings.kafka)
    try:
        # Said before anything is deleted, then read back: a promote of this version at the
        # same moment backs out if it sees this, and this drop backs out if it sees the promote.
        await registry.put_dropping(version, True)
        again = await registry.load()
        marked = again.versions.get(version)
        if again.live == version or (marked is not None and marked.status == LIVE):
            await registry.put_dropping(version, False)
            raise ConfigError(
                f"version {version} was promoted while it was being dropped; not dropped"
            )
        await admin.start()
        # The group first: a broker refuses to delete a group with members (workers of this
        # version elsewhere), and then nothing has been deleted yet.
        try:
            group_note = await _delete_group(admin, topology.group_id, version)
        except BaseException:
            await registry.put_dropping(version, False)  # nothing deleted: promotable again
            raise
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
    return f"dropped version {version}: {counted(len(doomed), 'topic')} deleted, {group_note}, " + (
        f"state {root} removed" if had_state else f"no local state in {root}"
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


async def status(settings: Settings) -> str:
    return status_report(settings, await Registry(settings).load(create=False))


def status_report(settings: Settings, view: RegistryView) -> str:
    """`kappa status`: the live version and the outputs it has, those of the pipelines it ran,
    without `orders.revenue-hopping` if it was built without hopping windows."""
    rec = view.versions.get(view.live)
    live = Topology(settings, view.live).select(rec.pipelines if rec is not None else [])
    unused = {live.physical(t) for t in unused_outputs(live, recorded_definition(view, view.live))}
    outputs = [t for t in live.output_topics() if t not in unused]
    return "\n".join(
        [
            f"live version: {view.live} (consumer group {live.group_id})",
            f"outputs: {', '.join(outputs)}",
            f"state: {live.state_root()}",
            f"settings: {_built_with(recorded_definition(view, view.live))}",
        ]
    )


def _built_with(built: dict[str, object] | None) -> str:
    """The settings a version was built with, as far as they are not the defaults: what its
    workers run with wherever their environment sets none."""
    if built is None:
        return "not recorded yet (its first worker or replay records them)"
    differ = differing_settings(version_definition(Settings()), built)
    if not differ:
        return "the defaults"
    return f"{setting_names(built, differ)}; the others at their defaults"

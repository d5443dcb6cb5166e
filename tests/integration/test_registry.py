"""The version registry on the embedded broker: a version's first snapshot wins."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from app.admin import ensure_topics, existing_topics
from app.kafka_clients import new_producer
from app.settings import ConfigError, Settings, load_settings
from app.state_guard import lock_state_dir
from app.topic_reader import read_to_end
from app.topology import Topology
from app.worker_main import version_to_run
from replay import versions
from replay.diff import diff
from replay.registry import (
    COMPLETE,
    DROPPED,
    LIVE,
    RUNNING,
    Registry,
    RegistryView,
    VersionRecord,
    fold_record,
    ran_unrecorded,
    refuse_if_outputs_dropped,
    require_definition,
    require_split,
    settings_for_version,
    settings_to_run,
    version_definition,
)
from replay.runner import _create_version
from replay.versions import drop, promote

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(broker: str, unique: str) -> Registry:
    """A registry of its own (a fresh app id) on the session broker."""
    return Registry(load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"reg-{unique}"}))


def running(version: int, end: int, **fields: Any) -> VersionRecord:
    """A version being replayed to `end` on orders[0]."""
    return VersionRecord(version, RUNNING, ["orders"], {"orders": {"0": end}}, **fields)


async def test_two_processes_creating_a_version_at_once_share_the_first_snapshot(
    registry: Registry,
) -> None:
    await registry.put_version(running(2, 10, created_at="t1"))
    await registry.put_version(
        running(2, 12, created_at="t2")
    )  # a second process, a moment later, saw more records
    view = await registry.load()
    assert view.versions[2].snapshot == {"orders": {"0": 10}}
    assert view.versions[2].created_at == "t1"

    done = VersionRecord(2, COMPLETE, ["orders"], {"orders": {"0": 10}})
    await registry.put_version(done)  # later records change the status only
    assert (await registry.load()).versions[2].status == COMPLETE


async def test_a_replay_that_lost_the_race_adopts_the_first_snapshot(
    registry: Registry, broker: str
) -> None:
    await _create_version(registry, running(3, 10))
    adopted = await _create_version(registry, running(3, 12))
    assert adopted.snapshot == {"orders": {"0": 10}}
    assert (await compacted(registry)).versions[3].snapshot == {"orders": {"0": 10}}


async def compacted(registry: Registry) -> RegistryView:
    """The registry as it reads once compacted: the newest record of each key, in order."""
    (records,) = (await read_to_end(registry.settings.kafka, registry.topic)).values()
    newest = {r.key: r for r in records}
    view = RegistryView({}, {})
    for r in sorted(newest.values(), key=lambda r: r.offset):
        if r.value is not None:  # a tombstone: the key is gone
            fold_record(view, r.key, r.value, f"offset {r.offset}")
    return view


async def test_a_claim_that_lost_the_race_never_outlives_the_winner_in_compaction(
    registry: Registry,
) -> None:
    """A process that lost a first-record-wins race and was killed right after its write
    (before it could read the winner back): compaction keeps the winner, as before it."""
    await registry.ensure()  # as `kappa replay` does first: one partition
    await _create_version(registry, running(12, 10))
    await require_definition(registry, await registry.load(), 12)
    await require_split(registry, await registry.load(), 12, 2)
    await registry.claim_version(running(12, 15))  # the losers' writes, nothing after them
    await registry.claim_definition(12, {**version_definition(registry.settings), "grace_ms": 0})
    await registry.claim_split(12, 3)
    for view in (await registry.load(), await compacted(registry)):
        assert view.versions[12].snapshot == {"orders": {"0": 10}}
        assert view.definitions[12] == version_definition(registry.settings)
        assert view.splits[12] == 2


async def test_a_claim_that_lost_to_a_release_before_claims_is_withdrawn(
    registry: Registry,
) -> None:
    """A release before claims writes the winner under the plain key, and later status records
    replace it there: a losing claim left in place would be the version's first record once
    compacted, and its snapshot, window settings or split would take the winner's place."""
    await registry.ensure()  # as `kappa replay` does first: one partition
    old_winner = dataclasses.asdict(running(7, 10))
    await registry.put(("version/7", old_winner), ("definition/7", {"window_ms": 60_000}))
    await registry.put(("split/7", {"processes": 2}))
    adopted = await _create_version(registry, running(7, 15))
    assert adopted.snapshot == {"orders": {"0": 10}}
    with pytest.raises(ConfigError):
        await require_definition(
            Registry(_settings_of(registry, KAPPA_WINDOW_MS="30000")), await registry.load(), 7
        )
    with pytest.raises(ConfigError):
        await require_split(registry, await registry.load(), 7, 3)
    live = {**old_winner, "status": LIVE}  # what the old release writes next, plain keys all
    await registry.put(("version/7", live), ("definition/7", {"window_ms": 60_000}))
    await registry.put(("split/7", {"processes": 2}))
    view = await compacted(registry)
    assert (view.versions[7].status, view.versions[7].snapshot) == (LIVE, {"orders": {"0": 10}})
    assert (view.definitions[7], view.splits[7]) == ({"window_ms": 60_000}, 2)


@pytest.mark.parametrize("other", [{"since_ms": 5}, {"flush": False}])
async def test_a_replay_that_lost_the_race_with_other_arguments_is_refused(
    registry: Registry, broker: str, other: dict[str, Any]
) -> None:
    """`kappa replay --process 1/2 --since T` and `--process 2/2` without it, started at once:
    the second must not run the first's snapshot with its own `--since` (or `--no-flush`)."""
    await registry.ensure()  # as `kappa replay` does first: one partition
    await _create_version(registry, running(4, 10))
    with pytest.raises(ConfigError) as refused:
        await _create_version(registry, running(4, 10, **other))
    assert str(refused.value) == (
        "version 4 was registered at the same moment by another replay, as `kappa replay orders "
        "--version 4`; start every process of a version with the same arguments"
    )
    kept = (await compacted(registry)).versions[4]
    assert (kept.since_ms, kept.flush) == (None, True)


async def test_a_version_running_on_this_machine_is_not_dropped(
    broker: str, unique: str, tmp_path: Path
) -> None:
    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"drop-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )
    await Registry(settings).put_version(VersionRecord(2, COMPLETE, ["orders"]))
    held = lock_state_dir(Topology(settings, 2).state_root())  # as a worker of version 2 does
    try:
        with pytest.raises(ConfigError, match="version 2 is running here"):
            await drop(settings, 2)
    finally:
        held.release()
    assert "dropped version 2" in await drop(settings, 2)
    assert (await Registry(settings).load()).versions[2].status == DROPPED


async def test_diff_refuses_a_dropped_or_unknown_version(broker: str, unique: str) -> None:
    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"diff-{unique}"})
    await Registry(settings).put_version(VersionRecord(2, DROPPED, ["orders"]))
    with pytest.raises(ConfigError, match="version 2 was dropped"):
        await diff(settings, 1, 2)
    with pytest.raises(ConfigError, match="version 3 is not in the registry"):
        await diff(settings, 1, 3)


async def test_a_reader_whose_topics_are_gone_asks_the_registry_why_without_making_it(
    registry: Registry,
) -> None:
    # A restarted dev broker has no registry: nothing to say, and none is made.
    await refuse_if_outputs_dropped(registry.settings, 2)
    assert registry.topic not in await existing_topics(registry.settings.kafka)
    await registry.put_version(VersionRecord(2, COMPLETE, ["orders"]))
    await refuse_if_outputs_dropped(registry.settings, 2)
    await registry.put_dropping(2, True)
    with pytest.raises(ConfigError, match=r"^a drop of version 2 has started"):
        await refuse_if_outputs_dropped(registry.settings, 2)
    await registry.put_version(VersionRecord(2, DROPPED, ["orders"]))
    with pytest.raises(ConfigError, match=r"^version 2 was dropped: its outputs are gone$"):
        await refuse_if_outputs_dropped(registry.settings, 2)


async def test_a_worker_runs_a_version_with_the_since_of_its_replay(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A version replayed with --since keeps skipping older windows once it runs live."""
    from app.worker import create_app
    from app.worker_main import version_to_run

    env = {"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"since-{unique}"}
    settings = load_settings({**env, "KAPPA_STATE_DIR": str(tmp_path)})
    registry = Registry(settings)
    await registry.put_version(VersionRecord(2, COMPLETE, ["orders"], {}, since_ms=60_000))
    await registry.put_version(VersionRecord(3, DROPPED, ["orders"], {}))
    assert (await version_to_run(settings, 2))[:2] == (2, 60_000)
    assert (await version_to_run(settings, None))[:2] == (1, None)  # nothing promoted: 1
    with pytest.raises(ConfigError, match="version 3 was dropped"):
        await version_to_run(settings, 3)
    app = create_app(settings, 2, ["orders"], since_ms=60_000)
    (runner,) = app.kappa_runners
    assert runner.pipeline.config.since_ms == 60_000
    runner.close()


async def test_a_running_replay_keeps_workers_and_drop_of_its_version_out(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.admin import ensure_topics
    from replay import runner
    from replay.runner import ReplayOptions, run_replay
    from replay.summary import ReplaySummary
    from tables.rocks import StateLockedError

    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"held-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )
    await ensure_topics(broker, {f"{unique}.orders": (settings.partitions, {})})
    names = sorted(p.name for p in Topology(settings, 2).pipelines)
    await Registry(settings).put_version(VersionRecord(2, RUNNING, names, {}))
    root = Topology(settings, 2).state_root()
    checked = []

    async def while_replaying(*args: object) -> ReplaySummary:
        with pytest.raises(StateLockedError):
            lock_state_dir(root)  # a worker of version 2
        lock_state_dir(root, shared=True).release()  # another process of this replay
        with pytest.raises(ConfigError, match="version 2 is running here"):
            await drop(settings, 2)
        checked.append(True)
        return ReplaySummary(2)

    monkeypatch.setattr(runner, "_replay", while_replaying)
    await run_replay(settings, ReplayOptions(2, []))
    assert checked
    lock_state_dir(root).release()  # released when the replay ends


async def test_an_exactly_once_replay_stops_its_transactional_producers(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The dev broker has no transactions: the sends are stood in for.)"""
    from app.admin import ensure_topics
    from app.batch_producer import TransactionalSender
    from app.produce import produce_records
    from replay.runner import ReplayOptions, run_replay
    from tests.support.datasets import GOOD_ORDER

    closed: list[str] = []

    async def send(self: TransactionalSender, records: object, commit: object) -> None:
        pass

    async def close(self: TransactionalSender) -> None:
        closed.append(self.prefix)

    async def fence(self: TransactionalSender, partition: int) -> None:
        pass

    monkeypatch.setattr(TransactionalSender, "fence", fence)
    monkeypatch.setattr(TransactionalSender, "send", send)
    monkeypatch.setattr(TransactionalSender, "close", close)
    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"eos-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
            "KAPPA_PROCESSING_GUARANTEE": "exactly_once",
        }
    )
    await ensure_topics(broker, {f"{unique}.orders": (settings.partitions, {})})
    order = json.dumps({**GOOD_ORDER, "product_id": "p1"}).encode()
    await produce_records(broker, f"{unique}.orders", [(b"p1", order)], progress=False)
    await run_replay(settings, ReplayOptions(2, ["orders"], progress=False))
    assert closed == [f"eos-{unique}-v2-orders-replay"]


async def test_a_replay_finishing_after_a_promote_leaves_the_version_live(
    registry: Registry,
) -> None:
    """The replay read `running`, a `promote --force` marked the version live, then the replay
    wrote its completion: the version stays live (it used to be overwritten as complete,
    leaving no version live)."""
    await registry.put_version(running(4, 10))
    await registry.put_version(VersionRecord(4, LIVE, ["orders"], {"orders": {"0": 10}}))
    await registry.put_completion(4)
    view = await registry.load()
    assert view.versions[4].status == LIVE and view.live == 4


async def test_two_promotes_at_once_leave_one_version_live_and_say_so(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read version 2 live before either wrote: the first marked wins, the other says it
    was not promoted and takes its mark back (both used to print "is live")."""
    for v in (2, 3, 4):
        status = LIVE if v == 2 else COMPLETE
        await registry.put_version(VersionRecord(v, status, ["orders"], {"orders": {"0": 10}}))
    both_read = asyncio.Barrier(2)
    first_loads = [0]
    load = Registry.load

    async def load_together(self: Registry, create: bool = True) -> RegistryView:
        view = await load(self, create)
        if first_loads[0] < 2:  # each promote's first read sees the same registry
            first_loads[0] += 1
            await both_read.wait()
        return view

    monkeypatch.setattr(Registry, "load", load_together)
    results = await asyncio.gather(
        *(promote(registry.settings, v, force=False) for v in (3, 4)), return_exceptions=True
    )
    view = await load(registry)
    loser = 4 if view.live == 3 else 3
    assert view.live in (3, 4)
    assert results[view.live - 3] == (
        f"version {view.live} is live (was 2); restart workers without --version to run it"
    )
    refused = results[loser - 3]
    assert isinstance(refused, ConfigError)
    assert str(refused) == (
        f"version {view.live} was promoted at the same time and is live; version {loser} was "
        f"not promoted (run kappa promote {loser} again to make it live)"
    )
    assert view.versions[loser].status == COMPLETE and view.versions[2].status == COMPLETE


async def test_a_replay_finishing_completes_a_running_version_only(registry: Registry) -> None:
    await registry.put_version(running(5, 10))
    await registry.put_completion(5)
    await registry.put_version(running(6, 10))
    await registry.put_version(VersionRecord(6, DROPPED, ["orders"]))
    await registry.put_completion(6)
    await registry.put_completion(7)  # no such version: nothing to complete
    view = await registry.load()
    assert (view.versions[5].status, view.versions[6].status) == (COMPLETE, DROPPED)
    assert 7 not in view.versions


def _settings_of(registry: Registry, **env: str) -> Settings:
    base = {"KAPPA_BROKER": registry.settings.broker, "KAPPA_APP_ID": registry.settings.app_id}
    return load_settings({**base, **env})


async def test_a_versions_window_settings_are_recorded_once_and_then_required(
    registry: Registry,
) -> None:
    await require_definition(registry, await registry.load(), 8)  # the first: recorded
    await require_definition(registry, await registry.load(), 8)  # the same: fine
    other = Registry(_settings_of(registry, KAPPA_WINDOW_MS="30000"))
    with pytest.raises(ConfigError) as refused:
        await require_definition(other, await other.load(), 8)
    assert str(refused.value).startswith(
        "version 8 is built with KAPPA_WINDOW_MS=60000, not KAPPA_WINDOW_MS=30000: a "
        "version's windows and analytics never change; replay into a new version (kappa "
        "replay --version 9)"
    )
    for name, value in (("KAPPA_ANOMALY_Z", "4"), ("KAPPA_TOP_K", "3"), ("KAPPA_QUIET_P", "0.01")):
        tuned = Registry(_settings_of(registry, **{name: value}))
        with pytest.raises(ConfigError, match=f"^version 8 is built with {name}="):
            await require_definition(tuned, await tuned.load(), 8)


async def test_a_definition_recorded_before_the_analytics_settings_means_their_defaults(
    registry: Registry,
) -> None:
    await registry.claim_definition(10, {"window_ms": 60_000, "grace_ms": 10_000})
    view = await registry.load()
    # The defaults then (no guard against far-future times), taken where nothing is set.
    plain = settings_for_version(registry.settings, view, 10)
    assert version_definition(plain) == {**version_definition(Settings()), "max_ts_ahead_ms": 0}
    await require_definition(Registry(plain), view, 10)  # fine
    tuned = _settings_of(registry, KAPPA_TREND_WINDOWS="8")
    with pytest.raises(ConfigError, match="built with KAPPA_TREND_WINDOWS=5, not KAPPA_TREND_W"):
        await require_definition(Registry(settings_for_version(tuned, view, 10)), view, 10)
    guarded = _settings_of(registry, KAPPA_MAX_TS_AHEAD_MS="86400000")
    with pytest.raises(ConfigError, match="built with KAPPA_MAX_TS_AHEAD_MS=0, not KAPPA_MAX_"):
        await require_definition(Registry(settings_for_version(guarded, view, 10)), view, 10)


async def test_of_two_first_runs_with_other_settings_the_first_record_wins(
    registry: Registry,
) -> None:
    stale = await registry.load()  # both read before either wrote
    other = Registry(_settings_of(registry, KAPPA_GRACE_MS="0"))
    await require_definition(other, stale, 9)  # lands first
    with pytest.raises(ConfigError) as refused:
        await require_definition(registry, stale, 9)
    # It left KAPPA_GRACE_MS unset: started again, it takes the winner's.
    assert str(refused.value) == (
        "version 9 is built with KAPPA_GRACE_MS=0, not KAPPA_GRACE_MS=10000, recorded by "
        "another first run of it while this one started: start this one again to take them "
        "(the environment leaves them unset)"
    )
    assert (await compacted(registry)).definitions[9]["grace_ms"] == 0  # the winner's
    given = Registry(_settings_of(registry, KAPPA_GRACE_MS="10000"))
    with pytest.raises(ConfigError, match="KAPPA_GRACE_MS=10000: a version's windows and"):
        await require_definition(given, stale, 9)


async def test_a_version_an_older_release_ran_without_recording_keeps_its_defaults(
    registry: Registry,
) -> None:
    """A release from before definitions were recorded left changelog records and no
    definition: its first run of this release recorded this release's defaults, switching the
    guard against far-future times on mid-life (outputs mixing both, no replay reproducing
    them)."""
    settings = registry.settings
    ran, fresh = Topology(settings, 5), Topology(settings, 6)
    await _changelog_written(ran)
    await ensure_topics(settings.kafka, fresh.topic_spec())
    view = await registry.load()
    assert await ran_unrecorded(settings, view, 5) and not await ran_unrecorded(settings, view, 6)
    _, _, worker_settings = await version_to_run(settings, 5)  # as `kappa worker` starts
    assert worker_settings.max_ts_ahead_ms == 0
    old = await settings_to_run(settings, view, 5)
    assert version_definition(old) == {**version_definition(Settings()), "max_ts_ahead_ms": 0}
    await require_definition(Registry(old), view, 5)  # its first run of this release records it
    assert (await compacted(registry)).definitions[5]["max_ts_ahead_ms"] == 0
    assert (await settings_to_run(settings, view, 6)).max_ts_ahead_ms == 86_400_000
    given = _settings_of(registry, KAPPA_MAX_TS_AHEAD_MS="3600000")  # kept, then refused
    assert (await settings_to_run(given, await registry.load(), 5)).max_ts_ahead_ms == 3_600_000


async def _changelog_written(topology: Topology) -> None:
    """The version's topics, and a record in one of its changelogs: it processed records."""
    settings = topology.settings
    await ensure_topics(settings.kafka, topology.topic_spec())
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        changelog = topology.changelog(topology.pipelines[-1])
        await producer.send_and_wait(changelog, b"state", key=b"k")
    finally:
        await producer.stop()


async def test_a_version_recorded_after_the_view_was_read_is_not_taken_for_an_older_releases(
    registry: Registry,
) -> None:
    """A first run of this release recorded the definition, then wrote its changelog, after
    the view was read: the other run warned of an older release and took its defaults."""
    stale = await registry.load()
    await require_definition(registry, stale, 7)  # recorded, then the records written
    await _changelog_written(Topology(registry.settings, 7))
    assert not await ran_unrecorded(registry.settings, stale, 7)


async def test_a_running_versions_split_is_recorded_once_and_then_required(
    registry: Registry,
) -> None:
    await registry.ensure()  # as `kappa replay` does first: one partition
    await registry.put_version(running(10, 5))
    await require_split(registry, await registry.load(), 10, 2, record=False)  # a check only
    assert 10 not in (await registry.load()).splits
    await require_split(registry, await registry.load(), 10, 2)  # the first: recorded
    await require_split(registry, await registry.load(), 10, 2)  # the same: fine
    with pytest.raises(ConfigError) as refused:
        await require_split(registry, await registry.load(), 10, 3)
    assert str(refused.value) == (
        "version 10 is being replayed by 2 processes (--process I/2 or --processes 2), not 3: "
        "resume every process of it the same way"
    )
    await registry.put_completion(10)  # replayed to its end: nothing left to split
    await require_split(registry, await registry.load(), 10, 3)


async def test_of_two_first_processes_with_other_splits_the_first_record_wins(
    registry: Registry,
) -> None:
    stale = await registry.load()  # `--process 0/2` and `--process 1/3`, started at once
    # (load creates the registry, with one partition)
    await require_split(registry, stale, 11, 2)  # lands first
    with pytest.raises(ConfigError, match="by 2 process"):
        await require_split(registry, stale, 11, 3)
    assert (await compacted(registry)).splits[11] == 2


def _replay_settings(broker: str, unique: str, tmp_path: Path, name: str) -> Settings:
    return load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"{name}-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )


async def test_a_replay_refuses_a_version_dropped_after_its_checks(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `kappa drop` that ends between a replay's checks and its lock: the replay must not
    rebuild the dropped version's topics and state."""
    from app.admin import ensure_topics, existing_topics
    from replay import runner
    from replay.runner import ReplayOptions, run_replay

    settings = _replay_settings(broker, unique, tmp_path, "race")
    await ensure_topics(broker, {f"{unique}.orders": (settings.partitions, {})})
    registry = Registry(settings)
    prepare = runner.prepare_replay

    async def prepare_then_drop(*args: Any, **kwargs: Any) -> Any:
        prepared = await prepare(*args, **kwargs)
        await registry.put_version(VersionRecord(3, DROPPED))  # what `kappa drop 3` writes
        return prepared

    monkeypatch.setattr(runner, "prepare_replay", prepare_then_drop)
    with pytest.raises(ConfigError, match="version 3 was dropped"):
        await run_replay(settings, ReplayOptions(3, ["orders"], progress=False))
    topology = Topology(settings, 3).select(["orders"])
    assert not set(topology.output_topics()) & await existing_topics(broker)
    assert not (await registry.load()).definitions.get(3)


async def test_a_version_whose_drop_did_not_finish_is_not_replayed_or_run(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A drop stopped part way (its topics deleted in part): a replay or worker of the version
    made them anew, empty, then stopped as if the broker had lost its data."""
    from app.admin import ensure_topics, existing_topics
    from app.worker_main import version_to_run
    from replay.registry import refuse_dropped
    from replay.runner import ReplayOptions, run_replay

    settings = _replay_settings(broker, unique, tmp_path, "half-dropped")
    await ensure_topics(broker, {f"{unique}.orders": (settings.partitions, {})})
    registry = Registry(settings)
    ends = {str(p): 0 for p in range(settings.partitions)}
    await registry.put_version(VersionRecord(4, RUNNING, ["orders"], {f"{unique}.orders": ends}))
    await registry.put_dropping(4, True)  # what `kappa drop 4` writes before it deletes
    said = "a drop of version 4 started and has not finished"
    with pytest.raises(ConfigError, match=said):
        await run_replay(settings, ReplayOptions(4, ["orders"], progress=False))
    with pytest.raises(ConfigError, match=said):
        await version_to_run(settings, 4)  # `kappa worker --version 4`
    with pytest.raises(ConfigError, match=said):
        await refuse_dropped(settings, 4)  # `kappa topics --version 4`
    topology = Topology(settings, 4).select(["orders"])
    assert not set(topology.output_topics()) & await existing_topics(broker)
    await registry.put_version(VersionRecord(4, DROPPED))  # the drop, run again, finished
    with pytest.raises(ConfigError, match=r"^version 4 was dropped; replay into a new version"):
        await run_replay(settings, ReplayOptions(4, ["orders"], progress=False))


async def test_a_refused_replay_records_nothing(broker: str, unique: str, tmp_path: Path) -> None:
    """Refused before it starts (here: no source topic), a replay leaves no window settings or
    split behind that a corrected run would then be refused by."""
    from app.topic_reader import TopicMissing
    from replay.runner import ReplayOptions, run_replay

    settings = _replay_settings(broker, unique, tmp_path, "refused")
    with pytest.raises(TopicMissing):
        await run_replay(settings, ReplayOptions(2, ["orders"], progress=False))
    view = await Registry(settings).load()
    assert (view.definitions, view.splits, view.versions) == ({}, {}, {})


@pytest.mark.parametrize("split", [[], ["--processes", "2"]])
async def test_local_state_the_broker_lost_is_refused_before_anything_is_recorded(
    broker: str, unique: str, tmp_path: Path, split: list[str]
) -> None:
    """After a dev-broker restart the registry is empty but the state directory is not: the
    replay was refused (opening that state) only after it had recorded the version as running,
    with a snapshot, and its window settings and split."""
    from app.admin import ensure_topics
    from app.state_guard import state_identity
    from tables.partition_state import APPLIED_OFFSET
    from tables.rocks import RocksStore
    from tests.support.workers import kappa_env, run_kappa

    env = kappa_env(broker, unique, tmp_path)
    settings = load_settings({k: v for k, v in env.items() if k.startswith("KAPPA_")})
    await ensure_topics(broker, {f"{unique}.orders": (settings.partitions, {})})
    topology = Topology(settings, 2)
    (orders,) = (p for p in topology.pipelines if p.name == "orders")
    store = RocksStore(topology.state_path(orders, 1), state_identity(topology, "orders", 1))
    store.write({APPLIED_OFFSET: (41).to_bytes(8, "big", signed=True)})  # the lost broker's
    store.close()
    r = run_kappa(["replay", "--version", "2", "--no-progress", *split], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(
        f"kappa replay: error: {topology.changelog(orders)}[1]: the changelog reflects source "
        "offset -1 but the local state has applied up to 41: the broker lost its data"
    ), line
    assert f"remove {tmp_path / 'v2'} to start over" in line, line
    view = await Registry(settings).load()
    assert (view.versions, view.definitions, view.splits) == ({}, {}, {})
    assert not set(topology.output_topics()) & await existing_topics(broker)


async def test_local_state_its_changelog_holds_passes_the_check_before_recording(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A version `kappa worker --version N` ran has state and no registry record either: its
    state passes when its changelog reflects it, and only this process's partitions count."""
    import struct

    from app.admin import ensure_topics
    from app.kafka_clients import new_producer
    from app.state_guard import BrokerDataLost, state_identity
    from replay.runner import refuse_lost_state
    from tables.partition_state import APPLIED_OFFSET
    from tables.rocks import RocksStore

    settings = _replay_settings(broker, unique, tmp_path, "worker-ran")
    topology = Topology(settings, 2).select(["orders"])
    (orders,) = topology.pipelines
    changelog = topology.changelog(orders)
    await ensure_topics(broker, {changelog: (settings.partitions, {"cleanup.policy": "compact"})})
    store = RocksStore(topology.state_path(orders, 1), state_identity(topology, "orders", 1))
    store.write({APPLIED_OFFSET: struct.pack(">q", 41)})
    store.close()
    producer = new_producer(broker)
    await producer.start()
    try:  # as the worker's last batch left it
        await producer.send_and_wait(changelog, struct.pack(">q", 41), APPLIED_OFFSET, 1)
        await refuse_lost_state(topology, (0, 1))
        await producer.send_and_wait(changelog, struct.pack(">q", 40), APPLIED_OFFSET, 1)
    finally:
        await producer.stop()
    await refuse_lost_state(topology, (0, 2))  # partition 1 is another process's
    with pytest.raises(BrokerDataLost, match=r"reflects source offset 40 but the local state"):
        await refuse_lost_state(topology, (1, 2))


async def test_a_split_replay_is_resumed_by_the_same_processes_option(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """`--processes 2` killed midway and run again: its pre-check compares the recorded split
    with 2, not with the parent's own share (1 of 1); `--processes 3` is refused."""
    from app.admin import ensure_topics
    from tests.support.workers import kappa_env, run_kappa

    env = kappa_env(broker, unique, tmp_path)
    settings = load_settings({k: v for k, v in env.items() if k.startswith("KAPPA_")})
    await ensure_topics(broker, {f"{unique}.orders": (settings.partitions, {})})
    registry = Registry(settings)
    names = sorted(p.name for p in Topology(settings, 2).pipelines)
    await registry.ensure()
    empty = {f"{unique}.orders": {str(p): 0 for p in range(settings.partitions)}}
    await registry.put_version(VersionRecord(2, RUNNING, names, empty))
    await registry.claim_split(2, 2)  # as the children of a killed `--processes 2` left it
    refused = run_kappa(["replay", "--version", "2", "--processes", "3"], env)
    assert refused.returncode == 2 and "being replayed by 2 processes" in refused.stderr
    resumed = run_kappa(["replay", "--version", "2", "--processes", "2"], env, timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


async def _versions_registry(registry: Registry, tmp_path: Path) -> tuple[Settings, Registry]:
    """Settings whose topics and state are the test's own, and their registry, created (one
    partition: a topic the broker auto-creates would have four, and lose the records' order)."""
    settings = _settings_of(
        registry, KAPPA_STATE_DIR=str(tmp_path), KAPPA_TOPIC_PREFIX=f"{registry.settings.app_id}."
    )
    registry = Registry(settings)
    await registry.ensure()
    return settings, registry


async def test_a_promote_during_a_drop_of_the_same_version_is_refused(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promote landing while the drop deleted the version's group and topics used to succeed:
    the drop then marked it dropped, and no version was live."""
    settings, registry = await _versions_registry(registry, tmp_path)
    for v, status in ((2, LIVE), (3, COMPLETE)):
        await registry.put_version(VersionRecord(v, status, ["orders"], {"orders": {"0": 1}}))
    promoted: list[object] = []
    delete_group = versions._delete_group

    async def promote_meanwhile(*args: Any, **kwargs: Any) -> str:
        try:
            promoted.append(await promote(settings, 3, force=False))
        except ConfigError as e:
            promoted.append(e)
        return await delete_group(*args, **kwargs)

    monkeypatch.setattr(versions, "_delete_group", promote_meanwhile)
    assert (await drop(settings, 3)).startswith("dropped version 3")
    (refused,) = promoted
    assert str(refused) == (
        "version 3 is being dropped, or a drop of it stopped part way (run kappa drop 3 again "
        "to finish it); not promoted"
    )
    view = await registry.load()
    assert view.live == 2 and view.versions[3].status == DROPPED


async def test_a_drop_that_sees_the_version_promoted_meanwhile_backs_out(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promote marked it live between the drop's first read and its own mark."""
    settings, registry = await _versions_registry(registry, tmp_path)
    for v, status in ((2, LIVE), (3, COMPLETE)):
        await registry.put_version(VersionRecord(v, status, ["orders"], {"orders": {"0": 1}}))
    put_dropping = Registry.put_dropping

    async def promoted_first(self: Registry, version: int, active: bool) -> None:
        if active:  # the promote's mark lands just before the drop's
            await self.put_version(VersionRecord(3, LIVE, ["orders"], {"orders": {"0": 1}}))
        await put_dropping(self, version, active)

    monkeypatch.setattr(Registry, "put_dropping", promoted_first)
    with pytest.raises(ConfigError) as refused:
        await drop(settings, 3)
    assert str(refused.value) == "version 3 was promoted while it was being dropped; not dropped"
    view = await registry.load()
    assert 3 not in view.dropping and view.versions[3].status == LIVE  # the promote goes on


async def test_a_promote_that_sees_a_drop_started_meanwhile_takes_its_mark_back(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    await registry.ensure()
    for v, status in ((2, LIVE), (3, COMPLETE)):
        await registry.put_version(VersionRecord(v, status, ["orders"], {"orders": {"0": 1}}))
    put_version = Registry.put_version

    async def dropped_meanwhile(self: Registry, rec: VersionRecord) -> None:
        await put_version(self, rec)
        if rec.version == 3 and rec.status == LIVE:  # the drop's mark lands just after
            await self.put_dropping(3, True)

    monkeypatch.setattr(Registry, "put_version", dropped_meanwhile)
    with pytest.raises(ConfigError, match="version 3 is being dropped"):
        await promote(registry.settings, 3, force=False)
    view = await registry.load()
    assert view.live == 2 and view.versions[3].status == COMPLETE


async def test_a_version_a_stopped_promote_marked_live_is_not_dropped(
    registry: Registry, tmp_path: Path
) -> None:
    settings, registry = await _versions_registry(registry, tmp_path)
    for v, status in ((2, LIVE), (3, LIVE)):  # 3: marked after 2, so `promoting`
        await registry.put_version(VersionRecord(v, status, ["orders"], {"orders": {"0": 1}}))
    with pytest.raises(ConfigError, match=r"^version 3 is being promoted, or a promote of it"):
        await drop(settings, 3)
    assert 3 not in (await registry.load()).dropping  # refused before anything was written


async def test_a_source_shorter_than_the_versions_snapshot_is_one_line(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A source topic deleted and created again since the version was registered: resuming
    the version waited forever for offsets the log no longer reaches."""
    from app.admin import ensure_topics
    from replay.runner import ReplayOptions, run_replay

    settings = _replay_settings(broker, unique, tmp_path, "short")
    source = f"{unique}.orders"
    await ensure_topics(broker, {source: (settings.partitions, {})})
    registry = Registry(settings)
    await registry.ensure()
    ends = {str(p): 0 for p in range(settings.partitions)} | {"0": 5}  # 5 records, once
    await registry.put_version(VersionRecord(2, RUNNING, ["orders"], {source: ends}))
    with pytest.raises(ConfigError) as refused:
        await asyncio.wait_for(
            run_replay(settings, ReplayOptions(2, ["orders"], progress=False)), 60
        )
    assert str(refused.value) == (
        f"{source}[0] now ends at offset 0, before offset 5 where this replay's snapshot ends: "
        "the topic was deleted and created again, or truncated; replay into a new version"
    )


async def test_a_version_promoted_before_its_replay_ended_is_running_again_when_moved_aside(
    registry: Registry,
) -> None:
    """It came back as `complete`, and a promote without --force then took it."""
    await registry.ensure()
    await registry.put_version(VersionRecord(2, LIVE, ["orders"], {"orders": {"0": 1}}))
    await registry.put_version(running(3, 10, replay_done=False))
    await registry.put_version(VersionRecord(4, COMPLETE, ["orders"], {"orders": {"0": 1}}))
    await promote(registry.settings, 3, force=True)
    await promote(registry.settings, 4, force=False)
    view = await registry.load()
    assert (view.live, view.versions[3].status) == (4, RUNNING)
    with pytest.raises(ConfigError, match="version 3 is running: its replay has not completed"):
        await promote(registry.settings, 3, force=False)
    await registry.put_completion(3)  # its replay, resumed, reached the snapshot
    assert (await registry.load()).versions[3].status == COMPLETE


async def test_status_versions_and_diff_read_the_registry_without_making_it(
    registry: Registry,
) -> None:
    """Read-only commands: `kappa status` with a mistyped KAPPA_APP_ID or KAPPA_TOPIC_PREFIX
    left a stray compacted `...-versions` topic on the cluster."""
    settings = registry.settings
    assert (await versions.status(settings)).startswith("live version: 1 (consumer group ")
    assert "live" in (await versions.list_versions(settings)).splitlines()[1]
    with pytest.raises(ConfigError, match="version 2 is not in the registry"):
        await diff(settings, 1, 2)
    assert registry.topic not in await existing_topics(settings.kafka)


async def test_promote_and_drop_refuse_an_unknown_version_without_making_the_registry(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """`kappa promote 3` or `kappa drop 3` with a mistyped KAPPA_APP_ID or KAPPA_TOPIC_PREFIX
    created the registry topic, then refused: a stray compacted `...-versions` topic stayed."""
    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"typo-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )
    registry = Registry(settings)
    for refused in (promote(settings, 3, force=True), drop(settings, 3)):
        with pytest.raises(ConfigError, match=r"^version 3 is not in the registry \(known: 1\)$"):
            await refused
    assert await promote(settings, 1, force=False) == "version 1 is already live"
    with pytest.raises(ConfigError, match=r"^version 1 is live; promote another version"):
        await drop(settings, 1)
    assert registry.topic not in await existing_topics(settings.kafka)
    # Once there, as before: the first promote records version 1, which it moves aside.
    await registry.put_version(VersionRecord(2, COMPLETE, ["orders"]))
    assert (await promote(settings, 2, force=False)).startswith("version 2 is live (was 1); ")
    view = await registry.load()
    assert (view.live, view.versions[1].status) == (2, COMPLETE)
    assert "dropped version 1" in await drop(settings, 1)
    assert (await registry.load()).versions[1].status == DROPPED

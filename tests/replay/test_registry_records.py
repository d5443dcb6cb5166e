"""Reading the version registry without a broker: records fold into a view, and a record
Kappa did not write is one clear error."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest

from app.settings import ConfigError, load_settings
from app.topology import Topology
from replay.registry import RegistryView, VersionRecord, fold_record
from replay.runner import ReplayOptions, _check_version


def test_version_and_progress_records_fold_into_the_view() -> None:
    view = RegistryView({}, {})
    first = VersionRecord(2, "replaying", ["orders"], {"orders": {"0": 5}})
    fold_record(view, b"version/2", json.dumps(first.__dict__).encode(), "here")
    later = VersionRecord(2, "ready", ["other"], {})
    fold_record(view, b"version/2", json.dumps(later.__dict__).encode(), "here")
    fold_record(view, b"progress/2/orders/0", b'{"end": 5}', "here")
    assert view.versions[2].status == "ready"
    assert view.versions[2].pipelines == ["orders"]  # a version's definition is its first record's
    assert view.progress == {(2, "orders"): {0: 5}}


def test_a_versions_first_claim_holds_and_a_later_claim_changes_nothing() -> None:
    """Claims (`version/N/ID`) register a version's creation: the first one by offset defines
    it, later plain records change its status, and a claim that lost the race does neither."""
    view = RegistryView({}, {})
    first = VersionRecord(2, "running", ["orders"], {"orders": {"0": 5}})
    fold_record(view, b"version/2/a", json.dumps(first.__dict__).encode(), "here")
    live = VersionRecord(2, "live", ["orders"], {"orders": {"0": 5}})
    fold_record(view, b"version/2", json.dumps(live.__dict__).encode(), "here")
    marked = dict(view.marked)
    lost = VersionRecord(2, "running", ["other"], {"orders": {"0": 9}})
    fold_record(view, b"version/2/b", json.dumps(lost.__dict__).encode(), "here")
    assert (view.versions[2].status, view.versions[2].snapshot) == ("live", {"orders": {"0": 5}})
    assert view.marked == marked
    fold_record(view, b"definition/2/a", b'{"window_ms": 1}', "here")
    fold_record(view, b"definition/2/b", b'{"window_ms": 2}', "here")
    fold_record(view, b"split/2/a", b'{"processes": 2}', "here")
    fold_record(view, b"split/2/b", b'{"processes": 3}', "here")
    assert (view.definitions[2], view.splits[2]) == ({"window_ms": 1}, 2)


@pytest.mark.parametrize(
    "key,value",
    [
        (b"version/2", b"not json"),
        (b"version/2", b'{"unknown": 1}'),
        (b"version/x", b'{"version": 2, "status": "live"}'),
        (b"progress/2/orders", b'{"end": 5}'),
        (b"progress/2/orders/0", b'{"start": 5}'),
        (b"version/2", b"[" * 5000 + b"]" * 5000),
        (b"\xff", b"{}"),
    ],
)
def test_a_record_kappa_did_not_write_is_one_line_naming_where_it_is(
    key: bytes, value: bytes
) -> None:
    with pytest.raises(ConfigError) as err:
        fold_record(RegistryView({}, {}), key, value, "kappa-versions offset 7")
    assert "offset 7" in str(err.value) and "\n" not in str(err.value)


def _fold(view: RegistryView, version: int, status: str) -> None:
    rec = VersionRecord(version, status, ["orders"], {})
    fold_record(view, f"version/{version}".encode(), json.dumps(rec.__dict__).encode(), "here")


def test_of_two_versions_marked_live_the_one_marked_first_is_live() -> None:
    view = RegistryView({}, {})
    assert view.live == 1  # before any promote
    _fold(view, 2, "live")
    _fold(view, 3, "complete")
    _fold(view, 3, "live")  # a promote of 3 that stopped before marking 2 complete
    assert view.live == 2
    _fold(view, 2, "complete")
    assert view.live == 3


class _Log:
    """An in-memory registry topic, whose writes can stop after a number of records."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.stop_after: int | None = None

    async def load(self, create: bool = True) -> RegistryView:
        view = RegistryView({}, {})
        for key, value in self.records:
            fold_record(view, key, value, "here")
        return view

    async def put_version(self, rec: VersionRecord) -> None:
        if self.stop_after is not None and len(self.records) >= self.stop_after:
            raise ConnectionError("the broker went away")
        self.records.append((f"version/{rec.version}".encode(), json.dumps(rec.__dict__).encode()))


async def test_promotes_that_stop_halfway_change_nothing_and_can_be_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from replay import versions

    registry = _Log()
    monkeypatch.setattr(versions, "Registry", lambda settings: registry)
    for v in (2, 3, 4):
        await registry.put_version(VersionRecord(v, "complete", ["orders"], {}))

    async def promote(version: int, writes: int | None = None) -> None:
        registry.stop_after = None if writes is None else len(registry.records) + writes
        with contextlib.suppress(ConnectionError):
            await versions.promote(None, version, force=False)  # type: ignore[arg-type]

    await promote(2, writes=2)  # the first promote ever: version 1 gets its own live record
    assert (await registry.load()).live == 1
    await promote(2)
    assert (await registry.load()).live == 2
    await promote(3, writes=1)  # stopped after marking 3 live
    assert (await registry.load()).live == 2
    await promote(4)  # 2 and the stale 3 are marked complete
    view = await registry.load()
    assert view.live == 4 and [view.versions[v].status for v in (1, 2, 3)] == ["complete"] * 3


def test_a_refusal_suggests_a_version_number_nothing_has_used() -> None:
    """A replay that stopped after recording only its window settings or split used a number."""
    view = RegistryView({}, {})
    assert view.unused_version == 2  # version 1 is live before any promote
    fold_record(view, b"version/3", json.dumps(VersionRecord(3, "complete").__dict__).encode(), "")
    fold_record(view, b"definition/5", b'{"window_ms": 60000}', "here")
    assert view.unused_version == 6
    fold_record(view, b"split/7", b'{"processes": 2}', "here")
    assert view.unused_version == 8


def test_a_record_from_before_flush_was_recorded_reads_as_flushed() -> None:
    view = RegistryView({}, {})
    fold_record(view, b"version/2", b'{"version": 2, "status": "running"}', "here")
    assert view.versions[2].flush is True
    unflushed = VersionRecord(3, "running", flush=False)
    fold_record(view, b"version/3", json.dumps(unflushed.__dict__).encode(), "here")
    later = VersionRecord(3, "complete")  # a status change: the definition stays the first's
    fold_record(view, b"version/3", json.dumps(later.__dict__).encode(), "here")
    assert (view.versions[3].status, view.versions[3].flush) == ("complete", False)


@pytest.mark.parametrize("flushed", [True, False])
def test_a_version_is_resumed_only_with_its_flush_setting(flushed: bool) -> None:
    """Processes of one version that differ in `--no-flush` would leave provisional windows
    in its outputs for some partitions only."""
    view = RegistryView({2: VersionRecord(2, "running", ["orders"], flush=flushed)}, {})
    topology = Topology(load_settings({}), 2).select(["orders"])
    same = ReplayOptions(version=2, pipelines=["orders"], flush=flushed)
    assert _check_version(view, topology, same) is view.versions[2]
    since = dataclasses.replace(same, since_ms=60_000)
    with pytest.raises(ConfigError) as refused:
        _check_version(view, topology, since)
    no_flush = "" if flushed else " --no-flush"
    assert str(refused.value) == (  # as typed, not Python's ['orders'] and None
        f"version 2 exists as `kappa replay orders --version 2{no_flush}`; resume it with the "
        "same arguments or use a new version"
    )
    other = dataclasses.replace(same, flush=not flushed)
    with pytest.raises(ConfigError) as refused:
        _check_version(view, topology, other)
    said = (  # the recorded run first, then this one (they were swapped)
        "was replayed without --no-flush and this replay is with it"
        if flushed
        else "was replayed with --no-flush and this replay is without it"
    )
    assert str(refused.value) == (
        f"version 2 {said}; resume it with the same arguments or use a new version"
    )


def test_an_unknown_version_is_refused_naming_the_live_one_among_the_known() -> None:
    """Before any replay the registry holds no record, yet version 1 is live (and listed by
    `kappa versions`): "known: none" contradicted it."""
    from replay.registry import require_version

    with pytest.raises(ConfigError) as refused:
        require_version(RegistryView({}, {}), 5)
    assert str(refused.value) == "version 5 is not in the registry (known: 1)"
    with pytest.raises(ConfigError) as refused:  # as `kappa versions` lists them
        require_version(RegistryView({}, {}), 5, unrecorded=[12])
    assert str(refused.value) == "version 5 is not in the registry (known: 1; unrecorded: 12)"
    with pytest.raises(ConfigError) as refused:
        require_version(RegistryView({}, {}), 12, unrecorded=[12])
    assert str(refused.value).startswith(
        "version 12 is unrecorded: its topics are on the broker, but no replay recorded it"
    )

"""The RocksDB adapter refuses state it must not use, with one line that says what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import tables.rocks as rocks
from tables.rocks import (
    MARKER,
    SHARED_WRITE_BUFFERS,
    ForeignStateError,
    RocksStore,
    StateError,
    StateIOError,
    StateLockedError,
    StateUnreadableError,
)

IDENTITY = {
    "app_id": "kappa",
    "topic_prefix": "team-a.",
    "version": 1,
    "pipeline": "orders",
    "partition": 3,
}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "v1" / "orders" / "p3"


@pytest.fixture
def stores() -> Iterator[list[RocksStore]]:
    """Stores a test opens; closed at the end whatever happens."""
    opened: list[RocksStore] = []
    yield opened
    for s in opened:
        s.close()


def _make(path: Path, identity: dict[str, object] | None = IDENTITY) -> None:
    store = RocksStore(path, identity)
    store.write({b"k": b"v" * 2000})
    store.close()


def _assert_rebuild_advice(err: Exception, path: Path) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert f"rm -rf {path}" in msg
    assert "rebuilt from its source" in msg


def test_existing_callers_pass_only_a_path_and_get_no_marker(path: Path) -> None:
    _make(path, identity=None)
    assert not (path / MARKER).exists()
    store = RocksStore(path)
    try:
        assert store.get_many([b"k"]) == [b"v" * 2000]
    finally:
        store.close()


def test_a_new_store_records_its_identity(path: Path) -> None:
    _make(path)
    assert json.loads((path / MARKER).read_text()) == IDENTITY
    store = RocksStore(path, IDENTITY)  # the same identity opens it again
    try:
        assert store.get_many([b"k"]) == [b"v" * 2000]
    finally:
        store.close()


def test_an_unmarked_store_is_adopted(path: Path) -> None:
    _make(path, identity=None)
    _make(path)
    assert json.loads((path / MARKER).read_text()) == IDENTITY


@pytest.mark.parametrize(
    "field,value",
    [
        ("app_id", "someone-else"),
        ("pipeline", "user-totals"),
        ("partition", 1),
        # another prefix's changelog: was refused as "the broker lost its data", or rebuilt
        ("topic_prefix", "team-b."),
    ],
)
def test_a_foreign_marker_is_refused(path: Path, field: str, value: object) -> None:
    _make(path, {**IDENTITY, field: value})
    with pytest.raises(ForeignStateError) as e:
        RocksStore(path, IDENTITY)
    assert str(path) in str(e.value)
    assert f"{field}={value!r}" in str(e.value)
    _assert_rebuild_advice(e.value, path)


def test_a_marker_written_before_the_prefix_was_recorded_is_not_foreign(path: Path) -> None:
    _make(path, {k: v for k, v in IDENTITY.items() if k != "topic_prefix"})
    RocksStore(path, IDENTITY).close()


def test_another_version_of_the_same_partition_is_not_foreign(path: Path) -> None:
    _make(path, {**IDENTITY, "version": 7})
    RocksStore(path, IDENTITY).close()


def test_an_unparseable_marker_is_refused(path: Path) -> None:
    _make(path)
    (path / MARKER).write_bytes(b"\x00\xffnot json")
    with pytest.raises(StateUnreadableError) as e:
        RocksStore(path, IDENTITY)
    _assert_rebuild_advice(e.value, path)


def test_garbage_files_without_a_database_are_refused(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("not a database")
    with pytest.raises(StateUnreadableError) as e:
        RocksStore(path, IDENTITY)
    assert "not a RocksDB database" in str(e.value)
    _assert_rebuild_advice(e.value, path)
    assert not (path / "CURRENT").exists()  # nothing was created among the foreign files


def test_an_empty_directory_becomes_a_store(path: Path) -> None:
    path.mkdir(parents=True)
    RocksStore(path, IDENTITY).close()
    assert (path / "CURRENT").exists()


@pytest.mark.parametrize("victim", ["CURRENT", "MANIFEST-"])
def test_a_corrupt_database_is_refused(path: Path, victim: str) -> None:
    _make(path)
    for f in path.iterdir():
        if f.name.startswith(victim):
            f.write_bytes(b"\x00garbage\x01" * 40)
    with pytest.raises(StateUnreadableError) as e:
        RocksStore(path, IDENTITY)
    assert f"state at {path} is unreadable (" in str(e.value)
    _assert_rebuild_advice(e.value, path)


def test_corruption_mentioning_a_block_is_not_taken_for_a_lock(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(*args: object) -> None:
        raise Exception("Corruption: block checksum mismatch: stored = 1, computed = 2")

    monkeypatch.setattr(rocks, "Rdict", corrupt)
    with pytest.raises(StateUnreadableError, match="block checksum mismatch"):
        RocksStore(path, IDENTITY)


def test_a_store_open_elsewhere_in_this_process_is_locked(
    path: Path, stores: list[RocksStore]
) -> None:
    stores.append(RocksStore(path, IDENTITY))
    with pytest.raises(StateLockedError) as e:
        RocksStore(path, IDENTITY)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    # its advice is not to start again: the same for a replay
    assert e.value.with_rerun("run the replay again") is e.value
    assert "or a replay of the same partitions of this version" in str(e.value)  # not only
    stores.pop().close()
    RocksStore(path, IDENTITY).close()  # free again once closed


# -- the same refusal in a replay's words ------------------------------------------------------


def _refusals(path: Path) -> list[StateError]:
    """Unreadable, foreign, and an I/O error of an open store, as a worker meets them."""
    found: list[StateError] = []
    _make(path, {**IDENTITY, "app_id": "someone-else"})
    with pytest.raises(ForeignStateError) as foreign:
        RocksStore(path, IDENTITY)
    found.append(foreign.value)
    (path / MARKER).write_bytes(b"[]")
    with pytest.raises(StateUnreadableError) as unreadable:
        RocksStore(path, IDENTITY)
    found.append(unreadable.value)
    store = RocksStore(path)
    try:
        # as rocksdict raises them: a bare Exception
        with pytest.raises(StateIOError) as io, store._io_errors():
            raise Exception("IO error: No space left on device")
        found.append(io.value)
    finally:
        store.close()
    return found


def test_a_replay_is_told_to_run_again_where_a_worker_is_told_to_restart(path: Path) -> None:
    """The same line but for the advice (`replay/runner.py` asks for it): the replay has
    stopped by then, so it is not told to stop the worker either."""
    for worker_error in _refusals(path):
        worker = str(worker_error)
        replay_error = worker_error.with_rerun("run the replay again")
        replay = str(replay_error)
        assert type(replay_error) is type(worker_error)
        assert worker.endswith(
            f"`rm -rf {path}` and restart; the partition is rebuilt from its source"
        )
        assert replay == worker.replace("stop the worker, ", "").replace(
            " and restart;", " and run the replay again;"
        )
        assert "restart" not in replay and "\n" not in replay
        assert str(worker_error) == worker  # the worker's own is left as it was


def test_an_io_error_tells_a_worker_to_stop_first(path: Path) -> None:
    (*_, io) = _refusals(path)
    assert str(io) == (
        f"state at {path} failed: IO error: No space left on device: stop the worker, remove "
        f"it with `rm -rf {path}` and restart; the partition is rebuilt from its source"
    )
    assert str(io.with_rerun("run the replay again")) == (
        f"state at {path} failed: IO error: No space left on device: remove it with "
        f"`rm -rf {path}` and run the replay again; the partition is rebuilt from its source"
    )

    plain = StateError("cannot create state directory /x: Permission denied")
    assert plain.with_rerun("run the replay again") is plain


def test_memtables_of_every_store_share_one_bound(tmp_path: Path) -> None:
    """Each database's write buffers (8 MB, two of them) times the stores a worker holds (a
    store per pipeline and partition) grew past the memory a process should need: the stores
    share one bound on the memtables being written (`SHARED_WRITE_BUFFERS`)."""
    stores = [RocksStore(tmp_path / f"p{i}") for i in range(12)]
    value = bytes(1024)
    try:
        for chunk in range(6):  # batch after batch, every store: 6 MB each, under its own bound
            for i, store in enumerate(stores):
                store.write({f"{i}-{chunk}-{k}".encode(): value for k in range(1024)})
        active = sum(
            s.db.property_int_value("rocksdb.cur-size-active-mem-table") or 0 for s in stores
        )
        # A soft bound (the store being written flushes; seen up to 36 MB under a loaded
        # suite): well under the 72 MB these stores hold without it.
        assert active <= 1.5 * SHARED_WRITE_BUFFERS.get_buffer_size()
    finally:
        for store in stores:
            store.close()

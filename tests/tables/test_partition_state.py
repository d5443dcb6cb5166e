"""PartitionState's layers without a broker or RocksDB: what the pipeline reads (staged, then
held, then stored), what reaches the store and when."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tables.aggregates import Moments
from tables.partition_state import (
    APPLIED_OFFSET,
    ORIGIN,
    MemoryStore,
    PartitionState,
    StateError,
    UndecodableStateError,
)


def _moments(*values: float) -> Moments:
    m = Moments()
    m.add_many(list(values))
    return m


def test_the_pipeline_reads_staged_then_held_then_stored_values_and_queries_skip_staged() -> None:
    store = MemoryStore()
    state = PartitionState(store, 0)
    for key in ("a", "b", "c"):
        state.put_value("t", key, b"stored-" + key.encode())
    state.prepare(0)
    state.commit()
    state.put_value("t", "b", b"held")
    state.put_value("t", "c", b"held")
    state.prepare(1)
    state.hold()
    state.put_value("t", "c", b"staged")
    assert state.get_values("t", ["a", "b", "c"]) == [b"stored-a", b"held", b"staged"]
    # Readers outside the pipeline (queries) never see a batch in progress: a failed send
    # discards it.
    assert state.settled_values("t", ["a", "b", "c"]) == [b"stored-a", b"held", b"held"]
    assert store.data[b"Kt\0b"] == b"stored-b"  # held: not in the store
    assert state.applied_offset == 1  # what the pipeline has applied, held included
    state.commit_held()
    assert store.data[b"Kt\0b"] == b"held" and not state.held()


def test_a_closing_scan_sees_held_windows_and_not_those_the_held_batch_deleted() -> None:
    store = MemoryStore()
    state = PartitionState(store, 0)
    windows = state.windows("w")
    windows.put({(60, 0, "stored"): _moments(1.0), (60, 0, "deleted"): _moments(2.0)})
    state.prepare(0)
    state.commit()
    windows.put({(60, 0, "held"): _moments(3.0), (60, 0, "stored"): _moments(1.0, 4.0)})
    windows.delete([(60, 0, "deleted")])
    state.prepare(1)
    state.hold()
    found = {k[2]: m.count for k, m in windows.expiring(60)}
    assert found == {"held": 1, "stored": 2}
    assert [k for k, _ in windows.expiring(60)] == sorted(k for k, _ in windows.expiring(60))


class _FailingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        if self.fail:
            raise OSError("disk full")
        super().write(changes)


def test_a_held_batch_whose_write_fails_stays_held() -> None:
    """Else the state would say the batch is applied while neither memory nor the store has
    it, and the next batches would build on what came before it."""
    store = _FailingStore()
    state = PartitionState(store, 0)
    state.put_value("t", "a", b"1")
    state.prepare(5)
    state.hold()
    store.fail = True
    with pytest.raises(OSError):
        state.commit_held()
    assert state.get_values("t", ["a"]) == [b"1"] and state.held()
    state.put_value("t", "b", b"2")
    state.prepare(6)
    with pytest.raises(OSError):
        state.commit()  # a flush-like batch: the held one with it
    assert state.get_values("t", ["a"]) == [b"1"] and state.held()
    state.discard()
    store.fail = False
    state.commit_held()
    assert store.data[b"Kt\0a"] == b"1"


def test_stream_time_is_the_latest_event_time_of_any_clock_and_survives_a_commit() -> None:
    store = MemoryStore()
    state = PartitionState(store, 0)
    assert state.stream_time_ms() is None  # nothing seen yet: no gauge value
    state.clock("a", 10).observe(5_000)
    state.clock("b", 10).observe(7_000)
    assert state.stream_time_ms() == 7_000
    state.prepare(0)
    state.commit()
    reopened = PartitionState(store, 0)
    reopened.clock("a", 10)
    assert reopened.stream_time_ms() == 5_000


def test_a_state_started_from_nothing_writes_its_origin_first_once() -> None:
    """The origin opens the changelog (its first record names the log a local copy came from);
    a failed first batch keeps it (its records may have landed all the same), and later
    batches do not repeat it."""
    origins = iter([b"o1", b"o2", b"o3"])
    state = PartitionState(MemoryStore(), 0, new_origin=lambda: next(origins))
    state.put_value("t", "a", b"1")
    assert state.prepare(0)[0] == (ORIGIN, b"o1")
    state.discard()
    state.put_value("t", "a", b"1")
    first = state.prepare(0)
    assert first[0] == (ORIGIN, b"o1") and first[-1][0] == APPLIED_OFFSET
    state.hold()
    state.put_value("t", "a", b"2")
    assert all(k != ORIGIN for k, _ in state.prepare(1))
    state.commit()
    assert state.origin() == b"o1"


def test_a_state_with_batches_but_no_origin_gets_none() -> None:
    """A state written before origins: an origin now would not be its log's first record."""
    store = MemoryStore()
    store.write({b"Kt\0a": b"1", APPLIED_OFFSET: struct.pack(">q", 0)})
    state = PartitionState(store, 0)
    state.put_value("t", "a", b"2")
    assert all(k != ORIGIN for k, _ in state.prepare(1)) and state.origin() is None


def test_a_scan_of_a_table_sees_the_staged_and_held_batches_over_the_store() -> None:
    state = PartitionState(MemoryStore(), 0)
    for key in ("a", "b", "c", "z"):
        state.put_value("t", key, key.encode())
    state.put_value("other", "b", b"x")
    state.prepare(0)
    state.commit()
    state.put_value("t", "b", None)
    state.put_value("t", "bb", b"new")
    state.prepare(1)
    state.hold()  # acknowledged outputs, changelog not yet: read through
    state.put_value("t", "c", b"C")
    assert state.scan_values("t", "a", "d") == [("a", b"a"), ("bb", b"new"), ("c", b"C")]


# -- values the state holds that cannot be decoded -------------------------------------------


def _raises_undecodable(call: Callable[[], object]) -> str:
    """The one line `call` stops with: an `UndecodableStateError`, a `StateError`."""
    with pytest.raises(UndecodableStateError) as caught:
        call()
    assert isinstance(caught.value, StateError)
    line = str(caught.value)
    assert "\n" not in line
    return line


def test_an_undecodable_value_is_named_with_its_store_partition_key_and_remedy() -> None:
    state = PartitionState(
        MemoryStore(), 3, pipeline="product-trends", directory=Path("/s/v2/product-trends/p3")
    )
    entries = [("a", b"fine"), ("b", None), ("c\nd", b"bad")]

    def decode(raw: bytes) -> bytes:
        if raw == b"bad":
            raise struct.error("unpack requires a buffer of 8 bytes")
        return raw

    line = _raises_undecodable(
        lambda: state.raise_undecodable("trends", entries, decode, ValueError("first"))
    )
    assert line.startswith(
        "product-trends partition 3: the stored trends value of key 'c\\nd' cannot be decoded "
        "(struct.error: unpack requires a buffer of 8 bytes): remove the partition's state "
        "directory (`rm -rf /s/v2/product-trends/p3`) and restart the worker: it is restored "
        "from its changelog; if the changelog holds it too,"
    )


def test_a_replay_is_advised_to_run_again_where_a_worker_is_advised_to_restart() -> None:
    """The line is built where the state is read, which is the same for both: the replay
    gives its own advice (`replay/runner.py`), the rest of the line unchanged."""
    state = PartitionState(MemoryStore(), 1, pipeline="orders", directory=Path("/s/v3/orders/p1"))
    with pytest.raises(UndecodableStateError) as caught:
        state.raise_undecodable("t", [("k", b"\x00")], struct.Struct(">q").unpack, ValueError())
    worker = str(caught.value)
    replay = str(caught.value.with_rerun("run the replay again"))
    head = "orders partition 1: the stored t value of key 'k' cannot be decoded (struct.error: "
    rm = "remove the partition's state directory (`rm -rf /s/v3/orders/p1`) and"
    assert worker.startswith(head) and replay.startswith(head)
    assert f"{rm} restart the worker: it is restored" in worker
    assert f"{rm} run the replay again: it is restored" in replay
    assert worker.replace("restart the worker", "run the replay again") == replay


def test_an_error_no_stored_value_causes_is_raised_as_it_was() -> None:
    """A bug met while decoding is not the state's fault: it stays what it was."""
    state = PartitionState(MemoryStore(), 0)
    error = KeyError("not a decoding error")
    with pytest.raises(KeyError) as caught:
        state.raise_undecodable("t", [("a", b"fine")], bytes, error)
    assert caught.value is error


def test_running_out_of_memory_while_decoding_is_no_stored_values_fault() -> None:
    """It would otherwise be said as an undecodable value, with advice to remove the state."""
    state = PartitionState(MemoryStore(), 0)

    def decode(raw: bytes) -> None:
        raise MemoryError

    for error in (MemoryError(), ValueError("met first")):
        with pytest.raises(MemoryError):
            state.raise_undecodable("t", [("a", b"any")], decode, error)


def test_an_undecodable_window_or_clock_stops_reads_and_closing_scans() -> None:
    store = MemoryStore()
    state = PartitionState(store, 0, pipeline="orders")
    windows = state.windows("revenue")
    windows.put({(60_000, 0, "p1"): _moments(1.0), (120_000, 60_000, "p1"): _moments(2.0)})
    state.clock("revenue", 0).observe(61_000)
    state.prepare(0)
    state.commit()
    key = next(k for k in store.data if k.startswith(b"Wrevenue") and k.endswith(b"p1"))
    store.data[key] = b"\x01short"
    line = _raises_undecodable(lambda: windows.get_many([(60_000, 0, "p1")]))
    assert "orders partition 0: the stored revenue value of key 'p1 [0, 60000)'" in line
    assert "'p1 [0, 60000)'" in _raises_undecodable(lambda: windows.expiring(60_000))
    (clock,) = [k for k in store.data if k.startswith(b"Mstream-time")]
    store.data[clock] = b"\x00"
    line = _raises_undecodable(lambda: PartitionState(store, 0).clock("revenue", 0))
    assert "the stored meta value of key 'stream-time:revenue' cannot be decoded" in line


def test_an_undecodable_applied_offset_stops_the_partition_opening() -> None:
    store = MemoryStore()
    state = PartitionState(store, 3)
    state.prepare(41)
    state.commit()
    assert PartitionState(store, 3).applied_offset == 41
    store.data[APPLIED_OFFSET] = b"\x00\x01"
    line = _raises_undecodable(lambda: PartitionState(store, 3, pipeline="orders"))
    assert "orders partition 3: the stored meta value of key 'applied-offset'" in line


# -- keys the state holds that cannot be decoded ---------------------------------------------


def test_an_undecodable_stored_key_is_named_as_stored_and_the_first_bad_entry_wins() -> None:
    """A key read back from the store (a range scan) decodes into the key the line names; one
    that does not is named as it was read, in its entry's order with the values."""
    state = PartitionState(MemoryStore(), 3, pipeline="top-products", directory=Path("/s/p3"))

    def show(key: bytes) -> str:
        return key.decode()

    def decode(raw: bytes) -> bytes:
        if raw == b"bad":
            raise ValueError("bad value")
        return raw

    entries = [(b"a", b"fine"), (b"w\xff\n", b"fine"), (b"c", b"bad")]
    line = _raises_undecodable(
        lambda: state.raise_undecodable("t", entries, decode, KeyError("first"), show)
    )
    assert line.startswith(
        "top-products partition 3: the stored t key b'w\\xff\\n' cannot be decoded "
        "(UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 1: invalid "
        "start byte): remove the partition's state directory (`rm -rf /s/p3`) and restart"
    )
    line = _raises_undecodable(
        lambda: state.raise_undecodable("t", entries[::-1], decode, KeyError("first"), show)
    )
    assert "the stored t value of key 'c' cannot be decoded (ValueError: bad value)" in line


def test_a_key_that_is_not_utf8_stops_a_scan_of_its_table() -> None:
    store = MemoryStore()
    state = PartitionState(store, 0, pipeline="top-products")
    state.put_value("t", "a", b"1")
    state.prepare(0)
    state.commit()
    store.data[b"Kt\0b\xff"] = b"2"
    line = _raises_undecodable(lambda: state.scan_values("t", "a", "c"))
    assert "partition 0: the stored t key b'b\\xff' cannot be decoded (UnicodeDecodeError" in line


@pytest.mark.parametrize(
    "key,cause",
    [
        (b"\x80\x00", "struct.error: unpack_from requires a buffer of at least 16 bytes"),
        (struct.pack(">QQ", 1 << 63, 1 << 63) + b"p\xff", "UnicodeDecodeError: 'utf-8' codec"),
    ],
)
def test_an_undecodable_window_key_stops_closing_scans(key: bytes, cause: str) -> None:
    """A window key that is too short or names no UTF-8 key: not raised as it was, which
    dead-lettered every record that closed windows."""
    store = MemoryStore()
    state = PartitionState(store, 0, pipeline="orders")
    windows = state.windows("revenue")
    windows.put({(60_000, 0, "p1"): _moments(1.0)})
    state.prepare(0)
    state.commit()
    store.data[b"Wrevenue\0" + key] = _moments(2.0).to_bytes()
    line = _raises_undecodable(lambda: windows.expiring(60_000))
    assert line.startswith(f"orders partition 0: the stored revenue key {key!r} cannot be ")
    assert f"cannot be decoded ({cause}" in line

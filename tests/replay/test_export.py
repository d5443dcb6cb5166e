"""How `kappa export` writes a version's results to files, without a broker."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agents.base import SourceRecord
from app.settings import ConfigError
from replay.export import MANIFEST, Written, export_lock, write_manifest, write_results
from replay.latest import latest_entry
from tables.rocks import RocksStore

WINDOW_KEY = ("product_id", "window_start", "window_end")


def window(product: str, start: int, revenue: float, headers: list | None = None) -> SourceRecord:
    value = json.dumps(
        {"product_id": product, "window_start": start, "window_end": start + 60_000, "sum": revenue}
    ).encode()
    return SourceRecord("orders.revenue-1m.v2", 0, 0, None, product.encode(), value, headers or [])


def stored(records: list[SourceRecord], tmp_path: Path) -> RocksStore:
    """The records folded as `kappa export` folds an output: the last value per key."""
    store = RocksStore(tmp_path / "latest")
    changes = {}
    for r in records:
        entry = latest_entry(r, WINDOW_KEY, "orders.revenue-1m")
        assert entry is not None
        changes[entry[0]] = entry[1]
    store.write(changes)
    return store


def test_final_results_are_written_in_key_order_and_open_windows_left_out(
    tmp_path: Path,
) -> None:
    records = [
        window("p2", 60_000, 5.0),
        window("p10", 0, 1.0),
        window("p2", 0, 2.0),
        window("p2", 0, 3.0),  # a later value of the same window replaces the earlier
        window("p3", 0, 4.0, [("kappa.provisional", b"1")]),  # flushed by a replay: open
    ]
    store = stored(records, tmp_path)
    path = tmp_path / "orders.revenue-1m.jsonl"
    try:
        written = write_results(store.scan(), path)
    finally:
        store.close()
    assert (written.results, written.provisional) == (3, 1)
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [(w["product_id"], w["window_start"], w["sum"]) for w in lines] == [
        ("p10", 0, 1.0),
        ("p2", 0, 3.0),
        ("p2", 60_000, 5.0),
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_report_line_counts_in_words(tmp_path: Path) -> None:
    """`kappa export` said "1 results"."""
    path = tmp_path / "orders.user-totals.jsonl"
    assert Written(path, 1, 0).line("orders.user-totals") == (
        f"orders.user-totals: 1 result → {path}"
    )
    assert Written(path, 2_000, 1).line("orders.user-totals") == (
        f"orders.user-totals: 2,000 results → {path} (1 still open, left out)"
    )


def test_a_value_spread_over_lines_is_written_on_one(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_results([(b"k", b'F{"a":\n 1}')], path)
    assert path.read_bytes() == b'{"a":1}\n'


def test_a_file_that_cannot_be_written_is_one_line_and_leaves_the_old_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")

    def failing() -> object:
        yield b"k", b'F{"a":1}'
        raise OSError(28, "No space left on device")

    with pytest.raises(ConfigError, match=r"^cannot write .*out\.jsonl: No space left on device$"):
        write_results(failing(), path)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no partial file


def test_the_manifest_is_stable_json(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"version": 2, "outputs": {"b": 1, "a": 2}})
    text = (tmp_path / MANIFEST).read_text()
    assert json.loads(text) == {"version": 2, "outputs": {"a": 2, "b": 1}}
    assert text.index('"a"') < text.index('"b"')  # keys sorted: two exports compare as text


def test_how_a_version_emits_is_left_out_so_both_ways_export_the_same_bytes(
    tmp_path: Path,
) -> None:
    """`"final":true` comes with KAPPA_EMIT_UPDATES, which does not change results."""
    plain, updates = tmp_path / "plain.jsonl", tmp_path / "updates.jsonl"
    write_results([(b"k", b'F{"product_id":"p1","sum":2.5}')], plain)
    write_results([(b"k", b'F{"product_id":"p1","sum":2.5,"final":true}')], updates)
    assert plain.read_bytes() == updates.read_bytes() == b'{"product_id":"p1","sum":2.5}\n'


def test_a_stopped_export_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")

    def interrupted() -> object:
        yield b"k", b'F{"a":1}'
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_results(interrupted(), path)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    assert path.read_bytes() == b"old\n"


def test_one_export_at_a_time_writes_to_a_directory(tmp_path: Path) -> None:
    with (
        export_lock(tmp_path / "out"),
        pytest.raises(ConfigError, match=r"^another export is writing to .*out$"),
        export_lock(tmp_path / "out"),
    ):
        pass
    with export_lock(tmp_path / "out"):  # released
        pass


def test_files_get_the_permissions_open_would_give_them(tmp_path: Path) -> None:
    """Readable by the analysts' tools, as the user's umask allows (not a temporary 0600)."""
    previous = os.umask(0o027)
    try:
        write_results([(b"k", b'F{"a":1}')], tmp_path / "out.jsonl")
        write_manifest(tmp_path, {"version": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / MANIFEST).stat().st_mode) == 0o640

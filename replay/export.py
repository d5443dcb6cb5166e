"""`kappa export`: a version's results written to files, one JSON-lines file per output.

Each output is read back as its latest value per key (replay/latest.py) and written in key
order, final results only (a window still open is left out and counted), each line the
record's fields without `final` (which says how a version emits, as `kappa diff` ignores it).
So the same input gives the same bytes whether the version ran live, was replayed, restarted
or spread over workers, with or without running updates.

A file is written beside its name and renamed into place: a reader sees the old file or the
new one, never half of one. `export.json` is removed first and written last, so a directory
with it holds one complete export; files of outputs the version does not produce are removed.
One export at a time writes to a directory (a lock file beside the results).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agents.top_products import TOP_PRODUCTS
from app.atomic_file import replaced, synced_directory
from app.cli_output import counted
from app.file_lock import writer_lock
from app.settings import ConfigError, Settings
from replay.latest import (
    RESULT_OUTPUTS,
    decode_entry,
    fold_latest,
    is_provisional,
    outputs_of,
    result_line,
    scratch_dir,
    scratch_store_failed,
    unused_outputs,
)
from replay.registry import readable_version, recorded_definition
from replay.sink_files import MANIFEST as SINK_MANIFEST
from tables.rocks import RocksStore, StateError

MANIFEST = "export.json"
LOCK = ".export.lock"


@dataclass(frozen=True)
class Written:
    """One output's file: results written, and windows left out as still open."""

    path: Path
    results: int
    provisional: int

    def line(self, output: str) -> str:
        """The export's report line for `output`."""
        left_out = f" ({self.provisional:,} still open, left out)" if self.provisional else ""
        return f"{output}: {counted(self.results, 'result')} → {self.path}{left_out}"


def stored_line(stored: bytes) -> bytes:
    """A stored latest value as one line: its fields, `final` left out, as compact JSON."""
    fields, _ = decode_entry(stored)
    return result_line(fields)


def write_results(entries: Iterable[tuple[bytes, bytes]], path: Path) -> Written:
    """Write the final values of a store of latest values (in its key order), one JSON object
    per line, atomically: to a hidden file beside `path`, flushed to disk, then renamed."""
    results = provisional = 0
    try:
        with replaced(path) as f:
            for _, stored in entries:
                if is_provisional(stored):
                    provisional += 1
                    continue
                f.write(stored_line(stored))
                results += 1
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return Written(path, results, provisional)


def write_manifest(directory: Path, manifest: dict[str, object]) -> None:
    """`export.json`: atomically, as the result files are, then the directory synced."""
    path = directory / MANIFEST
    try:
        with replaced(path) as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        synced_directory(directory)  # the renames too
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None


def export_lock(directory: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the directory's export lock; ConfigError if another export holds it."""
    return writer_lock(directory, LOCK, "export")


async def export(settings: Settings, directory: Path, version: int | None = None) -> str:
    """Write a version's (the live one's by default) final results under `directory`;
    returns the report, one line per output."""
    readable = await readable_version(settings, version)
    view, rec, topology, v = readable.view, readable.record, readable.topology, readable.number
    lines: list[str] = []
    outputs: dict[str, dict[str, object]] = {}
    if (directory / SINK_MANIFEST).exists():  # its files would be read as the sink's twice
        raise ConfigError(f"{directory} is a kappa sink's directory: export to another one")
    with export_lock(directory):
        _remove(directory / MANIFEST)  # until the last file is written: no complete export
        unused = unused_outputs(topology, recorded_definition(view, v))
        for logical, keys in RESULT_OUTPUTS:
            path = directory / f"{logical}.jsonl"
            if logical not in outputs_of(topology) or logical in unused:
                _remove(path)  # an earlier export's, of a version that produced it
                if logical not in unused:  # never written, by the settings: not worth a line
                    lines.append(f"{logical}: not exported (version {v} did not run its pipeline)")
                continue
            written = await _export_output(settings, topology.physical(logical), keys, path)
            lines.append(written.line(logical))
            outputs[logical] = {
                "file": path.name,
                "results": written.results,
                "provisional_left_out": written.provisional,
                "key": list(keys),
            }
        ranked = directory / f"{TOP_PRODUCTS}.jsonl"
        write_manifest(
            directory,
            {
                "version": v,
                "pipelines": [p.name for p in topology.pipelines],
                "replay_done": rec.replay_done,
                "since_ms": rec.since_ms,
                "settings": recorded_definition(view, v),
                "outputs": outputs,
                "complete_until_ms": complete_until(ranked) if TOP_PRODUCTS in outputs else None,
            },
        )
    if not rec.replay_done:
        lines.append(f"note: version {v}'s replay has not completed: its results may be partial")
    return "\n".join(lines)


def complete_until(ranked: Path) -> int | None:
    """The end of the last window ranked in `ranked` (orders.top-products' export): every
    source partition's watermark had passed it, so every window ending by then is final and
    exported, and a product without one there had no orders in it. None if nothing was ranked."""
    ends = (json.loads(line)["window_end"] for line in ranked.read_bytes().splitlines())
    return max(ends, default=None)


async def _export_output(
    settings: Settings, topic: str, keys: tuple[str, ...], path: Path
) -> Written:
    with scratch_dir(settings) as scratch:
        store: RocksStore | None = None
        try:
            store = RocksStore(scratch / "latest")
            await fold_latest(settings, topic, keys, store)
            written = write_results(store.scan(), path)
        except BaseException as e:
            if store is not None:
                with contextlib.suppress(Exception):  # a failed store may fail to close too
                    store.close()
            if isinstance(e, StateError):
                raise scratch_store_failed(settings, topic) from None
            raise
        store.close()
        return written


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot remove {path}: {e.strerror or e}") from None

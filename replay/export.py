"""`kappa export`: a version's results written to files, one JSON-lines file per output.

Each output is read back as its latest value per key (replay/latest.py) and written in key
order, final results only (a window still open is left out and counted). So the same input
gives the same bytes whether the version ran live, was replayed, restarted or spread over
workers. A file is written beside its name and renamed into place: a reader sees the old file
or the new one, never half of one. `export.json`, written last, says what the export holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.settings import ConfigError, Settings
from app.topology import Topology
from replay.latest import (
    RESULT_OUTPUTS,
    fold_latest,
    is_provisional,
    outputs_of,
    scratch_dir,
)
from replay.registry import DROPPED, Registry, require_version
from tables.rocks import RocksStore

MANIFEST = "export.json"


@dataclass(frozen=True)
class Written:
    """One output's file: results written, and windows left out as still open."""

    path: Path
    results: int
    provisional: int


def write_results(entries: Iterable[tuple[bytes, bytes]], path: Path) -> Written:
    """Write the final values of a store of latest values (in its key order), one JSON object
    per line, atomically: to a hidden file beside `path`, flushed to disk, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    results = provisional = 0
    try:
        with open(tmp, "wb") as f:
            for _, stored in entries:
                if is_provisional(stored):
                    provisional += 1
                    continue
                value = stored[1:]
                if b"\n" in value or b"\r" in value:  # whitespace between tokens: one line
                    value = json.dumps(json.loads(value), separators=(",", ":")).encode()
                f.write(value + b"\n")
                results += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return Written(path, results, provisional)


def write_manifest(directory: Path, manifest: dict[str, object]) -> None:
    """`export.json`: atomically, as the result files are."""
    path = directory / MANIFEST
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None


async def export(settings: Settings, directory: Path, version: int | None = None) -> str:
    """Write a version's (the live one's by default) final results under `directory`;
    returns the report, one line per output."""
    view = await Registry(settings).load()
    v = view.live if version is None else version
    rec = require_version(view, v)
    if rec.status == DROPPED:
        raise ConfigError(f"version {v} was dropped: its outputs are gone")
    topology = Topology(settings, v).select(rec.pipelines)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {directory}: {e.strerror or e}") from None
    lines: list[str] = []
    outputs: dict[str, dict[str, object]] = {}
    for logical, keys in RESULT_OUTPUTS:
        if logical not in outputs_of(topology):
            lines.append(f"{logical}: not exported (version {v} did not run its pipeline)")
            continue
        with scratch_dir(settings) as scratch:
            store = RocksStore(scratch / "latest")
            try:
                await fold_latest(settings, topology.physical(logical), keys, store)
                written = write_results(store.scan(), directory / f"{logical}.jsonl")
            finally:
                store.close()
        left_out = f" ({written.provisional:,} still open, left out)" if written.provisional else ""
        lines.append(f"{logical}: {written.results:,} results → {written.path}{left_out}")
        outputs[logical] = {
            "file": written.path.name,
            "results": written.results,
            "provisional_left_out": written.provisional,
            "key": list(keys),
        }
    write_manifest(
        directory,
        {
            "version": v,
            "pipelines": [p.name for p in topology.pipelines],
            "replay_done": rec.replay_done,
            "since_ms": rec.since_ms,
            "settings": view.definitions.get(v, {}),
            "outputs": outputs,
        },
    )
    if not rec.replay_done:
        lines.append(f"note: version {v}'s replay has not completed: its results may be partial")
    return "\n".join(lines)

"""State `kappa replay` cannot use (not RocksDB, another app's) stops it with one line whose
advice is a replay's (remove it and run the replay again), not a worker's (restart): whether
the state is met before the version is recorded, by a `--processes N` parent, or by one of
its processes while replaying."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from tests.support.workers import kappa_env, run_kappa

pytestmark = pytest.mark.integration


def _not_rocksdb(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_text("not a database")


def _foreign(directory: Path) -> None:
    """A partition directory whose marker says another app's state it is."""
    marker = directory / "KAPPA"
    found = json.loads(marker.read_text()) if marker.exists() else {}
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**found, "app_id": "somebody-else"}))


def _stopped_with_replay_advice(r: subprocess.CompletedProcess[str], directory: Path) -> str:
    """The one error line (besides a `--processes` parent's), which says to run it again."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    said = [ln for ln in r.stderr.splitlines() if f"rm -rf {directory}`" in ln]
    assert len(said) == 1, r.stderr
    (line,) = said
    assert line.startswith("kappa replay: error: state at "), line
    assert (
        f"remove it with `rm -rf {directory}` and run the replay again; the partition is "
        "rebuilt from its source"
    ) in line, line
    assert "restart" not in line and "stop the worker" not in line, line
    return line


@pytest.fixture
async def env(broker: str, unique: str, tmp_path: Path) -> dict[str, str]:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    spec = GeneratorSpec(count=50, seed=5, keys=20, start_ms=1_700_000_000_000, span_ms=60_000)
    orders = ((r.key, r.value) for r in generate(spec))
    await produce_records(broker, f"{unique}.orders", orders, progress=False)
    return env


@pytest.mark.parametrize(
    "damage,processes,words",
    [
        (_not_rocksdb, "1", "is unreadable (not a RocksDB database"),
        (_foreign, "2", "belongs to app_id='somebody-else'"),  # the parent checks it
    ],
)
def test_state_met_before_the_version_is_recorded(
    env: dict[str, str], tmp_path: Path, damage: object, processes: str, words: str
) -> None:
    directory = tmp_path / "state" / "v2" / "orders" / "p1"
    damage(directory)  # type: ignore[operator]
    r = run_kappa(["replay", "orders", "--version", "2", "--processes", processes], env)
    assert words in _stopped_with_replay_advice(r, directory)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # no process was started


def test_state_met_by_a_process_of_a_recorded_version(env: dict[str, str], tmp_path: Path) -> None:
    """Run again over a version it replayed, each process opens its partitions' state."""
    command = ["replay", "orders", "--version", "2", "--processes", "2"]
    first = run_kappa(command, env)
    assert first.returncode == 0, first.stdout + first.stderr
    directory = tmp_path / "state" / "v2" / "orders" / "p1"
    _foreign(directory)
    r = run_kappa(command, env)
    line = _stopped_with_replay_advice(r, directory)
    assert "belongs to app_id='somebody-else'" in line
    assert "process 1/2 failed (exit 2)" in r.stderr, r.stderr

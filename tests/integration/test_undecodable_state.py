"""A pipeline's state holding a key no release can decode, met by the live worker and by
`kappa replay`: each stops with one line naming the key and the directory to remove, and the
advice that fits it (restart the worker; run the replay again)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from app.broker import free_port
from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from app.settings import load_settings
from app.state_guard import state_identity
from app.topology import Topology
from tables.rocks import RocksStore
from tests.support.workers import kappa_env, run_kappa

pytestmark = pytest.mark.integration

# A window key of the orders pipeline too short to hold its end and start: every closing scan
# of the partition reads it.
_BAD_WINDOW = b"Wrevenue-tumbling-60000ms\0\x80\x00"


def _plant(env: dict[str, str], version: int) -> None:
    """The bad window key in every orders partition's state of `version`, nothing applied."""
    settings = load_settings(env)
    topology = Topology(settings, version).select(["orders"])
    (orders,) = topology.pipelines
    for p in range(settings.partitions):
        identity = state_identity(topology, orders.name, p)
        store = RocksStore(topology.state_path(orders, p), identity)
        store.write({_BAD_WINDOW: b"\0"})
        store.close()


@pytest.mark.parametrize(
    "command,version,code,advice",
    [
        ("worker", 1, 1, "restart the worker"),
        ("replay", 2, 2, "run the replay again"),
    ],
)
async def test_a_worker_and_a_replay_each_say_how_to_go_on_after_removing_the_state(
    broker: str, unique: str, tmp_path: Path, command: str, version: int, code: int, advice: str
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    spec = GeneratorSpec(count=50, seed=3, keys=20, start_ms=1_700_000_000_000, span_ms=60_000)
    orders = ((r.key, r.value) for r in generate(spec))
    await produce_records(broker, f"{unique}.orders", orders, progress=False)
    _plant(env, version)
    args = {
        "worker": ["worker", "--pipeline", "orders", "--web-port", str(free_port())],
        "replay": ["replay", "orders", "--version", "2", "--no-progress"],
    }[command]
    try:
        r = run_kappa(args, env, timeout=60)
    except subprocess.TimeoutExpired as e:  # run() has killed it: it dead-letters, runs on
        raise AssertionError(f"the {command} did not stop:\n{e.stderr!r}") from None
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "cannot be decoded" in ln]
    assert len(said) == 1, r.stderr
    root = tmp_path / "state" / f"v{version}" / "orders"
    found = re.search(
        r"kappa \w+: (?:error: )?orders partition (\d): the stored revenue-tumbling-60000ms key "
        r"b'\\x80\\x00' cannot be decoded \(struct\.error: .*?\): remove the partition's "
        r"state directory \(`rm -rf (\S+)`\) and (.+?): it is restored from its changelog",
        said[0],
    )
    assert found is not None, said[0]
    assert found[2] == str(root / f"p{found[1]}") and found[3] == advice, said[0]

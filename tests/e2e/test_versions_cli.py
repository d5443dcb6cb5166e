"""`kappa drop` and `kappa diff` through the CLI against the embedded broker, for versions
made without a replay and replays of some pipelines only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.admin import existing_topics
from app.settings import load_settings
from app.topology import Topology
from tests.support.datasets import orders_spec, produce_orders
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = pytest.mark.e2e


def _row(versions_output: str, version: int) -> list[str]:
    """The `kappa versions` row of one version, split into columns (empty if not listed)."""
    for line in versions_output.splitlines()[1:]:
        if line.split()[:1] == [str(version)]:
            return line.split()
    return []


async def test_a_version_made_by_kappa_topics_can_be_dropped(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """`kappa topics --version 12` registers nothing; its topics must not be left with no
    command to remove them."""
    env = kappa_env(broker, unique, tmp_path / "state")
    made = run_kappa(["topics", "--version", "12"], env)
    assert made.returncode == 0, made.stdout + made.stderr
    topology = Topology(load_settings(env), 12)
    own = {t for t in topology.all_topics() if t != f"{unique}.orders"}  # not the shared source
    assert own and own <= await existing_topics(broker)
    listed = run_kappa(["versions"], env).stdout
    assert _row(listed, 12)[:3] == ["12", "unrecorded", "-"], listed
    assert "kappa drop N removes them" in listed.splitlines()[-1]
    # Export, sink, diff and promote name it as `kappa versions` does: export said "version 12
    # is not in the registry (known: 1)".
    for command in (["export", str(tmp_path / "out")], ["sink", str(tmp_path / "feed")]):
        refused = run_kappa([*command, "--version", "12"], env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.strip().splitlines() == [
            f"kappa {command[0]}: error: version 12 is unrecorded: its topics are on the broker, "
            "but no replay recorded it (kappa topics or kappa worker --version 12 made them), "
            "so what it holds is not known; replay it to record it (kappa replay --version 12) "
            "or remove it (kappa drop 12); see `unrecorded` under kappa versions in the README"
        ]
    mistyped = run_kappa(["export", str(tmp_path / "out"), "--version", "42"], env)
    assert mistyped.stderr.strip().splitlines() == [
        "kappa export: error: version 42 is not in the registry (known: 1; unrecorded: 12)"
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "feed").exists()

    dropped = run_kappa(["drop", "12"], env)
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert f"dropped version 12: {len(own)} topics deleted" in dropped.stdout
    # nothing ran: none to remove, and where it looked (another KAPPA_STATE_DIR has its own)
    assert dropped.stdout.rstrip().endswith(f", no local state in {tmp_path / 'state' / 'v12'}")
    remaining = await existing_topics(broker)
    assert not own & remaining and f"{unique}.orders" in remaining
    assert _row(run_kappa(["versions"], env).stdout, 12)[:2] == ["12", "dropped"]

    live = run_kappa(["drop", "1"], env)
    assert live.returncode == 2, live.stdout + live.stderr
    assert live.stderr.strip().splitlines() == [
        "kappa drop: error: version 1 is live; promote another version before dropping it"
    ]


async def test_a_since_replay_over_a_version_a_worker_ran_is_refused(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """`kappa worker --version 13` fills version 13 from the start of its sources; a `--since`
    replay of it was accepted and recorded it as a `--since` version, which its outputs are
    not (and its workers then applied the cut-off live)."""
    from app.produce import produce_records

    env = kappa_env(broker, unique, tmp_path / "state")
    for v in (13, 14):
        made = run_kappa(["topics", "--version", str(v)], env)
        assert made.returncode == 0, made.stdout + made.stderr
    await produce_orders(broker, f"{unique}.orders", orders_spec(20, 1, keys=5, users=5))
    forward = Topology(load_settings(env), 13).physical("orders.by-user")
    await produce_records(broker, forward, [(b"u1", b"{}")], progress=False)  # a worker's
    since = ["--since", "1700000600000"]
    refused = run_kappa(["replay", "--version", "13", *since], env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(
        f"kappa replay: error: version 13 already holds results from the start of its sources "
        f"({forward} has records: `kappa worker --version 13` ran it), so it cannot be a "
        "--since version; replay into a new version (--version "
    ), line
    assert _row(run_kappa(["versions"], env).stdout, 13)[:2] == ["13", "unrecorded"]
    # empty topics (`kappa topics` alone) hold nothing to contradict it
    planned = run_kappa(["replay", "--version", "14", *since, "--dry-run"], env)
    assert planned.returncode == 0, planned.stdout + planned.stderr


async def test_diff_compares_only_the_outputs_both_versions_produce(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    spec = orders_spec(3_000, 11, keys=20, users=15, ms_per_event=200, disorder_ms=4_000)
    await produce_orders(broker, f"{unique}.orders", spec)
    for replay in (["--version", "2"], ["orders", "--version", "3"]):
        r = run_kappa(["replay", *replay, "--no-progress"], env)
        assert r.returncode == 0, r.stdout + r.stderr

    diff = run_kappa(["diff", "2", "3"], env)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    revenue, user_totals, trends, top, signals, quiet, verdict = diff.stdout.strip().splitlines()
    assert revenue.startswith("orders.revenue-1m: ")
    assert "; 0 only in v2, 0 only in v3, 0 differ" in revenue
    windows = int(revenue.split(": ")[1].split(" in v2")[0].replace(",", ""))
    assert windows > 0  # something was compared
    assert user_totals == "orders.user-totals: skipped (version 3 ran orders only)"
    assert trends == "orders.product-trends: skipped (version 3 ran orders only)"
    assert top == "orders.top-products: skipped (version 3 ran orders only)"
    assert signals == "orders.product-signals: skipped (version 3 ran orders only)"
    assert quiet == "orders.quiet-products: skipped (version 3 ran orders only)"
    assert verdict == (
        "identical in orders.revenue-1m "
        "(orders.user-totals, orders.product-trends, orders.top-products, "
        "orders.product-signals, orders.quiet-products not compared)"
    )

    # An export of that version holds the outputs it has, and says which it does not; over an
    # export of version 2, it leaves none of version 2's files.
    out = tmp_path / "export"
    assert run_kappa(["export", str(out), "--version", "2"], env).returncode == 0
    assert len(list(out.glob("*.jsonl"))) == 6
    exported = run_kappa(["export", str(out), "--version", "3"], env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    lines = exported.stdout.strip().splitlines()
    counts = re.fullmatch(r".*: ([\d,]+) results → .* \(([\d,]+) still open, left out\)", lines[0])
    assert counts, lines[0]
    results, still_open = (int(n.replace(",", "")) for n in counts.groups())
    assert still_open > 0 and results + still_open == windows  # the replay flushed some
    assert lines == [
        f"orders.revenue-1m: {results:,} results → {out / 'orders.revenue-1m.jsonl'} "
        f"({still_open:,} still open, left out)",
        "orders.user-totals: not exported (version 3 did not run its pipeline)",
        "orders.product-trends: not exported (version 3 did not run its pipeline)",
        "orders.top-products: not exported (version 3 did not run its pipeline)",
        "orders.product-signals: not exported (version 3 did not run its pipeline)",
        "orders.quiet-products: not exported (version 3 did not run its pipeline)",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        ".export.lock",
        "export.json",
        "orders.revenue-1m.jsonl",
    ]
    assert json.loads((out / "export.json").read_text())["version"] == 3
    assert len((out / "orders.revenue-1m.jsonl").read_bytes().splitlines()) == results
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    refused = run_kappa(["export", str(blocked / "sub"), "--version", "3"], env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"kappa export: error: cannot create {blocked / 'sub'}: Not a directory"
    ]


async def test_dropping_a_version_that_never_existed_is_refused(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A mistyped number: nothing of it exists, so it is not recorded as dropped (which would
    use the number up)."""
    env = kappa_env(broker, unique, tmp_path / "state")
    r = run_kappa(["drop", "99"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("kappa drop: error: version 99 is not in the registry (known: ")
    assert not (tmp_path / "state" / "v99").exists()


async def test_a_version_refuses_other_window_settings_than_it_was_built_with(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Its state and outputs would mix both, and a replay could not reproduce them."""
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    built = run_kappa(["replay", "--version", "5", "--no-progress"], env)
    assert built.returncode == 0, built.stdout + built.stderr
    changed = {**env, "KAPPA_WINDOW_MS": "30000"}
    for args in (["replay", "--version", "5", "--no-progress"], ["worker", "--version", "5"]):
        r = run_kappa(args, changed)
        assert r.returncode == 2, r.stdout + r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert (
            "error: version 5 is built with KAPPA_WINDOW_MS=60000, not KAPPA_WINDOW_MS=30000"
            in line
        )
        assert "replay into a new version (kappa replay --version 6)" in line


async def test_a_versions_workers_and_replays_take_the_settings_it_was_built_with(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A version replayed with KAPPA_WINDOW_MS=30000 refused every worker or resumed replay of
    it started without that setting; what the environment leaves unset is now taken from the
    version's record, and the worker says so."""
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    tuned = {**env, "KAPPA_WINDOW_MS": "30000", "KAPPA_TOP_K": "3"}
    built = run_kappa(["replay", "--version", "7", "--no-progress"], tuned)
    assert built.returncode == 0, built.stdout + built.stderr
    dry = run_kappa(["replay", "--version", "7", "--dry-run"], env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "  settings: KAPPA_WINDOW_MS=30000, KAPPA_GRACE_MS=10000, " in dry.stdout
    assert "KAPPA_TOP_K=3" in dry.stdout
    worker = Worker(env, tmp_path / "worker.log").start("--version", "7")
    try:
        worker.wait_until(lambda metrics: True)  # serving: started with them
    finally:
        code = worker.stop()
    assert code == 0, worker.tail_log()
    assert (
        "kappa worker: version 7's recorded settings: KAPPA_WINDOW_MS=30000, KAPPA_TOP_K=3"
        in worker.log_path.read_text()
    )


async def test_topics_without_a_version_creates_the_live_ones(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """After a promote and a drop of version 1, `kappa topics` still tried version 1."""
    from replay.registry import LIVE, Registry, VersionRecord

    env = kappa_env(broker, unique, tmp_path / "state")
    registry = Registry(load_settings(env))
    await registry.ensure()
    await registry.put_version(VersionRecord(3, LIVE, ["orders"], {}))
    made = run_kappa(["topics"], env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.stdout.rstrip().splitlines()[-1].endswith("topics ready for version 3 (17 created)")

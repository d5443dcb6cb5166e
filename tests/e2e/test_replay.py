"""Backfills through the CLI, as an operator runs them, against the embedded broker.

One dataset is produced while a live worker (version 1) runs; each test replays it into its
own version and checks the outputs against the live version and the batch computation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from app.broker import free_port
from app.changelog import KafkaChangelog
from app.settings import load_settings
from app.state_guard import check_partition_dirs
from app.topic_reader import high_watermarks
from app.topology import Topology
from replay.latest import RESULT_OUTPUTS
from replay.registry import RUNNING, Registry, VersionRecord
from replay.sink_files import file_name
from tests.support.checks import (
    check_copied_once,
    check_copies_applied,
    check_outputs,
    check_side_outputs,
    eventually,
    reference_for,
)
from tests.support.datasets import orders_spec, produce_orders
from tests.support.processes import child_pids
from tests.support.reference import Reference, assert_windows_equal
from tests.support.topics import list_topics
from tests.support.workers import (
    KAPPA,
    ROOT,
    Worker,
    kappa_env,
    read_records,
    run_kappa,
    scrape,
    start_kappa,
)

pytestmark = pytest.mark.e2e

START_MS = 1_700_000_000_000
Window = tuple[str, int, int]


spec = partial(orders_spec, keys=40, users=30, ms_per_event=200, disorder_ms=4_000)


@dataclass
class Dataset:
    broker: str
    prefix: str
    env: dict[str, str]
    tmp: Path
    reference: Reference  # windows closed by each partition's final watermark
    flushed: Reference  # every window, as a replay's final flush emits them
    next_start_ms: int


@pytest.fixture(scope="module")
async def dataset(broker: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dataset]:
    tmp = tmp_path_factory.mktemp("replay")
    prefix = tmp.name.replace("_", "-")
    env = kappa_env(broker, prefix, tmp / "state")
    assert run_kappa(["topics"], env).returncode == 0
    live = Worker(env, tmp / "live.log").start()
    try:
        live.wait_until(lambda m: bool(m))  # the live worker is up
        first = spec(6_000, 7, START_MS)
        await produce_orders(broker, f"{prefix}.orders", first, rate=3_000)
        ref = await reference_for(broker, f"{prefix}.orders")
        await eventually(lambda: check_outputs(broker, prefix, ref))
    finally:
        assert live.stop() == 0, live.tail_log()
    flushed = await reference_for(broker, f"{prefix}.orders", flush=True)
    yield Dataset(broker, prefix, env, tmp, ref, flushed, START_MS + first.span_ms)


async def version_windows(
    d: Dataset, version: int
) -> tuple[dict[Window, dict], dict[Window, dict]]:  # type: ignore[type-arg]
    """(final, provisional) windows of a version, last value per window (upsert semantics)."""
    final: dict[Window, dict] = {}  # type: ignore[type-arg]
    provisional: dict[Window, dict] = {}  # type: ignore[type-arg]
    for rs in (await read_records(d.broker, f"{d.prefix}.orders.revenue-1m.v{version}")).values():
        for _, _, value, headers in rs:
            w = json.loads(value or b"")
            key = (w["product_id"], w["window_start"], w["window_end"])
            (provisional if "kappa.provisional" in headers else final)[key] = w
    return final, provisional


async def check_replay(d: Dataset, version: int) -> None:
    """Closed windows equal the live version's and the batch computation's; the flushed rest
    completes the batch computation over every window; DLQ, late, user totals are exact."""
    final, provisional = await version_windows(d, version)
    assert_windows_equal(final, d.reference)
    assert_windows_equal({**final, **provisional}, d.flushed)
    await check_side_outputs(d.broker, d.prefix, d.reference, f".v{version}")


async def test_replay_equals_live_and_the_batch_computation(dataset: Dataset) -> None:
    r = run_kappa(["replay", "--version", "2", "--no-progress"], dataset.env)
    assert r.returncode == 0, r.stderr
    assert "replay v2:" in r.stdout and "events/s" in r.stdout
    assert "resumed" not in r.stdout  # a first replay counts everything
    await check_replay(dataset, 2)
    diff = run_kappa(["diff", "1", "2"], dataset.env)
    assert diff.returncode == 0 and "identical" in diff.stdout, diff.stdout + diff.stderr

    # Exported, the live version's results and the replay's are the same bytes.
    live_dir, replay_dir = dataset.tmp / "export-v1", dataset.tmp / "export-v2"
    live = run_kappa(["export", str(live_dir)], dataset.env)  # the live version by default
    replayed = run_kappa(["export", str(replay_dir), "--version", "2"], dataset.env)
    assert live.returncode == replayed.returncode == 0, live.stderr + replayed.stderr
    files = sorted(p.name for p in live_dir.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in live_dir.iterdir()) == sorted(
        p.name for p in replay_dir.iterdir()
    )
    assert [p.name for p in live_dir.iterdir() if p.name.startswith(".")] == [".export.lock"]
    assert files == [
        "export.json",
        "orders.product-signals.jsonl",
        "orders.product-trends.jsonl",
        "orders.quiet-products.jsonl",
        "orders.revenue-1m.jsonl",
        "orders.top-products.jsonl",
        "orders.user-totals.jsonl",
    ]
    for name in files[1:]:
        assert (live_dir / name).read_bytes() == (replay_dir / name).read_bytes(), name
    revenue = replay_dir / "orders.revenue-1m.jsonl"
    exported = [json.loads(line) for line in revenue.read_bytes().splitlines()]
    assert_windows_equal(
        {(w["product_id"], w["window_start"], w["window_end"]): w for w in exported},
        dataset.reference,
    )
    left_out = len(dataset.flushed.windows) - len(dataset.reference.windows)
    assert left_out > 0  # the replay flushed open windows: not results yet
    assert f"orders.revenue-1m: {len(exported):,} results → {revenue} " in (replayed.stdout)
    assert f"({left_out:,} still open, left out)" in replayed.stdout
    manifest = json.loads((replay_dir / "export.json").read_text())
    assert manifest["version"] == 2 and manifest["replay_done"] is True
    assert manifest["outputs"]["orders.revenue-1m"]["results"] == len(exported)
    # Every window ending by then is final on every partition (and exported), none after it.
    lowest = min(dataset.reference.watermarks.values())
    until = manifest["complete_until_ms"]
    assert lowest - 60_000 < until <= lowest
    assert until == max(w["window_end"] for w in exported if w["window_end"] <= lowest)
    assert json.loads((live_dir / "export.json").read_text())["complete_until_ms"] == until


@pytest.mark.parametrize(
    ("version", "kill_at", "split"),
    [
        (3, "orders:4:after-send", []),  # outputs sent, state not committed
        (20, "orders:4:before-send", []),
        (21, "orders:4:after-commit", []),  # committed, or held with its changelog unsent
        (22, "user-totals:2:after-send", []),  # the second stage, reading orders.by-user
        (23, "orders:3:after-send", ["--processes", "2"]),  # a child of a split replay
    ],
)
async def test_replay_killed_midway_resumes_to_identical_results(
    dataset: Dataset, version: int, kill_at: str, split: list[str]
) -> None:
    env = {**dataset.env, "KAPPA_REPLAY_BATCH_MAX": "400", "KAPPA_CHAOS_KILL": kill_at}
    args = ["replay", "--version", str(version), "--no-progress", *split]
    killed = run_kappa(args, env)
    # SIGKILL midway (a split replay's parent exits with 128 + 9, as a shell reports it)
    assert killed.returncode == (137 if split else -9), killed.stdout + killed.stderr
    versions = run_kappa(["versions"], dataset.env).stdout
    assert any(line.split()[:2] == [str(version), "running"] for line in versions.splitlines())
    del env["KAPPA_CHAOS_KILL"]
    if split:  # a dry run of the same split was refused: "replayed by 2 process(es), not 1"
        dry = run_kappa([*args, "--dry-run"], env)
        assert dry.returncode == 0, dry.stderr
        assert "  processes: 2, process I replaying the source partitions P with P % 2 == I" in (
            dry.stdout
        )
        assert f"source {dataset.prefix}.orders[1]: offsets 0 → " in dry.stdout
        assert dry.stdout.count("(end exclusive) (process 1)") == 2, dry.stdout  # of 4
    resumed = run_kappa(args, env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.rstrip().endswith("; resumed: these count only what this run read")
    await check_replay(dataset, version)
    assert run_kappa(["diff", "1", str(version)], dataset.env).returncode == 0


@pytest.mark.parametrize(
    ("version", "chaos", "code", "split"),
    [
        # Ctrl-C; a supervisor, `timeout`, `kill`: between two fetches
        (24, ("KAPPA_CHAOS_STOP", "orders:3:SIGINT"), 130, []),
        (25, ("KAPPA_CHAOS_STOP", "orders:3:SIGTERM"), 143, []),
        # while the third fetch's produce request is on its way
        (26, ("KAPPA_CHAOS_KILL", "orders:3:before-send:SIGINT"), 130, []),
        (27, ("KAPPA_CHAOS_KILL", "orders:3:before-send:SIGTERM"), 143, []),
        # each process of a split replay, or stopped by its parent as the other stops
        (28, ("KAPPA_CHAOS_KILL", "orders:3:before-send:SIGTERM"), 143, ["--processes", "2"]),
    ],
)
async def test_a_replay_stopped_midway_resumes_without_writing_a_batch_twice(
    dataset: Dataset, version: int, chaos: tuple[str, str], code: int, split: list[str]
) -> None:
    """Stopped between two fetches, with a fetch's outputs out and its changelog entries held
    (for the next fetch to take along): the entries go out before the replay exits. Left
    unsent, the state applied up to the fetch before, and the resumed replay wrote that
    fetch's outputs again: its DLQ and late copies twice. Stopped while a fetch's outputs
    are on their way: that batch is finished first, for the same reason."""
    variable, spec = chaos
    env = {**dataset.env, "KAPPA_REPLAY_BATCH_MAX": "400", variable: spec}
    args = ["replay", "--version", str(version), "--no-progress", *split]
    stopped = run_kappa(args, env)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr
    assert await check_copies_applied(dataset.env, version)  # the stop came after some
    del env[variable]
    resumed = run_kappa(args, env)
    assert resumed.returncode == 0, resumed.stderr
    await check_copied_once(dataset.env, version)
    await check_replay(dataset, version)


async def test_replay_split_over_two_processes(dataset: Dataset) -> None:
    procs = [
        subprocess.Popen(
            [*KAPPA, "replay", "--version", "4", "--process", f"{i}/2", "--no-progress"],
            env=dataset.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    await check_replay(dataset, 4)
    diff = run_kappa(["diff", "1", "4"], dataset.env)  # not 2: another test makes that one
    assert diff.returncode == 0, diff.stdout


async def test_replay_with_processes_option_splits_and_sums_up(dataset: Dataset) -> None:
    r = run_kappa(["replay", "--version", "6", "--processes", "2"], dataset.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 processes" in r.stdout and "replay v6:" in r.stdout
    assert "resumed" not in r.stdout  # a sibling's directories are not this process's
    events = int(r.stdout.split("replay v6: ")[1].split(" events")[0].replace(",", ""))
    assert events >= 6_000  # both halves' source records were counted
    # A process that waits for the other's part of orders says so once, not once per stage
    # of the next level.
    assert r.stderr.count("waiting for other replay processes to finish orders") <= 2, r.stderr
    await check_replay(dataset, 6)


async def test_a_failing_replay_process_stops_the_others_instead_of_hanging(
    dataset: Dataset,
) -> None:
    """The others would wait forever for its partitions before the user-totals stage."""
    broken = Path(dataset.env["KAPPA_STATE_DIR"]) / "v13" / "orders" / "p1"
    broken.mkdir(parents=True)
    (broken / "KAPPA").write_text("garbage")
    command = ["replay", "--version", "13", "--processes", "2"]
    # A version not recorded yet has its state checked before any process starts: one line.
    r = run_kappa(command, dataset.env, timeout=90)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("kappa replay: error: state at ") and "is unreadable" in line, line
    listed = run_kappa(["versions"], dataset.env).stdout.splitlines()[1:]
    assert "13" not in [row.split()[0] for row in listed]  # nothing recorded
    # Recorded (a replay resumed), it is the process that opens that state that fails.
    settings = load_settings(dataset.env)
    source = f"{dataset.prefix}.orders"
    ends = {str(p): end for p, end in (await high_watermarks(settings.kafka, source)).items()}
    names = [p.name for p in Topology(settings, 13).pipelines]
    await Registry(settings).put_version(
        VersionRecord(13, RUNNING, names, {source: ends}, replay_done=False)
    )
    r = run_kappa(command, dataset.env, timeout=90)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (
        "unreadable" in r.stderr and "process 1/2 failed (exit 2); stopped the others" in r.stderr
    )


async def test_a_replay_refused_with_processes_says_so_once(dataset: Dataset) -> None:
    """Checked before any process starts: one line, not one per process and a resume hint."""
    r = run_kappa(["replay", "user-totals", "--version", "15", "--processes", "2"], dataset.env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("kappa replay: error: user-totals reads ")
    listed = run_kappa(["versions"], dataset.env).stdout.splitlines()[1:]
    assert "15" not in [row.split()[0] for row in listed]  # nothing registered


async def test_sigterm_stops_every_process_of_a_split_replay(dataset: Dataset) -> None:
    """A supervisor's SIGTERM reaches only the parent: it stops its processes before it
    exits, which would otherwise go on replaying (and hold the version's state directory)."""
    parent = subprocess.Popen(
        [*KAPPA, "replay", "--version", "16", "--processes", "2"],
        env=dataset.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: list[int] = []
    try:
        while len(children) < 2:
            assert parent.poll() is None, parent.communicate()
            children = child_pids(parent.pid)
        parent.send_signal(signal.SIGTERM)  # the children are still starting up
        _, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    left = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    for pid in left:  # reported below; not left behind by the test
        os.kill(pid, signal.SIGKILL)
    assert not left
    assert parent.returncode == 128 + signal.SIGTERM
    assert "replay: terminated (SIGTERM); stopped its 2 processes" in err
    assert "Traceback" not in err


async def test_a_replay_leaves_state_and_changelogs_complete_without_a_final_flush(
    dataset: Dataset,
) -> None:
    """Each batch is held until the next takes its changelog entries along: the last ones go
    out when the replay ends, so the version's state reflects every source record."""
    r = run_kappa(["replay", "--version", "14", "--no-flush", "--no-progress"], dataset.env)
    assert r.returncode == 0, r.stdout + r.stderr
    topology = Topology(load_settings(dataset.env), 14)
    applied = check_partition_dirs(topology)
    for pipeline in topology.pipelines:
        ends = await high_watermarks(topology.settings.kafka, topology.physical(pipeline.source))
        changelog = KafkaChangelog(topology.settings.kafka, topology.changelog(pipeline))
        for partition, end in ends.items():
            assert applied.get((pipeline.name, partition), -1) == end - 1, (
                pipeline.name,
                partition,
            )
            assert await changelog.last_applied(partition, fresh=True) == end - 1


async def test_replaying_a_pipeline_without_its_upstream_is_refused(dataset: Dataset) -> None:
    r = run_kappa(["replay", "user-totals", "--version", "7"], dataset.env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "replay them together (kappa replay orders user-totals --version 7)" in r.stderr
    assert "Traceback" not in r.stderr


async def sink_expected(d: Dataset, version: int) -> dict[tuple[str, int], list[bytes]]:
    """(output, partition) → the lines a sink of the version writes: each final result in
    topic order, `final` left out, as compact JSON."""
    expected: dict[tuple[str, int], list[bytes]] = {}
    suffix = "" if version == 1 else f".v{version}"
    for output, _ in RESULT_OUTPUTS:
        topic = f"{d.prefix}.{output}{suffix}"
        for partition, records in (await read_records(d.broker, topic)).items():
            lines = expected.setdefault((output, partition), [])
            for _, _, value, headers in records:
                result = json.loads(value or b"")
                if "kappa.provisional" in headers or result.pop("final", True) is False:
                    continue
                lines.append(json.dumps(result, separators=(",", ":")).encode())
    return expected


def sink_files(out: Path) -> dict[tuple[str, int], list[bytes]]:
    """(output, partition) → the lines of its finished files, in order; the files' offset
    ranges must tile the log from 0."""
    found: dict[tuple[str, int], list[bytes]] = {}
    for output, _ in RESULT_OUTPUTS:
        for where in sorted((out / output).glob("partition=*")):
            lines = found.setdefault((output, int(where.name.split("=")[1])), [])
            after = 0
            for path in sorted(where.glob("[0-9]*.jsonl")):
                first, last = (int(n) for n in path.stem.split("-"))
                assert first == after, f"{path}: expected to start at {after}"
                after = last + 1
                lines += path.read_bytes().splitlines()
    return found


ROLL = 40  # results per sink file: small, so that a partition has several
SINK_ROLL = ["--roll-results", str(ROLL), "--roll-seconds", "86400"]  # on the count only


async def sink_until_written(
    d: Dataset, out: Path, expected: dict[tuple[str, int], list[bytes]], metrics: bool = False
) -> str:
    """Run `kappa sink OUT` until its files hold every whole file's worth of the expected
    results, then stop it (SIGTERM finishes the rest); returns its output. It serves its
    metrics; with `metrics`, they must then say what its files hold, and no lag."""
    port = free_port()
    sink = start_kappa(["sink", str(out), *SINK_ROLL, "--metrics-port", str(port)], d.env)
    try:

        async def whole_files_written() -> None:
            assert sink.poll() is None, sink.communicate()
            found = sink_files(out)
            for k, lines in expected.items():
                whole = len(lines) - len(lines) % ROLL
                assert found.get(k, [])[: whole + 1] == lines[:whole], k

        async def metrics_say_so() -> None:  # nothing more is finished until the stop
            samples = scrape(port)
            for output in {o for o, _ in expected}:
                files = list((out / output).rglob("[0-9]*.jsonl"))
                lines = sum(len(f.read_bytes().splitlines()) for f in files)
                mine = {"version": "1", "output": output}
                said = {n: v for n, lab, v in samples if lab == mine}
                assert said.get("kappa_sink_files_total") == len(files), (output, said)
                assert said.get("kappa_sink_results_total") == lines, (output, said)
            lags = [v for n, _, v in samples if n == "kappa_sink_lag_records"]
            assert len(lags) >= len(expected) and not any(lags), lags  # every partition

        await eventually(whole_files_written, timeout=60)
        if metrics:
            await eventually(metrics_say_so, timeout=30)
    finally:
        sink.send_signal(signal.SIGTERM)
        stdout, stderr = sink.communicate(timeout=30)
    assert sink.returncode == 0, stderr  # an orderly stop
    assert not list(out.rglob(".*.tmp"))
    return stdout


async def test_a_sink_writes_every_final_result_once_through_a_kill(dataset: Dataset) -> None:
    d = dataset
    expected = {k: v for k, v in (await sink_expected(d, 1)).items() if v}
    assert sum(len(lines) for lines in expected.values()) > 10 * ROLL
    out = d.tmp / "sink-v1"
    # Killed as it finishes its third file: that one is written whole under its temporary
    # name, and other partitions' files are open.
    killed = run_kappa(
        ["sink", str(out), *SINK_ROLL],
        {**d.env, "KAPPA_CHAOS_KILL": "sink:3:before-finish"},
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert list(out.rglob(".*.tmp")), "the kill left no file unfinished"
    assert json.loads((out / "sink.json").read_text())["version"] == 1

    before = {p: p.stat().st_ino for p in out.rglob("[0-9]*.jsonl")}
    assert len(before) == 2  # finished before the kill

    said = await sink_until_written(d, out, expected)
    assert {p: p.stat().st_ino for p in before} == before  # it went on after them
    assert "sinking version 1's orders.revenue-1m, orders.user-totals" in said
    assert {k: v for k, v in sink_files(out).items() if v} == expected

    # Uninterrupted, a sink writes the same files, byte for byte: files end on the count. Its
    # metrics say what it finished, and that it has read everything.
    again = d.tmp / "sink-v1-again"
    await sink_until_written(d, again, expected, metrics=True)
    written = sorted(p.relative_to(out) for p in out.rglob("[0-9]*.jsonl"))
    assert written == sorted(p.relative_to(again) for p in again.rglob("[0-9]*.jsonl"))
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in written)

    # Files past their topic's end are another topic's offsets (a restarted dev broker made
    # it anew): refused, nothing written.
    beyond = again / "orders.user-totals" / "partition=0" / file_name(0, 10**11)
    beyond.write_bytes(b"{}\n")
    end = len((await read_records(d.broker, f"{d.prefix}.orders.user-totals"))[0])
    refused = run_kappa(["sink", str(again)], d.env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().endswith(
        f"ends at {end}: the topic was made anew (a restarted dev broker?); sink it to another "
        "directory"
    )

    # Files whose newest file ends with the record at its LAST offset but holds another result
    # before it came from another topic of that name (made anew with other records): refused
    # before anything is written, in any partition (user-totals has no files: it would be
    # written from offset 0).
    shutil.rmtree(again / "orders.user-totals")
    last = max(
        (f for f in out.glob("orders.revenue-1m/partition=*/[0-9]*.jsonl")),
        key=lambda f: (len(f.read_bytes().splitlines()) > 1, f.name),
    )
    partition = last.parent.name.split("=")[1]
    copied = again / "orders.revenue-1m" / last.parent.name / last.name
    first, *rest = last.read_bytes().splitlines(keepends=True)
    copied.write_bytes(b"".join([first.replace(b'"count":', b'"count":1'), *rest]))
    refused = run_kappa(["sink", str(again)], d.env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert re.search(
        rf"orders\.revenue-1m\[{partition}\] holds at offset \d+ another result than its "
        "files: it is not the topic",
        refused.stderr,
    ), refused.stderr
    assert sorted(copied.parent.iterdir())[-1] == copied  # nothing written after it
    assert not (again / "orders.user-totals").exists()  # nor anywhere else

    # A directory it cannot write in is one line.
    blocked = d.tmp / "sink-blocked"
    blocked.mkdir()
    (blocked / "orders.revenue-1m").write_text("")
    refused = run_kappa(["sink", str(blocked), "--output", "orders.revenue-1m"], d.env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith(": Not a directory")
    assert f"kappa sink: error: cannot write in {blocked}/orders.revenue-1m/partition=" in (
        refused.stderr
    )

    # The last line per window is the batch computation's result.
    revenue = [
        json.loads(line)
        for (output, _), lines in sink_files(out).items()
        if output == "orders.revenue-1m"
        for line in lines
    ]
    assert_windows_equal(
        {(w["product_id"], w["window_start"], w["window_end"]): w for w in revenue},
        d.reference,
    )


async def test_dry_run_promote_continue_live_and_drop(dataset: Dataset) -> None:
    d = dataset
    before = set(await list_topics(d.broker))
    dry = run_kappa(["replay", "--version", "9", "--dry-run"], d.env)
    assert dry.returncode == 0, dry.stderr
    assert f"source {d.prefix}.orders[0]: offsets 0 →" in dry.stdout
    assert f"{d.prefix}.orders.revenue-1m.v9" in dry.stdout
    assert "  settings: KAPPA_WINDOW_MS=60000, KAPPA_GRACE_MS=" in dry.stdout
    mine = d.prefix + "."  # the session broker holds other tests' topics too
    assert {t for t in await list_topics(d.broker) if t.startswith(mine)} == {
        t for t in before if t.startswith(mine)
    }  # touched nothing
    assert "9" not in [ln.split()[0] for ln in run_kappa(["versions"], d.env).stdout.splitlines()]

    assert run_kappa(["replay", "--version", "5", "--no-progress"], d.env).returncode == 0
    refused = run_kappa(["drop", "1"], d.env)
    assert refused.returncode == 2 and "live" in refused.stderr
    assert run_kappa(["promote", "5"], d.env).returncode == 0
    assert "live version: 5" in run_kappa(["status"], d.env).stdout
    planned = run_kappa(["replay", "--version", "9", "--dry-run"], d.env).stdout
    assert "live version" not in planned  # built as version 5 is
    other = run_kappa(["replay", "--version", "9", "--dry-run"], {**d.env, "KAPPA_TOP_K": "7"})
    assert "  live version 5 has: KAPPA_TOP_K=10" in other.stdout.splitlines(), other.stdout

    # A worker without --version now runs version 5 and continues where its replay ended.
    worker = Worker(d.env, d.tmp / "v5.log").start()
    try:
        await produce_orders(d.broker, f"{d.prefix}.orders", spec(1_500, 8, d.next_start_ms))
        ref = await reference_for(d.broker, f"{d.prefix}.orders")

        async def continued_exactly() -> None:
            final, _ = await version_windows(d, 5)
            missing = set(ref.windows) - set(final)
            assert not missing, f"{len(missing)} windows not closed yet"
            assert_windows_equal({k: final[k] for k in ref.windows}, ref)

        await eventually(continued_exactly)
        # Counted once acknowledged; the last records (closing nothing) may come a batch later.
        worker.wait_until(
            lambda _: worker.metric("kappa_events_in_total", pipeline="orders") >= 1_500
        )
        orders_in = worker.metric("kappa_events_in_total", pipeline="orders")
        assert orders_in == 1_500  # only the new events: no history reprocessed, none lost
    finally:
        assert worker.stop() == 0, worker.tail_log()

    # A sink following version 1 stops in one line when the drop deletes its topics.
    sink = start_kappa(["sink", str(d.tmp / "sink-dropped"), "--version", "1"], d.env)
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().startswith("sinking version 1's")  # it follows
        dropped = run_kappa(["drop", "1"], d.env)
        assert dropped.returncode == 0, dropped.stderr
        _, said = sink.communicate(timeout=60)  # its next check of its topics
    finally:
        sink.kill()
        sink.wait()
    assert sink.returncode == 2, said
    assert said.strip() in (  # as the drop deletes the topics, or once it has
        "kappa sink: error: a drop of version 1 has started: its outputs may be gone",
        "kappa sink: error: version 1 was dropped: its outputs are gone",
    )
    remaining = set(await list_topics(d.broker))
    assert f"{d.prefix}.orders" in remaining
    # None of version 1's outputs came back: the sink's consumer only asks for them.
    version_1 = [t for t in remaining if t.startswith(f"{d.prefix}.orders.")]
    assert [t for t in version_1 if not re.search(r"\.v\d+$", t)] == []
    assert any(
        ln.split()[:2] == ["1", "dropped"]
        for ln in run_kappa(["versions"], d.env).stdout.splitlines()
    )
    # Its number is not used again: a worker or `kappa topics` would recreate it.
    for command in (["topics", "--version", "1"], ["worker", "--version", "1"]):
        again = run_kappa(command, d.env)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "version 1 was dropped; use a new version number" in again.stderr

"""CLI commands against a broker that lacks what they need: one line, exit 2, nothing created."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from app.admin import ensure_topics, existing_topics
from app.topic_reader import read_to_end
from tests.support.processes import taken_port
from tests.support.workers import KAPPA, ROOT, kappa_env, run_kappa

pytestmark = pytest.mark.integration


async def test_tail_of_a_missing_topic_says_so_and_creates_nothing(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    r = run_kappa(["tail", "orders"], env)  # the prefix forgotten
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == (
        f"kappa tail: error: topic orders does not exist (did you mean {unique}.orders? "
        "names are used as given)"
    )
    assert "orders" not in await existing_topics(broker)


async def test_a_replay_without_its_source_topic_says_so(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    r = run_kappa(["replay", "--version", "2", "--dry-run"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == f"kappa replay: error: topic {unique}.orders does not exist"


async def test_a_replay_refuses_a_source_with_another_partition_count(
    broker: str, unique: str, tmp_path: Path
) -> None:
    await ensure_topics(broker, {f"{unique}.orders": (2, {})})
    env = kappa_env(broker, unique, tmp_path / "state")  # KAPPA_PARTITIONS=4
    r = run_kappa(["replay", "--version", "2", "--dry-run"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == (
        f"kappa replay: error: topics must have KAPPA_PARTITIONS=4 partitions, but "
        f"{unique}.orders has 2: set KAPPA_PARTITIONS=2 to use them"
    )


@pytest.mark.parametrize("command", [["replay", "--version", "2"], ["sink", "out"]])
async def test_a_metrics_port_in_use_is_one_line(
    broker: str, unique: str, tmp_path: Path, command: list[str]
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    with taken_port() as port:
        r = run_kappa([*command, "--metrics-port", str(port)], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"kappa {command[0]}: error: cannot serve metrics on 127.0.0.1:{port}: ")


async def test_a_file_that_goes_bad_part_way_says_how_much_was_produced(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """Loading it again produces those records again: the user must know they are there."""
    rows = [
        f"o{i},u{i % 7},p{i % 5},books,{1 + i % 9}.50,1,{1_700_000_000_000 + i}" for i in range(400)
    ]
    orders = tmp_path / "orders.csv"
    orders.write_bytes(
        ("order_id,user_id,product_id,category,amount,quantity,ts\n" + "\n".join(rows)).encode()
        + b"\no400,u1,p1,b\xffoks,1.50,1,1700000000400\n"
    )
    env = kappa_env(broker, unique, tmp_path / "state")
    r = run_kappa(["produce", f"{unique}.orders", "--file", str(orders), "--no-progress"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == (
        f"kappa produce: error: cannot read {orders}: line 402 is not UTF-8 text; 400 records "
        "were produced before reading failed (loading the file again produces them again)"
    )
    landed = await read_to_end(broker, f"{unique}.orders")
    assert sum(len(recs) for recs in landed.values()) == 400


async def test_a_csv_without_the_order_columns_names_the_file_once(
    broker: str, unique: str, tmp_path: Path
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,user_id\no1,u1\n")
    env = kappa_env(broker, unique, tmp_path / "state")
    r = run_kappa(["produce", f"{unique}.orders", "--file", str(orders)], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == (
        f"kappa produce: error: cannot read {orders}: CSV header lacks column(s) product_id, "
        "category, amount, quantity, ts"
    )


@pytest.mark.parametrize("command", [["status"], ["tail", "orders"]])
async def test_a_full_standard_output_is_one_line(
    broker: str, unique: str, tmp_path: Path, command: list[str]
) -> None:
    """`kappa status > /dev/full` printed a traceback; a failing output is the user's to fix."""
    env = kappa_env(broker, unique, tmp_path / "state")
    if command[0] == "tail":
        topic = f"{unique}.orders"
        run_kappa(["produce", topic, "--generate", "3", "--no-progress"], env)
        command = ["tail", topic]
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            KAPPA + command, env=env, cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == (f"kappa {command[0]}: error: cannot write the output: No space left on device")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_tail_follow_stopped_by_a_signal_is_an_orderly_stop(
    broker: str, unique: str, tmp_path: Path, sig: int
) -> None:
    """Following runs until stopped: Ctrl-C or SIGTERM ends it with 0, as the README says."""
    env = kappa_env(broker, unique, tmp_path / "state")
    topic = f"{unique}.orders"
    run_kappa(["produce", topic, "--generate", "1", "--no-progress"], env)
    tail = subprocess.Popen(
        [*KAPPA, "tail", "-f", topic], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert tail.stdout is not None
        assert tail.stdout.readline().startswith('{"order_id"')  # it is following
        tail.send_signal(sig)
        assert tail.wait(30) == 0
    finally:
        tail.kill()
        tail.wait()


async def test_a_sink_refused_says_why_in_one_line_and_writes_nothing(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    out = tmp_path / "out"

    def refusal(*args: str) -> str:
        r = run_kappa(["sink", *args], env)
        assert r.returncode == 2, r.stdout + r.stderr
        (line,) = r.stderr.strip().splitlines()
        return line

    assert refusal(str(out)) == (
        f"kappa sink: error: topic {unique}.orders.revenue-1m does not exist "
        "(run `kappa topics --version 1`)"
    )
    assert refusal(str(out), "--version", "7") == (
        "kappa sink: error: version 7 is not in the registry (known: 1)"
    )
    assert refusal(str(out), "--output", "orders.nope") == (  # not orders.revenue-hopping
        "kappa sink: error: no output orders.nope (version 1's outputs: orders.revenue-1m, "
        "orders.user-totals, orders.product-trends, orders.top-products, "
        "orders.product-signals, orders.quiet-products)"
    )
    # A version 2 sink's directory on a broker without version 2 (a restarted dev broker), with
    # version 1's topics missing too: the directory is the first mistake to say.
    elsewhere = tmp_path / "v2-landing"
    elsewhere.mkdir()
    (elsewhere / "sink.json").write_text('{"version": 2, "topics": {}}')
    assert refusal(str(elsewhere)) == (
        f"kappa sink: error: {elsewhere} holds version 2's results, and the broker has no "
        "version 2 (a restarted dev broker keeps nothing): sink version 1 to another directory"
    )
    assert not out.exists()
    assert run_kappa(["topics"], env).returncode == 0
    # What the sink cannot clear away once its consumer started: was a CancelledError traceback
    odd = tmp_path / "odd"
    (odd / "orders.revenue-1m" / "partition=0" / ".left.tmp").mkdir(parents=True)
    assert refusal(str(odd)) == f"kappa sink: error: cannot use {odd}: Is a directory"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert refusal(str(blocked / "sub")) == (
        f"kappa sink: error: cannot create {blocked / 'sub'}: Not a directory"
    )
    assert refusal(str(blocked)) == (
        f"kappa sink: error: {blocked} is a file, not a directory: name a directory"
    )


async def test_an_export_into_a_sinks_directory_is_refused(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A reader of the directory would count the sink's results and the export's twice."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "sink.json").write_text("{}")
    r = run_kappa(["export", str(landing)], kappa_env(broker, unique, tmp_path / "state"))
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert (
        line == f"kappa export: error: {landing} is a kappa sink's directory: export to another one"
    )
    assert sorted(p.name for p in landing.iterdir()) == ["sink.json"]

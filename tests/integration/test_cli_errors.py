"""CLI commands against a broker that lacks what they need: one line, exit 2, nothing created."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from app.admin import ensure_topics, existing_topics
from tests.support.workers import kappa_env, run_kappa

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
        f"{unique}.orders has 2"
    )


async def test_a_metrics_port_in_use_is_one_line(broker: str, unique: str, tmp_path: Path) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_kappa(["replay", "--version", "2", "--metrics-port", str(port)], env)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"kappa replay: error: cannot serve metrics on 127.0.0.1:{port}: ")

"""The benchmark's command line: what it accepts and the one-line errors it gives."""

from __future__ import annotations

import pytest

from benchmarks.live import worker_command
from benchmarks.run import parse_args


def test_latency_pipelines_are_passed_on() -> None:
    args = parse_args(["--quick", "--latency-pipeline", "orders", "--bare-beside-live"])
    assert args.latency_pipeline == ["orders"] and args.bare_beside_live


def test_a_latency_run_without_the_orders_pipeline_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(["--latency-pipeline", "user-totals"])
    assert e.value.code == 2
    assert "--latency-pipeline must include orders" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--partitions", "0"], "--partitions must be between 1 and 1000"),
        (["--partitions", "1001"], "--partitions must be between 1 and 1000"),
        (["--keys", "0"], "--keys must be > 0"),
    ],
)
def test_sizes_the_workers_would_refuse_are_refused_up_front(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_the_latency_worker_runs_the_named_pipelines_only() -> None:
    command = worker_command(8080, None, ["orders"])
    assert command[command.index("worker") :] == [
        "worker",
        "--web-port",
        "8080",
        "--pipeline",
        "orders",
    ]
    every = worker_command(8080, 2, [])
    assert every[every.index("worker") :] == ["worker", "--web-port", "8080", "--version", "2"]

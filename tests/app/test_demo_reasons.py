"""What `kappa demo` quotes when a child stops: this run's reason, never an older line."""

from __future__ import annotations

from pathlib import Path

from app.demo import stop_reason


def test_the_childs_one_line_error_of_this_run_is_quoted(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("kappa worker: error: OLD LINE FROM AN EARLIER RUN\n")
    start = log.stat().st_size
    with log.open("a") as f:
        f.write("kappa worker: version 1 ...\nkappa worker: error: cannot serve metrics\n+----+\n")
    assert stop_reason(log, start) == "kappa worker: error: cannot serve metrics"


def test_else_a_tracebacks_last_line_and_else_nothing(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("Traceback (most recent call last):\n  File x\nOSError: [Errno 98] in use\n")
    assert stop_reason(log, 0) == "OSError: [Errno 98] in use"
    log.write_text("kappa worker: error: OLD\n| table | border |\n+-------+\n")
    assert stop_reason(log, log.stat().st_size - len("| table | border |\n+-------+\n")) is None

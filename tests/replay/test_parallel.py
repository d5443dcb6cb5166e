"""`kappa replay --processes N` when no child gets as far as its summary line."""

from __future__ import annotations

import pytest

from replay.parallel import exit_code, run_parallel


def test_children_that_all_fail_give_their_exit_status_and_say_so(
    capfd: pytest.CaptureFixture[str],
) -> None:
    code, summary = run_parallel(["--version", "not-a-number"], 2)  # argparse: exit 2
    assert code == 2
    assert summary is None  # no summary line of a replay that failed
    said = capfd.readouterr().err
    assert "replay: process 0/2 failed (exit 2)" in said or "process 1/2 failed (exit 2)" in said


def test_a_child_killed_by_a_signal_exits_as_a_shell_reports_it() -> None:
    assert (exit_code(-9), exit_code(-15), exit_code(2), exit_code(0)) == (137, 143, 2, 0)

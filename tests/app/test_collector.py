"""The cyclic garbage collector, set for batch processing by the worker and the replay."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from app import cli
from app.collector import OLDER_THRESHOLD, YOUNG_THRESHOLD, tune_for_batches


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """Put the test process's collector back as it was."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tuning_freezes_the_heap_and_makes_young_passes_rare(collector_restored: None) -> None:
    gc.set_threshold(700, 10, 10)  # CPython's default
    tune_for_batches()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()  # cycles are still collected


def _replay_args(*extra: str) -> Any:
    return cli.build_parser().parse_args(["replay", "--version", "2", *extra])


@pytest.mark.parametrize(("extra", "tuned"), [((), True), (("--dry-run",), False)])
def test_a_replay_tunes_the_collector_before_it_runs(
    monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], tuned: bool
) -> None:
    calls: list[str] = []

    async def fake_run_replay(settings: object, opts: object) -> None:
        calls.append("run")

    monkeypatch.setattr("replay.runner.run_replay", fake_run_replay)
    monkeypatch.setattr("app.collector.tune_for_batches", lambda: calls.append("tune"))
    monkeypatch.setattr(cli, "_settings_with_broker", lambda: cli.load_settings({}))
    assert cli.cmd_replay(_replay_args(*extra)) == 0
    assert calls == (["tune", "run"] if tuned else ["run"])

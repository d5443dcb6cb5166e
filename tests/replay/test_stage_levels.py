"""How a replay runs the pipelines of one level together: all finish, or the first error
stops the others and is raised as it is."""

from __future__ import annotations

import asyncio

import pytest

from app.settings import ConfigError
from replay.runner import all_or_none


async def test_all_run_at_once_and_all_finish() -> None:
    started: list[str] = []
    gate = asyncio.Event()

    async def stage(name: str) -> None:
        started.append(name)
        if len(started) == 3:
            gate.set()
        await gate.wait()  # would never end if the stages ran one after another

    await asyncio.wait_for(all_or_none([stage("a"), stage("b"), stage("c")]), 10)
    assert sorted(started) == ["a", "b", "c"]


async def test_the_first_error_cancels_the_others_and_is_raised_as_it_is() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ConfigError("one clear line")

    with pytest.raises(ConfigError, match=r"^one clear line$"):
        await asyncio.wait_for(all_or_none([slow(), failing()]), 10)
    assert cancelled.is_set()


async def test_cancelling_the_level_cancels_every_stage() -> None:
    cancelled: list[int] = []
    running = [asyncio.Event(), asyncio.Event()]

    async def stage(i: int) -> None:
        running[i - 1].set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    task = asyncio.ensure_future(all_or_none([stage(1), stage(2)]))
    for started in running:
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == [1, 2]


async def test_of_several_errors_the_first_stage_given_is_raised() -> None:
    """The same error every run, whichever stage failed first."""

    async def failing(message: str) -> None:
        raise ConfigError(message)

    for _ in range(5):
        with pytest.raises(ConfigError, match=r"^stage 0$"):
            await all_or_none([failing(f"stage {i}") for i in range(20)])

"""A commit hanging on a deleted topic stops the worker; on a broker away it just waits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.commit_watch import watched_commit
from app.state_guard import version_topic_gone

GONE = version_topic_gone("orders.by-user", Path("/state/v1"))


class Stops:
    def __init__(self) -> None:
        self.said: list[str] = []

    async def __call__(self, reason: BaseException, line: str) -> None:
        self.said.append(line)


async def _forever() -> bool:
    await asyncio.Event().wait()
    return True


async def test_a_commit_that_finishes_is_not_looked_into() -> None:
    checked: list[set[str]] = []

    async def check(topics: set[str]) -> None:
        checked.append(topics)

    async def commit() -> bool:
        return True

    stops = Stops()
    assert await watched_commit(commit(), {"orders"}, check, stops, check_every_s=60)
    assert checked == [] and stops.said == []


async def test_a_commit_hanging_on_a_topic_gone_is_cancelled_and_the_worker_stops() -> None:
    checked: list[set[str]] = []

    async def check(topics: set[str]) -> None:
        checked.append(topics)
        raise GONE

    commit = asyncio.ensure_future(_forever())
    stops = Stops()
    assert not await watched_commit(commit, {"orders.by-user"}, check, stops, check_every_s=0.01)
    assert checked == [{"orders.by-user"}]
    assert stops.said == [str(GONE)]
    await asyncio.sleep(0)
    assert commit.cancelled()


async def test_a_commit_waits_on_while_its_topics_are_there_or_cannot_be_listed() -> None:
    """The broker away (the check answers nothing in time) or catching up (all listed): the
    commit is aiokafka's to retry, and its result is returned when it comes."""
    finish = asyncio.Event()
    checks = 0

    async def check(topics: set[str]) -> None:
        nonlocal checks
        checks += 1
        if checks == 1:
            await asyncio.Event().wait()  # a frozen broker: cut off by the check's timeout
        if checks == 3:
            finish.set()

    async def commit() -> bool:
        await finish.wait()
        return False

    stops = Stops()
    result = await watched_commit(
        commit(), {"orders"}, check, stops, check_every_s=0.01, check_timeout_s=0.01
    )
    assert result is False and checks >= 3 and stops.said == []


async def test_a_commit_that_fails_raises_as_it_did() -> None:
    async def check(topics: set[str]) -> None:
        raise AssertionError("not looked up: the commit ended first")

    async def commit() -> bool:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await watched_commit(commit(), {"orders"}, check, Stops(), check_every_s=60)

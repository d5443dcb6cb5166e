"""An offset commit that cannot finish because its topic was deleted stops the worker.

aiokafka retries a commit refused with UnknownTopicOrPartition (a retriable error) forever,
about 40 times a second: a source topic deleted under a running worker left it reading
nothing, logging, and its stop waiting out its whole shutdown deadline on that commit. A
commit still running after `check_every_s` has its topics looked up on the broker; one that
is gone stops the worker in one line (as Kafka Streams stops on a missing source topic). A
broker that is away or slow leaves the commit to aiokafka's own retries, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from app.state_guard import TopicsCheck, VersionTopicGone

# How long (s) a commit runs before its topics are looked up: a commit takes milliseconds.
CHECK_EVERY_S = 2.0
# The longest (s) one lookup may take: a frozen broker must not hold the watch for minutes.
CHECK_TIMEOUT_S = 10.0

Stop = Callable[[BaseException, str], Awaitable[None]]  # the worker's one-line stop


async def watched_commit(
    commit: Awaitable[bool],
    topics: set[str],
    topics_gone: TopicsCheck,
    stop: Stop,
    check_every_s: float = CHECK_EVERY_S,
    check_timeout_s: float = CHECK_TIMEOUT_S,
) -> bool:
    """`commit`'s result; False (the commit cancelled, the worker stopping) if one of
    `topics` is gone from the broker while it runs."""
    task = asyncio.ensure_future(commit)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_every_s)
            if done:
                return task.result()
            try:
                await asyncio.wait_for(topics_gone(topics), check_timeout_s)
            except TimeoutError:
                continue
            except VersionTopicGone as gone:
                await stop(gone, str(gone))
                return False
    finally:
        if not task.done():
            task.cancel()

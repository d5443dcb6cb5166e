"""The replay's last step, committing the version's positions, when workers of the version
already run (`promote --force` while it replayed): Apache Kafka refuses a commit from
outside their group, and the replay ends without overwriting their positions."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import CommitFailedError, UnknownMemberIdError

from replay import runner


class GroupWithMembers:
    """Stands in for the consumer: the broker answered the commit with UNKNOWN_MEMBER_ID,
    which aiokafka raises as CommitFailedError."""

    stopped = False

    async def start(self) -> None:
        pass

    def assign(self, tps: list[Any]) -> None:
        pass

    async def commit(self, offsets: dict[Any, int]) -> None:
        raise CommitFailedError() from UnknownMemberIdError()

    async def stop(self) -> None:
        GroupWithMembers.stopped = True


async def test_a_refused_final_commit_leaves_the_workers_positions_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner, "new_consumer", lambda *a, **k: GroupWithMembers())
    await runner.commit_offsets("broker:9092", "kappa-v3", "orders", {0: 10, 1: 12})
    assert GroupWithMembers.stopped
    assert (
        "consumer group kappa-v3 has members (workers of this version): the replay's "
        "positions in orders were not committed, the workers keep theirs"
    ) in caplog.text

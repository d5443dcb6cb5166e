"""Topic administration logic that needs no broker (the rest: tests/integration)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaError

from app import admin


async def test_a_broker_that_will_not_tell_its_limits_leaves_the_copy_limit_as_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(bootstrap: object, topics: list[str]) -> dict[str, int]:
        raise KafkaError("TopicAuthorizationFailed")

    monkeypatch.setattr(admin, "max_message_bytes", refuse)
    assert await admin.copy_max_bytes("127.0.0.1:1", 5000, ["orders.dlq"]) == 5000

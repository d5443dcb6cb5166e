"""Stand-ins for the parts of an aiokafka consumer that the group watchers (`app.group_fence`,
`app.group_refusal`) wrap: its client's `send` and its coordinator, with no broker."""

from __future__ import annotations

import asyncio
from typing import Any


class ScriptedClient:
    """An aiokafka client's `send`, answering from a list and recording what was sent. An
    answer that is a future is awaited (a request held: a lookup waiting for the close, say);
    one that is callable is called (an answer that raises)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.sent: list[Any] = []

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, asyncio.Future):
            return await answer
        return answer() if callable(answer) else answer


class ClosingCoordinator:
    """An aiokafka group coordinator as far as the watchers look: the future its close sets,
    and who the member is."""

    def __init__(self, group_id: str, member_id: str) -> None:
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.group_id, self.generation, self.member_id = group_id, 3, member_id

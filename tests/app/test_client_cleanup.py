"""A Kafka client cancelled while it starts (Ctrl-C during a command's first connection) is
stopped, not left for the garbage collector to report as unclosed."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from app.topic_reader import high_watermarks


async def test_a_client_cancelled_while_starting_is_stopped() -> None:
    connected = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()  # a client's start() now waits for an answer that never comes
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        task = asyncio.ensure_future(high_watermarks(f"127.0.0.1:{port}", "t"))
        await asyncio.wait_for(connected.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()
        await asyncio.sleep(0)  # let the collector's reports run
    finally:
        loop.set_exception_handler(previous)
        server.close()
    unclosed = [c for c in reported if "Unclosed" in str(c.get("message"))]
    assert not unclosed, unclosed

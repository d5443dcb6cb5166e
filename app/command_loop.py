"""`asyncio.run` for the CLI's commands, stopped by SIGTERM as by Ctrl-C.

SIGTERM (a supervisor, `timeout`, `kill`, a `--processes` parent's death) cancels the
command's task, so its cleanup runs (clients stopped, stores closed) before `Terminated` is
raised; a second one during that cleanup is ignored. Raising KeyboardInterrupt from a plain
signal handler instead could land anywhere (inside aiokafka's sender, a store's close) and
left chained tracebacks and tasks destroyed while pending. Whatever SIGINT's disposition:
`asyncio.run` handles Ctrl-C only where SIGINT has Python's default handler, and a background
job of a script runs with SIGINT ignored.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the command (the CLI exits 143)."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end, or until SIGTERM: then `Terminated`, once its cleanup ran."""
    previous = signal.getsignal(signal.SIGTERM)
    terminated = False

    async def stoppable() -> T:
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            if not terminated:
                terminated = True
                task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        return await main

    try:
        return asyncio.run(stoppable())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)  # the loop's close left SIGTERM at its default

"""`asyncio.run` for the CLI's commands, stopped by SIGTERM as by Ctrl-C.

SIGTERM (a supervisor, `timeout`, `kill`, a `--processes` parent's death) cancels the
command's task, so its cleanup runs (clients stopped, stores closed) before `Terminated` is
raised; a second one during that cleanup is ignored, as is one after a Ctrl-C (whose cleanup
runs). Raising KeyboardInterrupt from a plain signal handler instead could land anywhere
(inside aiokafka's sender, a store's close) and left chained tracebacks and tasks destroyed
while pending. Whatever SIGINT's disposition: `asyncio.run` handles Ctrl-C only where SIGINT
has Python's default handler, and a background job of a script runs with SIGINT ignored.

Outside a command's loop (start-up, between two loops) `stop_outside_loop` handles SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the command (the CLI exits 143)."""


_sigterm_seen = False  # a SIGTERM reached `stop_outside_loop`


def stop_outside_loop(signum: int, frame: object) -> None:
    """SIGTERM's handler outside a command's loop: stop as Ctrl-C does (raise `Terminated`);
    a second SIGTERM during that cleanup is ignored.

    A garbage collection pass can run a weakref callback or a finalizer at any point, and an
    exception raised inside one is only reported, then dropped. So the SIGTERM is also
    remembered: the next command loop does not start, and `quiet_unraisable` keeps the report
    (a traceback) off stderr."""
    global _sigterm_seen
    if not _sigterm_seen:
        _sigterm_seen = True
        raise Terminated


def sigterm_seen() -> bool:
    """Whether SIGTERM reached `stop_outside_loop` since `forget_sigterm`."""
    return _sigterm_seen


def raise_if_sigterm_seen() -> None:
    """Before a long step outside `run` (a worker's faust loop, a demo's children): stop if a
    SIGTERM came whose exception was dropped."""
    if _sigterm_seen:
        raise Terminated


def forget_sigterm() -> None:
    """A new command starts (the CLI's entry point, once per command)."""
    global _sigterm_seen
    _sigterm_seen = False


@contextlib.contextmanager
def stop_is_the_end() -> Iterator[None]:
    """For commands that run until stopped (`broker`, `tail -f`, `sink`): Ctrl-C or SIGTERM
    is their orderly end, exit 0, so the stop is swallowed and the SIGTERM forgotten."""
    try:
        yield
    except KeyboardInterrupt:
        forget_sigterm()


def quiet_unraisable(
    previous: Callable[[Any], object],
) -> Callable[[Any], object]:
    """`sys.unraisablehook` that drops the report of a `Terminated` raised inside a finalizer
    (remembered by `stop_outside_loop`) and passes every other report on to `previous`."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Terminated):
            previous(unraisable)

    return hook


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
                # After a Ctrl-C it is the same stop (a terminal's Ctrl-C reaches a
                # `--processes` child, and its parent's SIGTERM follows): cancelled again, the
                # cleanup under way (a replay sending what it holds) would be cut short.
                if not task.cancelling():
                    task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        if _sigterm_seen:  # before this loop took SIGTERM over, and its exception dropped
            main.close()
            raise Terminated
        return await main

    try:
        return asyncio.run(stoppable())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)  # the loop's close left SIGTERM at its default

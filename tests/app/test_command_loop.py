"""SIGTERM outside a command's event loop stops the command, even where Python drops the
exception it raises (inside a weakref callback or finalizer, which a garbage collection
pass can run at any point), and without a traceback on stderr."""

from __future__ import annotations

import signal
import sys
import weakref
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from app import command_loop
from app.command_loop import Terminated


@pytest.fixture
def cli_handlers() -> Iterator[list[object]]:
    """SIGTERM and unraisable exceptions handled as `kappa`'s entry point sets them; yields
    the reports that reach the hook it wraps (Python's, there: a traceback on stderr)."""
    command_loop.forget_sigterm()
    previous, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    reported: list[object] = []
    sys.unraisablehook = command_loop.quiet_unraisable(reported.append)
    signal.signal(signal.SIGTERM, command_loop.stop_outside_loop)
    try:
        yield reported
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook
        command_loop.forget_sigterm()


class _Object:
    pass


def _sigterm_inside_a_weakref_callback() -> None:
    obj = _Object()
    ref = weakref.ref(obj, lambda _: command_loop.stop_outside_loop(signal.SIGTERM, None))
    del obj  # the callback runs here, and its exception is dropped
    assert ref() is None


def test_a_sigterm_dropped_inside_a_callback_stops_the_next_command_loop_quietly(
    cli_handlers: list[object],
) -> None:
    ran = []

    async def command() -> None:
        ran.append(True)

    _sigterm_inside_a_weakref_callback()
    with pytest.raises(Terminated):
        command_loop.run(command())
    assert not ran
    assert cli_handlers == []  # no report, so no traceback on stderr
    assert command_loop.sigterm_seen()
    with pytest.raises(Terminated):
        command_loop.raise_if_sigterm_seen()  # before a worker's or a demo's own loop


def test_a_sigterm_outside_a_loop_raises_once(cli_handlers: list[object]) -> None:
    with pytest.raises(Terminated):
        command_loop.stop_outside_loop(signal.SIGTERM, None)
    command_loop.stop_outside_loop(signal.SIGTERM, None)  # a second one, during cleanup


def test_other_dropped_exceptions_are_still_reported() -> None:
    reported: list[object] = []
    hook = command_loop.quiet_unraisable(reported.append)
    try:
        raise ValueError("a finalizer's own bug")
    except ValueError as e:
        hook(SimpleNamespace(exc_type=type(e), exc_value=e, object=None))
    try:
        raise Terminated
    except Terminated as e:
        hook(SimpleNamespace(exc_type=type(e), exc_value=e, object=None))
    assert [type(r.exc_value) for r in reported] == [ValueError]  # type: ignore[attr-defined]


def test_a_command_loop_runs_its_command_when_no_sigterm_came(
    cli_handlers: list[object],
) -> None:
    async def command() -> int:
        return 7

    assert command_loop.run(command()) == 7


def test_a_sigterm_dropped_after_the_last_loop_still_exits_143(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app import cli

    def status_that_finished(args: object) -> int:
        _sigterm_inside_a_weakref_callback()  # after its work, as it returns
        return 0

    monkeypatch.setattr(cli, "cmd_status", status_that_finished)
    try:
        assert cli.main(["status"]) == 128 + signal.SIGTERM
    finally:
        command_loop.forget_sigterm()

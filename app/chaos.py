"""Fault injection for tests, driven by environment variables that production never sets.

`KAPPA_CHAOS_KILL` kills the process at a chosen point of a batch (the chaos tests check that a
restart from any such point gives exact results); `KAPPA_CHAOS_STOP` makes a replay signal itself
at a chosen point, as a Ctrl-C or a supervisor's SIGTERM landing exactly there would;
`KAPPA_CHAOS_HANG_ON_STOP` makes an orderly shutdown hang (the stop deadline's test).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)


def _chaos_spec(variable: str, pipeline: str) -> tuple[int | None, str]:
    """`PIPELINE:BATCH:WHAT` from `variable`: (BATCH, WHAT) for `pipeline`, else (None, "")."""
    name, _, rest = os.environ.get(variable, "").partition(":")
    batch, _, what = rest.partition(":")
    if name != pipeline or not batch.isdigit():
        return None, ""
    return int(batch), what


class ChaosKill:
    """Fault injection for tests: `KAPPA_CHAOS_KILL=PIPELINE:BATCH:PHASE` SIGKILLs this process
    in batch number BATCH (1-based) of PIPELINE at PHASE (before-send, after-send: outputs
    acknowledged but state not committed, after-commit: committed or held); for `kappa sink`,
    `sink:FILE:PHASE` in the FILEth file it finishes (before-finish, after-finish).
    `PIPELINE:BATCH:PHASE:SIGNAL` sends SIGINT or SIGTERM there instead and goes on: the stop
    lands at the next wait, before-send's in the batch's own send. Unset in production."""

    def __init__(self, batch: int | None, phase: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.batch, self.phase, self.signal, self.count = batch, phase, sig, 0

    @classmethod
    def from_env(cls, pipeline: str) -> ChaosKill:
        batch, what = _chaos_spec("KAPPA_CHAOS_KILL", pipeline)
        phase, _, name = what.partition(":")
        sig = signal.Signals.__members__.get(name or "SIGKILL")
        if batch is None or sig is None:  # not this pipeline's, or no signal's name: none
            return cls(None, "")
        return cls(batch, phase or "after-send", sig)

    def step(self, phase: str, batches: int = 1) -> None:
        """At `phase` of the next `batches` batches (made durable together)."""
        if (
            self.batch is not None
            and self.count < self.batch <= self.count + batches
            and phase == self.phase
        ):
            log.warning(
                "chaos: sending %s to the process in batch %d at %s",
                self.signal.name,
                self.batch,
                phase,
            )
            os.kill(os.getpid(), self.signal)

    def batch_done(self) -> None:
        self.count += 1


class ChaosStop:
    """Fault injection for tests: `KAPPA_CHAOS_STOP=PIPELINE:BATCH:SIGNAL` makes a replay send
    its own process SIGNAL (`SIGINT`, the default: Ctrl-C; or `SIGTERM`) once its BATCHth fetch
    (1-based) of PIPELINE is done: outputs acknowledged, changelog entries held. Then it waits
    for the stop the signal causes, so nothing is processed after that point. Unset in
    production."""

    def __init__(self, batch: int | None, sig: signal.Signals = signal.SIGINT) -> None:
        self.batch, self.signal, self.count = batch, sig, 0

    @classmethod
    def from_env(cls, pipeline: str) -> ChaosStop:
        batch, name = _chaos_spec("KAPPA_CHAOS_STOP", pipeline)
        sig = signal.Signals.__members__.get(name or "SIGINT")
        if batch is None or sig is None:  # not this pipeline's, or no signal's name: none
            return cls(None)
        return cls(batch, sig)

    async def batch_done(self) -> None:
        self.count += 1
        if self.count != self.batch:
            return
        log.warning("chaos: sending %s to the process after batch %d", self.signal.name, self.batch)
        os.kill(os.getpid(), self.signal)
        await asyncio.Event().wait()  # until the stop cancels it


async def hang_on_stop_if_asked() -> None:
    """With `KAPPA_CHAOS_HANG_ON_STOP` set, never return: an orderly shutdown that never ends."""
    if os.environ.get("KAPPA_CHAOS_HANG_ON_STOP"):
        await asyncio.Event().wait()

"""The test-only fault injection variables, read as specs: a spec for another pipeline, or one
that cannot be read, injects nothing rather than crash the process it was set for."""

from __future__ import annotations

import signal

import pytest

from app.chaos import ChaosKill, ChaosStop


def test_a_stop_spec_names_the_pipeline_the_batch_and_the_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAPPA_CHAOS_STOP", "orders:3:SIGTERM")
    stop = ChaosStop.from_env("orders")
    assert (stop.batch, stop.signal) == (3, signal.SIGTERM)
    assert ChaosStop.from_env("user-totals").batch is None
    monkeypatch.setenv("KAPPA_CHAOS_STOP", "orders:3")
    assert ChaosStop.from_env("orders").signal == signal.SIGINT  # Ctrl-C's, by default
    for unreadable in ("orders:3:SIGNOPE", "orders:x:SIGINT", "orders"):
        monkeypatch.setenv("KAPPA_CHAOS_STOP", unreadable)  # SIGNOPE was a KeyError
        assert ChaosStop.from_env("orders").batch is None


def test_a_kill_spec_names_the_pipeline_the_batch_and_the_phase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAPPA_CHAOS_KILL", "orders:4:before-send")
    kill = ChaosKill.from_env("orders")
    assert (kill.batch, kill.phase) == (4, "before-send")
    monkeypatch.setenv("KAPPA_CHAOS_KILL", "orders:4")
    assert ChaosKill.from_env("orders").phase == "after-send"
    assert ChaosKill.from_env("orders").signal == signal.SIGKILL
    assert ChaosKill.from_env("sink").batch is None
    monkeypatch.setenv("KAPPA_CHAOS_KILL", "orders:4:before-send:SIGINT")  # a stop, not a kill
    kill = ChaosKill.from_env("orders")
    assert (kill.batch, kill.phase, kill.signal) == (4, "before-send", signal.SIGINT)
    monkeypatch.setenv("KAPPA_CHAOS_KILL", "orders:4:before-send:SIGNOPE")
    assert ChaosKill.from_env("orders").batch is None

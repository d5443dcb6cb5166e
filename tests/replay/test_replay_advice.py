"""A state error met anywhere in a replay says what a replay does next: run it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.runner import RERUN, replay_advice
from tables.partition_state import StateError, UndecodableStateError
from tables.rocks import StateLockedError, unreadable


def test_a_worker_s_advice_becomes_a_replay_s() -> None:
    error = unreadable(Path("/s/v2/orders/p1"), "not a RocksDB database")
    with pytest.raises(StateError) as caught, replay_advice():
        raise error
    assert RERUN == "run the replay again"
    assert str(caught.value) == str(error).replace("and restart;", f"and {RERUN};")
    assert caught.value.__cause__ is error  # the original stays reachable


def test_an_undecodable_state_gets_a_replay_s_advice_too() -> None:
    with pytest.raises(UndecodableStateError) as caught, replay_advice():
        raise UndecodableStateError("orders partition 1: the stored t key b'x'", None)
    assert f"and {RERUN}: it is restored from its changelog" in str(caught.value)


def test_an_error_without_rerun_advice_passes_unchanged() -> None:
    locked = StateLockedError("state directory /s/v2 is in use by another kappa worker")
    with pytest.raises(StateLockedError) as caught, replay_advice():
        raise locked
    assert caught.value is locked and caught.value.__cause__ is None
    with pytest.raises(KeyError), replay_advice():  # not a state error: not its business
        raise KeyError("x")

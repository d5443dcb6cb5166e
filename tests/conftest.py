"""Shared fixtures: one embedded broker per test session, unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import app.broker
from app.broker import DevBroker, free_port

# Property tests assert results, never speed: no per-example deadline and no "too slow" health
# check, which a loaded CI machine would fail. Under CI the examples are the same every run
# (`derandomize`), so a run is reproducible; local runs keep exploring new ones.
settings.register_profile(
    "kappa",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI", "").lower() not in ("", "0", "false", "no"),
)
settings.load_profile("kappa")

# The suite's own parameters (`make chaos`); every other KAPPA_* variable of the shell that runs
# the tests (a developer's KAPPA_BROKER, a left-over KAPPA_CHAOS_KILL) is Kappa configuration
# that would reach the code under test and the processes it starts, so it is dropped.
SUITE_PARAMETERS = {"KAPPA_CHAOS_ROUNDS", "KAPPA_CHAOS_SEED"}
for _name in [n for n in os.environ if n.startswith("KAPPA_") and n not in SUITE_PARAMETERS]:
    del os.environ[_name]


# Under pytest-xdist (`make test`), each test process picks ports from its own range: one
# process could otherwise be handed a port the other has picked and not yet bound.
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
if _xdist_worker.startswith("gw") and int(_xdist_worker[2:]) < 4:
    _first = 10_000 + 5_000 * int(_xdist_worker[2:])
    app.broker.PORT_RANGE = range(_first, _first + 5_000)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A Tansu broker (memory only) on a free port for the whole session; yields host:port."""
    dev = DevBroker("127.0.0.1", free_port()).start()
    try:
        yield dev.address
    finally:
        dev.stop()


@pytest.fixture
def unique() -> str:
    """A short unique token for topic prefixes, app ids and consumer groups."""
    return uuid.uuid4().hex[:10]

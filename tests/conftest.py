"""Shared fixtures: one embedded broker per test session, unique names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.broker import DevBroker, free_port


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

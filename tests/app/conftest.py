"""Fixtures shared by the tests of `app/`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.group_fence import COORDINATOR_LOG, QUIET_ONCE_STOPPING
from app.log_repeats import RepeatLimiter


@pytest.fixture
def coordinator_log_as_it_was() -> Iterator[None]:
    """aiokafka's coordinator log as a test of the group watchers needs it, and as it was after:
    a worker made by an earlier test in the process limits its repeated lines (a line a test
    logs could be held as a repeat), and a fenced or refused member quiets it for the rest of
    its process (not for the other tests)."""
    limiters = [f for f in COORDINATOR_LOG.filters if isinstance(f, RepeatLimiter)]
    for limiter in limiters:
        COORDINATOR_LOG.removeFilter(limiter)
    try:
        yield
    finally:
        COORDINATOR_LOG.removeFilter(QUIET_ONCE_STOPPING)
        for limiter in limiters:
            COORDINATOR_LOG.addFilter(limiter)

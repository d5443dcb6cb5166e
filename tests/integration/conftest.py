"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.broker import free_port
from tests.support.kafka_proxy import FaultProxy, ProxiedBroker


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A proxy that can change a broker's answers, to a broker of the test's own (its faults
    must not reach the session's broker) that advertises the proxy's address."""
    broker_port = free_port()
    proxy = FaultProxy(("127.0.0.1", broker_port)).start()
    broker = ProxiedBroker("127.0.0.1", broker_port, advertised_port=proxy.port)
    try:
        broker.start()
        yield proxy
    finally:
        broker.stop()
        proxy.stop()

"""Which broker `kappa demo` uses: one that answers at any address of KAPPA_BROKER, else the
embedded broker on its only address."""

from __future__ import annotations

import socket

import pytest

from app.demo import broker_answering
from app.settings import ConfigError


def test_any_address_of_the_list_that_answers_is_used() -> None:
    up = {("b2", 9092)}
    assert broker_answering(["b1:9092", "b2:9092"], lambda h, p: (h, p) in up) == (
        "b2",
        9092,
        True,
    )


def test_a_single_address_without_a_broker_gets_the_embedded_one() -> None:
    assert broker_answering(["127.0.0.1:9092"], lambda h, p: False) == ("127.0.0.1", 9092, False)


def test_a_list_none_of_which_answers_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        broker_answering(["b1:9092", "b2:9092"], lambda h, p: False)
    assert str(e.value) == (
        "no broker of KAPPA_BROKER=b1:9092,b2:9092 answers: the demo starts the embedded "
        "broker only for a single address"
    )


@pytest.mark.parametrize("unusable", ["nosuchhost.invalid:9092", "[::1]:9092"])
def test_an_address_of_a_list_the_probe_cannot_use_is_one_that_does_not_answer(
    unusable: str,
) -> None:
    """A host that does not resolve, or an IPv6 one (the probe is IPv4), stopped the demo
    before the next address was tried."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert broker_answering([unusable, f"127.0.0.1:{port}"]) == ("127.0.0.1", port, True)

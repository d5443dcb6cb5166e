"""Ports picked for brokers and web servers in one process are never picked twice."""

from __future__ import annotations

from app.broker import free_port


def test_a_port_is_handed_out_once_per_process() -> None:
    # The kernel offers a recently closed ephemeral port again often enough (about 1 in 15
    # over 2,000 picks) that two workers' web ports could collide before either binds.
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)

"""Ports picked for brokers and web servers in one process are never picked twice."""

from __future__ import annotations

import pytest

import app.broker
from app.broker import free_port


def test_a_port_is_handed_out_once_per_process() -> None:
    # The kernel offers a recently closed ephemeral port again often enough (about 1 in 15
    # over 2,000 picks) that two workers' web ports could collide before either binds.
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)


def test_a_process_given_a_range_picks_only_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two test processes side by side each have a range: neither is handed the other's."""
    monkeypatch.setattr(app.broker, "PORT_RANGE", range(20_000, 20_050))
    picked = [free_port() for _ in range(10)]
    assert all(20_000 <= p < 20_050 for p in picked) and len(set(picked)) == 10

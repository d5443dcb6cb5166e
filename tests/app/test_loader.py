"""`kappa produce` plumbing, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from app import loader
from app.cli import build_parser
from app.settings import load_settings


def test_produce_creates_a_missing_topic_with_the_configured_replication_keeping_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[Any] = []

    async def nothing(*args: Any, **kwargs: Any) -> int:
        return 0

    async def ensure_topics(bootstrap: Any, topics: Any, replication: int = 1) -> list[str]:
        created.append((topics, replication))
        return []

    monkeypatch.setattr(loader, "wait_for_broker", nothing)
    monkeypatch.setattr(loader, "produce_records", nothing)
    monkeypatch.setattr(loader, "ensure_topics", ensure_topics)
    args = build_parser().parse_args(["produce", "orders", "--generate", "1", "--no-progress"])
    loader.run_produce(load_settings({"KAPPA_REPLICATION": "3", "KAPPA_PARTITIONS": "6"}), args)
    assert created == [({"orders": (6, {"retention.ms": "-1"})}, 3)]

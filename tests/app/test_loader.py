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

    async def no_topic(bootstrap: Any) -> set[str]:
        return set()

    monkeypatch.setattr(loader, "wait_for_broker", nothing)
    monkeypatch.setattr(loader, "produce_records", nothing)
    monkeypatch.setattr(loader, "ensure_topics", ensure_topics)
    monkeypatch.setattr(loader, "existing_topics", no_topic)
    args = build_parser().parse_args(["produce", "orders", "--generate", "1", "--no-progress"])
    loader.run_produce(load_settings({"KAPPA_REPLICATION": "3", "KAPPA_PARTITIONS": "6"}), args)
    assert created == [({"orders": (6, {"retention.ms": "-1"})}, 3)]


def test_a_csv_field_past_the_csv_module_limit_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """csv raises its own `csv.Error`, not a ValueError, for a field over 131,072 characters."""
    from app.settings import ConfigError

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return 0

    async def consume(bootstrap: Any, topic: str, records: Any, **kwargs: Any) -> int:
        return sum(1 for _ in records)

    big = tmp_path / "big.csv"
    header = "order_id,user_id,product_id,category,amount,quantity,ts\n"
    big.write_text(header + "x" * 200_000 + ",u,p,c,1.0,1,1700000000000\n")
    monkeypatch.setattr(loader, "wait_for_broker", nothing)
    monkeypatch.setattr(loader, "ensure_topics", nothing)
    monkeypatch.setattr(loader, "produce_records", consume)
    args = build_parser().parse_args(["produce", "orders", "--file", str(big), "--no-progress"])
    with pytest.raises(ConfigError) as refused:
        loader.run_produce(load_settings({}), args)
    assert str(refused.value).startswith(f"cannot read {big}: field larger than field limit")

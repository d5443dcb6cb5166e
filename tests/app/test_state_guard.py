"""The start-up check that the broker still holds what the local state applied, without a
broker: the high watermarks it reads are stood in for."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import topic_reader
from app.settings import load_settings
from app.state_guard import BrokerDataLost, check_broker_has_state, local_source_partitions
from app.topology import Topology


def _topology(tmp_path: Path, grace_ms: int) -> Topology:
    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_SOURCE_END_GRACE_MS": str(grace_ms)}
    )
    return Topology(settings, 1).select(["orders"])


def _answers(monkeypatch: pytest.MonkeyPatch, *ends: int) -> list[int]:
    """Partition 0's high watermark, one per request (the last one repeated)."""
    asked: list[int] = []

    async def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
        asked.append(1)
        return {0: ends[min(len(asked), len(ends)) - 1]}

    monkeypatch.setattr(topic_reader, "high_watermarks", high_watermarks)
    return asked


async def test_a_source_end_that_catches_up_within_the_grace_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _answers(monkeypatch, 7, 11)  # a new leader's older end, then the real one
    await check_broker_has_state("b:1", _topology(tmp_path, 30_000), {("orders", 0): 9})
    assert len(asked) == 2


async def test_a_source_end_still_behind_after_the_grace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answers(monkeypatch, 7)
    with pytest.raises(
        BrokerDataLost, match=r"has applied offset 9 but the broker's log ends at 7"
    ):
        await check_broker_has_state("b:1", _topology(tmp_path, 1_500), {("orders", 0): 9})


def test_the_local_state_a_worker_joins_with_names_its_pipelines_sources(tmp_path: Path) -> None:
    """What a worker tells its group it has state for: the physical source topic and number of
    each partition directory of the pipelines it runs, nothing else under its state root."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_TOPIC_PREFIX": "pre."})
    topology = Topology(settings, 2).select(["orders", "user-totals"])
    root = topology.state_root()
    for pipeline, entry in [
        ("orders", "p0"),
        ("orders", "p3"),
        ("user-totals", "p1"),
        ("user-totals", "LOCK"),
        ("top-products", "p2"),  # a pipeline it does not run
    ]:
        (root / pipeline / entry).mkdir(parents=True)
    (root / "orders" / "p7").touch()  # not a directory
    assert local_source_partitions(topology) == [
        ("pre.orders", 0),
        ("pre.orders", 3),
        ("pre.orders.by-user.v2", 1),
    ]
    assert local_source_partitions(Topology(settings, 3)) == []  # no state for that version

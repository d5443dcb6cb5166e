"""DLQ and late copies fit the broker's per-topic record limit (`max.message.bytes`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.base import record_bytes_bound
from app.admin import copy_max_bytes, ensure_topics, max_message_bytes
from app.produce import produce_records
from tests.support.datasets import GOOD_ORDER
from tests.support.workers import Worker, kappa_env, read_records

pytestmark = pytest.mark.integration


async def test_the_smallest_reported_limit_of_the_output_topics_wins(
    broker: str, unique: str
) -> None:
    small, plain = f"{unique}.small", f"{unique}.plain"
    await ensure_topics(broker, {small: (1, {"max.message.bytes": "8192"}), plain: (1, {})})
    assert await max_message_bytes(broker, [small, plain]) == {small: 8192}
    assert await copy_max_bytes(broker, 1_000_000, [small, plain]) == 8192
    assert await copy_max_bytes(broker, 4096, [small, plain]) == 4096  # the setting is smaller
    assert await copy_max_bytes(broker, 1_000_000, [plain]) == 1_000_000  # nothing reported


async def test_a_worker_cuts_a_dlq_copy_to_its_topics_max_message_bytes(
    broker: str, unique: str, tmp_path: Path
) -> None:
    source, dlq = f"{unique}.orders", f"{unique}.orders.dlq"
    await ensure_topics(broker, {source: (4, {}), dlq: (4, {"max.message.bytes": "8192"})})
    big = b'{"broken' + b"x" * 20_000
    good = json.dumps(GOOD_ORDER).encode()
    await produce_records(broker, source, [(b"p1", big), (b"p1", good)], progress=False)

    worker = Worker(kappa_env(broker, unique, tmp_path / "state"), tmp_path / "worker.log")
    worker.start("--pipeline", "orders")
    try:
        worker.wait_until(lambda m: m.get("kappa_dlq_total", 0) >= 1, timeout=90)
    finally:
        assert worker.stop() == 0

    (copy,) = [r for records in (await read_records(broker, dlq)).values() for r in records]
    _, key, value, headers = copy
    assert headers["kappa.error"] == b"not_json"
    assert headers["kappa.truncated.value"] == str(len(big)).encode()
    assert big.startswith(value or b"") and len(value or b"") > 7_000
    assert record_bytes_bound(key, value, list(headers.items())) <= 8192

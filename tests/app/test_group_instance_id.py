"""`KAPPA_GROUP_INSTANCE_ID`: static group membership for the worker's consumer, validated as
Kafka validates `group.instance.id` (no broker: nothing is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.worker import create_app


async def _worker_consumer_instance_id(tmp_path: Path, env: dict[str, str]) -> str | None:
    """The group instance id the worker's consumer would join with."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path), **env}), 1)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return consumer._group_instance_id  # type: ignore[no-any-return]
    finally:
        await consumer.stop()


async def test_membership_is_dynamic_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # faust reads its own variable even when told None: only Kappa's setting may turn it on
    monkeypatch.setenv("CONSUMER_GROUP_INSTANCE_ID", "from-the-environment")
    assert load_settings({"KAPPA_STATE_DIR": str(tmp_path)}).group_instance_id == ""
    assert await _worker_consumer_instance_id(tmp_path, {}) is None
    empty = {"KAPPA_GROUP_INSTANCE_ID": ""}
    assert await _worker_consumer_instance_id(tmp_path, empty) is None


@pytest.mark.parametrize("instance_id", ["kappa-worker-0", "a.b_C-9", "w" * 249])
async def test_the_worker_consumer_joins_with_the_instance_id_given(
    tmp_path: Path, instance_id: str
) -> None:
    env = {"KAPPA_GROUP_INSTANCE_ID": instance_id}
    assert await _worker_consumer_instance_id(tmp_path, env) == instance_id


@pytest.mark.parametrize(
    "instance_id,words",
    [
        ("kappa worker 0", "'kappa worker 0' may only hold ASCII letters, digits, ., _ and -"),
        (" ", "' ' may only hold ASCII letters"),
        ("pod/0", "'pod/0' may only hold ASCII letters"),
        ("wörker", "may only hold ASCII letters"),
        ("w" * 250, f"='{'w' * 60}…' is longer than 249 characters"),
        (".", "'.' cannot be '.' or '..'"),
        ("..", "cannot be '.' or '..'"),
    ],
)
def test_an_instance_id_kafka_would_refuse_is_one_line_at_load(
    tmp_path: Path, instance_id: str, words: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_GROUP_INSTANCE_ID": instance_id})
    message = str(refused.value)
    assert message.startswith("KAPPA_GROUP_INSTANCE_ID=") and words in message, message
    assert "\n" not in message and message.endswith("(empty: dynamic membership)")

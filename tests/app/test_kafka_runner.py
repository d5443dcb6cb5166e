"""The worker and the replay build their runners in one place: the guarantee decides how."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.admin import ensure_topics
from app.batch_producer import OwnProducerSender, TransactionalSender
from app.broker import free_port
from app.kafka_runner import kafka_pipeline_runner, stop_if_gone
from app.settings import Settings, load_settings
from app.state_guard import VersionTopicGone, topic_gone
from app.topology import Topology


def _setup(tmp_path: Path, guarantee: str) -> tuple[Settings, Topology]:
    settings = load_settings(
        {"KAPPA_PROCESSING_GUARANTEE": guarantee, "KAPPA_STATE_DIR": str(tmp_path)}
    )
    return settings, Topology(settings, 1).select(["orders"])


def test_at_least_once_holds_changelog_entries_for_one_request_per_cycle(tmp_path: Path) -> None:
    settings, topology = _setup(tmp_path, "at_least_once")
    sender = OwnProducerSender(settings.kafka)
    runner = kafka_pipeline_runner(settings, topology, topology.pipelines[0], sender)
    assert runner.one_request and runner.hold_changelog
    assert runner._opener.before_open is None and runner._opener.changelog_source is not None


def test_exactly_once_fences_before_opening_and_sends_one_transaction_per_partition(
    tmp_path: Path,
) -> None:
    settings, topology = _setup(tmp_path, "exactly_once")
    sender = TransactionalSender(settings.kafka, "kappa-test")
    runner = kafka_pipeline_runner(settings, topology, topology.pipelines[0], sender)
    assert not runner.one_request and not runner.hold_changelog
    assert runner._opener.before_open == sender.fence


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_sender_that_does_not_give_the_guarantee_is_refused(
    guarantee: str, tmp_path: Path
) -> None:
    settings, topology = _setup(tmp_path, guarantee)
    wrong = (
        OwnProducerSender(settings.kafka)
        if guarantee == "exactly_once"
        else TransactionalSender(settings.kafka, "kappa-test")
    )
    with pytest.raises(ValueError, match=f"is not {guarantee}"):
        kafka_pipeline_runner(settings, topology, topology.pipelines[0], wrong)


@pytest.mark.integration
async def test_a_send_the_broker_did_not_know_stops_only_for_a_topic_really_gone(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """The check behind `retrying`'s UnknownTopicOrPartition: a topic missing from the broker's
    list stops the worker in one line; topics all listed (a broker catching up) do not. (The
    embedded broker itself accepts writes to a deleted topic, so this is checked here.)"""
    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )
    topology = Topology(settings, 1)
    there = f"{unique}.orders.late"
    await ensure_topics(broker, {there: (1, {})})
    check = stop_if_gone(settings, topology)
    await check({there})
    with pytest.raises(VersionTopicGone) as gone:
        await check({there, f"{unique}.orders.dlq"})
    assert str(gone.value).startswith(f"topic {unique}.orders.dlq is gone from the broker")


async def test_a_topic_list_that_cannot_be_read_leaves_the_send_to_be_retried(
    tmp_path: Path,
) -> None:
    """No broker answers: nothing is known to be gone, so the check does not stop the worker."""
    settings = load_settings(
        {"KAPPA_BROKER": f"127.0.0.1:{free_port()}", "KAPPA_STATE_DIR": str(tmp_path)}
    )
    await stop_if_gone(settings, Topology(settings, 1))({"orders.dlq"})


def test_a_gone_source_from_outside_is_named_as_a_source_and_a_versions_own_as_its_topic(
    tmp_path: Path,
) -> None:
    settings = load_settings({"KAPPA_TOPIC_PREFIX": "p.", "KAPPA_STATE_DIR": str(tmp_path)})
    v2 = Topology(settings, 2)
    source = str(topic_gone("p.orders", v2))
    assert source.startswith("source topic p.orders is gone from the broker: it was deleted")
    assert f"remove all of {tmp_path}" in source
    own = str(topic_gone("p.orders.by-user.v2", v2))  # read by user-totals, written by orders
    assert own.startswith("topic p.orders.by-user.v2 is gone from the broker")
    assert "or the version was dropped" in own

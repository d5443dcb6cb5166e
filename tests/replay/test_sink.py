"""What `kappa sink` follows and which directories it refuses, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.topology import Topology
from replay.sink import MANIFEST, chosen_outputs, claim_directory, sink_lock


def topology(pipelines: list[str] | None = None) -> Topology:
    t = Topology(load_settings({}), 2)
    return t.select(pipelines) if pipelines else t


def test_a_sink_follows_every_output_of_the_version_or_the_named_ones() -> None:
    assert list(chosen_outputs(topology(), [])) == [
        "orders.revenue-1m",
        "orders.user-totals",
        "orders.product-trends",
        "orders.top-products",
        "orders.product-signals",
    ]
    assert chosen_outputs(topology(), ["orders.user-totals"]) == {
        "orders.user-totals": ("user_id",)
    }
    assert list(chosen_outputs(topology(["orders"]), [])) == ["orders.revenue-1m"]


def test_an_output_that_is_not_there_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^no output orders\.nope \(outputs: orders\.rev"):
        chosen_outputs(topology(), ["orders.nope"])
    with pytest.raises(
        ConfigError, match=r"^version 2 does not produce orders\.user-totals \(it ran orders\)$"
    ):
        chosen_outputs(topology(["orders"]), ["orders.user-totals"])


def test_a_directory_is_claimed_for_one_version_and_its_topics(tmp_path: Path) -> None:
    claim_directory(tmp_path, 2, {"orders.revenue-1m": "orders.revenue-1m.v2"})
    claim_directory(tmp_path, 2, {"orders.user-totals": "orders.user-totals.v2"})  # added
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["version"] == 2
    assert manifest["topics"] == {
        "orders.revenue-1m": "orders.revenue-1m.v2",
        "orders.user-totals": "orders.user-totals.v2",
    }
    assert manifest["keys"]["orders.user-totals"] == ["user_id"]
    with pytest.raises(
        ConfigError,
        match=r"holds version 2's results, not version 3's: sink version 3 to another "
        r"directory \(or pass --version 2\)$",
    ):
        claim_directory(tmp_path, 3, {"orders.revenue-1m": "orders.revenue-1m.v3"})
    with pytest.raises(ConfigError, match=r"holds offsets of orders\.revenue-1m\.v2, not x\.v2"):
        claim_directory(tmp_path, 2, {"orders.revenue-1m": "x.v2"})  # another topic prefix


def test_a_directory_with_something_else_in_its_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"is not a kappa sink.s: use another directory$"):
        claim_directory(tmp_path, 1, {"orders.revenue-1m": "orders.revenue-1m"})
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match=r"^cannot read "):
        claim_directory(tmp_path, 1, {"orders.revenue-1m": "orders.revenue-1m"})


def test_one_sink_at_a_time_writes_a_directory(tmp_path: Path) -> None:
    with (
        sink_lock(tmp_path),
        pytest.raises(ConfigError, match=f"^another sink is writing to {tmp_path}$"),
        sink_lock(tmp_path),
    ):
        pass
    with sink_lock(tmp_path):  # released when the first one ends
        pass


async def test_a_broker_away_is_said_once_and_its_return_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.errors import KafkaConnectionError

    from replay import sink

    answers: list[object] = [KafkaConnectionError(), KafkaConnectionError(), {"t.v2"}]

    async def existing_topics(conn: object) -> set[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    monkeypatch.setattr(sink, "existing_topics", existing_topics)
    said: list[str] = []
    settings = load_settings({"KAPPA_BROKER": "b:9092"})
    watch = sink._TopicWatch(settings, 2, {"t.v2"}, said.append, now=0.0)
    await watch.check(1.0)  # not yet due
    for i in range(1, 4):
        await watch.check(i * sink.TOPIC_CHECK_S)
    assert said == [
        "cannot reach the broker at b:9092 (KafkaConnectionError): the sink goes on once it "
        "answers",
        "the broker at b:9092 answers again",
    ]
    assert answers == []


async def test_records_deleted_before_the_sink_read_them_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no offset reset, a position whose records retention took is an error, not a jump
    over them (the dev broker has no retention: the error is raised here as Kafka sends it)."""
    from aiokafka import TopicPartition
    from aiokafka.errors import OffsetOutOfRangeError

    from replay import sink
    from replay.sink_files import PartitionFile

    tp = TopicPartition("orders.revenue-1m.v2", 1)
    run = sink._SinkRun(
        load_settings({}), tmp_path, 2, {"orders.revenue-1m": tp.topic},
        {"orders.revenue-1m": ("product_id",)}, sink.DEFAULT_ROLL, print,
    )  # fmt: skip
    assert run.consumer._auto_offset_reset == "none"
    run.files[tp] = PartitionFile(tmp_path / "p", 7)

    async def getmany(**_: object) -> None:
        raise OffsetOutOfRangeError({tp: 7})

    monkeypatch.setattr(run.consumer, "getmany", getmany)
    try:
        with pytest.raises(
            sink.OtherTopic,
            match=r"^orders\.revenue-1m\.v2\[1\] no longer holds offset 7 \(deleted before the "
            r"sink read it\?\): it is not the topic",
        ):
            await run._fetch()
    finally:
        await run.consumer.stop()


@pytest.mark.parametrize("unfinished", [[], ["cannot write in d: No space left on device"]])
async def test_a_stopped_sink_is_an_orderly_stop_unless_a_file_could_not_be_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfinished: list[str]
) -> None:
    import asyncio

    from replay import sink

    started = asyncio.Event()

    class Run:
        def __init__(self, *_: object) -> None:
            pass

        async def start(self) -> None:
            started.set()

        async def follow(self) -> None:
            await asyncio.Event().wait()  # until stopped

        async def stop(self) -> list[ConfigError]:
            return [ConfigError(e) for e in unfinished]

    monkeypatch.setattr(sink, "_SinkRun", Run)
    following = asyncio.create_task(
        sink._follow(load_settings({}), tmp_path, 1, {}, {}, sink.DEFAULT_ROLL, print)
    )
    await started.wait()
    following.cancel()  # what Ctrl-C and SIGTERM do
    if unfinished:
        with pytest.raises(ConfigError, match=r"^cannot write in d: No space left on device$"):
            await following
    else:
        with pytest.raises(asyncio.CancelledError):
            await following

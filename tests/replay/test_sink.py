"""What `kappa sink` follows and which directories it refuses, without a broker."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.topology import Topology
from replay.registry import DROPPED, LIVE, RegistryView, VersionRecord
from replay.sink import (
    MANIFEST,
    _SinkRun,
    chosen_outputs,
    claim_directory,
    other_version,
    read_claim,
    sink_lock,
)


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
        "orders.quiet-products",
    ]
    assert chosen_outputs(topology(), ["orders.user-totals"]) == {
        "orders.user-totals": ("user_id",)
    }
    assert list(chosen_outputs(topology(["orders"]), [])) == ["orders.revenue-1m"]
    hopping = {"hopping_size_ms": 120_000, "hopping_step_ms": 60_000}
    assert list(chosen_outputs(topology(["orders"]), [], hopping)) == [
        "orders.revenue-1m",
        "orders.revenue-hopping",
    ]
    with pytest.raises(
        ConfigError,
        match=r"^version 2 was built without hopping windows \(KAPPA_HOPPING_SIZE_MS=0\): "
        r"orders\.revenue-hopping stays empty$",
    ):
        chosen_outputs(topology(), ["orders.revenue-hopping"], {"hopping_size_ms": 0})


def test_an_output_that_is_not_there_is_refused_in_one_line() -> None:
    """Naming the version's outputs only: it listed orders.revenue-hopping for a version
    without hopping windows, and every output for a version that ran some pipelines."""
    with pytest.raises(ConfigError) as refused:
        chosen_outputs(topology(), ["orders.nope"], {"hopping_size_ms": 0})
    assert str(refused.value) == (
        "no output orders.nope (version 2's outputs: orders.revenue-1m, orders.user-totals, "
        "orders.product-trends, orders.top-products, orders.product-signals, "
        "orders.quiet-products)"
    )
    with pytest.raises(ConfigError) as refused:
        chosen_outputs(topology(["orders"]), ["orders.nope"], {"hopping_size_ms": 120_000})
    assert str(refused.value) == (
        "no output orders.nope (version 2's outputs: orders.revenue-1m, orders.revenue-hopping)"
    )
    with pytest.raises(
        ConfigError,
        match=r"^no output orders\.user-totals\.v2 \(version 2's outputs: .*\): output names "
        r"take no version suffix \(pass orders\.user-totals and --version 2\)$",
    ):
        chosen_outputs(topology(), ["orders.user-totals.v2"])  # the topic's name
    with pytest.raises(ConfigError, match=r"^no output '' \(version 2's outputs: orders\."):
        chosen_outputs(topology(), [""])  # `--output ''`: named, not left blank
    with pytest.raises(ConfigError, match=r"\): did you mean orders\.user-totals\?$"):
        chosen_outputs(topology(), ["user-totals"])
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
    (tmp_path / MANIFEST).write_text('{"version": 1,\n not json')
    with pytest.raises(ConfigError) as refused:
        claim_directory(tmp_path, 1, {"orders.revenue-1m": "orders.revenue-1m"})
    assert str(refused.value) == (  # not the parser's own message
        f"{tmp_path / MANIFEST} is not valid JSON (line 2, column 2): restore it, or sink to "
        "another directory"
    )


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

    async def partition_counts(conn: object, topics: list[str]) -> dict[str, int]:
        return dict.fromkeys(topics, 1)

    monkeypatch.setattr(sink, "existing_topics", existing_topics)
    monkeypatch.setattr(sink, "partition_counts", partition_counts)
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
    unfinished: list[str],
) -> None:
    import asyncio

    from replay import sink

    started = asyncio.Event()

    class Run:
        async def start(self) -> None:
            started.set()

        async def follow(self) -> None:
            await asyncio.Event().wait()  # until stopped

        async def stop(self) -> list[ConfigError]:
            return [ConfigError(e) for e in unfinished]

    following = asyncio.create_task(sink._follow(Run()))  # type: ignore[arg-type]
    await started.wait()
    following.cancel()  # what Ctrl-C and SIGTERM do
    if unfinished:
        with pytest.raises(ConfigError, match=r"^cannot write in d: No space left on device$"):
            await following
    else:
        with pytest.raises(asyncio.CancelledError):
            await following


class ScriptedLog:
    """The consumer calls a sink's start check makes, over scripted partitions: offset →
    value, where an offset in [start, end) with no value is a transaction marker or an
    aborted record (never delivered, as with read_committed). Not Kafka: the check's control
    flow, for what the dev broker cannot hold (transactions, retention)."""

    def __init__(self, start: int, end: int, values: dict[int, bytes]) -> None:
        self.start, self.end, self.values = start, end, values
        self.at: int | None = None
        self.fetched = False

    def assign(self, tps: list[object]) -> None:
        self.at, self.fetched = None, False

    async def beginning_offsets(self, tps: list[object]) -> dict[object, int]:
        return dict.fromkeys(tps, self.start)

    def seek(self, tp: object, offset: int) -> None:
        self.at = offset

    def pause(self, tp: object) -> None:
        self.at = None

    def highwater(self, tp: object) -> int | None:
        return self.end if self.fetched else None

    async def position(self, tp: object) -> int:
        assert self.at is not None
        return self.at

    async def getmany(self, **_: object) -> dict[object, list[object]]:
        import asyncio

        from aiokafka import ConsumerRecord, TopicPartition

        await asyncio.sleep(0.01)  # a fetch waits at the broker
        if self.at is None:
            return {}
        tp = TopicPartition(TOPIC, 0)
        records = [
            ConsumerRecord(TOPIC, 0, o, 0, 0, None, v, None, 0, len(v), [])
            for o in range(self.at, self.end)
            if (v := self.values.get(o)) is not None
        ]
        self.at, self.fetched = self.end, True
        return {tp: records} if records else {}


TOPIC = "orders.user-totals.v1"


async def user_totals_run(tmp_path: Path, version: int = 1, **env: str) -> _SinkRun:
    """A sink's run over `TOPIC`, its own consumer stopped: tests hand it a scripted one."""
    from replay import sink

    run = sink._SinkRun(
        load_settings(env), tmp_path, version, {"orders.user-totals": TOPIC},
        {"orders.user-totals": ("user_id",)}, sink.DEFAULT_ROLL, print,
    )  # fmt: skip
    await run.consumer.stop()
    return run


def user(i: int, final: bool = True) -> bytes:
    fields: dict[str, object] = {"user_id": f"u{i}", "total": i}
    return json.dumps(fields if final else {**fields, "final": False}).encode()


@pytest.mark.parametrize(
    ("log", "refusal"),
    [
        # Markers inside the range, a record giving no line before LAST: the same topic.
        (ScriptedLog(0, 9, {0: user(0), 2: user(1), 3: user(3, False), 4: user(2)}), None),
        # Retention took the file's first records: its last line is compared.
        (ScriptedLog(3, 9, {4: user(2), 6: user(5)}), None),
        # Retention took exactly what the files hold: nothing to compare, nothing lost.
        (ScriptedLog(5, 9, {6: user(5)}), None),
        # Another result where the file has its last one.
        (
            ScriptedLog(0, 5, {0: user(0), 2: user(1), 3: user(3)}),
            r"holds at offset 3 another result",
        ),
        # Only markers from 3 on, nothing after LAST: it waited without a word for a record.
        (
            ScriptedLog(0, 5, {0: user(0), 2: user(1)}),
            r"holds no record at offset 4, where its files' last line is",
        ),
        (ScriptedLog(7, 9, {8: user(8)}), r"starts at offset 7: offsets 5 to 6 were deleted"),
    ],
)
async def test_a_start_checks_the_newest_file_against_the_log_as_it_is_now(
    tmp_path: Path, log: ScriptedLog, refusal: str | None
) -> None:
    import asyncio

    from aiokafka import ConsumerRecord, TopicPartition

    from replay import sink
    from replay.sink_files import PartitionFile, file_name

    tp = TopicPartition(TOPIC, 0)
    run = await user_totals_run(tmp_path)
    # The files' newest file: offsets 0 to 4, the results of users 0, 1 and 2 (at 0, 2, 4).
    where = tmp_path / "orders.user-totals" / "partition=0"
    where.mkdir(parents=True)
    newest = where / file_name(0, 4)
    lines = [
        run._line(ConsumerRecord(TOPIC, 0, o, 0, 0, None, user(i), None, 0, 1, []))
        for o, i in [(0, 0), (2, 1), (4, 2)]
    ]
    newest.write_bytes(b"".join(line or b"" for line in lines))
    run.files[tp] = PartitionFile(where, 5)
    run.consumer = log  # type: ignore[assignment]
    checking = asyncio.wait_for(run._check_newest_files({tp: newest}), 10)
    if refusal is None:
        await checking
    else:
        with pytest.raises(sink.OtherTopic, match=rf"^orders\.user-totals\.v1\[0\] {refusal}"):
            await checking


async def test_an_end_before_what_was_read_stops_a_sink_only_if_it_stays(tmp_path: Path) -> None:
    """A new partition leader can report an older end for a moment (KIP-207); a log made
    anew keeps it for KAPPA_SOURCE_END_GRACE_MS."""
    from aiokafka import TopicPartition

    from replay import sink
    from replay.sink_files import PartitionFile

    tp = TopicPartition(TOPIC, 0)
    run = await user_totals_run(tmp_path, KAPPA_SOURCE_END_GRACE_MS="1000")
    run.files[tp] = PartitionFile(tmp_path, 10)
    run._check_end(tp, 5, 9, now=0.0)  # behind: not yet
    run._check_end(tp, 5, 9, now=0.9)
    run._check_end(tp, 10, 9, now=0.95)  # caught up again: the clock starts over
    run._check_end(tp, 5, 9, now=1.5)
    with pytest.raises(sink.OtherTopic, match=r"\[0\] ends at 5, before offset 9: it is not"):
        run._check_end(tp, 5, 9, now=2.5)


def test_a_sinks_series_exist_from_its_start_and_count_what_it_finished() -> None:
    from prometheus_client import REGISTRY

    from replay.sink_metrics import SinkMetrics

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"version": "77", **labels})

    metrics = SinkMetrics(77, ["orders.revenue-1m"])
    assert sample("kappa_sink_files_total", output="orders.revenue-1m") == 0
    metrics.finished("orders.revenue-1m", 40)
    metrics.finished("orders.revenue-1m", 3)
    assert sample("kappa_sink_files_total", output="orders.revenue-1m") == 2
    assert sample("kappa_sink_results_total", output="orders.revenue-1m") == 43
    metrics.lag("orders.revenue-1m", 1, end=120, position=100)
    assert sample("kappa_sink_lag_records", output="orders.revenue-1m", partition="1") == 20
    metrics.lag("orders.revenue-1m", 1, end=120, position=121)  # a fetch's end can trail
    assert sample("kappa_sink_lag_records", output="orders.revenue-1m", partition="1") == 0


async def test_a_sink_past_a_commit_marker_at_the_end_has_no_lag(tmp_path: Path) -> None:
    """An exactly_once version's last record is a transaction's commit marker: it takes an
    offset, and a read_committed consumer steps over it without a record. The lag is the end
    minus the consumer's position, not minus the last record read (which stayed at 1)."""
    import asyncio

    from aiokafka import TopicPartition
    from prometheus_client import REGISTRY

    from replay.sink_files import PartitionFile

    tp = TopicPartition(TOPIC, 0)
    run = await user_totals_run(tmp_path, version=88)
    run.files[tp] = PartitionFile(tmp_path / "p0", 0)
    log = ScriptedLog(0, 6, {0: user(0), 2: user(1), 4: user(2)})  # markers at 1, 3 and 5
    log.seek(tp, 0)
    run.consumer = log  # type: ignore[assignment]
    following = asyncio.create_task(run._follow())
    labels = {"version": "88", "output": "orders.user-totals", "partition": "0"}

    async def lag_said() -> float:
        while (lag := REGISTRY.get_sample_value("kappa_sink_lag_records", labels)) is None:
            await asyncio.sleep(0.01)
        return lag

    try:
        assert await asyncio.wait_for(lag_said(), 10) == 0
        assert run.files[tp].results == 3
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        run.files[tp].discard()


def test_a_directory_holding_an_export_is_not_a_sinks(tmp_path: Path) -> None:
    """A reader of the directory would count the export's results and the sink's twice."""
    (tmp_path / "orders.revenue-1m.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"holds a kappa export's files: sink to another"):
        claim_directory(tmp_path, 1, {"orders.revenue-1m": "orders.revenue-1m"})
    assert not (tmp_path / MANIFEST).exists()


def test_another_versions_directory_is_refused_with_a_hint_that_works(tmp_path: Path) -> None:
    """ "(or pass --version 1)" was said for a dropped version 1, and for a version a restarted
    dev broker no longer has: both only led to the next refusal."""
    view = RegistryView(
        {1: VersionRecord(1, DROPPED), 2: VersionRecord(2, LIVE), 3: VersionRecord(3, "complete")},
        {},
        dropping={3},
    )
    d = tmp_path
    assert other_version(d, 2, 4, view) == (
        f"{d} holds version 2's results, not version 4's: sink version 4 to another directory "
        "(or pass --version 2)"
    )
    assert other_version(d, 1, 2, view) == (
        f"{d} holds version 1's results, and version 1 was dropped: sink version 2 to another "
        "directory"
    )
    assert other_version(d, 3, 2, view).endswith(
        "and version 3 was dropped: sink version 2 to another directory"
    )
    assert other_version(d, 7, 2, view) == (
        f"{d} holds version 7's results, and the broker has no version 7 (a restarted dev "
        "broker keeps nothing): sink version 2 to another directory"
    )
    # Version 1 before the first promote: live, and in the registry only from that promote.
    unpromoted = RegistryView({2: VersionRecord(2, "complete")}, {})
    assert other_version(d, 1, 2, unpromoted) == (
        f"{d} holds version 1's results, not version 2's: sink version 2 to another directory "
        "(or pass --version 1)"
    )


def test_a_file_named_as_the_directory_is_said_to_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    with pytest.raises(ConfigError) as refused, sink_lock(tmp_path / "out"):
        pass
    assert str(refused.value) == f"{tmp_path / 'out'} is a file, not a directory: name a directory"


def test_a_directory_that_cannot_be_read_is_refused_in_one_line(tmp_path: Path) -> None:
    """Not searchable (as a user other than root), or a name too long: was a traceback."""
    long = tmp_path / ("x" * 300)
    with pytest.raises(ConfigError, match=r"^cannot use .*x: File name too long$"):
        read_claim(long)


async def test_a_file_whose_log_the_broker_cannot_confirm_at_stop_is_left_to_the_next_sink(
    tmp_path: Path,
) -> None:
    """Finished, it could hold a log made anew while the broker was away; left unfinished, the
    next sink reads its records again and checks its newest file against the log first."""
    import socket

    from aiokafka import ConsumerRecord, TopicPartition

    from replay import sink
    from replay.sink_files import PartitionFile
    from replay.sink_identity import Seen

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    tp = TopicPartition("orders.user-totals.v2", 0)
    said: list[str] = []
    run = sink._SinkRun(
        load_settings({"KAPPA_BROKER": nowhere}), tmp_path, 2, {"orders.user-totals": tp.topic},
        {"orders.user-totals": ("user_id",)}, sink.DEFAULT_ROLL, said.append,
    )  # fmt: skip
    run.files[tp] = f = PartitionFile(tmp_path / "p", 0)
    f.add(0, b'{"user_id":"u1"}\n', 0.0)
    r = ConsumerRecord(tp.topic, 0, 0, 5, 0, b"u1", b"{}", None, 0, 2, [])
    run.anchors[tp] = Seen.of(r)
    assert await run.stop() == []
    assert said == [
        "orders.user-totals[0]: not finished: the broker did not confirm its topic in time; "
        "the next sink reads its records again"
    ]
    assert list((tmp_path / "p").iterdir()) == []


async def test_a_file_in_place_whose_directory_could_not_be_synced_is_said_to_be_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename done, only the directory's fsync failed: it was said "not finished", for a
    file readers already see and the next sink goes on after (unless a power cut takes the
    rename back: then it writes the file again)."""
    import errno

    from aiokafka import TopicPartition

    from replay import sink, sink_files
    from replay.sink_files import PartitionFile, file_name

    def fails(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    tp = TopicPartition(TOPIC, 0)
    said: list[str] = []
    run = await user_totals_run(tmp_path)
    run.report = said.append
    run.files[tp] = f = PartitionFile(tmp_path / "p", 0)
    f.add(0, b'{"user_id":"u1"}\n', 0.0)
    f.add(1, b'{"user_id":"u2"}\n', 0.0)
    monkeypatch.setattr(sink_files, "synced_directory", fails)
    unfinished = await run.stop()  # no anchor: nothing to confirm, no broker asked
    path = tmp_path / "p" / file_name(0, 1)
    assert said == [
        f"orders.user-totals[0] 0–1: 2 results → {path}, but syncing its directory failed "
        "(Input/output error): a power cut may take the file back, and the next sink then "
        "writes it again"
    ]
    assert [str(e) for e in unfinished] == said  # the stop's error: exit 2 with that line
    assert isinstance(unfinished[0], sink.Unsynced)
    assert path.read_bytes() == b'{"user_id":"u1"}\n{"user_id":"u2"}\n'

"""`kappa sink`: follow a version's outputs into files, continuously, exactly once.

Where `kappa export` writes a snapshot of the latest results, a sink appends every final
result as it is written to its output topic, in topic order, to per-partition JSON-lines files
(laid out and resumed as `replay/sink_files.py` says); records of windows still open give no
line. It reads with no consumer group: the finished files say where it is, so a sink restarted
after any stop, or a copy of the directory, goes on where the files end.

A sink follows one version. `sink.json` records which (and its topics): a directory is never
given another version's offsets, e.g. after a promote made another version live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from app.admin import existing_topics, partition_counts, quiet_aiokafka
from app.atomic_file import replaced, synced_directory
from app.chaos import ChaosKill
from app.cli_output import counted
from app.file_lock import writer_lock
from app.kafka_clients import stop_consumer
from app.settings import ConfigError, Settings
from app.topic_reader import TopicMissing, bounded_consumer, high_watermarks, topic_partitions
from app.topology import Topology, readable_name, version_suffix
from replay.export import MANIFEST as EXPORT_MANIFEST
from replay.latest import (
    RESULT_OUTPUTS,
    outputs_of,
    parse_output_record,
    result_line,
    unused_outputs,
)
from replay.registry import (
    DROPPED,
    RegistryView,
    readable_version,
    recorded_definition,
    refuse_if_outputs_dropped,
)
from replay.sink_files import (
    MANIFEST,
    Finished,
    NewestFileCheck,
    PartitionFile,
    RollPolicy,
    UnsyncedFile,
    finished_range,
    last_finished,
    partition_directory,
    partitions_with_files,
    remove_every_unfinished,
)
from replay.sink_identity import LogIdentity, Seen, vanished
from replay.sink_metrics import SinkMetrics

LOCK = ".sink.lock"
FETCH_WAIT_MS = 500  # how long an idle sink's fetch waits at the broker for new results
DEFAULT_ROLL = RollPolicy()
POLL_MS = 1_000  # the longest a due file waits for a quiet sink to look at its clock
TOPIC_CHECK_S = 10.0  # how often a running sink checks that its topics (and broker) are there
STOP_CONFIRM_S = 5.0  # how long a stopping sink waits to confirm its open files' logs


def sink_lock(directory: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the directory's sink lock; ConfigError if another sink holds it."""
    return writer_lock(directory, LOCK, "sink")


def chosen_outputs(
    topology: Topology, named: list[str], definition: dict[str, object] | None = None
) -> dict[str, tuple[str, ...]]:
    """logical output → its key fields: the named ones (all the version's by default), of a
    version built with `definition` (None: this process's settings)."""
    unused = unused_outputs(topology, definition)
    produced = outputs_of(topology) - unused
    results = dict(RESULT_OUTPUTS)
    has = [o for o in results if o in produced]  # in their order
    for name in named:
        if name not in results:
            raise ConfigError(
                f"no output {readable_name(name)} (version {topology.version}'s outputs: "
                f"{', '.join(has)})" + _hint(name, has)
            )
        if name in unused:
            raise ConfigError(
                f"version {topology.version} was built without hopping windows "
                f"(KAPPA_HOPPING_SIZE_MS=0): {name} stays empty"
            )
        if name not in produced:
            raise ConfigError(
                f"version {topology.version} does not produce {name} (it ran "
                f"{', '.join(p.name for p in topology.pipelines)})"
            )
    return {o: k for o, k in RESULT_OUTPUTS if o in produced and (not named or o in named)}


def _hint(name: str, outputs: list[str]) -> str:
    """What an unknown output name was probably meant to be, among the version's `outputs`: a
    topic name (with its version suffix), or a name without its `orders.` part."""
    base, suffix = version_suffix(name)
    if suffix is not None and base in outputs:
        return f": output names take no version suffix (pass {base} and --version {suffix})"
    near = [o for o in outputs if o.endswith("." + name)]
    return f": did you mean {near[0]}?" if near else ""


def read_claim(directory: Path) -> dict[str, object] | None:
    """The directory's `sink.json` (None if it has none); ConfigError if the directory is not
    a sink's or the manifest cannot be read."""
    try:
        exported = list(directory.glob("*.jsonl")) or (directory / EXPORT_MANIFEST).exists()
    except OSError as e:  # e.g. not searchable, a name too long
        raise ConfigError(f"cannot use {directory}: {e.strerror or e}") from None
    if exported:
        raise ConfigError(  # a reader of the directory would read both as one
            f"{directory} holds a kappa export's files: sink to another directory"
        )
    path = directory / MANIFEST
    try:
        text = path.read_text() if path.exists() else None
    except (OSError, ValueError) as e:  # ValueError: not UTF-8
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if text is None:
        return None
    try:
        known = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): restore it, or "
            "sink to another directory"
        ) from None
    if not isinstance(known, dict) or not isinstance(known.get("topics"), dict):
        raise ConfigError(f"{path} is not a kappa sink's: use another directory")
    return known


def other_version(directory: Path, recorded: object, version: int, view: RegistryView) -> str:
    """Why a directory of version `recorded` is not sunk into for `version`, and what to do:
    pass `--version` only where that version can still be read."""
    held = f"{directory} holds version {recorded}'s results"
    instead = f"sink version {version} to another directory"
    rec = view.versions.get(recorded) if isinstance(recorded, int) else None
    if rec is None and recorded == view.live:  # version 1, recorded only at the first promote
        return f"{held}, not version {version}'s: {instead} (or pass --version {recorded})"
    if rec is None:
        return (
            f"{held}, and the broker has no version {recorded} (a restarted dev broker keeps "
            f"nothing): {instead}"
        )
    if rec.status == DROPPED or recorded in view.dropping:
        return f"{held}, and version {recorded} was dropped: {instead}"
    return f"{held}, not version {version}'s: {instead} (or pass --version {recorded})"


def claim_directory(directory: Path, version: int, topics: dict[str, str]) -> None:
    """Record in `sink.json` the version and topics whose offsets the files hold; refuse a
    directory that holds another version's, or another topic's under the same output."""
    path = directory / MANIFEST
    known = read_claim(directory)
    recorded: dict[str, str] = {}
    if known is not None:
        if known.get("version") != version:
            raise ConfigError(
                f"{directory} holds version {known.get('version')}'s results, not version "
                f"{version}'s: sink version {version} to another directory (or pass "
                f"--version {known.get('version')})"
            )
        recorded = known["topics"]  # type: ignore[assignment]
        for logical, topic in topics.items():
            if recorded.get(logical, topic) != topic:
                raise ConfigError(
                    f"{directory} holds offsets of {recorded[logical]}, not {topic}: "
                    "use another directory"
                )
    merged = recorded | topics
    if merged != recorded or known is None:
        try:
            with replaced(path) as f:
                manifest = {
                    "version": version,
                    "topics": dict(sorted(merged.items())),
                    "layout": "OUTPUT/partition=P/FIRST-LAST.jsonl (offsets, inclusive)",
                    "keys": {o: list(k) for o, k in RESULT_OUTPUTS if o in merged},
                }
                f.write((json.dumps(manifest, indent=2) + "\n").encode())
            synced_directory(directory)
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None


async def sink(
    settings: Settings,
    directory: Path,
    version: int | None = None,
    outputs: list[str] | None = None,
    policy: RollPolicy = DEFAULT_ROLL,
    report: Callable[[str], None] = print,
) -> None:
    """Follow a version's (the live one's by default) outputs into files under `directory`
    until cancelled; open files are finished first. `report` gets one line per file."""
    readable = await readable_version(settings, version)
    topology, v = readable.topology, readable.number
    keys = chosen_outputs(topology, outputs or [], recorded_definition(readable.view, v))
    topics = {logical: topology.physical(logical) for logical in keys}
    claimed = read_claim(directory)  # another version's directory: said before missing topics
    if claimed is not None and claimed.get("version") != v:
        raise ConfigError(other_version(directory, claimed.get("version"), v, readable.view))
    there = await existing_topics(settings.kafka)
    for topic in topics.values():
        if topic not in there:
            raise TopicMissing(f"topic {topic} does not exist (run `kappa topics --version {v}`)")
    with sink_lock(directory):
        claim_directory(directory, v, topics)
        await _follow(_SinkRun(settings, directory, v, topics, keys, policy, report))


async def _follow(run: _SinkRun) -> None:
    # aiokafka logs every failed connection attempt, many a second while the broker is away:
    # the sink says it once instead (`_TopicWatch`).
    with quiet_aiokafka():
        try:
            await run.start()
            await run.follow()
        except asyncio.CancelledError:  # Ctrl-C, SIGTERM: the orderly stop, unless a file
            if unfinished := await run.stop():  # it read could not be finished
                raise unfinished[0] from None
            raise
        except BaseException:  # the error says why it stopped; files not finished are said
            await run.stop()
            raise


class OtherTopic(ConfigError):
    """The topic is not the one the files came from (one line)."""


class Unsynced(ConfigError):
    """A file finished into place whose directory could not be synced (one line, whole)."""


class _SinkRun:
    """One run of a sink: its consumer, the open file of each partition, and the checks that
    the topics are still the ones the files came from."""

    def __init__(
        self,
        settings: Settings,
        directory: Path,
        version: int,
        topics: dict[str, str],
        keys: dict[str, tuple[str, ...]],
        policy: RollPolicy,
        report: Callable[[str], None],
    ) -> None:
        self.settings, self.directory, self.version = settings, directory, version
        self.topics, self.keys, self.policy, self.report = topics, keys, policy, report
        # Read committed: results of aborted transactions (an exactly_once version's retries)
        # are not results, whatever this process's own KAPPA_PROCESSING_GUARANTEE says. No
        # offset reset: records deleted before the sink read them stop it (`_fetch`), where
        # "earliest" would jump over them without a word.
        self.consumer = bounded_consumer(
            settings.kafka,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            isolation_level="read_committed",
            auto_offset_reset="none",
        )
        self.files: dict[TopicPartition, PartitionFile] = {}
        self.outputs = {t: logical for logical, t in topics.items()}
        self.end_behind_since: dict[TopicPartition, float] = {}  # `_check_end`
        self.metrics = SinkMetrics(version, list(topics))
        self.chaos = ChaosKill.from_env("sink")  # tests: KAPPA_CHAOS_KILL=sink:FILE:PHASE
        self.watch = _TopicWatch(settings, version, set(topics.values()), report, time.monotonic())
        # A file is finished only once its anchor (the record read before its first line) is
        # read again unchanged: `replay/sink_identity.py`.
        self.identity = LogIdentity(settings.kafka)
        self.last_record: dict[TopicPartition, ConsumerRecord] = {}
        self.anchors: dict[TopicPartition, Seen] = {}

    async def start(self) -> None:
        consumer = self.consumer
        await consumer.start()  # inside `run`'s try: stopped even if cancelled while starting
        newest: dict[TopicPartition, Path] = {}  # → its newest finished file
        try:
            remove_every_unfinished(self.directory)
        except OSError as e:
            raise ConfigError(f"cannot use {self.directory}: {e.strerror or e}") from None
        for logical, topic in self.topics.items():
            partitions = await topic_partitions(consumer, topic)
            _refuse_vanished_partitions(self.directory, logical, topic, partitions)
            for p in sorted(partitions):
                tp = TopicPartition(topic, p)
                where = partition_directory(self.directory, logical, p)
                try:
                    last = last_finished(where)
                except OSError as e:
                    raise ConfigError(f"cannot use {where}: {e.strerror or e}") from None
                if last is not None:
                    newest[tp] = last[0]
                self.files[tp] = PartitionFile(where, last[1] + 1 if last else 0)
        await _check_not_past_the_end(self.settings, self.files)
        await self._check_newest_files(newest)  # before a line is written, in any partition
        consumer.assign(list(self.files))
        for tp in newest:
            consumer.seek(tp, self.files[tp].first)
        if fresh := [tp for tp in self.files if tp not in newest]:
            await consumer.seek_to_beginning(*fresh)  # one wait for the fetcher, not one each
        self.report(
            f"sinking version {self.version}'s {', '.join(self.topics)} to {self.directory} "
            f"(a file per partition every {self.policy.max_age_s:g} s or "
            f"{self.policy.max_results:,} results)"
        )

    async def _check_newest_files(self, newest: dict[TopicPartition, Path]) -> None:
        """Read each partition again over its newest finished file's range: it must give
        that file's lines (`NewestFileCheck`), or the topic is not the one the files came
        from and the sink stops before writing anything."""
        if not newest:
            return
        consumer = self.consumer
        consumer.assign(list(newest))
        starts = await consumer.beginning_offsets(list(newest))
        checks: dict[TopicPartition, NewestFileCheck] = {}
        try:
            for tp, path in newest.items():
                first, last = finished_range(path.name) or (0, 0)
                if starts[tp] == last + 1:
                    continue  # retention took exactly what the files hold: nothing to compare
                if starts[tp] > last:
                    raise self._made_anew(
                        tp, f"starts at offset {starts[tp]}: offsets {last + 1} to "
                        f"{starts[tp] - 1} were deleted before the sink read them",
                    )  # fmt: skip
                checks[tp] = NewestFileCheck(path, first, last, starts[tp])
                consumer.seek(tp, checks[tp].start)
            while checks:
                for tp, records in (await self._fetch()).items():
                    if (check := checks.get(tp)) is None:
                        continue
                    for r in records:
                        if (problem := check.take(r.offset, self._line(r))) is not None:
                            raise self._made_anew(tp, problem)
                        self.last_record[tp] = r
                        if check.done:
                            check.close()
                            del checks[tp]
                            consumer.pause(tp)
                            break
                now = time.monotonic()
                for tp, check in checks.items():
                    self._check_end(tp, consumer.highwater(tp), check.last, now)
                    if await consumer.position(tp) > check.last:  # past LAST with no record
                        raise self._made_anew(  # read: only a marker or an aborted one there
                            tp, f"holds no record at offset {check.last}, where its files' "
                            "last line is",
                        )  # fmt: skip
                await self._check_topics(now)
        except OSError as e:
            raise ConfigError(f"cannot read the sink's files: {e.strerror or e}") from None
        finally:
            for check in checks.values():
                check.close()

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            return await self.consumer.getmany(timeout_ms=POLL_MS, max_records=10_000)
        except OffsetOutOfRangeError as e:
            tp, offset = next(iter(e.args[0].items()))
            raise self._made_anew(
                tp, f"no longer holds offset {offset} (deleted before the sink read it?)"
            ) from None

    async def follow(self) -> None:
        try:
            await self._follow()
        except OtherTopic:
            # A drop deletes the topics, and a consumer's next metadata request may make them
            # anew (brokers that create topics on request): say so if that is what happened.
            with contextlib.suppress(KafkaError, OSError, TimeoutError):  # else its own line
                await asyncio.wait_for(
                    refuse_if_outputs_dropped(self.settings, self.version), TOPIC_CHECK_S
                )
            raise

    async def _follow(self) -> None:
        while True:
            batches = await self._fetch()
            now = time.monotonic()
            for tp, records in batches.items():
                await self._take(tp, records, now)
            for tp, f in self.files.items():
                hw = self.consumer.highwater(tp)
                self._check_end(tp, hw, f.last_read, now)
                if hw is not None:  # fetched: its position is known (past any marker, which
                    # a read_committed consumer steps over without a record)
                    position = await self.consumer.position(tp)
                    self.metrics.lag(self.outputs[tp.topic], tp.partition, hw, position)
                if f.due(now, self.policy):
                    await self._finish(tp)
            await self._check_topics(now)

    async def _check_topics(self, now: float) -> None:
        """The watch's check, and that no partition followed is gone (OtherTopic): its
        consumer would wait for it without a word."""
        counts = await self.watch.check(now)
        if counts is None:  # not due, or the broker away
            return
        for tp in self.files:
            if tp.topic in counts and tp.partition >= counts[tp.topic]:
                raise self._made_anew(tp, vanished(tp.topic, counts[tp.topic]))

    async def _take(self, tp: TopicPartition, records: list[ConsumerRecord], now: float) -> None:
        f = self.files[tp]
        for r in records:
            if r.offset <= f.last_read:  # offsets went back: another log
                raise self._made_anew(tp, f"went back from offset {f.last_read} to {r.offset}")
            line = self._line(r)
            if line is not None and f.results == 0:  # a file opens: anchored before its line
                self.anchors[tp] = Seen.of(self.last_record.get(tp, r))
            try:
                f.add(r.offset, line, now)
            except OSError as e:
                f.discard()
                raise ConfigError(f"cannot write in {f.directory}: {e.strerror or e}") from None
            self.last_record[tp] = r
            if f.results >= self.policy.max_results:  # exactly there: files that end on the
                await self._finish(tp)  # count end where the input says, however it was fetched

    def _check_end(self, tp: TopicPartition, hw: int | None, read: int, now: float) -> None:
        """OtherTopic once the partition's end has looked at or before an offset already
        read for `KAPPA_SOURCE_END_GRACE_MS`: a new partition leader can report an older end
        for a moment (KIP-207); a log made anew keeps it."""
        if hw is None or hw > read:
            self.end_behind_since.pop(tp, None)
            return
        since = self.end_behind_since.setdefault(tp, now)
        if (now - since) * 1000 >= self.settings.source_end_grace_ms:
            raise self._made_anew(tp, f"ends at {hw}, before offset {read}")

    def _line(self, r: ConsumerRecord) -> bytes | None:
        """A record's line; None for a tombstone or a window still open."""
        parsed = parse_output_record(r, self.keys[self.outputs[r.topic]], r.topic)
        if parsed is None or parsed.provisional:
            return None
        return result_line(parsed.fields)

    def _made_anew(self, tp: TopicPartition, what: str) -> OtherTopic:
        return OtherTopic(
            f"{tp.topic}[{tp.partition}] {what}: it is not the topic "
            f"{self.files[tp].directory} came from (made anew by a restarted dev broker, or "
            "its records deleted); sink it to another directory"
        )

    async def _finish(self, tp: TopicPartition) -> None:
        """Finish the partition's open file once its log is confirmed to be the one read;
        OtherTopic (the file dropped) if it is not."""
        anchor = self.anchors.get(tp)
        what = None
        if self.files[tp].results and anchor is not None:
            what = (await self._confirm({tp: anchor})).get(tp)
        if what is not None:
            self.files[tp].discard()
            raise self._made_anew(tp, what)
        self._finish_now(tp)

    async def _confirm(self, anchors: dict[TopicPartition, Seen]) -> dict[TopicPartition, str]:
        """`LogIdentity.differences`, waited for while the broker is away (said by the watch,
        which also stops the sink if the topics are gone)."""
        while True:
            try:
                return await asyncio.wait_for(self.identity.differences(anchors), TOPIC_CHECK_S)
            except (TimeoutError, KafkaError, OSError):
                await self._check_topics(time.monotonic())

    def _finish_now(self, tp: TopicPartition) -> None:
        output = self.outputs[tp.topic]
        try:
            done = _finish(self.files[tp], self.chaos)
        except UnsyncedFile as e:  # in place: the next sink goes on after it, if it stays
            self.metrics.finished(output, e.done.results)
            raise Unsynced(
                f"{_finished_line(output, tp.partition, e.done)}, but syncing its directory "
                f"failed ({e.error.strerror or e.error}): a power cut may take the file back, "
                "and the next sink then writes it again"
            ) from None
        if done is not None:
            self.metrics.finished(output, done.results)
            self.report(_finished_line(output, tp.partition, done))

    async def stop(self) -> list[ConfigError]:
        """Finish what it read into files, however the sink stops (Ctrl-C, SIGTERM, an error):
        the next sink goes on after them. Returns the files that could not be finished (each
        also said in a line); their records are read again by the next sink."""
        unfinished: list[ConfigError] = []
        open_files = {tp: f for tp, f in self.files.items() if f.results}
        anchors = {tp: self.anchors[tp] for tp in open_files if tp in self.anchors}
        try:
            differ: dict[TopicPartition, str] | None = await asyncio.wait_for(
                self.identity.differences(anchors), STOP_CONFIRM_S
            )
        except (TimeoutError, KafkaError, OSError):
            differ = None
        for tp, f in open_files.items():
            said = f"{self.outputs[tp.topic]}[{tp.partition}]: not finished"
            if differ is None and tp in anchors:
                f.discard()
                self.report(
                    f"{said}: the broker did not confirm its topic in time; the next sink "
                    "reads its records again"
                )
                continue
            try:
                if differ is not None and tp in differ:
                    f.discard()
                    raise self._made_anew(tp, differ[tp])
                self._finish_now(tp)
            except Unsynced as e:  # finished, as the line says
                self.report(str(e))
                unfinished.append(e)
            except ConfigError as e:
                self.report(f"{said}: {e}")
                unfinished.append(e)
        await self.identity.close()
        await stop_consumer(self.consumer)  # also right after its start (a refused directory)
        return unfinished


class _TopicWatch:
    """Every `TOPIC_CHECK_S`, that the followed topics still exist (a `kappa drop` deletes
    them, and a consumer of a deleted topic waits without a word) and that the broker
    answers: said once when it stops answering, once when it is back. `check` returns the
    topics' partition counts when it looked (a consumer of a partition gone waits without a
    word too)."""

    def __init__(
        self,
        settings: Settings,
        version: int,
        topics: set[str],
        report: Callable[[str], None],
        now: float,
    ) -> None:
        self.settings, self.version, self.topics, self.report = settings, version, topics, report
        self.next_check = now + TOPIC_CHECK_S
        self.unreachable = False

    async def check(self, now: float) -> dict[str, int] | None:
        if now < self.next_check:
            return None
        self.next_check = now + TOPIC_CHECK_S
        try:
            there, counts = await asyncio.wait_for(self._look(), TOPIC_CHECK_S)
        except (KafkaError, OSError, TimeoutError) as e:
            if not self.unreachable:
                self.unreachable = True
                self.report(
                    f"cannot reach the broker at {self.settings.broker} ({type(e).__name__}): "
                    "the sink goes on once it answers"
                )
            return None
        if self.unreachable:
            self.unreachable = False
            self.report(f"the broker at {self.settings.broker} answers again")
        if gone := sorted(self.topics - there):
            await refuse_if_outputs_dropped(self.settings, self.version)  # dropped: it says so
            raise ConfigError(
                f"{', '.join(gone)} no longer exist (a drop of version {self.version}, or a "
                "restarted dev broker that lost them): the sink stops; its files stay as they are"
            )
        return counts

    async def _look(self) -> tuple[set[str], dict[str, int]]:
        """The broker's topic names, and the followed topics' partition counts."""
        there = await existing_topics(self.settings.kafka)
        return there, await partition_counts(self.settings.kafka, sorted(self.topics & there))


def _finish(f: PartitionFile, chaos: ChaosKill) -> Finished | None:
    if f.results == 0:
        return None
    chaos.step("before-finish")  # tests: a file fully written, not yet renamed
    try:
        done = f.finish()
    except OSError as e:
        f.discard()
        raise ConfigError(f"cannot write in {f.directory}: {e.strerror or e}") from None
    chaos.step("after-finish")
    chaos.batch_done()
    return done


def _finished_line(output: str, partition: int, done: Finished) -> str:
    span = f"{done.first}–{done.last}"
    return f"{output}[{partition}] {span}: {counted(done.results, 'result')} → {done.path}"


def _refuse_vanished_partitions(root: Path, output: str, topic: str, partitions: set[int]) -> None:
    """Refuse files of partitions the topic no longer has: Kafka never takes partitions away,
    so the topic was made anew, and its other partitions' offsets are not the files' either."""
    try:
        gone = [p for p in partitions_with_files(root, output) if p not in partitions]
    except OSError as e:
        raise ConfigError(f"cannot use {root / output}: {e.strerror or e}") from None
    if gone:
        where = partition_directory(root, output, gone[0])
        raise ConfigError(
            f"{where} holds results of {topic}[{gone[0]}], which "
            f"{vanished(topic, len(partitions))}: the topic was made anew (a restarted dev "
            "broker?); sink it to another directory"
        )


async def _check_not_past_the_end(
    settings: Settings, files: dict[TopicPartition, PartitionFile]
) -> None:
    """Refuse files that go past their topic's end: the topic was made anew (a dev broker
    restart loses every topic), so its offsets are not the ones the files count."""
    for topic in sorted({tp.topic for tp, f in files.items() if f.first}):
        ends = await high_watermarks(settings.kafka, topic)
        for tp, f in files.items():
            if tp.topic == topic and f.first > ends.get(tp.partition, 0):
                raise ConfigError(
                    f"{f.directory} holds results up to offset {f.first - 1}, but {topic}"
                    f"[{tp.partition}] ends at {ends.get(tp.partition, 0)}: the topic was "
                    "made anew (a restarted dev broker?); sink it to another directory"
                )

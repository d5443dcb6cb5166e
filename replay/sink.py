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

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import TopicPartition

from app.admin import existing_topics
from app.atomic_file import replaced, synced_directory
from app.chaos import ChaosKill
from app.file_lock import writer_lock
from app.settings import ConfigError, Settings
from app.topic_reader import TopicMissing, bounded_consumer, high_watermarks, topic_partitions
from app.topology import Topology
from replay.latest import RESULT_OUTPUTS, outputs_of, parse_output_record, result_line
from replay.registry import readable_version
from replay.sink_files import (
    Finished,
    PartitionFile,
    RollPolicy,
    partition_directory,
    remove_unfinished,
    resume_offset,
)

MANIFEST = "sink.json"
LOCK = ".sink.lock"
FETCH_WAIT_MS = 500  # how long an idle sink's fetch waits at the broker for new results
DEFAULT_ROLL = RollPolicy()
POLL_MS = 1_000  # the longest a due file waits for a quiet sink to look at its clock


def sink_lock(directory: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the directory's sink lock; ConfigError if another sink holds it."""
    return writer_lock(directory, LOCK, "sink")


def chosen_outputs(topology: Topology, named: list[str]) -> dict[str, tuple[str, ...]]:
    """logical output → its key fields: the named ones (all the version's by default)."""
    produced = outputs_of(topology)
    results = dict(RESULT_OUTPUTS)
    for name in named:
        if name not in results:
            raise ConfigError(f"no output {name} (outputs: {', '.join(results)})")
        if name not in produced:
            raise ConfigError(
                f"version {topology.version} does not produce {name} (it ran "
                f"{', '.join(p.name for p in topology.pipelines)})"
            )
    return {o: k for o, k in RESULT_OUTPUTS if o in produced and (not named or o in named)}


def claim_directory(directory: Path, version: int, topics: dict[str, str]) -> None:
    """Record in `sink.json` the version and topics whose offsets the files hold; refuse a
    directory that holds another version's, or another topic's under the same output."""
    path = directory / MANIFEST
    try:
        known = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    recorded: dict[str, str] = {}
    if known is not None:
        if not isinstance(known, dict) or not isinstance(known.get("topics"), dict):
            raise ConfigError(f"{path} is not a kappa sink's: use another directory")
        if known.get("version") != version:
            raise ConfigError(
                f"{directory} holds version {known.get('version')}'s results, not version "
                f"{version}'s: sink version {version} to another directory (or pass "
                f"--version {known.get('version')})"
            )
        recorded = known["topics"]
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
    if not str(directory).strip():
        raise ConfigError("name a directory to write to")
    readable = await readable_version(settings, version)
    topology, v = readable.topology, readable.number
    keys = chosen_outputs(topology, outputs or [])
    topics = {logical: topology.physical(logical) for logical in keys}
    there = await existing_topics(settings.kafka)
    for topic in topics.values():
        if topic not in there:
            raise TopicMissing(f"topic {topic} does not exist (run `kappa topics --version {v}`)")
    with sink_lock(directory):
        claim_directory(directory, v, topics)
        await _follow(settings, directory, v, topics, keys, policy, report)


async def _follow(
    settings: Settings,
    directory: Path,
    version: int,
    topics: dict[str, str],
    keys: dict[str, tuple[str, ...]],
    policy: RollPolicy,
    report: Callable[[str], None],
) -> None:
    consumer = bounded_consumer(settings.kafka, fetch_max_wait_ms=FETCH_WAIT_MS)
    files: dict[TopicPartition, PartitionFile] = {}
    chaos = ChaosKill.from_env("sink")  # tests: KAPPA_CHAOS_KILL=sink:FILE:PHASE
    outputs: dict[str, str] = {t: logical for logical, t in topics.items()}
    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        for logical, topic in topics.items():
            for p in sorted(await topic_partitions(consumer, topic)):
                where = partition_directory(directory, logical, p)
                try:
                    remove_unfinished(where)
                    files[TopicPartition(topic, p)] = PartitionFile(where, resume_offset(where))
                except OSError as e:
                    raise ConfigError(f"cannot use {where}: {e.strerror or e}") from None
        await _check_not_past_the_end(settings, files)
        consumer.assign(list(files))
        for tp, f in files.items():
            if f.first:
                consumer.seek(tp, f.first)  # before the log start (retention): from there
        if fresh := [tp for tp, f in files.items() if not f.first]:
            await consumer.seek_to_beginning(*fresh)  # one wait for the fetcher, not one each
        report(
            f"sinking version {version}'s {', '.join(topics)} to {directory} (a file per "
            f"partition every {policy.max_age_s:g} s or {policy.max_results:,} results)"
        )
        while True:
            batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=10_000)
            now = time.monotonic()
            for tp, records in batches.items():
                f, logical = files[tp], outputs[tp.topic]
                for r in records:
                    parsed = parse_output_record(r, keys[logical], tp.topic)
                    if parsed is None or parsed.provisional:  # a tombstone, a window open
                        f.add(r.offset, None, now)
                    else:
                        f.add(r.offset, result_line(parsed.fields), now)
                        if f.results >= policy.max_results:  # exactly there: files that
                            done = _finish(f, chaos)  # end on the count end where the input says
                            _report(report, logical, tp.partition, done)
            for tp, f in files.items():
                if f.due(now, policy):
                    _report(report, outputs[tp.topic], tp.partition, _finish(f, chaos))
    finally:
        # However the sink stops (Ctrl-C, SIGTERM, an error), what it read is finished into
        # files: the next sink goes on after them.
        for tp, f in files.items():
            try:
                _report(report, outputs[tp.topic], tp.partition, _finish(f, chaos))
            except ConfigError as e:  # read again by the next sink
                report(f"{outputs[tp.topic]}[{tp.partition}]: not finished: {e}")
        await consumer.stop()


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


def _report(
    report: Callable[[str], None], output: str, partition: int, done: Finished | None
) -> None:
    if done is not None:
        span = f"{done.first}–{done.last}"
        report(f"{output}[{partition}] {span}: {done.results:,} results → {done.path}")


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

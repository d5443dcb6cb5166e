"""`kappa replay`: a bounded replay of the retained source topics into a version.

Like Flink's bounded (batch) execution of the same program: every partition is read from
offset zero (or where this version's state left off) up to the end offsets snapshotted when
the version was created, in large batches, through the same `PipelineRunner` the live worker
uses. Pipelines run stage by stage (orders, then user-totals over what orders re-keyed).
Killed and restarted with the same version, it resumes from the state's applied offsets and
ends with identical results; several processes can split a version's partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

from agents.base import Pipeline
from app.admin import (
    copy_max_bytes,
    ensure_version_topics,
    existing_topics,
    require_compacted,
    require_partitions,
    warn_time_retention,
    warn_timestamp_limits,
)
from app.batch_producer import BatchSender, TransactionalSender, new_batch_producer
from app.chaos import ChaosStop
from app.group_refusal import commit_refusal_line, quiet_commit_refusals
from app.kafka_clients import new_consumer
from app.kafka_runner import (
    StopDeadline,
    close_on_stop,
    finish_on_stop,
    kafka_pipeline_runner,
    send_held_on_stop,
)
from app.raw_records import RAW_RECORDS
from app.runtime import PipelineRunner
from app.settings import ConfigError, Settings
from app.state_guard import check_changelogs_have_state, check_partition_dirs, lock_state_dir
from app.topic_reader import TopicMissing, bounded_consumer, high_watermarks
from app.topology import Topology
from replay.progress import ReplayProgress
from replay.registry import (
    DROPPED,
    RUNNING,
    Registry,
    RegistryView,
    VersionRecord,
    differing_settings,
    drop_unfinished,
    recorded_definition,
    require_definition,
    require_split,
    setting_names,
    settings_to_run,
    taken_from_record,
    version_definition,
)
from replay.summary import ReplaySummary
from tables.partition_state import StateError

log = logging.getLogger("kappa.replay")

# How a replay goes on once the user has fixed what stopped it (removed a state directory).
RERUN = "run the replay again"


@dataclass
class ReplayOptions:
    version: int
    pipelines: list[str]
    since_ms: int | None = None
    flush: bool = True
    process_index: int = 0
    process_count: int = 1
    dry_run: bool = False
    progress: bool = True
    # --processes N: the replay is split among N processes started for it (0 and 1: none; a
    # process of them has process_index/process_count)
    processes: int = 1

    @property
    def split(self) -> int:
        """How many processes the whole replay is split among."""
        return max(self.process_count, self.processes)


async def run_replay(settings: Settings, opts: ReplayOptions) -> ReplaySummary | None:
    started = time.monotonic()
    given = settings
    registry, view, topology, rec = await prepare_replay(settings, opts, create=not opts.dry_run)
    settings = topology.settings  # with the version's recorded settings
    taken = taken_from_record(given, settings)
    if taken and not opts.dry_run:
        log.info("version %d's recorded settings: %s", opts.version, taken)
    if opts.dry_run:
        print(plan(topology, rec, opts, view))
        return None
    # Shared with the version's other replay processes here; keeps a worker of the version
    # and `kappa drop` out while it runs.
    lock = lock_state_dir(topology.state_root(), shared=True)
    try:
        with replay_advice():
            # Checked again under the lock: a drop that ended since would otherwise see its
            # version rebuilt. Only now, with every check passed, is anything recorded.
            view = await registry.load()
            rec = _check_version(view, topology, opts) or rec
            if opts.version not in view.versions:
                await refuse_lost_state(topology, (opts.process_index, opts.process_count))
            await require_definition(registry, view, opts.version)
            await require_split(registry, view, opts.version, opts.process_count)
            return await _replay(settings, opts, registry, view, topology, rec, started)
    finally:
        lock.release()


@contextlib.contextmanager
def replay_advice() -> Iterator[None]:
    """A `StateError` raised inside, advising a worker to restart once the state is removed,
    says instead what a replay does: run it again (it resumes where its state left off)."""
    try:
        yield
    except StateError as e:
        said = e.with_rerun(RERUN)
        if said is e:  # its advice is not to start again: the same for a replay
            raise
        raise said from e


async def prepare_replay(
    settings: Settings, opts: ReplayOptions, create: bool = False
) -> tuple[Registry, RegistryView, Topology, VersionRecord]:
    """Everything a replay checks before it writes anything (pipelines, the version, the
    sources and their partition counts), and the version's record: the registered one, or a
    new one with the sources' end offsets as its snapshot. Raises `ConfigError` (or
    `TopicMissing`) with one line for the user; `--processes N` runs it once, before any
    process starts."""
    view = await Registry(settings).load(create=create)
    # A version replayed before (a resume) is replayed with its recorded settings where the
    # environment gives none, as its workers are.
    settings = await settings_to_run(settings, view, opts.version)
    registry = Registry(settings)
    topology = Topology(settings, opts.version, since_ms=opts.since_ms).select(opts.pipelines)
    _check_inputs(topology)
    rec = _check_version(view, topology, opts)
    await require_definition(registry, view, opts.version, record=False)
    await require_split(registry, view, opts.version, opts.split, record=False)
    if rec is None:
        present = await existing_topics(settings.kafka)
        for t in topology.external_sources:  # at once, rather than after waiting for metadata
            if topology.physical(t) not in present:
                raise TopicMissing(f"topic {topology.physical(t)} does not exist")
        if opts.since_ms is not None:
            await _refuse_since_over_unrecorded(registry, view, topology, present)
        snapshot = {
            topology.physical(t): {
                str(p): e
                for p, e in (await high_watermarks(settings.kafka, topology.physical(t))).items()
            }
            for t in topology.external_sources
        }
        rec = VersionRecord(
            opts.version,
            RUNNING,
            [p.name for p in topology.pipelines],
            snapshot,
            opts.since_ms,
            flush=opts.flush,
            replay_done=False,
        )
    topics = list(topology.all_topics())
    await require_partitions(settings.kafka, topics, settings.partitions)  # those that exist
    await require_compacted(settings.kafka, [*topology.compacted_topics(), registry.topic])
    return registry, view, topology, rec


async def refuse_lost_state(topology: Topology, share: tuple[int, int]) -> None:
    """Before a version the registry does not know is recorded: refuse its local state (the
    partitions of `share`, (I, N)) that is ahead of its changelogs. A broker that lost its data
    forgot the registry too; found only once a stage opened that state, the refusal came after
    the version was recorded as running. A new version has no partition directory to open;
    one a worker ran (`kappa worker --version N`) has its state opened here once more."""
    applied = check_partition_dirs(topology, share)
    await check_changelogs_have_state(topology.settings.kafka, topology, applied)


async def _replay(
    settings: Settings,
    opts: ReplayOptions,
    registry: Registry,
    view: RegistryView,
    topology: Topology,
    rec: VersionRecord,
    started: float,
) -> ReplaySummary:
    resumed = _replayed_here_before(topology, opts)  # before any stage makes a directory
    if rec.version not in view.versions:
        rec = await _create_version(registry, rec)
    await ensure_version_topics(settings.kafka, topology)
    await warn_time_retention(settings.kafka, topology.kept_topics())
    await warn_timestamp_limits(settings.kafka, topology.output_topics())
    limit = await copy_max_bytes(settings.kafka, settings.copy_max_bytes, topology.output_topics())
    topology = dataclasses.replace(
        topology, settings=dataclasses.replace(settings, copy_max_bytes=limit)
    )

    summary = ReplaySummary(opts.version, resumed=resumed)
    async with replay_producer(settings) as producer:

        async def stage(pipeline: Pipeline) -> None:
            source = topology.physical(pipeline.source)
            if pipeline.source in topology.external_sources:
                ends = {int(p): e for p, e in rec.snapshot[source].items()}
            else:
                ends = await high_watermarks(settings.kafka, source)
            mine = [p for p in sorted(ends) if p % opts.process_count == opts.process_index]
            await _run_stage(settings, topology, pipeline, ends, mine, producer, opts, summary)
            for p in mine:
                await registry.put_progress(opts.version, pipeline.name, p, ends[p])

        # The pipelines of a level run at the same time: one's fetches and state opening
        # overlap the others' processing, and the broker works on the other core meanwhile.
        for level in topology.levels():
            upstreams = {
                q.name: q for p in level for q in topology.pipelines if p.source in q.outputs
            }
            for upstream in upstreams.values():  # other processes' partitions of it too
                await _wait_for_stage(registry, topology, upstream, rec)
            await all_or_none([stage(p) for p in level])

    view = await registry.load()
    if all(_stage_done(view, topology, p, rec) for p in topology.pipelines):
        current = view.versions.get(opts.version, rec)
        if current.status == RUNNING or not current.replay_done:  # e.g. promoted with --force
            await registry.put_completion(opts.version)
    summary.seconds = time.monotonic() - started
    return summary


@contextlib.asynccontextmanager
async def replay_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """The producer the stages share, started; stopped at the end within a deadline of its
    own (`close_on_stop`): stopped with requests in flight to a broker that does not answer
    (a batch cancelled past its deadline, held entries not sent in time), aiokafka's stop
    waits up to its request timeout. What they carry is read again on resume: a stage
    commits state, and the version's progress, only for what the broker acknowledged."""
    producer = new_batch_producer(settings.kafka, linger_ms=20)
    try:
        await producer.start()  # inside: stopped even if cancelled while starting
        yield producer
    finally:
        await close_on_stop([producer.stop], "closing the replay's producer")


def _replayed_here_before(topology: Topology, opts: ReplayOptions) -> bool:
    """Whether this process's partitions already have state directories: the replay was run
    here before (killed, then resumed), and this run counts only what it reads itself."""
    for pipeline in topology.pipelines:
        base = topology.state_root() / pipeline.name
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            digits = entry.name[1:]
            mine = digits.isdigit() and int(digits) % opts.process_count == opts.process_index
            if entry.name[:1] == "p" and mine:
                return True
    return False


async def all_or_none(coros: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run them at once; the first to fail cancels the others, and its error is raised as it
    is (a one-line error stays one line, not an exception group)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # also when this task is cancelled (Ctrl-C): no stage left running
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:  # in the order given: the same error each time when several fail
        if t in done:
            if t.cancelled():  # from inside: the stage did not finish
                raise asyncio.CancelledError
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]


async def _create_version(registry: Registry, rec: VersionRecord) -> VersionRecord:
    """Register a new version; if another process registered it at the same moment, the first
    claim's snapshot wins (`replay/registry.py`): adopt it, and withdraw this one. One started
    with other pipelines or `--since` is refused."""
    claim = await registry.claim_version(rec)
    settled = (await registry.load()).versions[rec.version]
    same_run = (
        sorted(settled.pipelines) == sorted(rec.pipelines)
        and settled.since_ms == rec.since_ms
        and settled.flush == rec.flush
    )
    if not same_run or (settled.snapshot, settled.created_at) != (rec.snapshot, rec.created_at):
        await registry.withdraw(claim)  # another's claim holds
    if not same_run:  # split processes started with different arguments
        raise ConfigError(
            f"version {rec.version} was registered at the same moment by another replay, as "
            f"`{_arguments(settled)}`; start every process of a version with the same arguments"
        )
    return settled


def replay_arguments(
    pipelines: Sequence[str], version: int, since_ms: int | None, flush: bool
) -> list[str]:
    """`kappa replay`'s arguments for a version's definition, as a user would type them."""
    words = [*pipelines, "--version", str(version)]
    if since_ms is not None:
        words += ["--since", str(since_ms)]
    if not flush:
        words.append("--no-flush")
    return words


def _arguments(rec: VersionRecord) -> str:
    """The replay command a version was registered by, as a user would type it."""
    words = replay_arguments(rec.pipelines, rec.version, rec.since_ms, rec.flush)
    return " ".join(["kappa replay", *words])


def _check_inputs(topology: Topology) -> None:
    """A pipeline reading what another pipeline of the version produces needs that one too."""
    selected = {t for p in topology.pipelines for t in p.outputs}
    for p in topology.pipelines:
        if p.source in topology.produced and p.source not in selected:
            producers = [q.name for q in topology.all_pipelines if p.source in q.outputs]
            raise ConfigError(
                f"{p.name} reads {topology.physical(p.source)}, which {', '.join(producers)} of "
                f"the same version writes: replay them together (kappa replay "
                f"{' '.join([*producers, p.name])} --version {topology.version})"
            )


def _check_version(
    view: RegistryView, topology: Topology, opts: ReplayOptions
) -> VersionRecord | None:
    v = opts.version
    if v == view.live:
        raise ConfigError(
            f"version {v} is live; replay into a new version (e.g. --version {view.unused_version})"
        )
    rec = view.versions.get(v)
    if rec is not None and rec.status == DROPPED:
        raise ConfigError(f"version {v} was dropped; replay into a new version number")
    if v in view.dropping:
        raise ConfigError(drop_unfinished(v))
    if rec is None:
        return None
    names = sorted(p.name for p in topology.pipelines)
    if sorted(rec.pipelines) != names or rec.since_ms != opts.since_ms:
        raise ConfigError(
            f"version {v} exists as `{_arguments(rec)}`; resume it with the same arguments "
            "or use a new version"
        )
    if rec.flush != opts.flush:
        # Its other partitions (other processes, or before a crash) were replayed the other
        # way: the version's outputs would hold provisional windows for some of them only.
        # `flush` is the default, so a version that was flushed was replayed without the flag
        was, now = ("without", "with") if rec.flush else ("with", "without")
        raise ConfigError(
            f"version {v} was replayed {was} --no-flush and this replay is {now} it; resume "
            "it with the same arguments or use a new version"
        )
    return rec


async def _refuse_since_over_unrecorded(
    registry: Registry, view: RegistryView, topology: Topology, present: set[str]
) -> None:
    """A version no replay recorded whose topics hold records was run by `kappa worker
    --version N`, from the start of its sources: recording `--since` for it would make a
    version whose outputs hold every window say they start at T (and its workers apply T from
    then on). Refused in one line, unless another replay process recorded it meanwhile."""
    v = topology.version
    sources = {topology.physical(t) for t in topology.external_sources}
    for topic in sorted(t for t in topology.all_topics() if t in present and t not in sources):
        if any((await high_watermarks(topology.settings.kafka, topic)).values()):
            if v in (await registry.load()).versions:
                return  # a replay process of the same run registered it: its own checks apply
            raise ConfigError(
                f"version {v} already holds results from the start of its sources ({topic} "
                f"has records: `kappa worker --version {v}` ran it), so it cannot be a --since "
                f"version; replay into a new version (--version {view.unused_version}), or "
                f"without --since, or `kappa drop {v}` first"
            )


def _stage_done(
    view: RegistryView, topology: Topology, pipeline: Pipeline, rec: VersionRecord
) -> bool:
    done = view.progress.get((rec.version, pipeline.name), {})
    return len(done) >= topology.settings.partitions


async def _wait_for_stage(
    registry: Registry, topology: Topology, upstream: Pipeline, rec: VersionRecord
) -> None:
    """Block until every partition of `upstream` is done, by any replay process."""
    announced = False
    while True:
        view = await registry.load()
        if _stage_done(view, topology, upstream, rec):
            return
        if not announced:
            # stderr: with --processes it is shared with the parent, so it shows as it happens
            print(
                f"waiting for other replay processes to finish {upstream.name}…",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        await asyncio.sleep(0.5)


async def _run_stage(
    settings: Settings,
    topology: Topology,
    pipeline: Pipeline,
    ends: dict[int, int],
    partitions: list[int],
    producer: AIOKafkaProducer,
    opts: ReplayOptions,
    summary: ReplaySummary,
) -> None:
    sender: BatchSender | TransactionalSender
    if settings.exactly_once:
        sender = TransactionalSender(
            settings.kafka,
            f"{topology.group_id}-{pipeline.name}-replay",
            topology.settings.copy_max_bytes,
        )
    else:
        sender = BatchSender(producer, True, topology.settings.copy_max_bytes)
    source = topology.physical(pipeline.source)
    runner = kafka_pipeline_runner(settings, topology, pipeline, sender)
    progress: ReplayProgress | None = None
    stop = StopDeadline()
    try:
        starts = {p: await runner.applied_offset(p) + 1 for p in partitions}
        todo = {p for p in partitions if starts[p] < ends[p]}
        total = sum(max(0, ends[p] - starts[p]) for p in partitions)
        progress = ReplayProgress(topology.version, pipeline.name, total, opts.progress)
        if todo:
            await _consume(settings, source, starts, ends, todo, runner, progress, summary, stop)
        if opts.flush:
            for p in partitions:
                summary.add((await runner.flush(p)).counts)
        await runner.send_held()
        await commit_offsets(
            settings.kafka, topology.group_id, source, {p: ends[p] for p in partitions}
        )
    except asyncio.CancelledError:
        # Stopped (Ctrl-C, SIGTERM), or a stage beside it failed: the outputs of the batches
        # whose changelog entries are held went out already (the batch under way was
        # finished: `_consume`). Sent now, the state applies those batches and a resumed
        # replay starts after them, not writing their outputs again. Best effort, each step
        # within the worker's stop deadline; a second Ctrl-C cuts it short (those
        # batches are then read again). With exactly_once nothing is held: each batch's
        # entries commit in its own transaction, with its outputs.
        await send_held_on_stop([runner], StopDeadline())
        raise
    finally:
        if progress is not None:
            progress.close()
        runner.close()
        if isinstance(sender, TransactionalSender):  # its producers are the stage's own
            await close_on_stop([sender.close], f"{pipeline.name}: closing the producers")


async def _consume(
    settings: Settings,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    todo: set[int],
    runner: PipelineRunner,
    progress: ReplayProgress,
    summary: ReplaySummary,
    stop: StopDeadline,
) -> None:
    consumer = bounded_consumer(settings.kafka, value_deserializer=RAW_RECORDS)
    chaos = ChaosStop.from_env(runner.pipeline.name)  # tests: KAPPA_CHAOS_STOP
    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        tps = {p: TopicPartition(topic, p) for p in todo}
        consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            consumer.seek(tp, starts[p])
        while todo:
            data = await consumer.getmany(
                *(tps[p] for p in todo), timeout_ms=1000, max_records=settings.replay_batch_max
            )
            batches = {}
            for tp, recs in data.items():
                end = ends[tp.partition]
                if recs and recs[-1].offset >= end:
                    recs = [r for r in recs if r.offset < end]
                if recs:
                    batches[tp.partition] = recs
            if batches:  # every partition of this fetch in one produce request
                finished = await finish_on_stop(
                    runner.handle_many(batches),
                    stop,
                    f"{runner.pipeline.name}: the batch under way at the stop",
                )
                summary.add(finished.counts)
                progress.advance(sum(len(recs) for recs in batches.values()))
                await chaos.batch_done()
            for p in list(todo):
                position = await consumer.position(tps[p])
                if position >= ends[p]:
                    todo.discard(p)
                    continue
                high = consumer.highwater(tps[p])
                if high is not None and position >= high:  # read to the log's end, short of it
                    raise ConfigError(
                        f"{topic}[{p}] now ends at offset {high}, before offset {ends[p]} where "
                        "this replay's snapshot ends: the topic was deleted and created again, "
                        "or truncated; replay into a new version"
                    )
    finally:
        await consumer.stop()


async def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit a version's positions so its live worker (after a promote) continues there.

    If workers of the version run by now (`promote --force` while it replayed), Apache Kafka
    refuses a commit from outside their group (UNKNOWN_MEMBER_ID): the positions are theirs,
    and the replay ends without overwriting them. A commit refused for good (no Read ACL on
    the group or the topic; the replay reads without a group, so it meets that only here) is
    `ConfigError`, naming what to change as a worker's line does.
    """
    if not offsets:
        return
    consumer = new_consumer(bootstrap, group_id=group, enable_auto_commit=False)
    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        tps = {p: TopicPartition(topic, p) for p in offsets}
        consumer.assign(list(tps.values()))
        with quiet_commit_refusals():
            await consumer.commit({tps[p]: o for p, o in offsets.items()})
    except (GroupAuthorizationFailedError, TopicAuthorizationFailedError) as e:
        then = f"its positions in {topic} are not committed: {RERUN} once granted (it resumes)"
        raise ConfigError(commit_refusal_line([(topic, e.errno)], group, then)) from None
    except CommitFailedError:
        log.warning(
            "consumer group %s has members (workers of this version): the replay's positions "
            "in %s were not committed, the workers keep theirs",
            group,
            topic,
        )
    finally:
        await consumer.stop()


def plan(topology: Topology, rec: VersionRecord, opts: ReplayOptions, view: RegistryView) -> str:
    """What a replay would do, for --dry-run: it reads the registry and touches nothing."""
    lines = [
        f"replay plan for version {topology.version} (consumer group {topology.group_id})",
        f"  pipelines, in order: {', '.join(p.name for p in topology.stages())}",
        *_settings_lines(topology, view),
    ]
    if opts.since_ms is not None:
        lines.append(f"  since: events in windows starting at or after {opts.since_ms} ms")
    if opts.processes > 1:
        lines.append(
            f"  processes: {opts.processes}, process I replaying the source partitions P with "
            f"P % {opts.processes} == I"
        )
    for topic, parts in rec.snapshot.items():
        for p, end in sorted(parts.items(), key=lambda kv: int(kv[0])):
            by = f" (process {int(p) % opts.processes})" if opts.processes > 1 else ""
            if int(p) % opts.process_count == opts.process_index:
                lines.append(f"  source {topic}[{p}]: offsets 0 → {end} (end exclusive){by}")
    for p in topology.stages():
        if p.source not in topology.external_sources:
            lines.append(f"  then {topology.physical(p.source)}: all partitions to their end")
    lines.append(f"  outputs: {', '.join(topology.output_topics())}")
    lines.append(f"  changelogs: {', '.join(topology.changelog(p) for p in topology.pipelines)}")
    lines.append(f"  state: {topology.state_root()}")
    lines.append(f"  flush open windows at the end: {'yes' if opts.flush else 'no'}")
    return "\n".join(lines)


def _settings_lines(topology: Topology, view: RegistryView) -> list[str]:
    """The settings the version's results depend on (as the registry records them), and those
    in which the live version differs."""
    mine = version_definition(topology.settings)
    lines = [f"  settings: {setting_names(mine, list(mine))}"]
    live = recorded_definition(view, view.live)
    differ = [] if live is None else differing_settings(live, mine)
    if differ and view.live != topology.version:
        lines.append(f"  live version {view.live} has: {setting_names(live or {}, differ)}")
    return lines

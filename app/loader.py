"""`kappa produce`: load historical files or synthetic orders into a topic."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import re
import stat
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

from app import command_loop
from app.admin import KEEP_FOREVER, ensure_topics, existing_topics, wait_for_broker
from app.cli_output import counted
from app.kafka_clients import Conn
from app.orders_generator import GeneratorSpec, generate, read_file
from app.produce import MAX_REQUEST_SIZE, RecordTooLarge, produce_records
from app.read_ahead import ReadAhead
from app.settings import ConfigError, Settings
from app.topic_reader import high_watermarks, read_range
from app.topology import Topology, written_by_kappa
from tables.cleaning import InvalidRecord, require_event_time_ms

KeyValue = tuple[bytes | None, bytes]
# A file's first bytes looked at, at most, for a JSON array or an object over several lines.
HEAD_BYTES = 4096
# Records read back from the end of each partition to find the newest event time there.
TAIL_RECORDS = 1000


def generator_spec(args: argparse.Namespace) -> GeneratorSpec:
    """Event times start now by default and advance at `rate`, so live windows close in step."""
    count = args.generate
    start = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    if args.span_ms is not None:
        span = args.span_ms
    elif args.rate:
        span = int(count / args.rate * 1000)
    else:
        span = 3_600_000
    try:
        return GeneratorSpec(
            count=count,
            seed=args.seed,
            keys=args.keys,
            start_ms=start,
            span_ms=span,
            disorder_ms=args.disorder_ms,
            late_fraction=args.late_fraction,
            bad_fraction=args.bad_fraction,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


async def newest_event_ms(bootstrap: Conn, topic: str) -> int | None:
    """The newest event time among the last `TAIL_RECORDS` orders of each partition (None: no
    topic, or no order with a valid `ts` there)."""
    if topic not in await existing_topics(bootstrap):
        return None
    newest: int | None = None
    for partition, end in sorted((await high_watermarks(bootstrap, topic)).items()):
        async for chunk in read_range(bootstrap, topic, partition, max(0, end - TAIL_RECORDS), end):
            for record in chunk:
                try:
                    ms = require_event_time_ms(json.loads(record.value), "ts")
                except (InvalidRecord, ValueError, TypeError, AttributeError):
                    continue  # not an order (a malformed record, another schema)
                newest = ms if newest is None else max(newest, ms)
    return newest


async def continue_after_topic(bootstrap: Conn, topic: str, spec: GeneratorSpec) -> GeneratorSpec:
    """Generated orders that would start at or before the newest event already in the topic
    (a second `--generate` within the first one's span) would mostly be late: they start just
    after it instead, and say so."""
    newest = await newest_event_ms(bootstrap, topic)
    if newest is None or newest < spec.start_ms:
        return spec
    try:
        moved = dataclasses.replace(spec, start_ms=newest + 1)
    except ValueError as e:
        raise ConfigError(f"{e} (the newest order in {topic} is at {newest})") from None
    when = datetime.fromtimestamp(moved.start_ms / 1000, UTC).isoformat(timespec="milliseconds")
    print(
        f"{topic} already holds orders up to event time {newest}: generated orders start after "
        f"them, at {moved.start_ms} ({when.replace('+00:00', 'Z')}; --start-ms chooses)",
        flush=True,
    )
    return moved


def generated_lead_ms(spec: GeneratorSpec, rate: float | None, now_ms: int) -> int:
    """How far (ms) generated orders' event times run ahead of the record timestamps they are
    produced with (the time of sending), at most: times advance evenly over the span, and with
    a rate the sending does too, so the lead is largest at the first or the last order."""
    sending_ms = spec.count / rate * 1000 if rate else 0.0
    return int(max(spec.start_ms - now_ms, spec.start_ms + spec.span_ms - now_ms - sending_ms))


def refuse_ahead(spec: GeneratorSpec, rate: float | None, max_ahead_ms: int, now_ms: int) -> None:
    """Refuse to generate orders the orders pipeline would dead-letter as `timestamp_ahead`
    (further ahead of their record timestamps than `KAPPA_MAX_TS_AHEAD_MS`; 0: no limit)."""
    lead = generated_lead_ms(spec, rate, now_ms)
    if max_ahead_ms and lead > max_ahead_ms:
        raise ConfigError(
            f"generated orders would run up to {lead:,} ms ahead of when they are sent "
            f"(event times {spec.start_ms} to {spec.start_ms + spec.span_ms}), more than "
            f"KAPPA_MAX_TS_AHEAD_MS={max_ahead_ms} allows: the orders pipeline would "
            "dead-letter them as timestamp_ahead; give --rate, a shorter --span-ms or an "
            "earlier --start-ms"
        )


async def orders_ahead_limit(settings: Settings) -> int:
    """The `KAPPA_MAX_TS_AHEAD_MS` generated orders must keep to: the environment's, or where it
    sets none, the live version's (one recorded before the guard existed has none)."""
    if "max_ts_ahead_ms" in settings.given:
        return settings.max_ts_ahead_ms
    from replay.registry import live_version_settings

    return (await live_version_settings(settings)).max_ts_ahead_ms


class _ReadFailed(Exception):
    """The input file could not be read part way (its reason as the message)."""


def refuse_kappa_topic(settings: Settings, topic: str) -> None:
    """Refuse a topic Kappa writes itself: a record produced there would be read as Kappa's."""
    owned = written_by_kappa(settings, topic)
    if owned is not None:
        sources = ", ".join(_sources(settings))
        raise ConfigError(f"{topic} is {owned}: only Kappa writes it (orders go to {sources})")


def warn_if_unread(settings: Settings, topic: str) -> None:
    """One line when no pipeline reads `topic` (a typo, a forgotten KAPPA_TOPIC_PREFIX)."""
    sources = _sources(settings)
    if topic not in sources:
        print(
            f"kappa produce: warning: no pipeline reads {topic} (they read {', '.join(sources)})",
            file=sys.stderr,
            flush=True,
        )


def _sources(settings: Settings) -> list[str]:
    topology = Topology(settings)
    return [topology.physical(t) for t in topology.external_sources]


def _json_array(head: bytes) -> bool:
    """Whether a file starting with `head` is a JSON array of objects (pretty-printed: a first
    line `[`; or on one line: `[{...`), not JSON lines. A line such as `[1, 2]` is a record."""
    first = head.removeprefix(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0].strip()
    return first == b"[" or re.match(rb"\[\s*\{", first) is not None


def _multi_line_object(head: bytes) -> bool:
    """Whether a file starting with `head` is a JSON object pretty-printed over several lines
    (a first line `{`, or one that does not parse alone while the object goes on past it), not
    JSON lines. A first line merely broken or cut short is a record (for the DLQ)."""
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").lstrip()
    line, newline, rest = text.partition("\n")
    first = line.strip()
    if not first.startswith("{"):
        return False
    if first == "{":
        return True
    if not newline:  # the head holds no more than this line
        return False
    try:
        json.loads(first)
        return False  # an object (or other JSON) on its line: JSON lines
    except (ValueError, RecursionError):
        pass
    next_line = len(line) + 1 + len(rest) - len(rest.lstrip())  # where the next line starts
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as e:  # broken, or cut by the head's end: how far it went
        return e.pos > next_line
    except RecursionError:
        return False
    return isinstance(value, dict) and end > len(line)


def _first_line_settles(head: bytes) -> bool:
    """Whether `head` holds its first line (past blank ones) whole, and that line is enough for
    `_json_array` and `_multi_line_object` to say what they would of the whole file's first
    `HEAD_BYTES`: any line but one that opens an object it does not close (an object over
    several lines, or a broken line: the lines after it tell)."""
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").lstrip()
    line, newline, _ = text.partition("\n")
    if not newline:
        return False
    first = line.strip()
    if not first.startswith("{") or first == "{":
        return True
    try:
        json.loads(first)
    except (ValueError, RecursionError):
        return False
    return True


def _head(f: io.BufferedReader) -> bytes:
    """What `_json_array` and `_multi_line_object` look at: a regular file's first `HEAD_BYTES`;
    a named pipe's or a device's first lines, only as many as settle it (one, mostly), within
    HEAD_BYTES. A read of HEAD_BYTES from a pipe waits until they have all come: a writer
    slower than that (a line now and then) had nothing sent meanwhile."""
    if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        return f.read(HEAD_BYTES)
    head = b""
    while len(head) < HEAD_BYTES and not _first_line_settles(head):
        line = f.readline(HEAD_BYTES - len(head))  # returns once its newline has come
        if not line:  # the end
            break
        head += line
    return head


class _HeadFirst(io.RawIOBase):
    """A file read from `head`, its first bytes already read, then on from `rest`: a pipe (a
    `mkfifo` fed by `zcat`) can be read only once, neither reopened nor rewound."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._rest.read1(len(view))  # type: ignore[attr-defined]
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def _file_records(
    path: str, not_object: Callable[[], None], at_line: Callable[[int], None]
) -> Iterator[KeyValue]:
    """The file's records, opened once: its head is looked at (a JSON array, or an object
    over several lines, is refused) and then read again from memory, so a named pipe loses
    nothing and is not opened twice. `not_object`: called for each line that is not a JSON
    object; `at_line`: with each record's line in the file as it is read."""
    f = open(path, "rb")  # noqa: SIM115 (closed by the records' reader, or here on refusal)
    try:
        head = _head(f)
        if _json_array(head) and not path.lower().endswith(".csv"):
            raise ConfigError(
                f"{path} holds a JSON array: kappa produce reads JSON lines, one object per "
                f"line (jq -c '.[]' {path} writes them)"
            )
        if _multi_line_object(head) and not path.lower().endswith(".csv"):
            raise ConfigError(
                f"{path} holds a JSON object over several lines: kappa produce reads JSON "
                f"lines, one object per line (jq -c . {path} writes them)"
            )
        return read_file(path, io.BufferedReader(_HeadFirst(head, f)), not_object, at_line)
    except BaseException:
        f.close()
        raise


def _records_read_when_taken(
    path: str, not_object: Callable[[], None], at_line: Callable[[int], None]
) -> Iterator[KeyValue]:
    """`_file_records`, all of it in the thread that takes the records (`ReadAhead`): opening a
    named pipe waits for its writer, and its head for the first line, so a stop meanwhile is
    the loop's to take. A file that cannot be read, or is refused, is the ConfigError it is
    before connecting, raised where the loop takes the first record (before connecting too)."""
    try:
        records = _file_records(path, not_object, at_line)
    except (OSError, ValueError) as e:
        raise _unreadable(path, e) from None
    yield from records


def _unreadable(path: str, e: OSError | ValueError) -> ConfigError:
    """The one line for a file missing, not readable, of an unknown suffix, or refused."""
    if isinstance(e, ConfigError):
        return e
    return ConfigError(f"cannot read {path}: {e.strerror}" if isinstance(e, OSError) else str(e))


async def _first_awaited(items: AsyncGenerator[KeyValue, None]) -> AsyncIterator[KeyValue]:
    """`items`, its first item awaited now (its failure raised here), then all of them."""
    try:
        first = [await anext(items)]
    except StopAsyncIteration:
        first = []

    async def all_items() -> AsyncIterator[KeyValue]:
        try:
            for item in first:
                yield item
            async for item in items:
                yield item
        finally:
            await items.aclose()

    return all_items()


def run_produce(settings: Settings, args: argparse.Namespace) -> int:
    spec: GeneratorSpec | None = None
    # (line in the file, or place among the generated, record)
    records: Iterable[tuple[int, KeyValue]] = ()
    read_ahead: ReadAhead[tuple[int, KeyValue]] | None = None  # the records, read by a thread
    # a file's lines that are not JSON objects (they will go to the DLQ), counted as read
    not_objects = 0

    def not_object() -> None:
        nonlocal not_objects
        not_objects += 1

    # the line in the file of the record read last (blank lines and a CSV header are in the
    # file but are no record)
    line_read = 0

    def at_line(number: int) -> None:
        nonlocal line_read
        line_read = number

    def numbered(records: Iterable[KeyValue]) -> Iterator[tuple[int, KeyValue]]:
        """Each record with its line in the file: read ahead, its line goes with it."""
        for record in records:
            yield line_read, record

    line = 0  # the line of the record taken last to be sent: where a record refused is

    refuse_kappa_topic(settings, args.topic)
    if args.file is not None:
        if not args.file.strip():
            raise ConfigError("--file needs a path")
        try:  # missing or unreadable: said before connecting
            if stat.S_ISREG(os.stat(args.file).st_mode):
                # read in the loop: handing records between threads slows kappa produce down
                records = numbered(_file_records(args.file, not_object, at_line))
            else:
                # a named pipe, a device: its open and each read may wait for its writer, for
                # ever. Opened and read by a thread, the loop sends what came meanwhile and
                # takes a stop
                records = numbered(_records_read_when_taken(args.file, not_object, at_line))
                read_ahead = ReadAhead(
                    iter(records), lambda numbered: len(numbered[1][1]), name="kappa-produce-file"
                )
        except (OSError, ValueError) as e:
            raise _unreadable(args.file, e) from None
        total = None
    else:
        spec = generator_spec(args)  # checked before connecting; generated in `run`
        total = spec.count
    warn_if_unread(settings, args.topic)  # once the arguments are known to be good

    read = 0

    def counting(records: Iterable[tuple[int, KeyValue]]) -> Iterator[KeyValue]:
        """The records, counted, the line of the one taken last kept; an error reading the file
        part way is `_ReadFailed`, so that it is not confused with an error of the broker or of
        producing."""
        nonlocal read, line
        source = iter(records)
        while True:
            try:
                line, record = next(source)
            except StopIteration:
                return
            except (OSError, ValueError, csv.Error) as e:
                raise _ReadFailed(str(e)) from None
            yield record
            read += 1

    async def counting_read_ahead(
        records: ReadAhead[tuple[int, KeyValue]],
    ) -> AsyncGenerator[KeyValue, None]:
        """As `counting`, for records read by a thread."""
        nonlocal read, line
        source = aiter(records)
        try:
            while True:
                try:
                    line, record = await anext(source)
                except StopAsyncIteration:
                    return
                except ConfigError:  # opened by the thread: unreadable or refused
                    raise
                except (OSError, ValueError, csv.Error) as e:
                    raise _ReadFailed(str(e)) from None
                yield record
                read += 1
        finally:
            await source.aclose()

    async def run() -> int:
        nonlocal records
        piped: AsyncIterator[KeyValue] | None = None
        if read_ahead is not None:
            # its first record awaited before connecting, as a regular file's head is looked
            # at: a file unreadable or refused is said before anything is created
            piped = await _first_awaited(counting_read_ahead(read_ahead))
        await wait_for_broker(settings.kafka)
        if spec is not None:
            chosen = spec
            if args.start_ms is None:  # "now", unless the topic already holds later orders
                chosen = await continue_after_topic(settings.kafka, args.topic, spec)
            ahead = await orders_ahead_limit(settings)
            refuse_ahead(chosen, args.rate, ahead, int(time.time() * 1000))
            records = enumerate(((r.key, r.value) for r in generate(chosen)), 1)
        await ensure_topics(
            settings.kafka, {args.topic: (settings.partitions, KEEP_FOREVER)}, settings.replication
        )
        return await produce_records(
            settings.kafka,
            args.topic,
            counting(records) if piped is None else piped,
            rate=args.rate,
            progress=not args.no_progress,
            total=total,
        )

    try:
        sent = command_loop.run(run())
    except _ReadFailed as e:  # the file went bad part way
        before = (
            f"; {counted(read, 'record')} were produced before reading failed (loading the file "
            "again produces them again)"
            if read
            else ""
        )
        raise ConfigError(f"cannot read {args.file}: {e}{before}") from None
    except RecordTooLarge as e:  # a line of the file: one clear line, not the client's words
        before = (
            f"; up to {counted(e.index, 'record')} before it went to {args.topic} (loading the "
            "file again produces them again)"
            if e.index
            else ""
        )
        refused = (
            f"the record at line {line:,} of {args.file}"  # the line sed -n Np shows
            if args.file is not None
            else f"generated record {e.index + 1:,}"
        )
        raise ConfigError(
            f"{refused} is too large: {e.size:,} bytes as a record batch, over the "
            f"{MAX_REQUEST_SIZE:,} bytes kappa produce sends at once{before}"
        ) from None
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: how far it got, since a rerun sends them again
        print(
            f"kappa produce: stopped; up to {counted(read, 'record')} went to {args.topic} "
            "(producing the same again sends them again)",
            file=sys.stderr,
            flush=True,
        )
        raise
    print(f"produced {counted(sent, 'record')} to {args.topic}", flush=True)
    if args.file is not None and not_objects:
        verb = "is not a JSON object" if not_objects == 1 else "are not JSON objects"
        dlq = "; they go to the DLQ" if args.topic in _sources(settings) else ""
        print(
            f"kappa produce: warning: {not_objects:,} of the {counted(read, 'record')} from "
            f"{args.file} {verb} (one object per line is expected){dlq}",
            file=sys.stderr,
            flush=True,
        )
    return 0

"""`kappa produce`: load historical files or synthetic orders into a topic."""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Iterable, Iterator

from app import command_loop
from app.admin import KEEP_FOREVER, ensure_topics, wait_for_broker
from app.orders_generator import GeneratorSpec, generate, read_file
from app.produce import produce_records
from app.settings import ConfigError, Settings

KeyValue = tuple[bytes | None, bytes]


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


class _ReadFailed(Exception):
    """The input file could not be read part way (its reason as the message)."""


def run_produce(settings: Settings, args: argparse.Namespace) -> int:
    if args.file is not None:
        if not args.file.strip():
            raise ConfigError("--file needs a path")
        try:
            with open(args.file, "rb"):  # missing or unreadable: say so first, before connecting
                pass
            records = read_file(args.file)
        except (OSError, ValueError) as e:
            reason = f"cannot read {args.file}: {e.strerror}" if isinstance(e, OSError) else e
            raise ConfigError(str(reason)) from None
        total = None
    else:
        spec = generator_spec(args)
        records = ((r.key, r.value) for r in generate(spec))
        total = spec.count

    read = 0

    def counted(records: Iterable[KeyValue]) -> Iterator[KeyValue]:
        """The records, counted; an error reading the file part way is `_ReadFailed`, so that
        it is not confused with an error of the broker or of producing."""
        nonlocal read
        source = iter(records)
        while True:
            try:
                record = next(source)
            except StopIteration:
                return
            except (OSError, ValueError, csv.Error) as e:
                raise _ReadFailed(str(e)) from None
            yield record
            read += 1

    async def run() -> int:
        await wait_for_broker(settings.kafka)
        await ensure_topics(
            settings.kafka, {args.topic: (settings.partitions, KEEP_FOREVER)}, settings.replication
        )
        return await produce_records(
            settings.kafka,
            args.topic,
            counted(records),
            rate=args.rate,
            progress=not args.no_progress,
            total=total,
        )

    try:
        sent = command_loop.run(run())
    except _ReadFailed as e:  # the file went bad part way
        before = (
            f"; {read:,} records were produced before reading failed (loading the file again "
            "produces them again)"
            if read
            else ""
        )
        raise ConfigError(f"cannot read {args.file}: {e}{before}") from None
    print(f"produced {sent:,} records to {args.topic}", flush=True)
    return 0

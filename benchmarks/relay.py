"""The latency floor: the least an at-least-once consume → produce processor can do.

`python -m benchmarks.relay BOOTSTRAP SOURCE FORWARD --stop-file F`: reads SOURCE from the
beginning (no group), decodes every value as JSON (as the ceiling does) and, per fetch, sends
one record per partition to FORWARD carrying `{"src": [partition, last offset]}`, the shape of
the live worker's `orders.by-user` forwards, with acks=all; the next fetch's records are
handled once the broker has acknowledged those. No state, no windows, no changelog.

Read by the same forward tailer as the worker, its latency is what the broker charges for two
crossings and one acknowledged produce: what any stream processor pays on this broker before
doing any work of its own. It prints `ready` after its first fetch and stops when the stop file
exists.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from pathlib import Path

from aiokafka import AIOKafkaProducer

from app.settings import Settings
from benchmarks.bare_reader import read_from_beginning


async def relay(
    bootstrap: str, source: str, forward: str, stop_file: Path, fetch_wait_ms: int
) -> int:
    """Relay until the stop file exists; returns how many source records it handled."""
    consumer = await read_from_beginning(bootstrap, source, fetch_max_wait_ms=fetch_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    handled = 0
    try:
        await producer.start()
        first = True
        while not stop_file.exists():
            batches = await consumer.getmany(timeout_ms=100)
            if first:
                print("ready", flush=True)
                first = False
            acks = []
            for tp, records in batches.items():
                for r in records:
                    json.loads(r.value)
                handled += len(records)
                src = json.dumps({"src": [tp.partition, records[-1].offset]}).encode()
                acks.append(await producer.send(forward, src, partition=tp.partition))
            if acks:
                await asyncio.gather(*acks)
    finally:
        await consumer.stop()
        await producer.stop()
    return handled


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("bootstrap")
    p.add_argument("source")
    p.add_argument("forward")
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=Settings.fetch_max_wait_ms,
        help="fetch_max_wait_ms (default: the live worker's)",
    )
    a = p.parse_args()
    gc.freeze()  # what start-up built; the relay keeps nothing per record
    asyncio.run(relay(a.bootstrap, a.source, a.forward, a.stop_file, a.fetch_wait_ms))


if __name__ == "__main__":
    main()

"""What a partition's state holds, for comparing the states of separate runs."""

from __future__ import annotations

from tables.partition_state import ORIGIN, KeyValueStore


def state_contents(store: KeyValueStore) -> list[tuple[bytes, bytes]]:
    """Every entry in key order, but the origin: random per changelog, so two runs over the
    same input differ there and nowhere else."""
    return [kv for kv in store.scan(b"", b"\xff" * 8) if kv[0] != ORIGIN]

"""How the per-user state of the orders and user-totals pipelines is stored.

Fixed-width binary records behind a format byte: a live worker reads and rewrites one value
per touched user per batch, and decoding JSON for it was the largest share of its CPU at small
batches. Values written by earlier versions (JSON, which starts with `[` or `{`) are still
read, so existing state directories and changelogs need no migration: a user's value is
rewritten in the new format the next time it changes. Floats are packed exactly (IEEE 754),
so the bytes, like the outputs, are the same however the stream was batched.
"""

from __future__ import annotations

import json
import struct

BINARY_V1 = 1  # the first byte of a value in this format; JSON never starts with it

# A user's running totals on one source partition of `orders`: (orders, spend, latest ts).
_PARTIAL = struct.Struct(">Bqdq")
# One source partition's entry in a user's totals: (partition, offset, orders, spend, ts).
_PART = struct.Struct(">iqqdq")

Partial = tuple[int, float, int]
Parts = dict[int, tuple[int, int, float, int]]  # partition → (offset, orders, spend, ts)


def encode_partial(orders: int, spend: float, ts: int) -> bytes:
    return _PARTIAL.pack(BINARY_V1, orders, spend, ts)


def decode_partial(raw: bytes) -> Partial:
    if raw[0] == BINARY_V1:
        _, orders, spend, ts = _PARTIAL.unpack(raw)
        return orders, spend, ts
    orders, spend, ts = json.loads(raw)  # written before the binary format: [orders, spend, ts]
    return int(orders), float(spend), int(ts)


def encode_parts(parts: Parts) -> bytes:
    """Entries in partition order: equal parts always give equal bytes."""
    pack = _PART.pack
    return bytes((BINARY_V1,)) + b"".join(pack(p, *parts[p]) for p in sorted(parts))


def decode_parts(raw: bytes) -> Parts:
    if raw[0] == BINARY_V1:
        return {p: (o, n, s, t) for p, o, n, s, t in _PART.iter_unpack(memoryview(raw)[1:])}
    # Written before the binary format: {"partition": [offset, orders, spend, ts], ...}
    return {
        int(p): (int(o), int(n), float(s), int(t)) for p, (o, n, s, t) in json.loads(raw).items()
    }

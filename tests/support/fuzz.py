"""Fuzzing the decoders of what users and other processes write: arbitrary bytes and near-miss
JSON (the right shape with wrong types, huge, negative or non-finite numbers, missing, extra
and duplicate fields, nesting, unicode and lone surrogates, very long strings), and the check
every pipeline's `process` must pass on any batch of them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from agents.base import BatchOutput, Pipeline, SourceRecord
from tables.partition_state import MemoryStore, PartitionState
from tests.support.state import state_contents

SURROGATES = ("\ud800", "p\udfff", "\udc80x")
_texts = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "p1", "u1", "é", "\x00", "a:b", "x" * 1025, "9" * 70, *SURROGATES]),
    st.sampled_from(["12.5", " -1 ", "1e400", "NaN", "-Infinity", "0x10", "1_0", "\u0663", "3.0"]),
    st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01T12:00:00", "9999-12-31T23:59:59+00:00"]),
)
_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(
        [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 1e24, 1e300, 2**62, 2**63, -(2**63)]
    ),
    st.sampled_from([2**63 - 1, 1 << 40, (1 << 40) + 1, 10**400, 60_000, 4_102_444_800_000]),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _texts)
JSON_VALUES = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=12,
)


def json_bytes(obj: object, how: str = "plain") -> bytes:
    """`obj` as JSON text (NaN and infinities as Python writes them): `plain`; `raw` (non-ASCII
    as is, so a lone surrogate becomes bytes no UTF-8 decoder takes); `spaced` (whitespace
    around, as another producer may write it)."""
    if how == "raw":
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    text = json.dumps(obj)
    return f" {text}\n".encode() if how == "spaced" else text.encode()


@st.composite
def near_miss(draw: st.DrawFn, good: Mapping[str, object]) -> bytes:
    """`good` with some fields dropped or replaced by any JSON value, extra fields, a field
    repeated (JSON decoders keep the last), written in one of `json_bytes`' ways."""
    d: dict[str, Any] = dict(good)
    for name in draw(st.lists(st.sampled_from(sorted(good)), unique=True, max_size=3)):
        if draw(st.integers(0, 3)) == 0:
            d.pop(name)
        else:
            d[name] = draw(JSON_VALUES)
    d.update(draw(st.dictionaries(_texts, JSON_VALUES, max_size=2)))
    raw = json_bytes(d, draw(st.sampled_from(["plain", "raw", "spaced"])))
    if draw(st.integers(0, 4)) == 0 and good:  # a field twice: the first copy is junk
        name = draw(st.sampled_from(sorted(good)))
        first = json.dumps({name: draw(JSON_VALUES)})[1:-1]
        raw = b"{" + first.encode() + (b"," if raw.strip() != b"{}" else b"") + raw.lstrip()[1:]
    return raw


def values(good: Mapping[str, object]) -> st.SearchStrategy[bytes | None]:
    """Record values a decoder of `good`-shaped records may meet."""
    return st.one_of(
        near_miss(good),
        near_miss(good),
        st.builds(json_bytes, JSON_VALUES),
        st.binary(max_size=40),
        st.sampled_from([None, b"", b"{", b"null", b"[" * 3000 + b"]" * 3000, b"\xff\xfe"]),
        st.builds(lambda raw, n: raw[:n], near_miss(good), st.integers(1, 60)),  # cut short
    )


HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["kappa.provisional", "kappa.error", "", "é"]), st.binary(max_size=4)
    ),
    max_size=2,
)


def source_records(
    topic: str, items: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]
) -> list[SourceRecord]:
    """(key, value, headers) as a partition's records from offset 0 (partition 0)."""
    return [
        SourceRecord(topic, 0, i, 1_700_000_000_000, key, value, headers)
        for i, (key, value, headers) in enumerate(items)
    ]


def _finite_json(raw: bytes) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"an output holds {name}: {raw[:200]!r}")

    json.loads(raw, parse_constant=refuse)


def check_batch(
    make_pipeline: Callable[[], Pipeline],
    records: Sequence[SourceRecord],
    reasons: set[str],
    decode_state: Callable[[list[tuple[bytes, bytes]]], None],
    copies: Sequence[str] = (),
    prepare: Callable[[PartitionState], None] | None = None,
) -> BatchOutput:
    """Process `records` and check what a batch of anything must give: no exception, each
    dead-lettered record under one of `reasons`, every other output JSON with no NaN or
    infinity (`copies`: topics that pass source values on as they are), state whose every
    entry `decode_state` decodes; and what the batch without its dead-lettered records gives
    (outputs and state): they changed nothing. `prepare` sets the state up first, for both."""

    def run(batch: Sequence[SourceRecord]) -> tuple[BatchOutput, MemoryStore]:
        store = MemoryStore()
        state = PartitionState(store, 0, new_origin=lambda: b"o" * 16)
        if prepare is not None:
            prepare(state)
        out = make_pipeline().process(state, batch)
        state.prepare(len(records) - 1)
        state.commit()
        return out, store

    out, store = run(records)
    pipeline = make_pipeline()
    dead = {r.source_offset for r in out.records if r.topic == pipeline.dlq}
    for r in out.records:
        if r.topic == pipeline.dlq:
            assert dict(r.headers)["kappa.error"].decode() in reasons, r.headers
            assert r.source_offset is not None
        elif r.topic not in copies:
            assert r.value is not None
            _finite_json(r.value)
    assert out.counts.dlq == len(dead)
    decode_state(state_contents(store))
    kept, kept_store = run([r for r in records if r.offset not in dead])
    assert [r for r in kept.records if r.topic != pipeline.dlq] == [
        r for r in out.records if r.topic != pipeline.dlq
    ]
    assert state_contents(kept_store) == state_contents(store)
    return out

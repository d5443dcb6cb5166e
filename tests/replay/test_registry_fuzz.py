"""Fuzz the version registry's records: anyone with access to its topic can write one, and a
record Kappa did not write must be refused in one line (ConfigError), never folded into a view
that the commands reading it then trip over."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.settings import ConfigError
from replay.registry import RegistryView, VersionRecord, fold_record
from tests.support.fuzz import JSON_VALUES, near_miss

GOOD = {
    "version/2": dataclasses.asdict(VersionRecord(2, "running", ["orders"], {"orders": {"0": 5}})),
    "version/2/c1": dataclasses.asdict(VersionRecord(2, "running", ["orders"], {})),
    "complete/2": {"at": "2026-01-01T00:00:00+00:00"},
    "definition/2": {"window_ms": 60_000, "grace_ms": 10_000},
    "dropping/2": {"active": True, "at": "2026-01-01T00:00:00+00:00"},
    "split/2": {"processes": 2},
    "progress/2/orders/0": {"end": 5},
}
_keys = st.one_of(
    st.sampled_from(sorted(GOOD)).map(str.encode),
    st.sampled_from(
        [None, b"", b"version/x", b"progress/2", b"split/9e9999", b"\xff", b"version/"]
    ),
)


@st.composite
def _records(draw: st.DrawFn) -> tuple[bytes | None, bytes]:
    key = draw(_keys)
    good = GOOD.get((key or b"").decode("utf-8", "replace"), {"at": 1})
    value = draw(
        st.one_of(near_miss(good), st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES))
    )
    return key, draw(st.one_of(st.just(value), st.binary(max_size=20)))


def _check_view(view: RegistryView) -> None:
    """What the commands rely on a view to hold."""
    for v, rec in view.versions.items():
        assert type(v) is int and type(rec.status) is str and type(rec.version) is int
        assert all(type(p) is str for p in rec.pipelines)
        ends = [(int(p), e) for parts in rec.snapshot.values() for p, e in parts.items()]
        assert all(type(e) is int for _, e in ends)
        assert rec.since_ms is None or type(rec.since_ms) is int
        assert type(rec.flush) is bool and type(rec.replay_done) is bool
        assert type(rec.created_at) is str and type(rec.updated_at) is str
    assert all(type(d) is dict for d in view.definitions.values())
    assert all(type(n) is int for n in view.splits.values())
    assert all(type(e) is int for ends in view.progress.values() for e in ends.values())
    view.live, view.unused_version  # noqa: B018


@settings(max_examples=250, deadline=None)
@given(records=st.lists(_records(), max_size=6))
def test_any_registry_record_is_folded_or_refused_in_one_line(
    records: list[tuple[bytes | None, bytes]],
) -> None:
    view = RegistryView({}, {})
    for i, (key, value) in enumerate(records):
        try:
            fold_record(view, key, value, f"registry offset {i}")
        except ConfigError as e:
            assert str(e).startswith(
                f"the version registry holds a record Kappa cannot read (registry offset {i}, key "
            )
            assert "\n" not in str(e)
            return
        _check_view(view)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"progress/2/orders/0", b'{"end": Infinity}'),  # was an OverflowError traceback
        (b"split/2", b'{"processes": Infinity}'),
        (b"split/2", b'{"processes": 1.5}'),
        (b"dropping/2", b'{"active": "no"}'),
        (b"definition/2", b'[["window_ms", 1]]'),
        (b"version/2", b'{"version": 2, "status": "running", "pipelines": "orders"}'),
        (b"version/2", b'{"version": 2, "status": "running", "snapshot": {"orders": {"p": 1}}}'),
        (b"version/2", b'{"version": 2, "status": "running", "snapshot": {"orders": {"0": 1.5}}}'),
        (b"version/2", b'{"version": "2", "status": "running"}'),
        (b"version/2", b'{"version": 2, "status": "running", "since_ms": "0"}'),
        (b"version/2", b'{"version": 2, "status": "running", "flush": 1}'),
    ],
)
def test_a_record_of_the_wrong_types_is_refused_in_one_line(key: bytes, value: bytes) -> None:
    with pytest.raises(ConfigError, match="holds a record Kappa cannot read"):
        fold_record(RegistryView({}, {}), key, value, "here")

"""Reading the version registry without a broker: records fold into a view, and a record
Kappa did not write is one clear error."""

from __future__ import annotations

import json

import pytest

from app.settings import ConfigError
from replay.registry import RegistryView, VersionRecord, fold_record


def test_version_and_progress_records_fold_into_the_view() -> None:
    view = RegistryView({}, {})
    first = VersionRecord(2, "replaying", ["orders"], {"orders": {"0": 5}})
    fold_record(view, b"version/2", json.dumps(first.__dict__).encode(), "here")
    later = VersionRecord(2, "ready", ["other"], {})
    fold_record(view, b"version/2", json.dumps(later.__dict__).encode(), "here")
    fold_record(view, b"progress/2/orders/0", b'{"end": 5}', "here")
    assert view.versions[2].status == "ready"
    assert view.versions[2].pipelines == ["orders"]  # a version's definition is its first record's
    assert view.progress == {(2, "orders"): {0: 5}}


@pytest.mark.parametrize(
    "key,value",
    [
        (b"version/2", b"not json"),
        (b"version/2", b'{"unknown": 1}'),
        (b"version/x", b'{"version": 2, "status": "live"}'),
        (b"progress/2/orders", b'{"end": 5}'),
        (b"progress/2/orders/0", b'{"start": 5}'),
        (b"version/2", b"[" * 5000 + b"]" * 5000),
        (b"\xff", b"{}"),
    ],
)
def test_a_record_kappa_did_not_write_is_one_line_naming_where_it_is(
    key: bytes, value: bytes
) -> None:
    with pytest.raises(ConfigError) as err:
        fold_record(RegistryView({}, {}), key, value, "kappa-versions offset 7")
    assert "offset 7" in str(err.value) and "\n" not in str(err.value)


def _fold(view: RegistryView, version: int, status: str) -> None:
    rec = VersionRecord(version, status, ["orders"], {})
    fold_record(view, f"version/{version}".encode(), json.dumps(rec.__dict__).encode(), "here")


def test_a_promote_that_stopped_halfway_leaves_the_old_version_live() -> None:
    view = RegistryView({}, {})
    _fold(view, 2, "complete")
    _fold(view, 3, "complete")
    _fold(view, 3, "live")  # `promote 3`: the new version first...
    assert view.live == 3
    _fold(view, 2, "live")  # `promote 2`, which stopped before marking 3 complete
    assert view.live == 3
    _fold(view, 3, "complete")  # ...then the old one: done
    assert view.live == 2

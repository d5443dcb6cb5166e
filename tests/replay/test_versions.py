"""How `kappa versions` shows a version's status, without a broker."""

from __future__ import annotations

from replay.registry import COMPLETE, LIVE, RegistryView, VersionRecord
from replay.versions import shown_status


def test_a_promote_stopped_halfway_shows_one_version_live_and_the_other_promoting() -> None:
    """The promote marked 3 live but stopped before marking 2 complete: 2 is still live."""
    view = RegistryView(
        {2: VersionRecord(2, LIVE), 3: VersionRecord(3, LIVE), 4: VersionRecord(4, COMPLETE)},
        {},
        marked={2: 5, 3: 9, 4: 7},
    )
    shown = {v: shown_status(view, v, rec) for v, rec in view.versions.items()}
    assert shown == {2: "live", 3: "promoting", 4: "complete"}

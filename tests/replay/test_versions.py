"""How `kappa versions` shows a version's status, and `kappa promote` what to do next, without
a broker."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings, load_settings
from replay.registry import COMPLETE, LIVE, RegistryView, VersionRecord, version_definition
from replay.versions import _restart_advice, shown_status, status_report, unrecorded_versions


def test_a_promote_stopped_halfway_shows_one_version_live_and_the_other_promoting() -> None:
    """The promote marked 3 live but stopped before marking 2 complete: 2 is still live."""
    view = RegistryView(
        {2: VersionRecord(2, LIVE), 3: VersionRecord(3, LIVE), 4: VersionRecord(4, COMPLETE)},
        {},
        marked={2: 5, 3: 9, 4: 7},
    )
    shown = {v: shown_status(view, v, rec) for v, rec in view.versions.items()}
    assert shown == {2: "live", 3: "promoting", 4: "complete"}


def test_versions_with_output_topics_and_no_record_are_found(tmp_path: Path) -> None:
    """`kappa topics --version 12` or a worker of it leaves topics and no record: listed."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_TOPIC_PREFIX": "x."})
    topics = {
        "x.orders",  # the shared source: no version
        "x.orders.revenue-1m.v12",
        "x.orders.by-user.v12",
        "x.orders.revenue-1m.v3",  # recorded
        "x.orders.revenue-1m",  # version 1
        "y.orders.revenue-1m.v7",  # another prefix
        "x.orders.other.v8",  # not an output of Kappa's
        "x.kappa-v9-orders-changelog",  # a changelog alone does not make a version
    }
    assert unrecorded_versions(settings, topics, recorded={1, 3}) == [12]


def test_status_lists_the_outputs_the_live_version_has() -> None:
    """It listed orders.revenue-hopping for a version built without hopping windows, and the
    outputs of every pipeline for a version that ran some."""
    settings = load_settings({"KAPPA_TOPIC_PREFIX": "x.", "KAPPA_STATE_DIR": "/s"})
    view = RegistryView({4: VersionRecord(4, LIVE, ["orders"])}, {})
    view.definitions[4] = {"hopping_size_ms": 0, "hopping_step_ms": 0}
    assert status_report(settings, view).splitlines() == [
        "live version: 4 (consumer group kappa-v4)",
        "outputs: x.orders.by-user.v4, x.orders.by-window.v4, x.orders.dlq.v4, x.orders.late.v4, "
        "x.orders.revenue-1m.v4",
        "state: /s/v4",
        # recorded before the guard against far-future times existed: built without it
        "settings: KAPPA_MAX_TS_AHEAD_MS=0; the others at their defaults",
    ]
    view.definitions[4] = {"hopping_size_ms": 120_000, "hopping_step_ms": 60_000}
    assert "x.orders.revenue-hopping.v4" in status_report(settings, view).splitlines()[1]


def test_status_says_what_the_live_version_was_built_with() -> None:
    """Its workers take those settings from its record: the environment no longer tells."""
    settings = load_settings({})
    view = RegistryView({}, {})
    said = status_report(settings, view).splitlines()[-1]
    assert said == "settings: not recorded yet (its first worker or replay records them)"
    view.definitions[1] = version_definition(Settings())
    assert status_report(settings, view).splitlines()[-1] == "settings: the defaults"
    view.definitions[1] = {**version_definition(Settings()), "window_ms": 120_000, "top_k": 5}
    assert status_report(settings, view).splitlines()[-1] == (
        "settings: KAPPA_WINDOW_MS=120000, KAPPA_TOP_K=5; the others at their defaults"
    )


def test_a_promote_says_with_which_settings_to_restart_the_workers() -> None:
    """`kappa promote 2` of a version built with KAPPA_ANOMALY_Z=2.5 said "restart workers
    without --version", and workers restarted with the old environment were refused."""
    settings = load_settings({})
    view = RegistryView({2: VersionRecord(2, LIVE)}, {})
    assert _restart_advice(settings, view, 2) == "restart workers without --version to run it"
    view.definitions[2] = {**version_definition(settings), "anomaly_z": 2.5, "top_k": 5}
    assert _restart_advice(settings, view, 2) == (  # nothing set: taken from the record
        "restart workers without --version to run it (they take KAPPA_ANOMALY_Z=2.5, "
        "KAPPA_TOP_K=5, the settings it was built with, from its record)"
    )
    setting = load_settings({"KAPPA_ANOMALY_Z": "3"})  # a worker with it would be refused
    assert _restart_advice(setting, view, 2) == (
        "restart workers without --version, with KAPPA_ANOMALY_Z=2.5 (the settings it was "
        "built with) or with those unset, to run it"
    )
    view.definitions[2] = version_definition(settings)
    assert _restart_advice(settings, view, 2) == "restart workers without --version to run it"

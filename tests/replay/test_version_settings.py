"""A version's workers and resumed replays run with its recorded settings wherever the
environment gives none (`settings_for_version`), without a broker."""

from __future__ import annotations

import pytest

from app.settings import ConfigError, Settings, load_settings
from replay.registry import (
    _DEFAULT_DEFINITION,
    RegistryView,
    settings_for_version,
    taken_from_record,
    version_definition,
)


def _view(version: int, definition: dict[str, object]) -> RegistryView:
    view = RegistryView({}, {})
    view.definitions[version] = definition
    return view


def test_settings_the_environment_leaves_unset_are_taken_from_the_versions_record() -> None:
    """A version built with KAPPA_WINDOW_MS=30000 refused every worker started without it."""
    settings = load_settings({"KAPPA_GRACE_MS": "5000"})
    built = {**version_definition(Settings()), "window_ms": 30_000, "anomaly_z": 2.5}
    view = _view(4, {**built, "grace_ms": 5000})
    adopted = settings_for_version(settings, view, 4)
    assert (adopted.window_ms, adopted.anomaly_z, adopted.grace_ms) == (30_000, 2.5, 5000)
    assert version_definition(adopted) == {**built, "grace_ms": 5000}
    assert taken_from_record(settings, adopted) == "KAPPA_WINDOW_MS=30000, KAPPA_ANOMALY_Z=2.5"
    assert adopted.given == settings.given  # taken, not given: a later check tells them apart


def test_a_setting_the_environment_gives_is_kept_for_the_definition_check_to_refuse() -> None:
    settings = load_settings({"KAPPA_WINDOW_MS": "60000"})
    view = _view(4, {**version_definition(Settings()), "window_ms": 30_000})
    assert settings_for_version(settings, view, 4).window_ms == 60_000


def test_a_version_without_a_recorded_definition_runs_with_the_environments() -> None:
    settings = load_settings({})
    assert settings_for_version(settings, RegistryView({}, {}), 4) is settings


def test_a_definition_recorded_before_a_setting_existed_means_its_default_then() -> None:
    """Filled in with the defaults at the time, which never change with a new default: a
    version that ran before the guard against far-future times existed ran without it."""
    assert list(_DEFAULT_DEFINITION) == list(version_definition(Settings()))
    adopted = settings_for_version(load_settings({}), _view(2, {"window_ms": 120_000}), 2)
    assert adopted.window_ms == 120_000
    assert version_definition(adopted) == {**_DEFAULT_DEFINITION, "window_ms": 120_000}
    assert adopted.max_ts_ahead_ms == 0


def test_a_recorded_whole_number_for_a_decimal_setting_is_taken_as_one() -> None:
    adopted = settings_for_version(load_settings({}), _view(2, {"trend_half_life": 4}), 2)
    assert adopted.trend_half_life == 4.0 and type(adopted.trend_half_life) is float


def test_a_setting_only_a_newer_release_knows_is_left_to_the_definition_check() -> None:
    view = _view(2, {**version_definition(Settings()), "future_setting": 1})
    adopted = settings_for_version(load_settings({}), view, 2)
    assert version_definition(adopted) == version_definition(Settings())


@pytest.mark.parametrize(
    ("definition", "said"),
    [
        ({"window_ms": "60000"}, "the version registry records window_ms='60000' for version 3"),
        ({"top_k": True}, "the version registry records top_k=True for version 3"),
        ({"window_ms": -5}, "version 3's recorded settings are refused: KAPPA_WINDOW_MS must be"),
    ],
)
def test_recorded_settings_kappa_cannot_run_are_refused_in_one_line(
    definition: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_for_version(load_settings({}), _view(3, definition), 3)
    assert str(refused.value).startswith(said)
    assert "\n" not in str(refused.value)


def test_a_setting_the_environment_gives_against_a_sound_record_is_named_not_the_record() -> None:
    """The environment's KAPPA_HOPPING_STEP_MS=0 beside a recorded hopping size failed the
    hopping check, said as 'version 3's recorded settings are refused'."""
    built = {**version_definition(Settings()), "hopping_size_ms": 300_000}
    view = _view(3, {**built, "hopping_step_ms": 60_000})
    with pytest.raises(ConfigError) as refused:
        settings_for_version(load_settings({"KAPPA_HOPPING_STEP_MS": "0"}), view, 3)
    assert str(refused.value).startswith(
        "version 3 is built with KAPPA_HOPPING_STEP_MS=60000, not KAPPA_HOPPING_STEP_MS=0: a "
        "version's windows and analytics never change"
    )


def test_a_version_run_before_definitions_were_recorded_takes_the_defaults_then() -> None:
    settings = load_settings({"KAPPA_WINDOW_MS": "30000"})
    adopted = settings_for_version(settings, RegistryView({}, {}), 4, ran_unrecorded=True)
    assert version_definition(adopted) == {**_DEFAULT_DEFINITION, "window_ms": 30_000}

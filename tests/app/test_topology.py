"""Which pipelines a version runs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.topology import Topology


def _topology(tmp_path: Path) -> Topology:
    return Topology(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 2)


def test_a_pipeline_named_twice_is_selected_once(tmp_path: Path) -> None:
    names = [p.name for p in _topology(tmp_path).select(["orders", "orders"]).pipelines]
    assert names == ["orders"]


def test_selected_pipelines_keep_the_order_given(tmp_path: Path) -> None:
    selected = _topology(tmp_path).select(["user-totals", "orders", "user-totals"])
    assert [p.name for p in selected.pipelines] == ["user-totals", "orders"]


def test_an_unknown_pipeline_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("unknown pipeline(s) nope; known: orders, user-totals")
    ):
        _topology(tmp_path).select(["orders", "nope"])


@pytest.mark.parametrize(
    ("name", "said"), [("", "''"), (" ", "' '"), ("orders,user-totals", "'orders,user-totals'")]
)
def test_an_unknown_pipeline_name_that_would_not_read_as_itself_is_quoted(
    tmp_path: Path, name: str, said: str
) -> None:
    """`--pipeline ''` said `unknown pipeline(s) ; known: …`, the name invisible."""
    with pytest.raises(ConfigError) as refused:
        _topology(tmp_path).select(["nope", name])
    assert str(refused.value).startswith(f"unknown pipeline(s) nope, {said}; known: orders, ")


def test_pipelines_that_read_only_earlier_outputs_form_one_level(tmp_path: Path) -> None:
    """A replay runs each level's pipelines at the same time, the levels one after another."""
    levels = [[p.name for p in level] for level in _topology(tmp_path).levels()]
    assert levels == [["orders"], ["user-totals", "product-trends", "top-products"]]
    selected = _topology(tmp_path).select(["user-totals", "orders"])
    assert [[p.name for p in level] for level in selected.levels()] == [
        ["orders"],
        ["user-totals"],
    ]
    assert [p.name for p in selected.stages()] == ["orders", "user-totals"]


def test_two_pipelines_reading_one_source_are_refused(tmp_path: Path) -> None:
    """A worker delivers a topic to one pipeline: a second reader would see none of it."""
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    first = Topology(settings, 1).pipelines[0]
    second = copy.copy(first)
    second.name = "orders-again"
    with pytest.raises(ValueError, match="pipelines orders and orders-again both read orders"):
        Topology(settings, 1, [first, second])


def test_a_topic_names_its_version_by_its_suffix() -> None:
    """Four places read `.vN` off a topic name, each its own way (a regex, slicing, two
    partitions of the string)."""
    from app.topology import version_suffix

    assert version_suffix("kappa.orders.revenue-1m.v12") == ("kappa.orders.revenue-1m", 12)
    assert version_suffix("orders.revenue-1m") == ("orders.revenue-1m", None)
    assert version_suffix("a.v5.v2") == ("a.v5", 2)
    for unversioned in ("orders.v", "orders.vx", ".v3", "orders.v٣"):  # ٣: not an ASCII digit
        assert version_suffix(unversioned) == (unversioned, None)

"""How the `kappa` CLI words its counts."""

from __future__ import annotations

from app.cli_output import counted


def test_a_count_of_one_takes_the_singular() -> None:
    """`kappa export` said "1 results", `kappa drop` "1 topics deleted"."""
    assert counted(1, "result") == "1 result"
    assert counted(0, "result") == "0 results"
    assert counted(20_000, "difference") == "20,000 differences"
    assert counted(2, "process", "processes") == "2 processes"

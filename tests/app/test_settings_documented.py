"""Every setting is in the README's configuration table, with its real default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.settings import SETTING_FIELDS

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_HEADER = re.compile(r"^\|\s*variable\s*\|\s*default\s*\|\s*meaning\s*\|\s*$")
ROW = re.compile(r"^\|\s*`(KAPPA_[A-Z0-9_]+)`\s*\|\s*(.*?)\s*\|")


def _configuration_table() -> list[tuple[str, str]]:
    """(variable, default) of each row of the table under the `variable | default | meaning`
    header, up to the first line that is not a table row."""
    lines = README.read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if TABLE_HEADER.match(line)]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        found = ROW.match(line)
        assert found, f"not a setting row: {line[:80]}"
        rows.append((found[1], found[2]))
    return rows


def _shown(default: object) -> str:
    if default == "":
        return "*(empty)*"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def test_the_readme_lists_every_setting_once_with_its_default() -> None:
    rows = _configuration_table()
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a setting listed twice"
    expected = {}
    for f in SETTING_FIELDS:
        assert f.default is not dataclasses.MISSING, f"{f.name}: show its default in the README"
        expected[f"KAPPA_{f.name.upper()}"] = _shown(f.default)
    assert dict(rows) == expected

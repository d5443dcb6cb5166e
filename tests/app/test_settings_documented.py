"""Every setting is in the README's configuration table, with its real default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _shown(default: object) -> str:
    if default == "":
        return "*(empty)*"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def test_the_readme_lists_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(KAPPA_[A-Z0-9_]+)` \| ([^|]*?) \|", README.read_text(), re.M))
    expected = {f"KAPPA_{f.name.upper()}": _shown(f.default) for f in dataclasses.fields(Settings)}
    assert rows == expected

"""Reading outputs back (`replay/latest.py`), without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from replay.latest import scratch_dir


def test_a_state_dir_that_is_a_file_is_named_as_the_setting(tmp_path: Path) -> None:
    """`kappa diff` and `kappa export` said only "cannot create PATH": not which setting."""
    afile = tmp_path / "afile"
    afile.write_text("")
    settings = load_settings({"KAPPA_STATE_DIR": str(afile)})
    refused = rf"^cannot use KAPPA_STATE_DIR={afile} for reading .*\): Not a directory$"
    with pytest.raises(ConfigError, match=refused), scratch_dir(settings):
        pass
    # a file on its path: the same words (it said "[Errno 17] File exists: '…/afile'")
    settings = load_settings({"KAPPA_STATE_DIR": str(afile / "state")})
    with pytest.raises(ConfigError, match=r"\): Not a directory$"), scratch_dir(settings):
        pass

"""The Prometheus alerts pass their own unit tests (deploy/prometheus/rules_test.yml), and the
compose Prometheus configuration loads, checked by promtool where it is installed (`make test`
fetches it from Debian's prometheus package where apt can)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or str(Path(sys.prefix) / "promtool/usr/bin/promtool")

pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).is_file(), reason="promtool is not installed (apt could not fetch it)"
)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alerts_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def test_the_compose_prometheus_configuration_loads(tmp_path: Path) -> None:
    """Its rule file's path is the container's: pointed at the repository's copy here."""
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules.yml" in config
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/", ""))
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)

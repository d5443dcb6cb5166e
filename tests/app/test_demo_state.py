"""What `kappa demo` removes when it starts a fresh embedded broker: Kappa's own directories
under KAPPA_STATE_DIR, never anything else there."""

from __future__ import annotations

from pathlib import Path

from app.demo import clear_state


def test_only_kappas_own_directories_are_removed(tmp_path: Path) -> None:
    for name in ("v1/orders/p0", "v12", "faust/tables", "src", "vx", "notes"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "v1/orders/p0/000001.sst").write_bytes(b"state")
    (tmp_path / "canary.txt").write_text("keep me")
    (tmp_path / "v2.txt").write_text("keep me too")
    (tmp_path / "src/main.py").write_text("print()")
    (tmp_path / "v3").symlink_to(tmp_path / "notes")
    clear_state(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["canary.txt", "notes", "src", "v2.txt", "v3", "vx"]
    assert (tmp_path / "src/main.py").read_text() == "print()"


def test_a_state_dir_that_does_not_exist_is_nothing_to_clear(tmp_path: Path) -> None:
    clear_state(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()

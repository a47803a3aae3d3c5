"""How messages name a command and a file so that they run as printed from here (zenodo_hpc/core/commands.py):
the bare name where PATH finds this very program, its path elsewhere, and paths relative to the current folder."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from zenodo_hpc.core.commands import installed_command, program, shown


def executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_a_path_under_the_current_folder_is_shown_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert shown(here / "scratch" / "run") == "scratch/run"
    assert shown("scratch/run") == "scratch/run"  # relative already: as it is
    assert shown(here) == "."
    assert shown(tmp_path / "elsewhere" / "run") == str(tmp_path / "elsewhere" / "run")  # not under it: absolute


def test_the_bare_name_only_where_path_finds_that_very_program(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    installed = executable(tmp_path / "venv" / "bin", "tool")
    other = executable(tmp_path / "system" / "bin", "tool")
    monkeypatch.setenv("PATH", str(installed.parent))
    assert installed_command("tool", installed) == "tool"  # an active venv
    monkeypatch.setenv("PATH", f"{other.parent}:{installed.parent}")
    assert installed_command("tool", installed) == "venv/bin/tool"  # PATH finds another tool first
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert installed_command("tool", installed) == "venv/bin/tool"  # `make demo`: its venv is not active
    (tmp_path / "link").symlink_to(installed.parent)
    monkeypatch.setenv("PATH", str(tmp_path / "link"))
    assert installed_command("tool", installed) == "tool"  # the same folder through a link


def test_zenodo_hpc_is_named_by_the_path_of_this_installation_off_path(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    script = Path(sysconfig.get_path("scripts")) / "zenodo-hpc"
    if not script.exists():
        pytest.skip(f"{script} does not exist: zenodo-hpc is not installed in this environment's scripts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(script.parent))
    assert program() == "zenodo-hpc"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert program() == str(script.absolute())

"""Throwaway virtual environments filled from the package registry (PyPI), for the tests marked ``registry``.

Why: what a user installs (numpy 1.x, which the package still accepts; what the dataset card tells a downloader
to install) is not what the test venv holds, and only a venv of its own shows that it works. The venvs live
under the test's tmp folder; pip's own cache is used, nothing is written into the work tree. A test whose
registry cannot be reached is skipped, saying why; any other failure of pip fails it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# What pip prints when the registry cannot be reached (or has no such distribution for this platform).
OFFLINE = ("No matching distribution", "Could not find a version", "NewConnectionError", "Temporary failure in name",
           "Network is unreachable", "ConnectTimeout", "ReadTimeout", "Connection refused", "ProxyError")
PIP_QUIET = ("--quiet", "--disable-pip-version-check", "--no-input")
ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "LICENSES", "zenodo_hpc")  # what building the package reads


def throwaway_venv(folder: Path, *, pip: bool = False) -> Path:
    """A new venv in ``folder``; its python. Without ``pip`` it has no pip of its own (faster): fill it with
    :func:`install`, which runs this interpreter's pip for it."""
    command = [sys.executable, "-m", "venv", str(folder)] + ([] if pip else ["--without-pip"])
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    return folder / "bin" / "python"


def install(python: Path, *requirements: str) -> None:
    """``pip install`` requirements into the venv of ``python``."""
    run_from_registry([sys.executable, "-m", "pip", "--python", str(python), "install", *PIP_QUIET, *requirements],
                      what=" ".join(requirements))


def run_from_registry(command: list[str] | str, *, what: str, cwd: Path | None = None,
                      env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a command that downloads from the registry (a list, or one shell line run by bash): skipped when the
    registry cannot be reached, failed with pip's output when anything else goes wrong."""
    done = subprocess.run(command if isinstance(command, list) else ["bash", "-c", command], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        if any(sign in output for sign in OFFLINE):
            pytest.skip(f"cannot install {what} from the package registry: {output.strip().splitlines()[-1]}")
        raise AssertionError(f"installing {what} failed ({done.returncode}): {output[-3000:]}")
    return done


def venv_environment(python: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell in which ``python`` and ``pip`` are the venv's (as after ``activate``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env.update(VIRTUAL_ENV=str(python.parent.parent), PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               **extra)
    return env


def source_copy(folder: Path) -> Path:
    """A copy of the repository's sources that a build may write into (``pip install .`` and ``pip wheel .`` leave
    ``build/`` and ``*.egg-info`` beside the sources): the work tree stays as it is."""
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, folder / name)
    return folder

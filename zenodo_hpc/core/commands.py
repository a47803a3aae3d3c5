"""How a message names a command, so that the command runs as printed from where the user stands.

``make demo`` and ``make test`` leave their venv inactive: there, a bare ``zenodo-hpc`` in a hint ("follow
with `zenodo-hpc status ...`") is ``command not found``. Messages name this program with :func:`program`,
which gives the bare name where PATH finds this very installation (an active venv, an install on PATH) and
its path otherwise, and name files with :func:`shown`, relative to the current folder where they are under it.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path


def shown(path: Path | str) -> str:
    """``path`` as a command typed here should name it: relative when it is under the current folder."""
    path = Path(path).absolute()
    here = Path.cwd()
    return path.relative_to(here).as_posix() if path.is_relative_to(here) else str(path)


def installed_command(name: str, installed: Path) -> str:
    """How to call the ``installed`` program ``name`` from here: its bare name when that is what PATH finds
    (an activated venv), else its path (``make demo`` does not activate its venv)."""
    found = shutil.which(name)
    if found is not None and Path(found).parent.resolve() == installed.parent.resolve():
        return name
    return shown(installed)


def program() -> str:
    """``zenodo-hpc`` as the user can type it here (see the module's docstring)."""
    return installed_command("zenodo-hpc", Path(sysconfig.get_path("scripts")) / "zenodo-hpc")

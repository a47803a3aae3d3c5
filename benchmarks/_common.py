"""Shared by the benchmarks: the machine description, a real corpus found at run time, and the service doubles.

The doubles of Zenodo and the other services live in the repository's ``tests/doubles/`` (they are not part of the
installed package): importing this module puts ``tests/`` on ``sys.path``, so a benchmark imports them as the tests
do (``from doubles import ZenodoDouble``), after ``from _common import ...``.
"""

from __future__ import annotations

import platform
import sys
import sysconfig
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    return (f"CPU: {cpu_model()}; Python {platform.python_version()}; numpy {np.__version__}; "
            f"{platform.system()} {platform.release()}")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_python_files(max_bytes: int = 100_000) -> list[Path]:
    """The standard library's own ``.py`` files under ``max_bytes`` (site-packages left out), sorted."""
    root = stdlib_root()
    return [p for p in sorted(root.rglob("*.py"))
            if "site-packages" not in p.parts and p.is_file() and p.stat().st_size <= max_bytes]

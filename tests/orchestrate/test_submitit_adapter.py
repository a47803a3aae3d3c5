"""submitit behind one adapter (zenodo_hpc/orchestrate/submitit_adapter.py): the private names it uses are in the
installed submitit, the pin in pyproject.toml allows the installed version, no other module uses a private name,
and the script it writes without SLURM runs submitit's command line."""

from __future__ import annotations

import ast
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from zenodo_hpc.orchestrate.submitit_adapter import PRIVATE_API, sbatch_script

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "zenodo_hpc"
ADAPTER = PACKAGE / "orchestrate" / "submitit_adapter.py"


def private_object(module: str, path: str) -> Any:
    """``module``'s object at the dotted ``path``; fails naming the submitit release that lacks it."""
    obj: Any = importlib.import_module(module)
    for part in path.split("."):
        assert hasattr(obj, part), f"submitit {version('submitit')} has no {module}.{path}: the adapter needs it " \
                                   "(see the pin in pyproject.toml)"
        obj = getattr(obj, part)
    return obj


def test_every_private_name_the_adapter_uses_is_in_the_installed_submitit() -> None:
    for module, path in PRIVATE_API:
        private_object(module, path)
    writer = private_object("submitit.slurm.slurm", "_make_sbatch_string")
    takes = set(inspect.signature(writer).parameters)  # every parameter a JobDescription hands it, and the adapter's
    assert {"command", "folder", "map_count", "job_name", "time", "mem", "cpus_per_task", "setup", "partition",
            "additional_parameters", "array_parallelism", "signal_delay_s", "dependency"} <= takes
    assert isinstance(private_object("submitit.slurm.slurm", "SlurmExecutor._submitit_command_str"), property)


def test_the_pin_allows_the_installed_submitit() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's: pyproject.toml is read with it")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in dependencies if Requirement(d).name == "submitit")
    assert pin.specifier.contains(version("submitit")), f"submitit {version('submitit')} is installed, the pin " \
                                                        f"says {pin.specifier}"


def private_submitit_uses(path: Path) -> list[str]:
    """``submitit``'s private names a module imports or reaches for (``from submitit.x import _y``,
    ``submitit.X._y``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("submitit"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and "submitit" in ast.unparse(node.value):
            found.append(ast.unparse(node))
    return found


def test_no_module_but_the_adapter_uses_submitits_private_api() -> None:
    assert private_submitit_uses(ADAPTER)  # the check sees what the adapter does
    others = {str(p.relative_to(ROOT)): uses for p in sorted(PACKAGE.rglob("*.py")) if p != ADAPTER
              and (uses := private_submitit_uses(p))}
    assert others == {}


def test_the_script_adapter_keeps_submitits_command_line(tmp_path: Path) -> None:
    """The dry run's scripts come from submitit's private script writer: if a submitit release changed it, the
    command the jobs run would vanish from the preview."""
    folder = tmp_path / "logs" / "%j"
    params = {"job_name": "x", "time": 5, "mem": "1GB", "setup": ["source /venv/bin/activate"]}
    array = sbatch_script(folder, "python3", params, 3)
    command = f"python3 -u -m submitit.core._submit {folder}"
    assert array.splitlines()[-1].startswith("srun ") and array.splitlines()[-1].endswith(command)
    assert "#SBATCH --array=0-2%3" in array and "source /venv/bin/activate" in array
    single = sbatch_script(folder, "/opt/my python/bin/python", params, 1)
    assert "--array" not in single and single.splitlines()[-1].endswith(
        f"/opt/my python/bin/python -u -m submitit.core._submit {folder}")  # the caller quotes its own command

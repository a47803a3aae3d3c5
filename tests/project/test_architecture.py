"""The direction of imports (docs/architecture.md) holds, and a new import against it is caught.

The contracts live in pyproject.toml (``[tool.importlinter]``) and are checked with import-linter, the tool
``lint-imports`` runs: stage groups are layered, no module imports another that imports it back (directly
or not), the executor interface knows no plugin, the SLURM plugin knows no stage, the readers share one
decoding module, the documented import paths are only for users, and the credential detector is reached
through record/secrets.py only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def lint_imports(config: Path, cwd: Path, pythonpath: Path | None = None) -> tuple[int, str]:
    """Run import-linter on ``config`` in a fresh interpreter: its exit code and its report, one line."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run([sys.executable, "-c", LINT, str(config)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    return done.returncode, " ".join((done.stdout + done.stderr).split())  # the report wraps long names


def test_the_package_keeps_every_import_contract() -> None:
    code, report = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert code == 0, report
    assert "Contracts: 8 kept, 0 broken." in report


def probe_copy(tmp_path: Path, module: str = "", line: str = "") -> tuple[int, str]:
    """Lint a copy of the package under another name (the installed one stays untouched), with ``line``
    added to ``module``."""
    probe = tmp_path / "zhpc_probe"
    shutil.copytree(ROOT / "zenodo_hpc", probe, ignore=shutil.ignore_patterns("__pycache__"))
    if module:
        target = probe / module
        target.write_text(target.read_text() + f"\n{line}  # the import under test\n")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text().replace("zenodo_hpc", "zhpc_probe"))
    return lint_imports(config, tmp_path, pythonpath=tmp_path)


def test_the_copy_the_next_test_changes_keeps_every_contract_as_it_is(tmp_path: Path) -> None:
    code, report = probe_copy(tmp_path)
    assert code == 0, report
    assert "Contracts: 8 kept, 0 broken." in report


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("core/errors.py", "from ..drivers import finish", "Stage groups are layered: each imports only the groups "
                                                       "below it BROKEN"),
    ("record/walk.py", "from . import process", "No import cycle, between groups or between the modules of a "
                                                "group BROKEN"),
    ("orchestrate/executor.py", "from . import slurm", "The executor interface knows no plugin BROKEN"),
    ("orchestrate/executor.py", "from . import local", "The executor interface knows no plugin BROKEN"),
    ("orchestrate/slurm.py", "from . import worker", "The SLURM plugin knows no pipeline stage: the task and the "
                                                     "finishing job are handed in BROKEN"),
    ("orchestrate/accounting.py", "from . import submit", "The SLURM plugin knows no pipeline stage: the task and "
                                                          "the finishing job are handed in BROKEN"),
    ("orchestrate/submitit_adapter.py", "from . import worker", "The SLURM plugin knows no pipeline stage: the task "
                                                                "and the finishing job are handed in BROKEN"),
    ("dataset/image.py", "from . import load", "the image reader never imports the folder reader BROKEN"),
    ("dataset/pack.py", "from .. import raster", "are for users, not for the package BROKEN"),
    ("cli/main.py", "from . import run", "main.py lists the commands without importing them, each command module "
                                         "shares only cli/options.py BROKEN"),
    ("cli/status.py", "from . import run", "main.py lists the commands without importing them, each command module "
                                           "shares only cli/options.py BROKEN"),
    ("record/process.py", "import detect_secrets", "is reached through record/secrets.py only BROKEN"),
    ("dataset/organize.py", "import ahocorasick_rs", "is reached through record/secrets.py only BROKEN"),
])
def test_an_import_against_the_direction_breaks_its_contract(tmp_path: Path, module: str, line: str,
                                                             contract: str) -> None:
    code, report = probe_copy(tmp_path, module, line)
    assert code != 0 and contract in report, report


def test_the_documented_import_paths_still_work() -> None:
    from zenodo_hpc.dataset import load as dataset_load
    from zenodo_hpc.load import load_images, load_metadata
    from zenodo_hpc.raster import rasterize
    from zenodo_hpc.record import raster as record_raster

    assert rasterize is record_raster.rasterize
    assert (load_images, load_metadata) == (dataset_load.load_images, dataset_load.load_metadata)
    assert rasterize(b"ab\n").shape == (1, 80, 80)


# --- tests you can find: tests/<group>/test_<module>.py for zenodo_hpc/<group>/<module>.py ----------------------

# The modules whose tests live elsewhere, and where: a newcomer looking for them finds the answer here.
TESTED_ELSEWHERE = {
    "load.py": "tests/dataset/test_load.py",  # a public import path: re-exports dataset/load.py
    "raster.py": "tests/record/test_raster.py",  # a public import path: re-exports record/raster.py
    "core/errors.py": "tests/record/test_extract.py",  # exception classes only; each reason is asserted where raised
    "demo/server.py": "tests/project/test_doubles_zenodo_records.py",  # with the doubles that extend it
    # The commands are a thin layer over their stage (docs/architecture.md): tested with the stage, through
    # the command line, and as a whole in tests/cli/test_main.py (errors, imports, every flag documented).
    "cli/options.py": "tests/cli/test_main.py",
    "cli/demo.py": "tests/demo/test_demo.py",
    "cli/export.py": "tests/dataset/test_publish.py",
    "cli/harvest.py": "tests/zenodo/test_harvest.py",
    "cli/internal.py": "tests/orchestrate/test_worker.py",
    "cli/pack.py": "tests/dataset/test_pack.py",
    "cli/report.py": "tests/report/test_report.py",
    "cli/run.py": "tests/drivers/test_pipeline.py",
    "cli/status.py": "tests/orchestrate/test_status.py",
    "cli/update.py": "tests/drivers/test_update.py",
}
LONGEST_TEST_FILE = 550  # lines: past this, a file holds more than one subject and should be split by it


def package_modules() -> list[str]:
    """Every module of the package, as a path below zenodo_hpc/ (package markers left out)."""
    package = ROOT / "zenodo_hpc"
    return sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py"))


def expected_test_file(module: str) -> Path:
    """Where the tests of ``module`` (a path below zenodo_hpc/) are looked for first."""
    folder, _, name = module.rpartition("/")
    return ROOT / "tests" / folder / f"test_{name}"


def test_every_module_has_a_test_file_by_its_name_or_says_where_its_tests_are() -> None:
    missing = [m for m in package_modules() if not expected_test_file(m).exists() and m not in TESTED_ELSEWHERE]
    assert missing == [], f"no tests/<group>/test_<module>.py (nor an entry in TESTED_ELSEWHERE) for {missing}"
    stale = [m for m, where in TESTED_ELSEWHERE.items()
             if expected_test_file(m).exists() or not (ROOT / where).is_file() or m not in package_modules()]
    assert stale == [], f"TESTED_ELSEWHERE entries to remove or correct: {stale}"


def test_no_test_file_is_longer_than_one_subject() -> None:
    long = {p.relative_to(ROOT).as_posix(): n for p in sorted((ROOT / "tests").rglob("test_*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > LONGEST_TEST_FILE}
    assert long == {}, f"test files over {LONGEST_TEST_FILE} lines: split them by subject: {long}"


def test_tests_import_helpers_not_conftest() -> None:
    importing = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "tests").rglob("*.py"))
                 if p != Path(__file__).resolve() and "from conftest import" in p.read_text(encoding="utf-8")]
    assert importing == [], f"import plain helpers from tests/helpers.py, not conftest: {importing}"

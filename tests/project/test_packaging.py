"""The package builds without a warning that would become an error later (setuptools removes the TOML-table
form of ``project.license`` on 2027-02-18): PEP 639's SPDX expression and ``license-files`` instead."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from registry_venv import OFFLINE, source_copy

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's: pyproject.toml is read with it")
ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_demo_sample_is_under_the_license_declared_for_it() -> None:
    """The wheel carries files of CPython (the demo's sample): their licence is declared and its text shipped."""
    import tarfile

    with tarfile.open(ROOT / "zenodo_hpc" / "demo" / "sample.tar.gz") as tf:
        shipped = tf.extractfile("cpython-3.11.7/LICENSE.txt").read()  # type: ignore[union-attr]
    assert (ROOT / "LICENSES" / "Python-2.0.txt").read_bytes() == shipped
    assert "Python-2.0" in PYPROJECT["project"]["license"].split(" AND ")


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    project = PYPROJECT["project"]
    assert isinstance(project["license"], str), "project.license must be an SPDX expression, not a table"
    assert re.fullmatch(r"[A-Za-z0-9.\-+ ()]+", project["license"])
    assert project["license-files"] and all(list(ROOT.glob(pattern)) for pattern in project["license-files"])
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]  # PEP 639 forbids both
    backend = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=\s*(\d+)", backend).group(1)) >= 77  # the first setuptools that reads PEP 639


@pytest.mark.registry
def test_building_the_wheel_prints_no_deprecation(tmp_path: Path) -> None:
    """``pip wheel .`` as ``pip install .`` builds it: in an isolated environment with today's setuptools (from a
    copy of the sources, so that the build leaves nothing in the work tree)."""
    source = source_copy(tmp_path / "source")
    assert all(list(source.glob(pattern)) for pattern in PYPROJECT["project"]["license-files"])
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--disable-pip-version-check",
                            "--no-input", "-w", str(tmp_path), str(source)], capture_output=True, text=True,
                           timeout=600)
    output = build.stdout + build.stderr
    if build.returncode != 0 and any(sign in output for sign in OFFLINE):
        pytest.skip("cannot install setuptools from the package registry to build the wheel")
    assert build.returncode == 0, output[-2000:]
    assert [line for line in output.splitlines() if "eprecat" in line] == []
    wheel = next(tmp_path.glob("zenodo_hpc-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        licenses = sorted(n.split(".dist-info/licenses/", 1)[1] for n in zf.namelist() if ".dist-info/licenses/" in n)
        names = zf.namelist()
    assert licenses == ["LICENSE", "LICENSES/Python-2.0.txt"]
    assert "zenodo_hpc/demo/server.py" in names  # the demo's server ships; the tests' doubles (tests/doubles/) do not
    assert [n for n in names if "doubles" in n or n.startswith("tests/")] == []
    assert "License-Expression: MIT AND Python-2.0" in metadata.splitlines()

"""Shared fixtures: real source trees and archives built from real files, and a folder an unprivileged user
can enter. Plain helper functions are in tests/helpers.py (``from helpers import ...``)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import stdlib_package, stdlib_records


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A small real source tree: the stdlib ``json`` package plus the kinds of files the walk must skip."""
    root = tmp_path / "src" / "demo-json-1a2b3c4"
    shutil.copytree(stdlib_package("json"), root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "README.md").write_text("# demo\n\nA copy of json.\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "big.txt").write_bytes(b"x" * 100_001)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".gitignore").write_text("*.pyc\n")
    (root / "empty.py").write_bytes(b"")
    os.symlink("README.md", root / "README.link")
    return root


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder that an unprivileged user can enter (pytest's own tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="zenodo-hpc-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for child in path.rglob("*"):
            if child.is_dir() and not child.is_symlink():
                child.chmod(stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)




@pytest.fixture
def zenodo_with_records() -> Iterator[Any]:
    """A Zenodo double serving 12 records of real code (ids 101..112), each one zip."""
    from doubles import ZenodoDouble, make_zip

    with ZenodoDouble() as double:
        for i, (top, files) in enumerate(stdlib_records(12), 1):
            hit = ZenodoDouble.make_hit(100 + i, created=f"2016-03-{i:02d}", title=top)
            double.add_record(hit, {f"{top}.zip": make_zip(files)})
        yield double



# --- the extraction tests' destination (tests/record/test_extract*.py) -------------------------------------------

@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty folder to extract into, beside ``archives/`` (where ``helpers.save`` writes the archives) and
    ``outside/``, a sibling that must stay empty whatever the archive says."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "archives").mkdir()
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


# --- a RAM-backed folder of the test's own, for the record tests (tests/record/test_process*.py) -----------------

@pytest.fixture
def ram_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's own RAM-backed folder, in place of /dev/shm (and of $TMPDIR/$SLURM_TMPDIR): where archives that
    fit ``extract.memory_budget_mb`` are extracted, and where nothing may be left afterwards. Where /dev/shm is no
    tmpfs, a folder on disk: then nothing goes to RAM, as on such a machine. (The process tests use it for every
    test: ``pytestmark = pytest.mark.usefixtures("ram_root")``.)"""
    from zenodo_hpc.record import extract as extract_module

    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and extract_module.filesystem_type(shm) in extract_module.RAM_FILESYSTEMS
    path = Path(tempfile.mkdtemp(prefix="test-ram-", dir=shm if on_tmpfs else None))
    monkeypatch.setattr(extract_module, "SHM", path)
    monkeypatch.delenv("SLURM_TMPDIR", raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmpfs(ram_root: Path) -> Path:
    """``ram_root`` where it really is a tmpfs; skipped, saying so, where it is not."""
    from zenodo_hpc.record.extract import RAM_FILESYSTEMS, filesystem_type

    if filesystem_type(ram_root) not in RAM_FILESYSTEMS:
        pytest.skip("no tmpfs at /dev/shm")
    return ram_root

"""Shared fixtures: real source trees and archives built from real files, and an unprivileged user."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

NOBODY = 65534
T = TypeVar("T")


def stdlib_package(name: str) -> Path:
    """A package of the running Python's own standard library: real source code, always present."""
    return Path(sysconfig.get_paths()["stdlib"]) / name


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


def call_as_nobody(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` as an unprivileged user, so that permission checks really apply.

    CI runs as root, for whom no file is unreadable and no folder unwritable; a forked child that drops
    to ``nobody`` sees permissions as a cluster user does. (A subprocess cannot be used: the Python in
    ``/root`` is not executable by nobody.) Without root, ``fn`` is simply called.
    """
    if os.geteuid() != 0:
        return fn(*args, **kwargs)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, send back the result or the exception
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # everything goes back to the parent
            outcome = ("error", exc)
        try:
            payload = pickle.dumps(outcome)
        except Exception as exc:
            payload = pickle.dumps(("error", RuntimeError(repr(exc))))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(payload)
    if status == "error":
        raise value
    return value


def stdlib_records(count: int, files_per_record: int = 12) -> list[tuple[str, dict[str, bytes]]]:
    """``count`` records of real code: (name, {path: bytes}) from the standard library's packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    packages = [p for p in sorted(root.iterdir())
                if p.is_dir() and (p / "__init__.py").exists() and p.name not in {"test", "site-packages"}]
    records = []
    for i in range(count):
        package = packages[i % len(packages)]
        files = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)[:files_per_record]
        top = f"{package.name}-{i}"
        records.append((top, {f"{top}/{f.relative_to(package).as_posix()}": f.read_bytes() for f in files}))
    return records


@pytest.fixture
def zenodo_with_records() -> Iterator[Any]:
    """A Zenodo double serving 12 records of real code (ids 101..112), each one zip."""
    from doubles import ZenodoDouble, make_zip

    with ZenodoDouble() as double:
        for i, (top, files) in enumerate(stdlib_records(12), 1):
            hit = ZenodoDouble.make_hit(100 + i, created=f"2016-03-{i:02d}", title=top)
            double.add_record(hit, {f"{top}.zip": make_zip(files)})
        yield double


def run_config(tmp_path: Path, double: Any, **executor: Any) -> Any:
    """A config for a run in ``tmp_path`` against ``double`` (fast rate limits, small shards)."""
    from zenodo_hpc.core.config import config_from_dict

    return config_from_dict({
        "run": {"scratch": str(tmp_path), "name": "run"},
        "zenodo": {"api_url": double.api_url, "rate_limit_per_min": 60_000, "rate_limit_per_hour": 3_600_000,
                   "search_rate_limit_per_min": 60_000, "retries": 1},
        "github": {"codeload_url": double.codeload_url},
        "fetch": {"attempts": 1},
        "executor": {"kind": "local", "records_per_shard": 3, "local": {"workers": 2}, **executor},
    })


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of every record folder under ``folder``, for comparing two runs' outputs byte by byte.

    Hidden staging folders and the image-root files a pack adds (manifest.jsonl, README.md, ...) are left out.
    """
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.glob("*/*")) if p.is_file() and not p.parent.name.startswith(".")}

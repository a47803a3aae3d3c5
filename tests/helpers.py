"""Helpers the tests share (plain functions, not fixtures): real code to work on, a run's config against a
double, an unprivileged user, and a byte-for-byte view of a run's output. Test files import them as
``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``: tests/conftest.py sits there)."""

from __future__ import annotations

import os
import pickle
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

NOBODY = 65534
T = TypeVar("T")


def stdlib_package(name: str) -> Path:
    """A package of the running Python's own standard library: real source code, always present."""
    return Path(sysconfig.get_paths()["stdlib"]) / name


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



# ---- the tests of the Zenodo doubles (tests/project/test_doubles_*.py): their token, recorded answers, requests

DOUBLE_TOKEN = "s3cr3t-t0ken-never-logged"  # the token their Zenodo double knows; it must never reach its log
ZENODO_FIXTURES = Path(__file__).parent / "fixtures" / "zenodo"  # recorded answers, each cited in SOURCES.md there
NATIVE = "application/vnd.inveniordm.v1+json"  # the Accept that asks for InvenioRDM's own record shape


def zenodo_fixture(name: str) -> Any:
    """A recorded answer (or a body derived from Zenodo's code) in tests/fixtures/zenodo/, parsed."""
    import json

    return json.loads((ZENODO_FIXTURES / name).read_text(encoding="utf-8"))


def http_get(url: str, **kwargs: Any) -> Any:
    """A plain ``requests.get`` with a 5 s timeout, as production code talks to the doubles."""
    import requests

    return requests.get(url, timeout=5, **kwargs)


def search_double(double: Any, token: str | None = None, **params: object) -> Any:
    """The double's ``/records`` search with these query parameters, as a Bearer of ``token`` if one is given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http_get(f"{double.api_url}/records", params=params, headers=headers)

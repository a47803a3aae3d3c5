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



# --- runs on the dev SLURM cluster (tests/orchestrate/test_slurm_cluster.py, test_accounting.py, test_feasibility.py)

SLURM_PARTITION = os.environ.get("ZHPC_TEST_PARTITION", "debug")


def slurm_config(tmp_path: Path, double: Any, **executor: Any) -> Any:
    """run_config on the dev cluster: one record a shard, small jobs on ``SLURM_PARTITION``."""
    from zenodo_hpc.core.config import config_from_dict

    settings = {"kind": "slurm", "records_per_shard": 1, "array_parallelism": 8, **executor}
    data = run_config(tmp_path, double, **settings).to_dict()
    data["executor"]["slurm"].update({"partition": SLURM_PARTITION, "time_min": 5, "mem_gb": 0.5})
    data["pack"].update({"mem_gb": 1, "cpus_per_task": 1, "time_min": 10})
    return config_from_dict(data)


def slow_record(double: Any, record_id: int, seconds: float, times: int = 1) -> None:
    """The first file of record ``record_id`` takes ``seconds`` to serve, ``times`` times."""
    import requests

    hits = requests.get(f"{double.api_url}/records", params={"size": 25}, timeout=30).json()["hits"]["hits"]
    hit = next(h for h in hits if h["id"] == record_id)
    double.fail(f"/api/records/{record_id}/files/{hit['files'][0]['key']}/content", "slow", times=times,
                seconds=seconds)


def queued_from(tmp_path: Path) -> list[str]:
    """The jobs SLURM holds whose script lies under ``tmp_path`` (a test's own: every run is named ``run``, so
    job names do not tell the tests that share the cluster apart)."""
    import subprocess

    out = subprocess.run(["squeue", "-h", "-o", "%A %o"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(tmp_path) in line]


# --- the run that ``update`` keeps alive across releases (tests/dataset/test_verify.py, tests/drivers/test_update.py)


def living_settings(tmp_path: Path, zenodo: Any) -> dict[str, Any]:
    """The settings (a plain dict, for a config or a config file) of the run ``living`` in ``tmp_path/scratch``
    against ``zenodo``: fast rate limits, the local executor, two records a shard, two workers."""
    return {
        "run": {"scratch": str(tmp_path / "scratch"), "name": "living"},
        "zenodo": {"api_url": zenodo.api_url, "rate_limit_per_min": 60_000, "rate_limit_per_hour": 3_600_000,
                   "search_rate_limit_per_min": 60_000, "retries": 1},
        "github": {"codeload_url": zenodo.codeload_url},
        "fetch": {"attempts": 1},
        "executor": {"kind": "local", "records_per_shard": 2, "local": {"workers": 2}},
    }

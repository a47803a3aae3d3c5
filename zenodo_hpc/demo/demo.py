"""``demo``: the whole pipeline offline, on a built-in sample, ending in a verified image and an export.

The sample is real source code — packages of the running Python's own standard library — published as
Zenodo records by the loopback Zenodo and GitHub doubles (zenodo_hpc/demo/doubles.py): archives in today's
record shape and the older one, GitHub releases reached through the codeload fallback, a record of loose
files (text and HTML beside a PDF that is never downloaded), a record with nothing to rasterize and a
restricted one (to show failures and their quarantine) and a gcube record (excluded at harvest). The demo
fetches first (as on a cluster whose compute nodes have no internet), then runs the pipeline with the
local executor, or with SLURM when a cluster answers, and exports the result by language.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sysconfig
import tarfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from ..core.config import Config, config_from_dict
from ..core.state import open_run
from ..drivers.pipeline import main_summary, run_pipeline, say
from ..orchestrate.status import format_status, gather_status
from ..zenodo.fetch import fetch_all, format_fetch_summary
from ..zenodo.harvest import format_summary as harvest_summary
from ..zenodo.harvest import harvest
from .doubles import ZenodoDouble, make_zip

SAMPLE_RECORDS = 30
FILES_PER_RECORD = 25
FIRST_ID = 7_000_001
SKIP_PACKAGES = {"test", "site-packages", "idlelib", "lib2to3", "pydoc_data", "turtledemo", "tkinter", "ensurepip"}


@dataclass
class DemoResult:
    out: Path
    run_dir: Path
    image: Path | None
    export: Path | None
    executor: str


def stdlib_packages() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [p for p in sorted(root.iterdir())
            if p.is_dir() and (p / "__init__.py").exists() and p.name not in SKIP_PACKAGES]


def package_files(package: Path, top: str) -> dict[str, bytes]:
    """Up to FILES_PER_RECORD source files of a package, under the archive's top folder."""
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {f"{top}/{p.relative_to(package).as_posix()}": p.read_bytes() for p in files[:FILES_PER_RECORD]}


def other_languages() -> list[tuple[str, dict[str, bytes]]]:
    """Records in other languages than Python, from the same installation: C headers, IDLE's text and HTML."""
    include = Path(sysconfig.get_paths()["include"])
    headers = sorted(include.glob("*.h"))[:FILES_PER_RECORD]
    idle = Path(sysconfig.get_paths()["stdlib"]) / "idlelib"
    docs = sorted(p for p in idle.iterdir() if p.is_file() and p.suffix in (".txt", ".html", ".def"))
    return [("cpython headers", {p.name: p.read_bytes() for p in headers}),
            ("idle docs", {p.name: p.read_bytes() for p in docs})]


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(files[name]), 0
            tf.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def publish_sample(double: ZenodoDouble) -> int:
    """Put the sample on the doubles; return how many records it has."""
    packages = stdlib_packages()
    day = date(2016, 1, 4)
    count = 0
    for i, package in enumerate(packages[:SAMPLE_RECORDS - 3]):
        record_id = FIRST_ID + i
        created = (day + timedelta(days=7 * i)).isoformat()
        version = f"v1.{i}"
        if i % 9 == 4:  # a GitHub-integration record without files: the release tag comes from codeload
            repo = f"py-{package.name}"
            hit = ZenodoDouble.make_hit(record_id, created=created, title=f"{package.name}: Python's own",
                                        github=("python-demo", repo, version))
            double.add_codeload("python-demo", repo, version, make_zip(package_files(package, f"{repo}-{version}")))
            double.add_record(hit)
        elif i % 5 == 2:  # an older record: tar.gz, legacy file shape
            top = f"{package.name}-{version}"
            hit = ZenodoDouble.make_hit(record_id, created=created, title=f"{package.name} {version}")
            double.add_record(hit, {f"{top}.tar.gz": tar_gz(package_files(package, top))}, legacy=True)
        else:  # the common case: a GitHub release archived by Zenodo
            top = f"python-demo-{package.name}-{record_id % 10_000_000:07x}"
            hit = ZenodoDouble.make_hit(record_id, created=created, title=f"{package.name} {version}",
                                        github=("python-demo", package.name, version))
            double.add_record(hit, {f"python-demo/{package.name}-{version}.zip": make_zip(package_files(package, top))})
        count += 1
    base = FIRST_ID + SAMPLE_RECORDS
    (headers_title, headers), (docs_title, docs) = other_languages()
    double.add_record(ZenodoDouble.make_hit(base + 2, created="2019-07-02", title=headers_title),  # C headers
                      {"cpython-headers.zip": make_zip({f"cpython-headers/{n}": d for n, d in headers.items()})})
    double.add_record(ZenodoDouble.make_hit(base + 3, created="2019-07-03", title=docs_title),  # loose files
                      {**docs, "idle-manual.pdf": b"%PDF-1.4\n% a manual, not code\n"})
    double.add_record(ZenodoDouble.make_hit(base, created="2019-06-01", title="Slides about my code"),
                      {"slides.pdf": b"%PDF-1.4\n% no code in here\n"})
    double.add_record(ZenodoDouble.make_hit(base + 1, created="2019-06-02", title="gCube portlet"),
                      {"portlet.zip": make_zip({"portlet/x.py": b"x = 1\n"})})
    double.add_record(ZenodoDouble.make_hit(base + 4, created="2019-07-04", title="Restricted code",
                                            access_right="restricted", github=("python-demo", "private", "v1")),
                      {"private.zip": make_zip({"private/secret.py": b"key = 1\n"})})
    return count + 5


def slurm_answers() -> bool:
    """A SLURM cluster this machine can submit to right now."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def demo_config(out: Path, double: ZenodoDouble, executor: str) -> Config:
    return config_from_dict({
        "run": {"scratch": str(out), "name": "run"},
        "zenodo": {"api_url": double.api_url, "rate_limit_per_min": 6000, "search_rate_limit_per_min": 6000,
                   "limit": 100},
        "github": {"codeload_url": double.codeload_url},
        "fetch": {"cache": True},
        "executor": {"kind": executor, "records_per_shard": 4, "max_attempts": 1,
                     "slurm": {"time_min": 10, "mem_gb": 1}},
        "pack": {"mem_gb": 1, "cpus_per_task": 1, "time_min": 20},
    })


def run_demo(out: Path, *, executor: str | None = None, progress: bool | None = None) -> DemoResult:
    out = Path(out).resolve()
    executor = executor or ("slurm" if slurm_answers() else "local")
    with ZenodoDouble() as double:
        records = publish_sample(double)
        say(f"demo: {records} sample records of real code (Python {sysconfig.get_python_version()}'s standard "
            f"library) served by a Zenodo double at {double.api_url}; executor: {executor}")
        cfg = demo_config(out, double, executor)
        run = open_run(cfg)
        say(harvest_summary(harvest(cfg, progress=progress)))
        say(format_fetch_summary(fetch_all(run, cfg, progress=progress), run))
        cfg.fetch.offline = True  # the tasks work from the cache, as on compute nodes without internet
        outcome = run_pipeline(cfg, wait=True, poll_s=2, progress=progress)
        say(main_summary(outcome))
    say(format_status(gather_status(run)))
    export = _export(run.root, out / "export", progress)
    return DemoResult(out, run.root, outcome.packed.image if outcome.packed else None, export, executor)


def _export(run_dir: Path, target: Path, progress: bool | None) -> Path | None:
    try:
        from ..dataset.organize import format_summary, organize
    except ImportError:  # the by-language export is a later addition
        return None
    say(format_summary(organize(run_dir, target, progress=progress)))
    return target


def next_steps(result: DemoResult) -> str:
    run = result.run_dir
    lines: list[str | None] = [
        "",
        f"Everything is in {result.out}:",
        f"  {run}/records.jsonl   the harvested records",
        f"  {run}/data/<id>/      one folder per record (images_<id>.h5/.pkl, metadata_<id>.json/.pkl)",
        f"  {result.image}   the packed, verified image (+ .md5, .sha256)" if result.image else None,
        f"  {result.export}/   PNGs by language, index.csv, <ext>.tar.gz, datapackage.json" if result.export else None,
        "",
        "Try next:",
        f"  zenodo-hpc status {run}",
        (f"  python -c \"from zenodo_hpc.load import load_images; "
         f"print(list(load_images('{result.image}:{FIRST_ID}')))\"") if result.image else None,
        "  zenodo-hpc run -c configs/local.yaml      # a real run, here (configs/sherlock.yaml on a cluster)",
    ]
    return "\n".join(line for line in lines if line is not None)

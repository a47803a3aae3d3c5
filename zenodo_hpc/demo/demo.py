"""``demo``: the whole pipeline offline, on a built-in sample, ending in a verified image and an export.

The sample is real source code shipped with the package (``sample.tar.gz`` beside this module, built by
scripts/build_demo_sample.py from CPython 3.11.7, under the PSF License: its ``LICENSE.txt`` and
``SOURCES.txt`` are inside): packages of the standard library, C headers and IDLE's text, HTML and config
documents. Being package data, it is the same on every Python, so the demo runs, and prints the same, on
Debian's own ``python3`` (which has neither IDLE nor the headers unless optional packages are installed).
The loopback Zenodo and GitHub codeload (zenodo_hpc/demo/server.py) publish it as records: archives in today's
record shape and the older one, GitHub releases reached through the codeload fallback, a record of loose
files (text and HTML beside a PDF that is never downloaded), a record with nothing to rasterize and a
restricted one (to show failures and their quarantine) and a gcube record (excluded at harvest). The demo
fetches first (as on a cluster whose compute nodes have no internet), then runs the pipeline with the
local executor, or with SLURM when a cluster answers, and exports the result by language.

It prints one summary on stdout, one line per stage; its log lines go to ``<run>/logs/demo.log``, and only
warnings reach stderr. The next steps it prints run as shown from where it was started: the package's own
``zenodo-hpc`` and ``python`` by path unless they are the ones on PATH (``make demo`` leaves its venv inactive).
"""

from __future__ import annotations

import gzip
import io
import logging
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..core.commands import installed_command, program, shown
from ..core.config import Config, config_from_dict
from ..core.state import open_run
from ..drivers.pipeline import main_summary, run_pipeline, say
from ..orchestrate.status import format_status, gather_status
from ..zenodo.fetch import fetch_all, format_fetch_summary
from ..zenodo.harvest import format_summary as harvest_summary
from ..zenodo.harvest import harvest
from .server import LoopbackZenodo, make_zip

SAMPLE = "sample.tar.gz"
SAMPLE_RECORDS = 30
FIRST_ID = 7_000_001
LOG_NAME = "demo.log"


@dataclass
class DemoResult:
    out: Path
    run_dir: Path
    image: Path | None
    export: Path | None
    executor: str
    log: Path | None = None
    parquet: Path | None = None  # the Parquet export, when its extra (pyarrow, datasketch) is installed


@dataclass(frozen=True)
class Sample:
    """The shipped sample, by kind: ``packages`` maps a standard-library package to ``{path in it: bytes}``."""

    python: str  # the CPython version its files come from
    packages: dict[str, dict[str, bytes]]
    headers: dict[str, bytes]
    idle_docs: dict[str, bytes]


@lru_cache(maxsize=1)
def load_sample() -> Sample:
    """The sample shipped as package data, read into memory (under 2 MB of code)."""
    data = resources.files(__package__).joinpath(SAMPLE).read_bytes()
    packages: dict[str, dict[str, bytes]] = {}
    headers: dict[str, bytes] = {}
    idle_docs: dict[str, bytes] = {}
    top = ""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        for member in tf.getmembers():
            reader = tf.extractfile(member) if member.isfile() else None
            if reader is None:
                continue
            top, kind, rest = (member.name.split("/", 2) + ["", ""])[:3]
            if kind == "stdlib":
                package, path = rest.split("/", 1)
                packages.setdefault(package, {})[path] = reader.read()
            elif kind == "headers":
                headers[rest] = reader.read()
            elif kind == "idle-docs":
                idle_docs[rest] = reader.read()
    return Sample(top.removeprefix("cpython-"), dict(sorted(packages.items())), headers, idle_docs)


def package_files(files: dict[str, bytes], top: str) -> dict[str, bytes]:
    """A package's files under an archive's top folder."""
    return {f"{top}/{path}": data for path, data in files.items()}


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar that depends only on the names and bytes of ``files`` (fixed times, owners and modes, no
    time stamp in the gzip header): the same sample gives the same archive, and so the same checksums."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(files[name]), 0, 0o644, 0, 0
            tf.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def publish_sample(double: LoopbackZenodo, sample: Sample | None = None) -> int:
    """Put the sample on the loopback Zenodo and codeload; return how many records it has."""
    sample = sample or load_sample()
    day = date(2016, 1, 4)
    count = 0
    for i, (name, files) in enumerate(list(sample.packages.items())[:SAMPLE_RECORDS - 3]):
        record_id = FIRST_ID + i
        created = (day + timedelta(days=7 * i)).isoformat()
        version = f"v1.{i}"
        if i % 9 == 4:  # a GitHub-integration record without files: the release tag comes from codeload
            repo = f"py-{name}"
            hit = LoopbackZenodo.make_hit(record_id, created=created, title=f"{name}: Python's own",
                                          github=("python-demo", repo, version))
            double.add_codeload("python-demo", repo, version, make_zip(package_files(files, f"{repo}-{version}")))
            double.add_record(hit)
        elif i % 5 == 2:  # an older record: tar.gz, legacy file shape
            top = f"{name}-{version}"
            hit = LoopbackZenodo.make_hit(record_id, created=created, title=f"{name} {version}")
            double.add_record(hit, {f"{top}.tar.gz": tar_gz(package_files(files, top))}, legacy=True)
        else:  # the common case: a GitHub release archived by Zenodo
            top = f"python-demo-{name}-{record_id % 10_000_000:07x}"
            hit = LoopbackZenodo.make_hit(record_id, created=created, title=f"{name} {version}",
                                          github=("python-demo", name, version))
            double.add_record(hit, {f"python-demo/{name}-{version}.zip": make_zip(package_files(files, top))})
        count += 1
    base = FIRST_ID + SAMPLE_RECORDS
    double.add_record(LoopbackZenodo.make_hit(base + 2, created="2019-07-02", title="cpython headers"),  # C headers
                      {"cpython-headers.zip": make_zip(package_files(sample.headers, "cpython-headers"))})
    double.add_record(LoopbackZenodo.make_hit(base + 3, created="2019-07-03", title="idle docs"),  # loose files
                      {**sample.idle_docs, "idle-manual.pdf": b"%PDF-1.4\n% a manual, not code\n"})
    double.add_record(LoopbackZenodo.make_hit(base, created="2019-06-01", title="Slides about my code"),
                      {"slides.pdf": b"%PDF-1.4\n% no code in here\n"})
    double.add_record(LoopbackZenodo.make_hit(base + 1, created="2019-06-02", title="gCube portlet"),
                      {"portlet.zip": make_zip({"portlet/x.py": b"x = 1\n"})})
    double.add_record(LoopbackZenodo.make_hit(base + 4, created="2019-07-04", title="Restricted code",
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


def demo_config(out: Path, double: LoopbackZenodo, executor: str) -> Config:
    return config_from_dict({
        "run": {"scratch": str(out), "name": "run"},
        "zenodo": {"api_url": double.api_url, "rate_limit_per_min": 6000, "rate_limit_per_hour": 360_000,
                   "search_rate_limit_per_min": 6000, "limit": 100},
        "github": {"codeload_url": double.codeload_url},
        "fetch": {"cache": True},
        "executor": {"kind": executor, "records_per_shard": 4, "max_attempts": 1,
                     "slurm": {"time_min": 10, "mem_gb": 1}},
        "pack": {"mem_gb": 1, "cpus_per_task": 1, "time_min": 20},
    })


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """The package's log lines into ``path``, and only warnings on the handlers already there (stderr): the
    summary on stdout is then all a user reads, however the demo is run. ``--debug`` leaves stderr as it is."""
    logger = logging.getLogger("zenodo_hpc")
    debug = logger.getEffectiveLevel() <= logging.DEBUG
    handlers = [(h, h.level) for h in logger.handlers]
    level = logger.level
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(next((h.formatter for h, _ in handlers if h.formatter), None)
                         or logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    if not debug:
        for handler, _ in handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
        logger.setLevel(logging.INFO)
    logger.addHandler(to_file)
    try:
        yield
    finally:
        logger.removeHandler(to_file)
        to_file.close()
        logger.setLevel(level)
        for handler, old in handlers:
            handler.setLevel(old)


def run_demo(out: Path, *, executor: str | None = None, progress: bool | None = None) -> DemoResult:
    """The demo into ``out``, which stays relative if given so: the lines it prints then name the folders as
    typed (``build/demo/run``), and the image it packs does not depend on where the clone lies."""
    out = Path(out)
    executor = executor or ("slurm" if slurm_answers() else "local")
    sample = load_sample()
    with LoopbackZenodo() as double:
        records = publish_sample(double, sample)
        cfg = demo_config(out, double, executor)
        run = open_run(cfg)
        log = run.log(LOG_NAME)
        with log_to_file(log):
            say(f"demo: {records} sample records of real code (CPython {sample.python}'s standard library, C "
                f"headers and IDLE's docs, shipped with zenodo-hpc) served by a Zenodo double at {double.api_url}; "
                f"executor: {executor}")
            say(harvest_summary(harvest(cfg, progress=progress)))
            say(format_fetch_summary(fetch_all(run, cfg, progress=progress), run))
            cfg.fetch.offline = True  # the tasks work from the cache, as on compute nodes without internet
            outcome = run_pipeline(cfg, wait=True, poll_s=2, progress=progress, harvest_first=False)
            say(main_summary(outcome))
            say(format_status(replace(gather_status(run), chain=None)))  # the chain's last word: the line above
            export = _export(run.root, out / "export", progress)
            parquet = _parquet(run.root, out / "parquet", progress)
    packed = outcome.packed.image if outcome.packed else run.image(cfg.pack.image)  # SLURM: the finishing job's
    return DemoResult(out, run.root, packed if packed.is_file() else None, export, executor, log, parquet)


def _export(run_dir: Path, target: Path, progress: bool | None) -> Path | None:
    try:
        from ..dataset.organize import format_summary, organize
    except ImportError:  # the by-language export is a later addition
        return None
    say(format_summary(organize(run_dir, target, progress=progress)))
    return target


def _parquet(run_dir: Path, target: Path, progress: bool | None) -> Path | None:
    """The Parquet export (docs/export-and-hub.md) when its extra is installed; else one line saying how."""
    import importlib.util

    from ..dataset.export import INSTALL_HINT, export_dataset, format_summary

    if not all(importlib.util.find_spec(name) for name in ("pyarrow", "datasketch")):
        say(f"export: the Parquet export was left out: it needs {INSTALL_HINT}")
        return None
    summary = format_summary(export_dataset(run_dir, target, progress=progress))
    say(summary.rsplit("\n", 1)[0].replace("\n", "; "))  # the folder is in the list below
    return target


def quoted(code: str) -> str:
    """``code`` as one shell word, in double quotes when that needs no escape (easier to read and to edit)."""
    return f'"{code}"' if not set(code) & set('"$`\\!') else shlex.quote(code)


def next_steps(result: DemoResult) -> str:
    """Where everything is, and commands that run as printed, from the folder the demo was started in."""
    run = result.run_dir
    cli = program()
    python = installed_command("python", Path(sys.executable))
    record = run / "data" / str(FIRST_ID)
    read = ("from zenodo_hpc.load import load_images; "
            f"print({{path: a.shape for path, a in load_images({shown(record)!r}).items()}})")
    lines: list[str | None] = [
        "",
        f"Everything is in {shown(result.out)}:",
        f"  {shown(run)}/records.jsonl   the harvested records",
        f"  {shown(run)}/data/<id>/      one folder per record (images_<id>.h5, metadata_<id>.json and .pkl)",
        f"  {shown(result.image)}   the packed, verified image (+ .md5, .sha256)" if result.image else None,
        f"  {shown(result.export)}/   PNGs by language, index.csv, <ext>.tar.gz, datapackage.json"
        if result.export else None,
        f"  {shown(result.parquet)}/   Parquet shards by split and a dataset card (datasets.load_dataset reads it)"
        if result.parquet else None,
        f"  {shown(result.log)}   the log of this demo" if result.log else None,
        "",
        "Try next (from this folder):",
        f"  {cli} status {shlex.quote(shown(run))}",
        f"  {python} -c {quoted(read)}",
        "Then docs/quickstart.md: reading the records, exporting by language, a real run.",
    ]
    return "\n".join(line for line in lines if line is not None)

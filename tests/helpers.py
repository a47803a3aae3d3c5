"""Helpers the tests share (plain functions, not fixtures): real code to work on, a run's config against a
double, an unprivileged user, a byte-for-byte view of a run's output, archives built by hand, a Kaggle export,
a release for the deposit API, a pickle that would run code and recorded Zenodo hits with a license. Test files
import them as ``from helpers import ...`` (pyproject.toml gives pytest ``pythonpath = ["tests"]``)."""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import pickle
import stat
import subprocess
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from zenodo_hpc.core.errors import ExtractError
from zenodo_hpc.record.extract import ExtractStats, extract_archive

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


# --- archives built by hand, for the extraction tests (tests/record/test_extract*.py) ---------------------------

MB = 1 << 20
BIG = 10**9  # limits that never trigger unless a test wants them to

TarEntry = tuple[tarfile.TarInfo, bytes]


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def tdir(name: str, mode: int = 0o755) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def tlink(name: str, target: str, *, hard: bool = False) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def tspecial(name: str, kind: bytes) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


def tar_bytes(entries: list[TarEntry], compression: str = "", tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``entries``; names holding surrogate escapes are written as their raw (non-UTF-8) bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}", format=tar_format, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def zfile(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info


def zsym(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    return zfile(name, stat.S_IFLNK | 0o777), target.encode()


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def save(dest: Path, name: str, data: bytes) -> Path:
    """Write an archive into ``archives/`` beside ``dest`` (the ``dest`` fixture of tests/conftest.py)."""
    path = dest.parent / "archives" / name
    path.write_bytes(data)
    return path


def extract(path: Path, dest: Path, *, max_bytes: int = BIG, max_members: int = 100_000) -> ExtractStats:
    return extract_archive(path, dest, max_bytes=max_bytes, max_members=max_members)


def refused(path: Path, dest: Path, reason: str, **limits: int) -> str:
    """Extract expecting an ExtractError with ``reason``; return its (one-line) message."""
    with pytest.raises(ExtractError) as caught:
        extract(path, dest, **limits)
    message = str(caught.value)
    assert caught.value.reason == reason, message
    assert "\n" not in message
    return message


def assert_nothing_outside(dest: Path) -> None:
    root = dest.parent
    assert sorted(os.listdir(root)) == ["archives", "dest", "outside"]
    assert os.listdir(root / "outside") == []


def disk_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- a folder zipped as GitHub zips a release, for the record tests (tests/record/test_process*.py) -------------

def zip_folder(folder: Path, archive: Path) -> Path:
    """A zip of ``folder`` with the folder itself as the top entry, like GitHub's release zips."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive
# --- the Kaggle export that `publish kaggle` reads (tests/dataset/test_publish*.py) -------------------------

KAGGLE_USER = "alice"
KAGGLE_KEY = "k3y-SHOULD-NEVER-BE-SEEN-0123456789abcdef"  # recognisable: grep every output for it
KAGGLE_SLUG = "zenodo-ml-by-language"
KAGGLE_REF = f"{KAGGLE_USER}/{KAGGLE_SLUG}"
KAGGLE_TITLE = "Zenodo ML code images by language"
KAGGLE_INDEX_SCHEMA = {"fields": [{"name": "png", "type": "string", "description": "path of the PNG"},
                                  {"name": "segment", "type": "integer", "description": "which image of the file"}],
                       "primaryKey": ["png"]}

KAGGLE_ORGANIZE_LICENSES = [  # datapackage.json's licenses as organize writes them: the records' own, not Kaggle's
    {"name": "apache-2.0", "title": "Apache License 2.0", "path": "http://www.apache.org/licenses/LICENSE-2.0"},
    {"name": "mit", "title": "MIT License", "path": "https://opensource.org/licenses/MIT"}]


def make_kaggle_export(folder: Path) -> dict[str, bytes]:
    """A folder shaped like the output of ``zenodo-hpc organize``: one ``<ext>.tar.gz`` per language beside
    its ``<ext>/`` folder of PNGs, ``index.csv`` and ``datapackage.json``. Returns the files to upload."""

    folder.mkdir(parents=True)
    files = {
        "py.tar.gz": os.urandom(70_000),
        "js.tar.gz": os.urandom(2_345),
        "index.csv": b"png,segment\npy/1234/1234_0.png,0\njs/5678/5678_0.png,0\n",
    }
    for ext, record in (("py", "1234"), ("js", "5678")):  # the PNG trees: never uploaded, the archives hold them
        (folder / ext / record).mkdir(parents=True)
        (folder / ext / record / f"{record}_0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    resources = []
    for name, data in files.items():
        resources.append({"name": name, "path": name, "description": f"the {name} part", "bytes": len(data),
                          "hash": "sha256:" + hashlib.sha256(data).hexdigest()})
        (folder / name).write_bytes(data)
    resources[-1].update(profile="tabular-data-resource", format="csv", schema=KAGGLE_INDEX_SCHEMA)
    package = {"name": KAGGLE_SLUG, "title": "Zenodo ML", "id": f"organizer/{KAGGLE_SLUG}", "subtitle": "Source code "
               "of Zenodo software records as 80x80 images, by language", "description": "Code images, by language.",
               "licenses": [{"name": "CC0-1.0", "title": "CC0", "path": "https://creativecommons.org/"}],
               "keywords": ["programming", "code"], "resources": resources, "zenodo_hpc": {"pngs": 2}}
    (folder / "datapackage.json").write_text(json.dumps(package, indent=1))
    return files


def edit_kaggle_package(folder: Path, **changes: Any) -> None:
    """Change top-level keys of an export's datapackage.json, as a hand edit would."""
    path = folder / "datapackage.json"
    package = json.loads(path.read_text())
    package.update(changes)
    path.write_text(json.dumps(package))


# --- a release published on the Zenodo double's deposit API (tests/zenodo/test_deposit*.py) ------------------

DEPOSIT_TOKEN = "dep0sit+T0ken/with=odd&chars-0123456789abcdefXYZ"  # quoting and base64 both change it
DEPOSIT_IMAGE = "zenodo-ml.sqsh"
DEPOSIT_METADATA: dict[str, Any] = {
    "title": "Zenodo-ML: code images of Zenodo software records",
    "creators": [{"name": "Doe, Jane", "affiliation": "Example University", "orcid": "0000-0002-1825-0097"}],
    "description": "<p>Every software record on Zenodo, its code as images.</p>",
    "version": "2026.1",
    "publication_date": "2026-01-15",
    "license": "cc-by-4.0",
    "keywords": ["machine learning", "source code"],
    "related_identifiers": [{"identifier": "https://github.com/zenodo-hpc", "relation": "isSupplementTo",
                             "scheme": "url"}],
}


def deposit_release(folder: Path, tag: str, *, extra: dict[str, bytes] | None = None) -> tuple[Path, list[Path]]:
    """A release folder: the image and its checksum files, as pack writes them (contents differ per ``tag``)."""

    folder.mkdir(parents=True, exist_ok=True)
    image = folder / DEPOSIT_IMAGE
    image.write_bytes(f"hsqs image of release {tag}\n".encode() * 5000)
    data = image.read_bytes()
    sidecars = {f"{DEPOSIT_IMAGE}.md5": f"{hashlib.md5(data).hexdigest()}  {DEPOSIT_IMAGE}\n".encode(),
                f"{DEPOSIT_IMAGE}.sha256": f"{hashlib.sha256(data).hexdigest()}  {DEPOSIT_IMAGE}\n".encode(),
                **(extra or {})}
    paths = []
    for name, content in sidecars.items():
        (folder / name).write_bytes(content)
        paths.append(folder / name)
    return image, paths


def deposit_publish(zenodo: Any, image: Path, files: list[Path], concept: str | None, **kwargs: Any) -> Any:
    """``publish_zenodo_version`` on the double ``zenodo`` with DEPOSIT_TOKEN and DEPOSIT_METADATA (``kwargs``
    override any option)."""
    from zenodo_hpc.zenodo.deposit import publish_zenodo_version

    options: dict[str, Any] = {"api_url": zenodo.api_url, "token": DEPOSIT_TOKEN, "concept_id": concept,
                               "metadata": DEPOSIT_METADATA, "per_minute": 60_000, "retries": 1}
    options.update(kwargs)
    return publish_zenodo_version(image, files, **options)


def one_line(error: Any) -> str:
    """The message of a caught error (a ``pytest.ExceptionInfo``): one line, no surrounding space, short."""
    text = str(error.value)
    assert "\n" not in text and text.strip() == text and len(text) < 1200
    return text


# --- a pickle that would run code (tests/dataset/test_decode.py, test_load.py) ----------------------------------


class RunsCode:
    """Pickled, an object whose unpickling would run ``touch MARKER``: a reader that runs nothing leaves no file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)

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
    hits = requests.get(f"{double.api_url}/records", params={"size": 25}, timeout=30).json()["hits"]["hits"]
    hit = next(h for h in hits if h["id"] == record_id)
    double.fail(f"/api/records/{record_id}/files/{hit['files'][0]['key']}/content", "slow", times=times,
                seconds=seconds)


def queued_from(tmp_path: Path) -> list[str]:
    """The jobs SLURM holds whose script lies under ``tmp_path`` (a test's own: every run is named ``run``, so
    job names do not tell the tests that share the cluster apart)."""
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

# --- recorded Zenodo hits with a license (tests/core/test_licenses.py, tests/dataset/test_organize.py) -----------

ZENODO_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "zenodo"  # recorded answers, cited in SOURCES.md


def recorded_hit(name: str) -> dict[str, Any]:
    """The first hit of a recorded Zenodo answer in tests/fixtures/zenodo/ (a search's, or the record itself)."""
    data = zenodo_fixture(name)
    hits = data["hits"]["hits"] if isinstance(data.get("hits"), dict) else None
    return copy.deepcopy(hits[0] if hits else data)


def licensed_hit(record_id: str, license_id: str | None, shape: str = "legacy") -> dict[str, Any]:
    """A recorded hit as record ``record_id`` with license ``license_id``, in the shape Zenodo gives it:
    ``legacy`` (``metadata.license = {"id": ...}``, record_2023.json), ``rdm`` (InvenioRDM's ``metadata.rights``),
    ``string`` (older records: a plain string); ``None``: the recorded record without a license
    (record_current_2025.json)."""
    if license_id is None:
        hit = recorded_hit("record_current_2025.json")
    else:
        hit = recorded_hit("record_2023.json")
        del hit["metadata"]["license"]
        if shape == "rdm":
            hit["metadata"]["rights"] = [{"id": license_id, "props": {"scheme": "spdx"}}]
        else:
            hit["metadata"]["license"] = license_id if shape == "string" else {"id": license_id}
    hit["id"] = int(record_id)
    hit["doi"] = f"10.5281/zenodo.{record_id}"
    return hit


# --- the command line in-process (tests/cli/) --------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``zenodo-hpc ARGV`` in this process: its exit code, standard output and standard error."""
    from zenodo_hpc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    """A failed command: non-zero, exactly one line on standard error, no traceback, naming ``pattern``."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]


def visible(folder: Path) -> list[str]:
    """The names in ``folder`` that are not hidden (staging folders are), sorted; [] when it does not exist."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """A zip at ``path`` holding ``entries`` (name -> bytes), deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


# --- an organize export (tests/dataset/test_organize*.py) ---------------------------------------------------------


def read_organize_index(out: Path) -> list[dict[str, str]]:
    """The rows of an organize export's index.csv."""
    with open(out / "index.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def export_files(out: Path) -> dict[str, bytes]:
    """Every file of an export folder (relative path -> bytes), for comparing two exports byte by byte."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

# --- the tests of the Zenodo doubles (tests/project/test_doubles_*.py): their token, recorded answers, requests

DOUBLE_TOKEN = "s3cr3t-t0ken-never-logged"  # the token their Zenodo double knows; it must never reach its log
NATIVE = "application/vnd.inveniordm.v1+json"  # the Accept that asks for InvenioRDM's own record shape


def zenodo_fixture(name: str) -> Any:
    """A recorded answer (or a body derived from Zenodo's code) in tests/fixtures/zenodo/, parsed."""
    return json.loads((ZENODO_FIXTURES / name).read_text(encoding="utf-8"))


def http_get(url: str, **kwargs: Any) -> Any:
    """A plain ``requests.get`` with a 5 s timeout, as production code talks to the doubles."""
    return requests.get(url, timeout=5, **kwargs)


def search_double(double: Any, token: str | None = None, **params: object) -> Any:
    """The double's ``/records`` search with these query parameters, as a Bearer of ``token`` if one is given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http_get(f"{double.api_url}/records", params=params, headers=headers)


# --- fake credentials planted in real-looking files (tests/record/test_secrets.py, test_process.py, organize) -----

def _fake(prefix: str, alphabet: str, length: int) -> str:
    """A credential-shaped value: ``prefix`` then ``length`` characters cycling through ``alphabet`` (fake)."""
    return prefix + (alphabet * (length // len(alphabet) + 1))[:length]


# Real-shaped, fake credentials, each in the form its provider documents (AWS's, Slack's and jwt.io's are
# their documentation's own examples), keyed by the kind detect-secrets 1.5.0 names them with.
FAKE_CREDENTIALS = {
    "AWS Access Key": ["AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
    "GitHub Token": [_fake("ghp_", "aZ3kQ9xW7mB2nV5c", 36)],
    "GitLab Token": [_fake("glpat-", "Xy7Kp2Qm9Rt4Lw", 20)],
    "Slack Token": ["https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"],
    "Stripe Access Key": [_fake("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc", 24)],
    "Basic Auth Credentials": ["s3cr3t-Passw0rd"],
    "JSON Web Token": ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwia"
                       "WF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"],
    "Secret Keyword": ["Zx9-qT4mLw2", "hunter2isweak"],
    "Twilio API Key": [_fake("SK", "0123456789abcdef", 32)],
    "Azure Storage Account access key": [_fake("", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsu", 86) + "=="],
}
PEM_BODY = [_fake("", "MIIEpAIBAAKCAQEA7bq98Yz3Xk2LmQwErTy", 64) for _ in range(5)] + ["Qk9hXW1zT2VwS2V5Cg=="]


def plant_credentials(root: Path) -> dict[str, list[str]]:
    """Write real-looking files holding fake credentials under ``root``; {file's path under root: its values}.

    A .env, a config.yaml with a password, a Python file with an AWS key pair, a PEM private key, a GitHub token
    in a CI script, a Slack webhook in a notifier, and more in a settings module."""
    c = FAKE_CREDENTIALS
    aws_id, aws_secret = c["AWS Access Key"]
    files = {
        ".env": (f"DATABASE_URL=postgres://app:{c['Basic Auth Credentials'][0]}@db.example.org:5432/app\n"
                 f"PASSWORD={c['Secret Keyword'][1]}\nDEBUG=false\n", [c["Basic Auth Credentials"][0],
                                                                        c["Secret Keyword"][1]]),
        "config.yaml": (f"database:\n  host: db.example.org\n  user: app\n  password: {c['Secret Keyword'][0]}\n"
                        "  pool: 5\n", [c["Secret Keyword"][0]]),
        "upload/s3.py": ('"""Upload results to S3."""\nimport boto3\n\n'
                         f'AWS_ACCESS_KEY_ID = "{aws_id}"\naws_secret_access_key = "{aws_secret}"\n\n\n'
                         "def client():\n    return boto3.client('s3')\n", [aws_id, aws_secret]),
        "keys/deploy_key.pem": ("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY)
                                + "\n-----END RSA PRIVATE KEY-----\n", PEM_BODY),
        "ci/release.sh": (f"#!/bin/sh\nset -e\ncurl -H 'Authorization: token {c['GitHub Token'][0]}' \\\n"
                          "    https://api.github.com/repos/o/r/releases\n", c["GitHub Token"]),
        "notify.py": (f'import requests\n\nWEBHOOK = "{c["Slack Token"][0]}"\n\n\ndef send(text):\n'
                      "    requests.post(WEBHOOK, json={'text': text})\n", c["Slack Token"]),
        "settings.py": (f'STRIPE = "{c["Stripe Access Key"][0]}"\nGITLAB = "{c["GitLab Token"][0]}"\n'
                        f'TWILIO = "{c["Twilio API Key"][0]}"\nTOKEN = "{c["JSON Web Token"][0]}"\n'
                        f'AZURE = "DefaultEndpointsProtocol=https;AccountName=acct;'
                        f'AccountKey={c["Azure Storage Account access key"][0]};EndpointSuffix=core.windows.net"\n',
                        [c["Stripe Access Key"][0], c["GitLab Token"][0], c["Twilio API Key"][0],
                         c["JSON Web Token"][0], c["Azure Storage Account access key"][0]]),
    }
    for name, (text, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return {name: values for name, (_, values) in files.items()}


def image_rows(images: Any) -> list[str]:
    """Every row of code images ((n, h, w) or (h, w) arrays of code points) as text, trailing pad dropped."""
    import numpy as np

    rows = np.asarray(images).reshape(-1, np.asarray(images).shape[-1])
    return ["".join(map(chr, row)).rstrip(" ") for row in rows.tolist()]


def leaked(texts: Iterable[str], values: Iterable[str], window: int = 12) -> list[str]:
    """The values of which some ``window`` characters (the whole value if shorter) appear in one of ``texts``:
    a row of an image holds at most its first 80 characters of a line, so a value is looked for piece by piece."""
    pieces = {v[i:i + window]: v for v in values for i in range(max(1, len(v) - window + 1))}
    found = {value for text in texts for piece, value in pieces.items() if piece in text}
    return sorted(v[:4] + "..." for v in found)  # never the whole value, even in a failing test's message

"""The run directory (docs/operations.md, "The run directory"): where every stage reads its input and leaves its output.

The run directory on shared scratch is the single source of truth. Nothing here needs a driver to be
alive: every file is written to a temporary name and renamed into place, so a reader sees either the old
or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import (
    FROZEN_FORMAT,
    OUTPUT_KEYS,
    Config,
    config_from_dict,
    describe_yaml_error,
    first_missing_key,
    parse_yaml,
)
from .errors import UserError
from .liveness import owner_token, parse_owner_token
from .markers import HISTORY_KEPT, UNREADABLE_MARKER, DoneMarker, FailureMarker
from .records import BadRecord, check_hit, loads_hit, without_surrogates

log = logging.getLogger(__name__)

RUN_YAML = "run.yaml"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
SHARED_FILE_MODE = 0o666 & ~_UMASK  # what open() would give: readable by the group on a shared cluster
RECORDS = "records.jsonl"
PLANS = "plans"
RELEASES = "releases"
REPORT_HTML = "report.html"
MANIFEST = "manifest.jsonl"
CARD = "README.md"
FIGURES = "figures"  # the report's figures about the data, linked from README.md (with the report extra)
SUBMISSIONS = "submissions"
HARVEST = "harvest"
PURGED = "purged"  # state/purged/<id>.json: the done marker of a record found purged or damaged, with why
CHAIN = "chain.json"
BUDGET = "budget.json"  # when Zenodo's request budget returns, as the last worker it refused was told
VERIFY_JSON = "verify.json"  # state/verify.json: what the last check found (status shows it)
PENDING_UPDATE = "update.json"  # state/update.json: the harvest that feeds the release being made
RECORDS_COUNT = "records.count.json"
PACK_EXCLUDE = "pack-exclude.txt"
LOCK = "driver.lock"
HARVEST_LOCK = "harvest.lock"
RELEASE_JSON = "release.json"
CHANGELOG = "CHANGELOG.md"
FEED = "feed.xml"

# --- the per-record markers -------------------------------------------------------------------------
#
# state/done/<id>.json      the record is complete (written after its folder is in place), with its stats
#                           and each file's size and sha256 (pack checks the folder against them)
# state/failed/<id>.json    the record's last failure: reason, message, attempts, history, quarantined
# state/attempts/<id>       one line per time a worker started the record, "<time>\t<task>\t<host> <pid>
#                           <start>" (a crash leaves a line and no failure: that is how a poison record that
#                           kills its worker is recognised; the owner says whose leftovers are whose)
# state/purged/<id>.json    the done marker of a record the check before a release found purged or damaged
#
# One small file per record, like datatrove's completion markers: resume is just running again, and
# status is a directory listing.

DONE = "done"
FAILED = "failed"
ATTEMPTS = "attempts"
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class RunDir:
    """Every path of one run directory (docs/operations.md, "The run directory"): nothing else names one, so
    its layout is read here alone."""

    root: Path

    # --- the top level
    @property
    def run_yaml(self) -> Path:
        return self.root / RUN_YAML

    @property
    def records(self) -> Path:
        return self.root / RECORDS

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def plans(self) -> Path:
        return self.root / PLANS

    def plan(self, generation: int) -> Path:
        """``plans/0003.json``: the shards of one generation."""
        return self.plans / f"{generation:04d}.json"

    @property
    def releases(self) -> Path:
        return self.root / RELEASES

    def release(self, version: str) -> Path:
        """``releases/<version>/``: one release's image, checksums, manifest and changelog."""
        return self.releases / version

    def release_file(self, version: str, name: str) -> Path:
        """A file of a release's folder (its image and checksums, by the image's name)."""
        return self.release(version) / name

    def release_json(self, version: str) -> Path:
        return self.release_file(version, RELEASE_JSON)

    def release_manifest(self, version: str) -> Path:
        return self.release_file(version, MANIFEST)

    def changelog(self, version: str) -> Path:
        return self.release_file(version, CHANGELOG)

    @property
    def feed(self) -> Path:
        """``releases/feed.xml``: the releases' Atom feed."""
        return self.releases / FEED

    def export(self, version: str) -> Path:
        """``export/<version>/``: a release organized for Kaggle."""
        return self.root / "export" / version

    def hub_export(self, version: str) -> Path:
        """``export/huggingface/<version>/``: a release's Parquet export for the Hugging Face Hub. Not inside
        ``export/<version>/``, which organize replaces whole; no version is named ``huggingface`` (they are dates)."""
        return self.root / "export" / "huggingface" / version

    def image(self, name: str) -> Path:
        """An image in the run directory (``pack.image``, or a released ``<image>-<version>.sqsh``)."""
        return self.root / name

    @property
    def report(self) -> Path:
        return self.root / REPORT_HTML

    def cached(self, record_id: str) -> Path:
        """``cache/<id>/``: a record's downloads (fetch-first mode, or kept by the workers)."""
        return self.cache / str(record_id)

    # --- data/: the image's root
    def record_folder(self, record_id: str) -> Path:
        return self.data / str(record_id)

    def in_image(self, name: str) -> Path:
        """A file of the image's root (``data/<name>``: ``manifest.jsonl``, ``README.md``, ``figures/...``)."""
        return self.data / name

    @property
    def manifest(self) -> Path:
        return self.data / MANIFEST

    @property
    def card(self) -> Path:
        return self.data / CARD

    @property
    def figures(self) -> Path:
        return self.data / FIGURES

    # --- state/
    def markers(self, kind: str) -> Path:
        """``state/<kind>/``: the markers of one kind (done, failed, attempts, purged)."""
        return self.state / kind

    def marker(self, kind: str, record_id: str) -> Path:
        """The marker file of a record; an id that could leave ``state/`` (``../x``, ``/etc``) is a bug here."""
        if not _SAFE_ID.fullmatch(str(record_id)):
            raise ValueError(f"not a record id: {str(record_id)[:40]!r}")
        suffix = "" if kind == ATTEMPTS else ".json"
        return self.markers(kind) / f"{record_id}{suffix}"

    @property
    def submissions(self) -> Path:
        return self.state / SUBMISSIONS

    def submission(self, generation: int) -> Path:
        """``state/submissions/0003.json``: what one generation queued."""
        return self.submissions / f"{generation:04d}.json"

    @property
    def harvest(self) -> Path:
        return self.state / HARVEST

    def harvest_job(self, key: str) -> Path:
        """``state/harvest/<job>.json``: one harvest's position."""
        return self.harvest / f"{key}.json"

    @property
    def chain(self) -> Path:
        return self.state / CHAIN

    @property
    def budget(self) -> Path:
        return self.state / BUDGET

    @property
    def verify(self) -> Path:
        return self.state / VERIFY_JSON

    @property
    def pending_update(self) -> Path:
        return self.state / PENDING_UPDATE

    @property
    def records_count(self) -> Path:
        return self.state / RECORDS_COUNT

    @property
    def pack_exclude(self) -> Path:
        return self.state / PACK_EXCLUDE

    def lock(self, name: str = LOCK) -> Path:
        """``state/<name>``: a lock one driver holds (``driver.lock``, ``harvest.lock``)."""
        return self.state / name

    # --- logs/
    def log(self, name: str) -> Path:
        """``logs/<name>``: a log of its own (the demo's)."""
        return self.logs / name

    def task_log(self, generation: int, shard: int) -> Path:
        """``logs/g0001/shard-00003.log``: the log of one array task (all its records)."""
        return self.logs / f"g{generation:04d}" / f"shard-{shard:05d}.log"

    def task_output(self, generation: int, shard: int) -> Path:
        """``logs/g0001/shard-00003.out``: what a local worker process printed."""
        return self.logs / f"g{generation:04d}" / f"shard-{shard:05d}.out"

    @property
    def submitit_logs(self) -> Path:
        """``logs/submitit/``: submitit's own files, one folder per job."""
        return self.logs / "submitit"


# --- atomic files ------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, SHARED_FILE_MODE)  # mkstemp's 0600 would hide run files from the rest of the group
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file (a marker, a plan, a submission); None when it does not exist.

    A file cut short, emptied, filled with junk or holding another JSON value is a UserError naming it, for
    the caller to repair or explain: nothing of its content can be trusted.
    """
    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise UserError(f"{path}: unreadable ({_why_not_json(payload, exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: unreadable (a JSON {type(data).__name__}, not an object)")
    return data


def _why_not_json(payload: bytes, exc: ValueError) -> str:
    if not payload.strip():
        return "empty"
    if isinstance(exc, UnicodeDecodeError):
        return f"not text: byte {exc.start} is not UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"cut short or damaged JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)


def set_aside(path: Path) -> Path | None:
    """Move an unreadable file out of the way, keeping it for a person to look at: ``.<name>.corrupt``
    (hidden, so no listing of markers counts it). Returns where it went (None when it was gone already)."""
    kept = path.with_name(f".{path.name}.corrupt")
    try:
        os.replace(path, kept)
    except FileNotFoundError:
        return None
    log.warning("%s was unreadable: kept as %s", path, kept.name)
    return kept


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning once per process: status and a waiting driver read the same bad file again and again."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def sha256_of(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def file_digest(path: Path) -> tuple[str, str, int]:
    """md5, sha256 and size of a file, in one pass: an image's two checksums (pack writes, image checks)."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), sha.hexdigest(), size


# --- records.jsonl -----------------------------------------------------------------------------------


def scan_run_records(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The run's records: ``(byte offset, id, record)`` of each line of ``records.jsonl`` that is one, in order.

    The one definition every command counts and plans by (status, pack, resume, run, fetch, the release):

    - a last line without its newline is an append a crash interrupted: not yet a record (the next harvest
      cuts it and reads that record again);
    - a JSON object whose id is not a Zenodo id, or whose shape is broken, is left out with a warning (an
      older harvest may have kept one): it is no record, its id must never name a file;
    - the same id on a later line is left out (the first line is the record);
    - anything else (a line that is not UTF-8, not JSON, cut short in the middle, not an object or without
      an id) means the file is damaged: a :class:`UserError` naming the line and how to repair it.

    Text holding an unpaired UTF-16 surrogate (``"\\ud800"``, which no UTF-8 can hold) reads with U+FFFD in its
    place, as the harvest writes it.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, generator
    except FileNotFoundError:
        return
    seen: set[str] = set()
    with handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                return
            if not line.strip():
                continue
            try:
                record, plain = read_record_line(line)
            except ValueError as exc:
                raise damaged_records(Path(path), number, start, str(exc)) from None
            try:
                record_id = check_hit(record, plain=plain)
            except BadRecord as exc:
                warn_once(f"{path}: line {number} is no record, left out: {exc}")
                continue
            if record_id in seen:
                warn_once(f"{path}: line {number} holds record {record_id} again: left out (its first line counts)")
                continue
            seen.add(record_id)
            yield start, record_id, record


def record_from_line(line: bytes) -> dict[str, Any]:
    """One line of records.jsonl as a record object (surrogates replaced); ValueError saying what it is instead."""
    return read_record_line(line)[0]


def read_record_line(line: bytes) -> tuple[dict[str, Any], bool]:
    """:func:`record_from_line`, and whether the record is plain (``check_hit``'s ``plain``: no walk needed)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: byte {exc.start + 1} of the line is {line[exc.start:exc.start + 1]!r}") \
            from None
    try:
        record, plain = loads_hit(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"cut short or not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict) or "id" not in record:
        raise ValueError(f"a JSON {type(record).__name__}, not a record" if not isinstance(record, dict)
                         else "a JSON object without an id, not a record")
    if ("\\ud" in text or "\\uD" in text) and _ESCAPED_SURROGATE.search(text):
        with contextlib.suppress(RecursionError):  # nested beyond reason: check_hit leaves it out (malformed)
            record = without_surrogates(record)[0]
    return record, plain


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")  # how JSON spells a surrogate (paired or not)


def damaged_records(path: Path, number: int, start: int, why: str) -> UserError:
    """The one-line error of a damaged records.jsonl: which line, what is wrong, how to repair it."""
    return UserError(
        f"{path}: line {number} (byte {start}) is damaged ({why}); delete that line (after a copy: "
        f"sed -i '{number}d' {path}), and the record it held comes back with the next `zenodo-hpc harvest -c CONFIG` "
        f"once {RunDir(path.parent).harvest} is removed (it reads Zenodo again and adds only what is missing)")


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The run's records (:func:`scan_run_records`), in order."""
    for _, _, record in scan_run_records(path):
        yield record


def repair_records_file(path: Path) -> None:
    """Cut a last line left incomplete by a crash, so that appends start on a fresh line."""
    try:
        with open(path, "rb+") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size == 0:
                return
            handle.seek(max(0, size - 1))
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            data = handle.read()
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
    except FileNotFoundError:
        return


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Append records as JSON lines in one write, flushed to disk: a crash loses at most this batch's tail."""
    lines = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    if not lines:
        return 0
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
    return lines.count("\n")


# --- run.yaml: the frozen config ---------------------------------------------------------------------

def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out.update(_flatten(sub, f"{prefix}.{key}"))
    return out


def output_differences(frozen: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: A in the run, B in this config`` for every output-defining key that differs."""
    differences = []
    for key in OUTPUT_KEYS:
        for flat_key, old in _flatten(_get(frozen, key), key).items():
            new = _flatten(_get(wanted, key), key).get(flat_key)
            if old != new:
                differences.append(f"{flat_key} is {old!r} in the run, {new!r} in this config")
    return differences


def check_config(run: RunDir, cfg: Config) -> None:
    """An existing ``run.yaml`` must agree with ``cfg`` on everything the outputs depend on."""
    if not run.run_yaml.exists():
        return
    differences = output_differences(load_frozen_dict(run), cfg.to_dict())
    if differences:
        raise UserError(
            f"run directory {run.root} was made with a different config: {differences[0]}"
            f"{f' (and {len(differences) - 1} more)' if len(differences) > 1 else ''}; "
            "use the same config, or another run.name for a new run"
        )


RUN_YAML_END = "# end of run.yaml"
_RUN_YAML_FORMAT = re.compile(r"^# zenodo-hpc run\.yaml, format (\d+)\b", re.MULTILINE)
_REWRITE = ("restore it (after a pack, data/run.yaml in the run directory is a copy), or delete it and run "
            "`zenodo-hpc submit -c CONFIG` with this run's config, which writes it anew")


def run_yaml_text(cfg: Config) -> str:
    """run.yaml's text: a first line naming its format (which keys it holds, for later versions to read it),
    every key, and a last line, so that a file cut short is told from a whole one."""
    head = f"# zenodo-hpc run.yaml, format {FROZEN_FORMAT}: this run's whole config, as of its latest submission"
    return f"{head}\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}{RUN_YAML_END}\n"


def freeze_config(run: RunDir, cfg: Config) -> None:
    """Write ``run.yaml`` (the settings of the latest submission) after :func:`check_config`."""
    check_config(run, cfg)
    atomic_write_text(run.run_yaml, run_yaml_text(cfg))


def _run_yaml_format(text: str, path: Path) -> int:
    """The format a run.yaml names; 1 for one written before formats were named (or stripped of its head)."""
    match = _RUN_YAML_FORMAT.search(text)
    fmt = int(match.group(1)) if match else 1
    if fmt > FROZEN_FORMAT:
        raise UserError(f"{path}: written by a newer zenodo-hpc (run.yaml format {fmt}; this one reads formats up "
                        f"to {FROZEN_FORMAT}): use that version")
    return fmt


def load_frozen_dict(run: RunDir) -> dict[str, Any]:
    """run.yaml as a mapping, refused unless whole: a truncated or edited file must not fall back to defaults
    (``executor.kind: auto`` on a cluster). Keys added after an older version wrote it keep their defaults."""
    path = run.run_yaml
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{run.root} is not a run directory (no {RUN_YAML})") from None
    except OSError as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: damaged, not UTF-8 ({exc.reason} at byte {exc.start}); {_REWRITE}") from None
    fmt = _run_yaml_format(text, path)
    try:
        data = parse_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: truncated or damaged, not valid YAML{describe_yaml_error(exc)}; {_REWRITE}") from None
    if data is None:  # empty: cut short before its first key
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a config mapping; {_REWRITE}")
    missing = first_missing_key(data, fmt)
    if missing:
        raise UserError(f"{path}: truncated or edited: key {missing} is missing; {_REWRITE}")
    if fmt > 1 and text.rstrip().rpartition("\n")[2] != RUN_YAML_END:
        raise UserError(f"{path}: truncated: it does not end with the line {RUN_YAML_END!r}; {_REWRITE}")
    return data


def open_run(cfg: Config) -> RunDir:
    """Create (or reopen) the run directory of ``cfg`` and freeze its config."""
    run = RunDir(cfg.run_dir)
    try:
        for folder in (run.root, run.data, run.state, run.logs):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory {run.root}: {exc.strerror or exc}") from None
    freeze_config(run, cfg)
    return run


def load_run(path: str | os.PathLike[str]) -> tuple[RunDir, Config]:
    """An existing run directory and its frozen config (for status, resume, pack, fetch)."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise UserError(f"{run.root} is not a run directory (no such folder)")
    cfg = config_from_dict(load_frozen_dict(run), str(run.run_yaml))
    return run, cfg


# --- per-record markers (what each holds: the comment above RunDir) ------------------------------------


def marker(run: RunDir, kind: str, record_id: str) -> Path:
    """The marker file of a record (:meth:`RunDir.marker`)."""
    return run.marker(kind, record_id)


def ids_in(run: RunDir, kind: str) -> set[str]:
    """Record ids with a marker of ``kind`` (a directory listing, no file is read); a name no record id can have
    (a file a person left there) is none."""
    try:
        with os.scandir(run.markers(kind)) as entries:
            names = [e.name for e in entries if not e.name.startswith(".")]
    except FileNotFoundError:
        return set()
    return ids_named(names)


def ids_named(names: Iterable[str]) -> set[str]:
    """The record ids of the file names of a markers folder, as :func:`ids_in` gives them from its listing (for a
    caller that lists the folder for more than the ids: ``status``): hidden names (a marker being written) and
    names no record id can have are none."""
    return {record_id for name in names
            if not name.startswith(".") and _SAFE_ID.fullmatch(record_id := name.removesuffix(".json"))}


def is_done(run: RunDir, record_id: str) -> bool:
    return marker(run, DONE, record_id).exists()


_ATTEMPT_LINE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*\t")  # <time>\t<task>\t<host> <pid> <start>


def _attempt_lines(path: Path) -> tuple[list[bytes], list[bytes]]:
    """All lines of an attempts file (the last one possibly cut short) and, of them, the attempt lines."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    lines = data.split(b"\n")  # the last item is b"" for a file ending in a newline
    good = [line for line in lines[:-1] if _ATTEMPT_LINE.match(line)]
    if len(good) < len(lines) - 1 or lines[-1]:
        warn_once(f"{path}: {len(lines) - 1 - len(good) + bool(lines[-1])} line(s) are not attempt lines (damaged); "
                  "they are not counted as attempts")
    return lines, good


def attempts_of(run: RunDir, record_id: str) -> int:
    """How many times a worker started the record: its attempt lines (junk in the file counts for nothing)."""
    return len(_attempt_lines(marker(run, ATTEMPTS, record_id))[1])


def last_attempt_owner(run: RunDir, record_id: str) -> dict[str, Any] | None:
    """Who started the record last (host, pid, start), as its attempt line says; None when no line says."""
    good = _attempt_lines(marker(run, ATTEMPTS, record_id))[1]
    fields = good[-1].split(b"\t") if good else []
    return parse_owner_token(fields[2].decode("utf-8", "replace")) if len(fields) > 2 else None


def mark_started(run: RunDir, record_id: str, task: str) -> int:
    """Count one more attempt at ``record_id``, naming this process (its temporary folders are its own until it
    is gone); return its number (1 for the first)."""
    path = marker(run, ATTEMPTS, record_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{_now()}\t{task}\t{owner_token()}\n".encode()
    with open(path, "a+b") as handle:
        if handle.seek(0, os.SEEK_END):
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":  # a line cut short by a crash must not swallow this one
                line = b"\n" + line
        handle.write(line)
    return attempts_of(run, record_id)


def record_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "sha256"}}`` of a record folder's files: what ``pack`` later checks the folder against."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        sha, size = sha256_of(folder / name)
        out[name] = {"size": size, "sha256": sha}
    return out


def mark_done(run: RunDir, record_id: str, info: dict[str, Any]) -> None:
    """The record is complete; the marker keeps each file's size and sha256 so that damage found later is told.
    ``info``: what the worker knows of it (attempts, task, seconds, its stats)."""
    files = record_digests(run.record_folder(record_id))
    done = DoneMarker.from_json({"id": record_id, "finished": _now(), **info, **({"outputs": files} if files else {})})
    atomic_write_json(run.marker(DONE, record_id), done.to_json())
    with contextlib.suppress(FileNotFoundError):
        marker(run, FAILED, record_id).unlink()


def read_done(run: RunDir, record_id: str) -> DoneMarker | None:
    """A done marker (None when there is none); an unreadable one is a UserError naming it (``pack`` repairs it)."""
    data = read_json_object(run.marker(DONE, record_id))
    return None if data is None else DoneMarker.from_json(data, record_id)


def mark_for_redo(run: RunDir, record_id: str, *, reason: str, message: str) -> None:
    """A done record whose folder turned out damaged is done no more: failed with ``reason`` (so that status
    says why), its attempts forgotten (not the record's fault), and ``resume`` makes it again."""
    mark_failed(run, record_id, reason=reason, message=message, attempt=0, task="pack", quarantined=False)
    for kind in (DONE, ATTEMPTS):
        with contextlib.suppress(FileNotFoundError):
            marker(run, kind, record_id).unlink()


def mark_failed(run: RunDir, record_id: str, *, reason: str, message: str, attempt: int, task: str,
                quarantined: bool, retry_at: str | None = None) -> FailureMarker:
    """Record a failure (the history keeps every earlier one); return the marker. ``retry_at``: when Zenodo's
    budget returns (UTC), for a ``rate_limited`` one.

    An unreadable earlier marker is set aside (``.<id>.json.corrupt``) and the history starts again.
    """
    path = run.marker(FAILED, record_id)
    try:
        previous = read_json_object(path)
    except UserError:
        set_aside(path)
        previous = None
    history = FailureMarker.from_json(previous, record_id).history if previous else []
    history.append({"reason": reason, "message": message, "attempt": attempt, "task": task, "at": _now()})
    failure = FailureMarker(record_id, reason=reason, message=message, attempts=attempt, quarantined=quarantined,
                            history=history[-HISTORY_KEPT:], retry_at=retry_at)
    atomic_write_json(path, failure.to_json())
    return failure


def read_failure(run: RunDir, record_id: str) -> FailureMarker | None:
    """A record's last failure, or None. An unreadable marker reads as a failure of its own
    (``unreadable_marker``, not quarantined): the record is tried again and its next attempt rewrites it."""
    try:
        data = read_json_object(run.marker(FAILED, record_id))
    except UserError as exc:
        warn_once(f"{exc}: record {record_id} counts as failed ({UNREADABLE_MARKER}) until `zenodo-hpc resume` "
                  "tries it again, which rewrites the file (if it was quarantined, it is tried again)")
        return FailureMarker.unreadable(record_id, str(exc))
    return None if data is None else FailureMarker.from_json(data, record_id)


@dataclass
class Outcomes:
    """Where the run's records stand, from the run directory alone (no scheduler asked): what ``pack``
    gates on and ``status`` starts from."""

    records: int
    done_ids: set[str]
    failed: dict[str, int]  # reason -> records failed for it that another attempt may change
    quarantined: dict[str, int]  # reason -> records set aside

    @property
    def done(self) -> int:
        return len(self.done_ids)

    @property
    def pending(self) -> int:
        return max(0, self.records - self.done - sum(self.failed.values()) - sum(self.quarantined.values()))


def record_ids(path: os.PathLike[str]) -> set[str]:
    """The ids of the run's records (:func:`scan_run_records`).

    Reading every record takes a while at scale (tens of us each), and ``status`` asks again and again while
    the file stays as it is: the ids are kept in ``state/records.count.json`` with the file's size, time and
    inode, and read again only when one of them changed; a process that asks again (a waiting ``run``) keeps them
    in memory under the same key.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return set()
    key = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "inode": info.st_ino}
    kept = _RECORD_IDS.get(str(path))
    if kept is not None and kept[0] == key:
        return set(kept[1])
    ids = _saved_record_ids(path, key)
    _RECORD_IDS[str(path)] = (key, frozenset(ids))
    return ids


_RECORD_IDS: dict[str, tuple[dict[str, int], frozenset[str]]] = {}


def _saved_record_ids(path: Path, key: dict[str, int]) -> set[str]:
    """The ids of ``records.jsonl`` from ``state/records.count.json`` when it was written for this ``key``,
    else read from the file (and saved there)."""
    cache = RunDir(path.parent).records_count
    with contextlib.suppress(OSError, ValueError, TypeError):
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in key} == key and isinstance(saved.get("ids"), list):
            return {str(i) for i in saved["ids"]}
    ids = [record_id for _, record_id, _ in scan_run_records(path)]
    with contextlib.suppress(OSError):  # a read-only run directory (someone else's) is read each time
        atomic_write_text(cache, json.dumps({**key, "records": len(ids), "ids": ids}, separators=(",", ":")))
    return set(ids)


def record_outcomes(run: RunDir, *, done: set[str] | None = None) -> Outcomes:
    """Count the records done, failed and quarantined (by reason) from their markers; a marker of an id that is
    none of the run's records (its line removed by hand) counts for nothing. ``done``: the ids of a listing of
    the done markers the caller made already (:func:`ids_named`), instead of listing them again."""
    records = record_ids(run.records)
    done_ids = (ids_in(run, DONE) if done is None else done) & records
    failed: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    for record_id in (ids_in(run, FAILED) & records) - done_ids:
        failure = read_failure(run, record_id) or FailureMarker(record_id, reason="unknown")
        counts = quarantined if failure.quarantined else failed
        reason = failure.reason or "unknown"
        counts[reason] = counts.get(reason, 0) + 1
    return Outcomes(len(records), done_ids, failed, quarantined)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def unmark_started(run: RunDir, record_id: str) -> None:
    """Take back the last attempt: the worker was interrupted (preempted, timed out), not the record's fault."""
    path = marker(run, ATTEMPTS, record_id)
    lines, good = _attempt_lines(path)
    if not good:
        return
    last = max(i for i, line in enumerate(lines[:-1]) if _ATTEMPT_LINE.match(line))
    atomic_write_bytes(path, b"\n".join(lines[:last] + lines[last + 1:]))


# --- the driver lock ---------------------------------------------------------------------------------

@contextlib.contextmanager
def driver_lock(run: RunDir, what: str, *, name: str = LOCK) -> Iterator[None]:
    """One driver at a time may plan and submit for a run: two would double-submit.

    Creating the lock file with ``link`` is atomic on local disks, NFS and Lustre alike (``flock`` is not, across
    nodes). A lock whose process is gone on this host is stale and taken over; one held from another
    host is reported with its holder so a person can decide.
    """
    path = run.lock(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(), "command": what}
    for _ in range(2):
        try:
            _create_with(path, json.dumps(me))
        except FileExistsError:
            holder = _read_holder(path)
            if _is_stale(holder, path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if not holder:
                raise UserError(
                    f"{path} names no driver (unreadable, or being written this instant): it is taken over once it "
                    f"is a minute old; if no zenodo-hpc driver is working on {run.root}, remove it now: rm {path}"
                ) from None
            raise UserError(
                f"another zenodo-hpc driver ({holder.get('command', '?')}, pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}) is working on {run.root}; "
                f"wait for it to finish, or remove {path} if it is gone"
            ) from None
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if _read_holder(path).get("pid") == me["pid"]:
                path.unlink()


def _create_with(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` in one step, or raise FileExistsError.

    The text goes to a private file first, then ``link`` puts it in place: atomic on local disks, NFS and
    Lustre alike, so nobody ever reads a lock without its holder written in it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _read_holder(path: Path) -> dict[str, Any]:
    """Who holds a lock; ``{}`` while its holder has not written it yet, or when it names no driver (junk, other
    JSON): such a lock is taken over once a minute old, like one whose holder died before writing it."""
    try:
        holder = read_json(path, default=None)
    except UserError:
        return {}
    if not isinstance(holder, dict) or not all(holder.get(key) for key in ("pid", "host")):
        return {}
    return holder


def _is_stale(holder: dict[str, Any], path: Path) -> bool:
    if not holder:  # the holder died between creating and writing the file
        with contextlib.suppress(FileNotFoundError):
            return time.time() - path.stat().st_mtime > 60
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False
    return False

"""Fetch a record's code: its archives and loose files from Zenodo, or its GitHub release when it has none.

The sources of a record, in this order (docs/fetch.md says the same for users):

1. A restricted, embargoed or closed record (``metadata.access_right`` other than ``open``, or files not
   public) is fetched from nowhere, GitHub included: it fails at once with reason ``restricted``.
2. Every archive among the record's files (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``,
   ``.tar.xz``) is downloaded, to be extracted.
3. Every other file is a loose file: downloaded when it could be rasterized (its declared size at most
   ``raster.max_file_bytes`` and its extension not in ``raster.binary_extensions``), else listed in the
   record's tree with its skip reason, without spending a request on it.
4. Only when the record has none of these (or none could be downloaded) and names a GitHub release (the
   integration's ``isSupplementTo`` link to ``/tree/<tag>``), the tag's zip from codeload.
Otherwise the record fails with a reason (``no_archive``, ``http_404``, ``checksum_mismatch`` ...).

Every link and size of the answer is untrusted: a link that is not http(s) fails that file (``bad_link``);
downloads stream to a ``.part`` file under a name of our own (``0003-<safe name>``, so two keys never
share a local file) with a size cap, an overall deadline (``fetch.deadline_s``) and an md5 computed on the
way, and are retried (truncated bodies, wrong checksums, read time-outs) up to ``fetch.attempts`` times.
The Zenodo token goes to the API's origin only (:class:`~zenodo_hpc.zenodo.client.HttpClient`).

With a cache folder, downloads are kept per record (``<cache>/<id>/``) with a ``fetched.json`` saying what
is there, so that compute nodes without internet can work offline from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from ..core.config import Config
from ..core.errors import UserError
from ..core.records import (
    BadRecord,
    check_hit,
    file_entries,
    github_hint,
    github_release,
    link_problem,
    raw_file_list,
    restriction,
)
from ..core.state import RunDir, atomic_write_json, is_done, iter_records, read_json
from ..record.extract import is_archive_name
from .client import HttpClient, RequestFailed, read_token, share_of_budget

log = logging.getLogger(__name__)

CHUNK = 1 << 20
FETCHED_JSON = "fetched.json"
FAILURE_JSON = "failure.json"
FETCHED_FORMAT = 2  # fetched.json written before loose files were fetched (format 1) is fetched again

# Skip reasons of loose files that are not downloaded (they appear in the record's tree).
BINARY_TYPE = "binary_type"
TOO_LARGE = "too_large"


class FetchFailed(UserError):
    """A file, or every source of a record, failed; ``reason`` is the first source's reason (most telling)."""

    def __init__(self, message: str, reason: str, key: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.key = key  # the file's key, when one file failed


@dataclass
class Source:
    """One downloadable file of a record."""

    kind: str  # "zenodo" or "github"
    name: str  # the file's key (or owner/repo-tag.zip for GitHub)
    url: str
    size: int | None = None  # declared size, when Zenodo gives one
    md5: str | None = None  # expected checksum, when Zenodo gives one


@dataclass
class FetchedFile:
    """A downloaded file and where it came from."""

    path: Path
    source: Source
    checksum: str  # "verified" (md5 matched) or "not_available" (nothing to check against)

    def info(self) -> dict[str, Any]:
        info = asdict(self.source)
        info["checksum"] = self.checksum
        return info


FetchedArchive = FetchedFile  # the name used before loose files were fetched too


@dataclass
class FetchedRecord:
    """What a record's code is made of: archives to extract, loose files to walk, files left out."""

    archives: list[FetchedFile]
    loose: list[FetchedFile] = field(default_factory=list)
    not_fetched: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) of files left out
    fallback_reason: str | None = None  # why GitHub was used instead of Zenodo's files
    own_paths: bool = True  # one archive and nothing else: its paths as they are (the 2018 layout)

    @property
    def files(self) -> list[FetchedFile]:
        return self.archives + self.loose

    @property
    def kind(self) -> str:
        return self.files[0].source.kind if self.files else "zenodo"

    def source_info(self) -> dict[str, Any]:
        """The ``source`` block of the record's metadata."""
        return {"kind": self.kind, "url": self.files[0].source.url if self.files else None,
                "archives": [a.info() for a in self.archives], "loose": [f.info() for f in self.loose],
                "not_fetched": [{"key": k, "reason": r} for k, r in self.not_fetched],
                "fallback_reason": self.fallback_reason}

    def key_prefixes(self) -> list[tuple[Path, str]]:
        """(archive, key prefix): one archive alone keeps its own paths; otherwise each starts with its key."""
        if self.own_paths and len(self.archives) == 1:
            return [(self.archives[0].path, "")]
        return [(a.path, f"{a.source.name}/") for a in self.archives]

    def loose_files(self) -> list[tuple[str, Path]]:
        """(key, local file) of every downloaded loose file."""
        return [(f.source.name, f.path) for f in self.loose]

    def to_json(self) -> dict[str, Any]:
        return {"format": FETCHED_FORMAT,
                "archives": [{"file": a.path.name, **a.info()} for a in self.archives],
                "loose": [{"file": f.path.name, **f.info()} for f in self.loose],
                "not_fetched": [list(pair) for pair in self.not_fetched],
                "fallback_reason": self.fallback_reason, "own_paths": self.own_paths}


# --- which sources ------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Which of a record's files are fetched, and why the others are not."""

    archives: list[Source] = field(default_factory=list)
    loose: list[Source] = field(default_factory=list)
    not_fetched: list[tuple[str, str]] = field(default_factory=list)  # skipped on what the record declares
    bad: list[FetchFailed] = field(default_factory=list)  # files whose entry is unusable (bad link, bad key)

    @property
    def own_paths(self) -> bool:
        """The record is exactly one archive (its paths are kept as they are, the 2018 layout)."""
        return len(self.archives) == 1 and not self.loose and not self.not_fetched and not self.bad


def plan_sources(hit: dict[str, Any], cfg: Config) -> Plan:
    """Sort a record's files into archives, loose files to fetch, and loose files left out (with reasons)."""
    plan = Plan()
    binary = tuple(ext.lower() for ext in cfg.raster.binary_extensions)
    for entry in file_entries(hit):
        problem = key_problem(entry.key)
        if problem is None and entry.url is None:
            problem = entry.problem or "no download link"
        if problem is not None:
            reason = "bad_link" if entry.url is None and key_problem(entry.key) is None else "bad_name"
            plan.bad.append(FetchFailed(f"file {entry.key[:100]!r}: {problem}", reason=reason, key=entry.key))
            continue
        source = Source("zenodo", entry.key, str(entry.url), entry.size, entry.md5)
        if is_archive_name(entry.key):
            plan.archives.append(source)
        elif entry.key.lower().endswith(binary):
            plan.not_fetched.append((entry.key, BINARY_TYPE))
        elif entry.size is not None and entry.size > cfg.raster.max_file_bytes:
            plan.not_fetched.append((entry.key, TOO_LARGE))
        else:
            plan.loose.append(source)
    return plan


def key_problem(key: str) -> str | None:
    """Why a file's key cannot be a path in the record's tree (absolute, ``..``, control characters), or None."""
    if len(key) > 4096 or len(key.encode("utf-8", "surrogatepass")) > 4096:
        return "a key longer than 4096 bytes"
    if key.startswith("/") or "\\" in key:
        return "an absolute or backslashed key"
    if any(ord(c) < 32 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in key):
        return "a key with control characters"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "a key with an empty, '.' or '..' component"
    return None


def zenodo_archives(hit: dict[str, Any]) -> list[Source]:
    """The record's archive files with a usable link, sorted by key, whatever the shape."""
    return [Source("zenodo", e.key, e.url, e.size, e.md5) for e in file_entries(hit)
            if e.url and is_archive_name(e.key) and key_problem(e.key) is None]


def github_source(hit: dict[str, Any], codeload_url: str) -> Source | None:
    """The released tag's zip on codeload, when the record names the integration's release; never a branch."""
    release = github_release(hit)
    if release is None:
        return None
    quoted = urllib.parse.quote(release.tag, safe="/")  # tags like release/1.0 keep their slash, as on GitHub
    url = f"{codeload_url.rstrip('/')}/{release.owner}/{release.repo}/zip/refs/tags/{quoted}"
    return Source("github", f"{release.owner}/{release.repo}-{release.tag}.zip", url)


def safe_name(name: str) -> str:
    """A file name made safe for a local file: ``owner/repo-v1.zip`` -> ``owner_repo-v1.zip``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
    return cleaned[-120:]


def local_name(index: int, source: Source) -> str:
    """The local file of the ``index``-th download of a record: unique even when two keys look alike."""
    return f"{index:04d}-{safe_name(source.name)}"


# --- downloading --------------------------------------------------------------------------------------


def download_client(cfg: Config, concurrent: int = 1) -> HttpClient:
    """A client for downloads with its share of the run's request budget, both windows (``concurrent`` workers
    at once); the budget's unset keys are Zenodo's published limits for a guest, or for the token if one is set."""
    token = read_token(cfg.zenodo.token_env)
    budget = cfg.zenodo.request_budget(has_token=token is not None)
    client = HttpClient(per_minute=share_of_budget(budget.per_minute, concurrent),
                        per_hour=share_of_budget(budget.per_hour, concurrent), workers=concurrent,
                        token=token, token_url=cfg.zenodo.api_url,
                        timeout_s=cfg.fetch.timeout_s, retries=cfg.zenodo.retries, max_wait_s=cfg.zenodo.max_wait_s)
    log.info("request budget of the run: %g a minute, %g an hour (%s); %d worker(s) at once: one request every "
             "%.1f s from this one", budget.per_minute, budget.per_hour,
             "as set" if cfg.zenodo.rate_limit_per_min and cfg.zenodo.rate_limit_per_hour
             else f"Zenodo's published limits for {'a token' if token else 'a guest'} where unset",
             concurrent, client.limiter.interval)
    return client


def download(client: HttpClient, source: Source, target: Path, cfg: Config, *,
             max_bytes: int | None = None) -> FetchedFile:
    """Download one source to ``target`` with retries; a :class:`FetchFailed` with a reason otherwise."""
    cap = cfg.fetch.max_bytes if max_bytes is None else max_bytes
    if source.size is not None and source.size > cap:
        raise FetchFailed(f"{source.name} is {source.size} bytes, over the limit of {cap}", reason=TOO_LARGE,
                          key=source.name)
    problem = link_problem(source.url)
    if problem:
        raise FetchFailed(f"{source.name}: {problem}", reason="bad_link", key=source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    last: FetchFailed | None = None
    for attempt in range(1, cfg.fetch.attempts + 1):
        try:
            return _download_once(client, source, target, cap, cfg.fetch.deadline_s)
        except FetchFailed as exc:
            exc.key = source.name
            last = exc
            if exc.reason not in _RETRYABLE:
                raise
            log.info("%s: %s (attempt %d of %d)", source.url, exc, attempt, cfg.fetch.attempts)
    assert last is not None
    raise last


_RETRYABLE = {"checksum_mismatch", "truncated", "timeout", "connection_error"}


def _download_once(client: HttpClient, source: Source, target: Path, max_bytes: int,
                   deadline_s: float) -> FetchedFile:
    part = target.with_name(target.name + ".part")
    try:
        response = client.get(source.url, stream=True)
    except RequestFailed as exc:
        raise FetchFailed(str(exc), reason=exc.reason) from None
    with response:
        if response.status_code != 200:
            raise FetchFailed(f"{source.url}: HTTP {response.status_code}", reason=f"http_{response.status_code}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and len(declared) < 20 and int(declared) > max_bytes:
            raise FetchFailed(f"{source.name} is {declared} bytes, over the limit of {max_bytes}", reason=TOO_LARGE)
        with _Deadline(response, deadline_s) as deadline:
            digest, _ = _stream_to(response, part, max_bytes, source, deadline)
    if source.md5 and digest != source.md5:
        part.unlink(missing_ok=True)
        raise FetchFailed(f"{source.name}: md5 {digest} does not match the record's {source.md5}",
                          reason="checksum_mismatch")
    os.replace(part, target)
    return FetchedFile(target, source, "verified" if source.md5 else "not_available")


class _Deadline:
    """Cuts a download's connection when it runs past ``seconds`` in all.

    The read time-out only bounds each wait for data: a server trickling a byte every few seconds
    never trips it. A timer shuts the socket down instead, which wakes the blocked read at once. It does not
    close the response: the reading thread does (``with response``), since http.client's close from another
    thread races with a read in progress (which then fails with an AttributeError instead of ending).
    """

    def __init__(self, response: requests.Response, seconds: float) -> None:
        self.response = response
        self.seconds = seconds
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        sock = _socket_of(self.response)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(Exception):  # no socket to shut down: closing is the only way to stop the read
            self.response.close()


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (urllib3's connection), or None when it is already gone."""
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _stream_to(response: requests.Response, part: Path, max_bytes: int, source: Source,
               deadline: _Deadline) -> tuple[str, int]:
    digest = hashlib.md5()
    size = 0
    try:
        with open(part, "wb") as handle:
            for chunk in _as_it_arrives(response):
                if deadline.expired:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise FetchFailed(f"{source.name} is larger than the limit of {max_bytes}", reason=TOO_LARGE)
                digest.update(chunk)
                handle.write(chunk)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        part.unlink(missing_ok=True)
        if deadline.expired:
            raise _too_slow(source, size, deadline) from None
        if "timed out" in str(exc).lower():  # requests calls a read time-out of a body a ConnectionError
            raise FetchFailed(f"{source.url}: no data within fetch.timeout_s after {size} bytes: the server stopped "
                              "sending", reason="timeout") from exc
        raise FetchFailed(f"{source.url}: download cut short after {size} bytes", reason="truncated") from exc
    except requests.exceptions.Timeout as exc:
        part.unlink(missing_ok=True)
        raise FetchFailed(f"{source.url}: no data for too long after {size} bytes", reason="timeout") from exc
    except BaseException as exc:
        part.unlink(missing_ok=True)
        if deadline.expired and isinstance(exc, Exception) and not isinstance(exc, FetchFailed):  # the cut read's
            raise _too_slow(source, size, deadline) from None
        raise
    if deadline.expired:
        part.unlink(missing_ok=True)
        raise _too_slow(source, size, deadline)
    return digest.hexdigest(), size


def _as_it_arrives(response: requests.Response) -> Iterator[bytes]:
    """The body in pieces of whatever has arrived (up to CHUNK), with requests' exceptions.

    ``iter_content(CHUNK)`` waits for a whole CHUNK: when a read is cut (the deadline, a time-out), the bytes of the
    piece not yet whole are lost, and a server that sent 23 bytes is said to have sent 0. urllib3 2's ``read1``
    hands over what came; urllib3 1 has none, and keeps ``iter_content``.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(CHUNK)
        return
    try:
        while data := read1(CHUNK, decode_content=True):
            yield data
    except urllib3.exceptions.ProtocolError as exc:  # as iter_content maps them
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def _too_slow(source: Source, size: int, deadline: _Deadline) -> FetchFailed:
    return FetchFailed(f"{source.name}: not downloaded within fetch.deadline_s ({deadline.seconds:g} s; "
                       f"{size} bytes arrived): the server is too slow", reason="timeout")


# --- a whole record -----------------------------------------------------------------------------------


def fetch_record(hit: dict[str, Any], folder: Path, cfg: Config, client: HttpClient | None) -> FetchedRecord:
    """Download a record's code into ``folder``: archives, loose files, or its GitHub release.

    ``client`` None means offline: only what ``folder`` already holds (a cache filled earlier) is used.
    A restricted record fails at once (reason ``restricted``), whatever is cached.
    """
    record = _checked_id(hit)
    why = restriction(hit)
    if why:
        raise FetchFailed(f"record {record} is not open ({why}): its files are not fetched from anywhere",
                          reason="restricted")
    cached = load_cached(folder)
    if cached is not None:
        return cached
    if client is None:
        earlier = read_json(folder / FAILURE_JSON) if folder.is_dir() else None
        if earlier:  # `zenodo-hpc fetch` tried and failed: that reason is the telling one
            raise FetchFailed(earlier["message"], reason=earlier["reason"])
        raise FetchFailed(f"record {record} is not in the download cache {folder} (fetch.offline)",
                          reason="not_cached")
    fetched = _fetch_sources(hit, record, folder, cfg, client)
    atomic_write_json(folder / FETCHED_JSON, fetched.to_json())
    return fetched


def _checked_id(hit: dict[str, Any]) -> str:
    try:
        return check_hit(hit)
    except BadRecord as exc:
        raise FetchFailed(str(exc), reason=exc.reason) from None


def _fetch_sources(hit: dict[str, Any], record: str, folder: Path, cfg: Config,
                   client: HttpClient) -> FetchedRecord:
    plan = plan_sources(hit, cfg)
    failures: list[FetchFailed] = list(plan.bad)
    fetched = FetchedRecord([], not_fetched=list(plan.not_fetched), own_paths=plan.own_paths)
    names = iter(range(10_000))
    for source in plan.archives:
        try:
            fetched.archives.append(download(client, source, folder / local_name(next(names), source), cfg))
        except FetchFailed as exc:
            failures.append(exc)
    for source in plan.loose:
        try:
            fetched.loose.append(download(client, source, folder / local_name(next(names), source), cfg,
                                          max_bytes=cfg.raster.max_file_bytes))
        except FetchFailed as exc:
            if exc.reason == TOO_LARGE:  # the size was not declared, or was a lie: a skip, not a failure
                fetched.not_fetched.append((source.name, TOO_LARGE))
            else:
                failures.append(exc)
    if fetched.files:
        if failures:  # keep what came, say what did not
            log.warning("record %s: %d of its files failed (%s)", record, len(failures),
                        "; ".join(str(f) for f in failures))
            fetched.not_fetched += [(f.key, f"error: {f.reason}") for f in failures  # a bad key only in the log
                                    if f.key and key_problem(f.key) is None]
        return fetched
    return _fall_back_to_github(hit, record, folder, cfg, client, failures, plan)


def _fall_back_to_github(hit: dict[str, Any], record: str, folder: Path, cfg: Config, client: HttpClient,
                         failures: list[FetchFailed], plan: Plan) -> FetchedRecord:
    """The GitHub release when Zenodo gave nothing to rasterize; the record's failure otherwise."""
    files = raw_file_list(hit)
    fallback_reason = failures[0].reason if failures else ("no_files" if not files else "no_archive")
    github = github_source(hit, cfg.github.codeload_url) if cfg.github.fallback else None
    if github is not None:
        try:
            archive = download(client, github, folder / local_name(0, github), cfg)
            return FetchedRecord([archive], fallback_reason=fallback_reason)
        except FetchFailed as exc:
            failures.append(exc)
    if failures:
        detail = "; ".join(str(f) for f in failures)
        raise FetchFailed(f"record {record}: every source failed: {detail}", reason=failures[0].reason)
    left_out = ", ".join(f"{key} ({reason})" for key, reason in plan.not_fetched[:5])
    hint = github_hint(hit) if cfg.github.fallback else None
    raise FetchFailed(
        f"record {record}: nothing to rasterize among its {len(files)} files"
        f"{f' ({left_out})' if left_out else ''} and no GitHub release to fall back on"
        f"{f': {hint}' if hint else ''}", reason="no_archive")


def load_cached(folder: Path) -> FetchedRecord | None:
    """What an earlier fetch left in ``folder`` (its ``fetched.json`` and files), or None."""
    saved = read_json(folder / FETCHED_JSON) if folder.is_dir() else None
    if not isinstance(saved, dict) or saved.get("format") != FETCHED_FORMAT:
        return None
    try:
        archives = [_cached_file(folder, entry) for entry in saved["archives"]]
        loose = [_cached_file(folder, entry) for entry in saved["loose"]]
        not_fetched = [(str(key), str(reason)) for key, reason in saved["not_fetched"]]
    except (KeyError, TypeError, ValueError, FileNotFoundError):
        return None
    return FetchedRecord(archives, loose, not_fetched, saved.get("fallback_reason"), bool(saved.get("own_paths")))


def _cached_file(folder: Path, entry: dict[str, Any]) -> FetchedFile:
    name = str(entry["file"])
    if "/" in name or name in (".", "..") or not (folder / name).is_file():
        raise FileNotFoundError(name)
    source = Source(entry["kind"], entry["name"], entry["url"], entry.get("size"), entry.get("md5"))
    return FetchedFile(folder / name, source, entry["checksum"])


# --- fetch-first mode: `zenodo-hpc fetch RUN_DIR` ----------------------------------------------------


@dataclass
class FetchAllResult:
    cached: int = 0  # fetched now
    already: int = 0  # in the cache (or done) before
    failed: dict[str, int] | None = None
    seconds: float = 0.0

    @property
    def everything_failed(self) -> bool:
        """Every archive it tried failed and none was there already: nothing for the workers (``fetch`` exits 1)."""
        return bool(self.failed) and not (self.cached or self.already)


def fetch_all(run: RunDir, cfg: Config, *, progress: bool | None = None) -> FetchAllResult:
    """Download every record not yet complete into ``<run>/cache/`` (a login or transfer node's job).

    Workers with ``fetch.offline: true`` then rasterize from the cache with no network at all. A failure
    is kept beside the cache (``<cache>/<id>/failure.json``) so the worker reports its real reason. A
    record whose id is not a Zenodo id is counted (``bad_id``) and never touches the disk.
    """
    started = time.monotonic()
    records = list(iter_records(run.records))
    if not records:
        raise UserError(f"{run.records} holds no records: run `zenodo-hpc harvest` first")
    client = download_client(cfg)
    result = FetchAllResult()
    failed: Counter[str] = Counter()
    disable = None if progress is None else not progress
    try:
        for hit in tqdm(records, unit="rec", desc="fetch", disable=disable, leave=False):
            reason = _fetch_into_cache(hit, run, cfg, client)
            if reason == "cached":
                result.cached += 1
            elif reason == "already":
                result.already += 1
            else:
                failed[reason] += 1
    finally:
        client.close()
    result.failed = dict(failed)
    result.seconds = time.monotonic() - started
    return result


def _fetch_into_cache(hit: dict[str, Any], run: RunDir, cfg: Config, client: HttpClient) -> str:
    """Fetch one record into the cache: ``cached``, ``already``, or the failure's reason."""
    try:
        record = check_hit(hit)
    except BadRecord as exc:
        log.warning("%s: skipped", exc)
        return exc.reason
    folder = run.cached(record)
    if is_done(run, record) or load_cached(folder) is not None:
        return "already"
    try:
        fetch_record(hit, folder, cfg, client)
    except FetchFailed as exc:
        atomic_write_json(folder / FAILURE_JSON, {"reason": exc.reason, "message": str(exc)})
        log.warning("%s (%s)", exc, exc.reason)
        return exc.reason
    (folder / FAILURE_JSON).unlink(missing_ok=True)
    return "cached"


def format_fetch_summary(result: FetchAllResult, run: RunDir) -> str:
    failed = sum((result.failed or {}).values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted((result.failed or {}).items()))
    return (f"fetch: {result.cached} records downloaded to {run.cache}, {result.already} already there, "
            f"{failed} failed{f' ({reasons})' if reasons else ''} in {result.seconds:.1f} s")



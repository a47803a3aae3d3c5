"""Fetch a record's code: its archives from Zenodo, or the released tag from GitHub when it has none.

Which archives (the documented rule, docs/fetch.md): every file of the record whose name is an archive
(``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``), in sorted name order; all of them
are kept. When there is none, or none can be downloaded, and the record names a GitHub release
(``https://github.com/<owner>/<repo>/tree/<tag>``), the tag's zip from codeload is the source; never the
default branch. Otherwise the record fails with a reason (``no_archive``, ``checksum_mismatch``,
``http_404``, ``too_large``, ``timeout``, ...).

Downloads stream to a ``.part`` file with a size cap and an md5 computed on the way, are renamed when
complete and verified, and are retried (truncated bodies, wrong checksums, read time-outs) up to
``fetch.attempts`` times; status-level trouble (429, 5xx, connection errors) is retried by the client.
With a cache folder, downloads are kept per record (``<cache>/<id>/``) with a ``fetched.json`` saying
what is there, so that compute nodes without internet can work offline from it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from .client import HttpClient, RequestFailed, read_token, share_of_budget
from .config import Config
from .errors import UserError
from .extract import is_archive_name
from .records import github_repository
from .state import RunDir, atomic_write_json, is_done, iter_records, read_json

log = logging.getLogger(__name__)

CHUNK = 1 << 20
FETCHED_JSON = "fetched.json"
FAILURE_JSON = "failure.json"


class FetchFailed(UserError):
    """Every source of a record failed; ``reason`` is the first source's reason (most telling)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Source:
    """One downloadable archive of a record."""

    kind: str  # "zenodo" or "github"
    name: str  # the file's key (or owner/repo-ref.zip for GitHub)
    url: str
    size: int | None = None  # declared size, when Zenodo gives one
    md5: str | None = None  # expected checksum, when Zenodo gives one


@dataclass
class FetchedArchive:
    path: Path
    source: Source
    checksum: str  # "verified" (md5 matched) or "not_available" (nothing to check against)

    def info(self) -> dict[str, Any]:
        info = asdict(self.source)
        info["checksum"] = self.checksum
        return info


@dataclass
class FetchedRecord:
    archives: list[FetchedArchive]
    fallback_reason: str | None = None  # why GitHub was used instead of Zenodo's files

    @property
    def kind(self) -> str:
        return self.archives[0].source.kind

    def source_info(self) -> dict[str, Any]:
        """The ``source`` block of the record's metadata."""
        return {"kind": self.kind, "url": self.archives[0].source.url,
                "archives": [a.info() for a in self.archives], "fallback_reason": self.fallback_reason}

    def key_prefixes(self) -> list[tuple[Path, str]]:
        """One archive: its own paths. Several: each archive's paths start with its name, so none overwrite."""
        if len(self.archives) == 1:
            return [(self.archives[0].path, "")]
        return [(a.path, f"{safe_name(a.source.name)}/") for a in self.archives]


# --- which sources ------------------------------------------------------------------------------------


def zenodo_archives(hit: dict[str, Any]) -> list[Source]:
    """The record's archive files, new (``key``/``size``/``links.self``) or old shape, sorted by name."""
    sources = []
    for entry in hit.get("files") or []:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("key") or entry.get("filename") or "")
        links = entry.get("links") or {}
        url = links.get("self") or links.get("download") or links.get("content")
        if not name or not url or not is_archive_name(name):
            continue
        size = entry.get("size", entry.get("filesize"))
        sources.append(Source("zenodo", name, str(url), int(size) if isinstance(size, (int, float)) else None,
                              parse_md5(entry.get("checksum"))))
    return sorted(sources, key=lambda s: s.name)


def parse_md5(checksum: Any) -> str | None:
    """``md5:<hex>`` or a bare 32-hex md5; anything else (sha256:..., missing) gives None."""
    if not isinstance(checksum, str):
        return None
    algorithm, _, value = checksum.partition(":")
    if not value:
        algorithm, value = "md5", algorithm
    value = value.strip().lower()
    if algorithm.lower() != "md5" or not re.fullmatch(r"[0-9a-f]{32}", value):
        return None
    return value


def github_source(hit: dict[str, Any], codeload_url: str) -> Source | None:
    """The released tag's zip on codeload, when the record names one; never the default branch."""
    repo = github_repository(hit)
    if not repo or not repo[2]:
        return None
    owner, name, ref = repo
    kind = "heads" if ref.startswith("refs/heads/") else "tags"
    ref = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    quoted = urllib.parse.quote(ref, safe="")
    url = f"{codeload_url.rstrip('/')}/{owner}/{name}/zip/refs/{kind}/{quoted}"
    return Source("github", f"{owner}/{name}-{ref}.zip", url)


def safe_name(name: str) -> str:
    """A file name made safe for a local file: ``owner/repo-v1.zip`` -> ``owner_repo-v1.zip``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "archive"
    return cleaned[:200]


# --- downloading --------------------------------------------------------------------------------------


def download_client(cfg: Config, concurrent: int = 1) -> HttpClient:
    """A client for downloads with its share of the run's request budget (``concurrent`` workers at once)."""
    return HttpClient(per_minute=share_of_budget(cfg.zenodo.rate_limit_per_min, concurrent),
                      token=read_token(cfg.zenodo.token_env), timeout_s=cfg.fetch.timeout_s,
                      retries=cfg.zenodo.retries)


def download(client: HttpClient, source: Source, folder: Path, cfg: Config) -> FetchedArchive:
    """Download one source into ``folder`` with retries; a :class:`FetchFailed` with a reason otherwise."""
    if source.size is not None and source.size > cfg.fetch.max_bytes:
        raise FetchFailed(f"{source.name} is {source.size} bytes, over fetch.max_bytes ({cfg.fetch.max_bytes})",
                          reason="too_large")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_name(source.name)
    last: FetchFailed | None = None
    for attempt in range(1, cfg.fetch.attempts + 1):
        try:
            return _download_once(client, source, target, cfg.fetch.max_bytes)
        except FetchFailed as exc:
            last = exc
            if exc.reason not in _RETRYABLE:
                raise
            log.info("%s: %s (attempt %d of %d)", source.url, exc, attempt, cfg.fetch.attempts)
    assert last is not None
    raise last


_RETRYABLE = {"checksum_mismatch", "truncated", "timeout", "connection_error"}


def _download_once(client: HttpClient, source: Source, target: Path, max_bytes: int) -> FetchedArchive:
    part = target.with_name(target.name + ".part")
    try:
        response = client.get(source.url, stream=True)
    except RequestFailed as exc:
        raise FetchFailed(str(exc), reason=exc.reason) from None
    with response:
        if response.status_code != 200:
            raise FetchFailed(f"{source.url}: HTTP {response.status_code}", reason=f"http_{response.status_code}")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchFailed(f"{source.name} is {declared} bytes, over fetch.max_bytes ({max_bytes})",
                              reason="too_large")
        digest, size = _stream_to(response, part, max_bytes, source)
    if source.md5 and digest != source.md5:
        part.unlink(missing_ok=True)
        raise FetchFailed(f"{source.name}: md5 {digest} does not match the record's {source.md5}",
                          reason="checksum_mismatch")
    os.replace(part, target)
    return FetchedArchive(target, source, "verified" if source.md5 else "not_available")


def _stream_to(response: requests.Response, part: Path, max_bytes: int, source: Source) -> tuple[str, int]:
    digest = hashlib.md5()
    size = 0
    try:
        with open(part, "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchFailed(f"{source.name} is larger than fetch.max_bytes ({max_bytes})",
                                      reason="too_large")
                digest.update(chunk)
                handle.write(chunk)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        part.unlink(missing_ok=True)
        kind = "timeout" if "timed out" in str(exc).lower() else "truncated"
        raise FetchFailed(f"{source.url}: download cut short after {size} bytes", reason=kind) from exc
    except requests.exceptions.Timeout as exc:
        part.unlink(missing_ok=True)
        raise FetchFailed(f"{source.url}: no data for too long after {size} bytes", reason="timeout") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


# --- a whole record -----------------------------------------------------------------------------------


def fetch_record(hit: dict[str, Any], folder: Path, cfg: Config, client: HttpClient | None) -> FetchedRecord:
    """Download a record's archives (or its GitHub release) into ``folder``.

    ``client`` None means offline: only what ``folder`` already holds (a cache filled earlier) is used.
    """
    cached = load_cached(folder)
    if cached is not None:
        return cached
    if client is None:
        earlier = read_json(folder / FAILURE_JSON) if folder.is_dir() else None
        if earlier:  # `zenodo-hpc fetch` tried and failed: that reason is the telling one
            raise FetchFailed(earlier["message"], reason=earlier["reason"])
        raise FetchFailed(f"record {hit.get('id')} is not in the download cache {folder} (fetch.offline)",
                          reason="not_cached")
    fetched = _fetch_sources(hit, folder, cfg, client)
    atomic_write_json(folder / FETCHED_JSON, {
        "archives": [{"file": a.path.name, **a.info()} for a in fetched.archives],
        "fallback_reason": fetched.fallback_reason})
    return fetched


def _fetch_sources(hit: dict[str, Any], folder: Path, cfg: Config, client: HttpClient) -> FetchedRecord:
    failures: list[FetchFailed] = []
    archives = zenodo_archives(hit)
    got: list[FetchedArchive] = []
    for source in archives:
        try:
            got.append(download(client, source, folder, cfg))
        except FetchFailed as exc:
            failures.append(exc)
    if got:
        if failures:  # keep what came, say what did not
            log.warning("record %s: %d of %d archives failed (%s)", hit.get("id"), len(failures), len(archives),
                        "; ".join(str(f) for f in failures))
        return FetchedRecord(got)
    fallback_reason = failures[0].reason if failures else ("no_files" if not hit.get("files") else "no_archive")
    github = github_source(hit, cfg.github.codeload_url) if cfg.github.fallback else None
    if github is not None:
        try:
            return FetchedRecord([download(client, github, folder, cfg)], fallback_reason=fallback_reason)
        except FetchFailed as exc:
            failures.append(exc)
    if failures:
        first = failures[0]
        detail = "; ".join(str(f) for f in failures)
        raise FetchFailed(f"record {hit.get('id')}: every source failed: {detail}", reason=first.reason)
    raise FetchFailed(f"record {hit.get('id')}: no archive among its {len(hit.get('files') or [])} files "
                      "and no GitHub release to fall back on", reason="no_archive")


def load_cached(folder: Path) -> FetchedRecord | None:
    """What an earlier fetch left in ``folder`` (its ``fetched.json`` and files), or None."""
    saved = read_json(folder / FETCHED_JSON) if folder.is_dir() else None
    if not saved:
        return None
    archives = []
    for entry in saved["archives"]:
        path = folder / entry["file"]
        if not path.is_file():
            return None
        source = Source(entry["kind"], entry["name"], entry["url"], entry.get("size"), entry.get("md5"))
        archives.append(FetchedArchive(path, source, entry["checksum"]))
    return FetchedRecord(archives, saved.get("fallback_reason"))


# --- fetch-first mode: `zenodo-hpc fetch RUN_DIR` ----------------------------------------------------


@dataclass
class FetchAllResult:
    cached: int = 0  # fetched now
    already: int = 0  # in the cache (or done) before
    failed: dict[str, int] | None = None
    seconds: float = 0.0


def fetch_all(run: RunDir, cfg: Config, *, progress: bool | None = None) -> FetchAllResult:
    """Download every record not yet complete into ``<run>/cache/`` (a login or transfer node's job).

    Workers with ``fetch.offline: true`` then rasterize from the cache with no network at all. A failure
    is kept beside the cache (``<cache>/<id>/failure.json``) so the worker reports its real reason.
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
            record_id = str(hit["id"])
            folder = run.cache / record_id
            if is_done(run, record_id) or load_cached(folder) is not None:
                result.already += 1
                continue
            try:
                fetch_record(hit, folder, cfg, client)
            except FetchFailed as exc:
                failed[exc.reason] += 1
                atomic_write_json(folder / FAILURE_JSON, {"reason": exc.reason, "message": str(exc)})
                log.warning("%s (%s)", exc, exc.reason)
                continue
            (folder / FAILURE_JSON).unlink(missing_ok=True)
            result.cached += 1
    finally:
        client.close()
    result.failed = dict(failed)
    result.seconds = time.monotonic() - started
    return result


def format_fetch_summary(result: FetchAllResult, run: RunDir) -> str:
    failed = sum((result.failed or {}).values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted((result.failed or {}).items()))
    return (f"fetch: {result.cached} records downloaded to {run.cache}, {result.already} already there, "
            f"{failed} failed{f' ({reasons})' if reasons else ''} in {result.seconds:.1f} s")

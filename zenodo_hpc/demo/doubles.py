"""Offline stand-ins for the Zenodo REST API and GitHub's codeload, served over real HTTP on 127.0.0.1.

A test and demo double, not part of the product: only ``zenodo_hpc.demo`` (the ``demo`` command) and the tests
import it (the import contracts in pyproject.toml keep every stage below the demo).

The harvester and fetcher talk to Zenodo with plain ``requests``; the only way to test them honestly (paging,
page-size caps, the 10,000-result window, rate limits, every record shape Zenodo has served, broken downloads)
without the network is a real server that answers the same URLs the same way. :class:`ZenodoDouble` is that
server: one ``ThreadingHTTPServer`` in a daemon thread, stdlib only, so the test suite and the offline
``zenodo-hpc demo`` can both use it. Only the base URL differs from production (``api_url`` / ``codeload_url``).

Its answers come from the real service, not from our assumptions: recorded responses kept by public clients
and Zenodo's own code, listed in ``tests/fixtures/zenodo/SOURCES.md`` (see ``docs/doubles.md``).

It can also misbehave on demand (:meth:`ZenodoDouble.fail`, :meth:`ZenodoDouble.add_raw_hit`,
:meth:`ZenodoDouble.lie_about_total`): error statuses, truncated or trickling bodies, slow answers, HTML error
pages, redirect loops, reset connections, absurd wait headers and hostile JSON, so the retry, verification and
safety paths get exercised. :class:`HeaderRecorder` is a second origin that proves a token never leaves Zenodo's.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fnmatch
import hashlib
import io
import json
import math
import mimetypes
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
import zipfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = [
    "ACCESS_RIGHTS",
    "FAULT_MODES",
    "SHAPES",
    "ZENODO_GUEST_LIMITS",
    "ZENODO_TOKEN_LIMITS",
    "HeaderRecorder",
    "RecordedRequest",
    "RequestRecord",
    "ZenodoDouble",
    "make_zip",
]

FAULT_MODES: tuple[str, ...] = (
    "500", "502", "503", "404", "truncate", "slow", "html", "redirect_loop", "reset", "trickle", "sleepy", "redirect",
    "cut", "echo",
)
SHAPES: tuple[str, ...] = ("current", "legacy", "2023", "native")  # see docs/doubles.md, "Record shapes"
ACCESS_RIGHTS: tuple[str, ...] = ("open", "embargoed", "restricted", "closed")
HIDDEN_ACCESS = frozenset({"embargoed", "restricted", "closed"})  # files not served to anonymous clients
# zenodo-rdm invenio.cfg: RATELIMIT_GUEST_USER "8000 per hour;133 per minute", "records.search": "30 per minute";
# invenio-app's RATELIMIT_AUTHENTICATED_USER default "5000 per hour;100 per minute" (see SOURCES.md).
ZENODO_GUEST_LIMITS: dict[str, float] = {"rate_per_min": 133, "rate_per_hour": 8000, "search_rate_per_min": 30}
ZENODO_TOKEN_LIMITS: dict[str, float] = {"rate_per_min": 100, "rate_per_hour": 5000, "search_rate_per_min": 30}
LOOP_MARKER = "double_redirect_loop"  # query parameter that keeps a redirect loop going once it started
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # earliest date a zip can hold: fixed so archives are byte-identical
DEFAULT_PAGE_SIZE = 25  # invenio-records-resources SearchOptions: default_results_per_page
_TRUTHY = {"", "1", "true", "yes", "on"}  # a bare ``all_versions`` flag means true, as on Zenodo
_FALSY = {"0", "false", "no", "off"}
# Sort options the double orders by: name -> (field, descending) pairs, from zenodo-rdm's RDM_SORT_OPTIONS.
# "bestmatch" (relevance) is not modelled: it orders like "newest", which is what Zenodo uses without a query.
_SORTS: dict[str, tuple[tuple[str, bool], ...]] = {
    "newest": (("created", True),),
    "mostrecent": (("created", True),),
    "bestmatch": (("created", True),),
    "oldest": (("created", False),),
    "-mostrecent": (("created", False),),
    "updated-desc": (("updated", True),),
    "updated-asc": (("updated", False),),
    "publication-desc": (("publication_date", True), ("created", True)),
    "publication_date": (("publication_date", True), ("created", True)),
    "publication-asc": (("publication_date", False), ("created", False)),
    "-publication_date": (("publication_date", False), ("created", False)),
}
# Accepted by Zenodo, but ordered by data the double does not hold (views, versions, journals, relevance).
_UNMODELLED_SORTS = frozenset({
    "-bestmatch", "version", "-version", "mostviewed", "-mostviewed", "mostdownloaded", "newestactivity",
    "oldestactivity", "journal", "-journal", "journal-desc", "conference-desc", "conference_session",
    "-conference_session",
})
_RANGE = re.compile(
    r"(?P<field>[\w.]+):(?P<open>[\[{])\s*(?P<low>[^\s\]}]+)\s+TO\s+(?P<high>[^\s\]}]+)\s*(?P<close>[\]}])"
)
_TOKEN = re.compile(r'"[^"]*"|\S+')
_RECIDS = re.compile(r"recid:(?:\(\s*\d+(?:\s+OR\s+\d+)*\s*\)|\d+)")  # ZENODO_LEGACY_SEARCH_MAP: recid -> id
_RANGE_FIELDS = ("created", "updated")
_KEY_SAFE = "/!$&'()*+,;=:@"  # zenodo-rdm ZenodoSchema.dump_files: quote(key, safe=...)
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>\n"
    b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"
)
_NOT_FOUND = (  # werkzeug's NotFound description, answered by invenio-rest's 404 handler
    "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again."
)
_VALIDATION = "A validation error occurred."
_UNAUTHORIZED = (  # werkzeug's Unauthorized description: the 401 that developers.zenodo.org documents
    "The server could not verify that you are authorized to access the URL requested. You either supplied the wrong "
    "credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials required."
)
_MISSING_FILES = "Missing uploaded files. To disable files for this record please mark it as metadata-only."
DEPOSITIONS = "/api/deposit/depositions"
DEPOSIT_OWNER = 1  # every known token is the same user: the owner of every deposition
# The legacy upload types (developers.zenodo.org, "Deposit metadata"); the double refuses others when publishing.
UPLOAD_TYPES: tuple[str, ...] = (
    "publication", "poster", "presentation", "dataset", "image", "video", "software", "lesson", "physicalobject",
    "other",
)
# Licenses the double knows (a few of zenodo-rdm's ``legacy_to_rdm_map.json``, and its aliases ``cc-by``, ``cc-zero``,
# ``cc-by-sa``): legacy id, lower case -> the id the legacy serializer shows (``rdm_to_legacy``; CC0 shows as cc-zero,
# as recorded in 2024).
_LICENSES: dict[str, str] = {
    "cc-by-4.0": "cc-by-4.0", "cc-by": "cc-by-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0", "cc-by-sa": "cc-by-sa-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0", "cc0-1.0": "cc-zero", "cc-zero": "cc-zero", "mit": "mit",
    "apache-2.0": "apache-2.0", "bsd-3-clause": "bsd-3-clause", "gpl-3.0": "gpl-3.0", "odc-by-1.0": "odc-by-1.0",
    "odbl-1.0": "odbl-1.0",
}
_DEPOSIT_SORTS: dict[str, tuple[str, bool]] = {  # invenio-drafts-resources SearchDraftsOptions + the legacy names
    "bestmatch": ("created", True), "newest": ("created", True), "mostrecent": ("created", True),
    "oldest": ("created", False), "-mostrecent": ("created", False), "updated-desc": ("modified", True),
    "updated-asc": ("modified", False),
}


@dataclass(frozen=True)
class RequestRecord:
    """One request as the double saw it, so tests can assert on what the client really sent.

    ``status`` is 0 when the connection was reset without an answer; ``fault`` names the injected fault
    mode, if any. No token is ever stored: ``authenticated`` says whether a known token came, ``authorization``
    whether an ``Authorization`` header came at all, and ``accept`` is the ``Accept`` header.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    authenticated: bool
    time: float
    fault: str | None = None
    authorization: bool = False
    accept: str | None = None


@dataclass
class _Plan:
    """What the handler must put on the wire: decided under the lock, written outside it."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: str = "send"  # "send", "truncate", "trickle" (one byte per ``delay``) or "reset" (RST, no answer)
    delay: float = 0.0


@dataclass(frozen=True)
class _Fault:
    mode: str
    seconds: float = 0.0
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    location: str = ""


@dataclass(frozen=True)
class _Incoming:
    """A parsed request: decoded path, query (last value per name, token removed) and what it carried."""

    method: str
    path: str
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    authenticated: bool
    authorization: bool
    accept: str | None
    body: bytes = field(default=b"", repr=False)
    content_type: str | None = None
    credential: str | None = field(default=None, repr=False)  # only for the ``echo`` fault; never logged


@dataclass
class _Record:
    """A stored record: the hit exactly as served, and what the file URLs need."""

    record_id: int
    hit: dict[str, Any]
    shape: str
    verified: bool = False
    hidden: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)  # "md5:<hex>" served per key (may be wrong on purpose)
    bucket: str | None = None


@dataclass(frozen=True)
class _RawHit:
    """A hit added verbatim as JSON text: served as given, wherever it sits in a page."""

    text: str
    record_id: str | None


@dataclass
class _DepositFile:
    """A file of a deposition: the bytes as uploaded, and the ids Zenodo gives it."""

    file_id: str
    key: str
    data: bytes
    md5: str
    version_id: str
    created: str


@dataclass
class _Deposit:
    """A deposition: a draft (never published) or a published version. ``created``/``modified`` are ISO times."""

    deposit_id: int
    concept: int
    created: str
    modified: str
    bucket: str
    metadata: dict[str, Any]
    files: dict[str, _DepositFile] = field(default_factory=dict)
    published: bool = False
    doi: str | None = None


@dataclass
class _Concept:
    """What InvenioRDM keeps on the parent: the published versions (oldest first), the pending draft, the DOI."""

    concept_id: int
    versions: list[int] = field(default_factory=list)
    next_draft: int | None = None
    doi: str | None = None  # registered when the first version is published


class _HttpError(Exception):
    """Ends request handling with a JSON error answer ``{"status": .., "message": .., "errors"?: ..}``."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class _Gone(_HttpError):
    """410 of a deleted record: invenio-rdm-records' ``HTTPJSONException`` puts the tombstone beside status and
    message."""

    def __init__(self, tombstone: dict[str, Any]) -> None:
        super().__init__(410, "Record deleted")
        self.tombstone = tombstone

    def payload(self) -> dict[str, Any]:
        return {**super().payload(), "tombstone": copy.deepcopy(self.tombstone)}


def _field_error(name: str, message: str) -> _HttpError:
    """Zenodo's answer to a bad query parameter: marshmallow's validation error, as flask-resources words it."""
    return _HttpError(400, _VALIDATION, [{"field": name, "messages": [message]}])


class _SlidingWindow:
    """A moving window like flask-limiter's (limits ``MovingWindowRateLimiter``), with its headers."""

    def __init__(self, limit: int, span: float, label: str) -> None:
        self.limit = limit
        self.span = span
        self.label = label  # what flask-limiter puts in the 429 message, e.g. "133 per 1 minute"
        self.times: deque[tuple[float, float]] = deque()  # (monotonic, wall clock) of each counted request

    def prune(self, now: float) -> None:
        while self.times and self.times[0][0] <= now - self.span:
            self.times.popleft()

    def is_full(self, now: float) -> bool:
        self.prune(now)
        return len(self.times) >= self.limit

    def admit(self, now: float) -> None:
        self.times.append((now, time.time() - (time.monotonic() - now)))

    def remaining(self, now: float) -> int:
        self.prune(now)
        return max(0, self.limit - len(self.times))

    def reset_at(self, now: float) -> int:
        """``int(window_start + expiry + 1)``: flask-limiter's ``RequestLimit.reset_at``, in epoch seconds."""
        self.prune(now)
        start = self.times[0][1] if self.times else time.time()
        return int(start + self.span + 1)

    def headers(self, now: float, *, retry_after: bool) -> list[tuple[str, str]]:
        """The headers flask-limiter adds to every answer under a limit (``Retry-After`` too, not only on 429)."""
        reset = self.reset_at(now)
        headers = [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining(now))),
            ("X-RateLimit-Reset", str(reset)),
        ]
        if retry_after:
            headers.append(("Retry-After", str(int(reset - time.time()))))
        return headers


class ZenodoDouble:
    """A Zenodo API (``/api``) and GitHub codeload (``/codeload``) double on one local HTTP server.

    The port is bound when the double is created, so ``api_url`` and the file links built by
    :meth:`add_record` are valid before :meth:`start`; a stopped double cannot be restarted.
    Rate limits apply to ``/api`` only: codeload is another service (github.com) in production.
    ``rate_window_seconds`` shortens the 60 s window (and the hour, in proportion, unless ``hour_window_seconds``
    gives the "hour" its own length) for tests that must see a slot free up or the hour run out.
    ``ZenodoDouble(**ZENODO_GUEST_LIMITS)`` gives Zenodo's own numbers.
    """

    def __init__(
        self,
        *,
        page_cap_anonymous: int = 25,
        page_cap_token: int = 100,
        window: int = 10_000,
        rate_per_min: float | None = None,
        search_rate_per_min: float | None = None,
        send_retry_after: bool = True,
        tokens: Iterable[str] = (),
        rate_window_seconds: float = 60.0,
        rate_per_hour: float | None = None,
        hour_window_seconds: float | None = None,
        doi_prefix: str = "10.5281",
        unauthorized_status: int = 403,
        first_deposit_id: int = 4_000_000,
    ) -> None:
        self.page_cap_anonymous = page_cap_anonymous
        self.page_cap_token = page_cap_token
        self.window = window
        self.send_retry_after = send_retry_after
        self._tokens = frozenset(tokens)
        self._minute = _window_for(rate_per_min, rate_window_seconds, "minute")
        self._hour = _window_for(rate_per_hour, hour_window_seconds or rate_window_seconds * 60, "hour")
        self._search_window = _window_for(search_rate_per_min, rate_window_seconds, "minute")
        self._lock = threading.Lock()
        self._records: dict[int, _Record] = {}
        self._tombstones: dict[int, dict[str, Any]] = {}  # deleted records: their tombstone (delete_record)
        self._private: set[int] = set()  # records whose access.record is restricted (restrict_record)
        self._raw_hits: list[_RawHit] = []
        self._lied_total: int | None = None
        self._buckets: dict[str, int] = {}
        self._codeload: dict[tuple[str, str, str, str], bytes] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        if unauthorized_status not in (401, 403):
            raise ValueError("unauthorized_status must be 401 (the documented answer) or 403 (zenodo-rdm's)")
        self.doi_prefix = doi_prefix
        self.unauthorized_status = unauthorized_status
        self._next_deposit_id = first_deposit_id
        self._deposits: dict[int, _Deposit] = {}
        self._concepts: dict[int, _Concept] = {}
        self._deposit_buckets: dict[str, int] = {}
        self._link_overrides: dict[str, str] = {}
        self._drafts_unlisted = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.requests: list[RequestRecord] = []
        self._server = _Server(self)
        base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.ui_url = base  # where Zenodo's web pages live (``links.html``); the API is under ``/api``
        self.api_url = f"{base}/api"
        self.codeload_url = f"{base}/codeload"

    # ----------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> ZenodoDouble:
        """Serve in a daemon thread, so a forgotten double never keeps the test process alive."""
        if self._stopped:
            raise RuntimeError("this ZenodoDouble was stopped; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="zenodo-double", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the port and every open connection (also wakes slow and trickling answers)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.close_open_connections()
        self._server.server_close()

    def __enter__(self) -> ZenodoDouble:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------- content

    def add_record(
        self,
        hit: dict[str, Any],
        files: Mapping[str, bytes] | None = None,
        *,
        legacy: bool = False,
        checksums: Mapping[str, str] | None = None,
        shape: str | None = None,
        file_links: Mapping[str, str] | None = None,
        verified: bool = False,
    ) -> dict[str, Any]:
        """Store a hit (a copy) and serve its files in one of Zenodo's record shapes; returns the hit as served.

        ``shape`` is one of :data:`SHAPES` (default ``"current"``); ``legacy=True`` is the older spelling of
        ``shape="2023"``. ``checksums`` overrides the md5 of some keys, to serve a wrong one. ``file_links``
        replaces the content link of some keys (another host, ``file://``...). A hit whose
        ``metadata.access_right`` is embargoed, restricted or closed shows no files and its file URLs answer
        403, as on Zenodo. ``verified`` sorts it first, as Zenodo does for verified owners. Without ``files``
        the hit's own ``files`` are kept as given.
        """
        record_id = hit.get("id")
        if not isinstance(record_id, int) or isinstance(record_id, bool):
            raise ValueError(f"a hit needs an integer 'id', got {record_id!r}")
        shape = _resolve_shape(shape, legacy)
        for name, given in (("checksums", checksums), ("file_links", file_links)):
            unknown = sorted(set(given or {}) - set(files or {}))
            if unknown:
                raise ValueError(f"{name} given for keys that are not files: {unknown}")
        record = _Record(record_id, copy.deepcopy(hit), shape, verified=verified, hidden=_hides_files(hit))
        with self._lock:
            if files is not None:
                self._store_files(record, files, dict(checksums or {}))
            self._finish_hit(record, files is not None, dict(file_links or {}))
            self._records[record_id] = record
        return copy.deepcopy(record.hit)

    def _store_files(self, record: _Record, files: Mapping[str, bytes], checksums: dict[str, str]) -> None:
        """Keep the bytes and the md5 to serve for each key; a legacy record also gets a bucket."""
        for key, data in files.items():
            record.files[key] = bytes(data)
            given = checksums.get(key)
            record.checksums[key] = given if given and ":" in given else f"md5:{given or _md5(data)}"
        if record.shape == "legacy":
            record.bucket = str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record.record_id}"))
            self._buckets[record.bucket] = record.record_id

    def _finish_hit(self, record: _Record, has_files: bool, file_links: dict[str, str]) -> None:
        """Links to this server, and the ``files`` of the shape (none shown when access is not open)."""
        hit, rid = record.hit, record.record_id
        links = hit.setdefault("links", {})
        links["self"] = f"{self.api_url}/records/{rid}"
        if record.shape == "legacy" and record.bucket:
            links["bucket"] = f"{self.api_url}/files/{record.bucket}"
        elif record.shape != "legacy":
            links["files"] = f"{self.api_url}/records/{rid}/files"
        if record.shape == "native":
            hit["id"] = str(rid)
        if has_files:
            entries = [self._file_entry(record, key, file_links.get(key)) for key in record.files]
            hit["files"] = _files_value(record.shape, entries, record.hidden)
            if hit["files"] is None:
                del hit["files"]
        elif record.shape == "native" and not isinstance(hit.get("files"), Mapping):
            hit["files"] = {"enabled": False}  # a native record without files (invenio-rdm-records FilesSchema)
        elif "files" not in hit and record.shape != "legacy":
            hit["files"] = []

    def _file_entry(self, record: _Record, key: str, link: str | None) -> dict[str, Any]:
        """One file as the record's shape lists it; ``link`` replaces the content URL (a hostile link)."""
        data, checksum = record.files[key], record.checksums[key]
        content = link or self._content_url(record, key)
        if record.shape == "legacy":
            return {"bucket": record.bucket, "checksum": checksum, "key": key, "links": {"self": content},
                    "size": len(data), "type": _extension(key)}
        if record.shape == "2023":  # zenodo-rdm c23ce5a: checksum.split(":", 1)[1]
            return {"id": _file_id(record, key), "filename": key, "filesize": len(data),
                    "checksum": checksum.split(":", 1)[1],
                    "links": {"self": self._metadata_url(record, key), "download": content}}
        if record.shape == "native":
            return {"id": _file_id(record, key), "checksum": checksum, "ext": _extension(key),
                    "size": len(data), "mimetype": _mimetype(key), "storage_class": "L", "key": key,
                    "metadata": None, "access": {"hidden": False},
                    "links": {"self": self._metadata_url(record, key), "content": content}}
        return {"id": _file_id(record, key), "key": key, "size": len(data), "checksum": checksum,
                "links": {"self": content}}

    def _content_url(self, record: _Record, key: str) -> str:
        if record.shape == "legacy":
            return f"{self.api_url}/files/{record.bucket}/{quote(key, safe=_KEY_SAFE)}"
        return f"{self._metadata_url(record, key)}/content"

    def _metadata_url(self, record: _Record, key: str) -> str:
        return f"{self.api_url}/records/{record.record_id}/files/{quote(key, safe=_KEY_SAFE)}"

    def delete_record(self, record_id: int, *, reason: str = "spam", note: str = "", visible: bool = True) -> None:
        """Delete a published record as Zenodo's curators do: it leaves the search, and ``/api/records/<id>`` and its
        file URLs answer ``410`` with its tombstone (``404 Record not found`` when the tombstone is not visible).

        invenio-rdm-records ``RecordDeletedException`` handler (``resources/config.py``) with its own
        ``HTTPJSONException`` (``resources/errors.py``: extra fields join the body) and ``Tombstone.dump``
        (``records/systemfields/tombstone.py``); ``reason`` is an id of its ``removal_reasons`` vocabulary
        (``spam``, ``copyright``, ``take-down-request``, ...). See tests/fixtures/zenodo/SOURCES.md.
        """
        with self._lock:
            record = self._records.pop(record_id)
            title = str((record.hit.get("metadata") or {}).get("title") or "")
            self._tombstones[record_id] = {
                "note": note, "removed_by": {"user": "1"}, "removal_date": _now(),
                "citation_text": f"Doe, Jane. {title}. Zenodo. https://doi.org/{self.doi_prefix}/zenodo.{record_id}",
                "is_visible": visible, "removal_reason": {"id": reason}}

    def restrict_record(self, record_id: int, *, whole_record: bool = False) -> None:
        """The owner restricts a record that was open. By default its files (``access.files``, what Zenodo allows:
        zenodo-rdm's ``RDM_ALLOW_RESTRICTED_RECORDS = False``): it stays in the search, now shown with
        ``access_right: restricted`` and no files, and its file URLs answer 403. ``whole_record`` restricts
        ``access.record`` too: it leaves the search and ``/api/records/<id>`` answers ``403 Permission denied.``
        (invenio-records-resources ``PermissionDeniedError``), as on InvenioRDM sites that allow it."""
        with self._lock:
            record = self._records[record_id]
            hit = record.hit
            if isinstance(hit.get("metadata"), dict):
                hit["metadata"]["access_right"] = "restricted"
            if isinstance(hit.get("access"), dict):
                hit["access"]["files"] = "restricted"
            for key in ("updated", "modified"):
                if key in hit:
                    hit[key] = _now()
            record.hidden = True
            self._finish_hit(record, bool(record.files), {})
            if whole_record:
                self._private.add(record_id)

    def add_raw_hit(self, json_text: str, *, record_id: str | int | None = None) -> None:
        """Serve ``json_text`` verbatim as one more search hit (and at ``/api/records/<record_id>`` if given).

        For hostile answers the ``json`` module would not write: ``"size": Infinity``, ``"metadata": "x"``, odd
        or duplicate ids, even broken JSON. Raw hits skip filters and version de-duplication, come after the
        ordinary hits in the order they were added, and count in ``total``.
        """
        if not isinstance(json_text, str):
            raise TypeError("json_text must be a str: it is written to the page as it is")
        with self._lock:
            self._raw_hits.append(_RawHit(json_text, None if record_id is None else str(record_id)))

    def lie_about_total(self, total: int | None) -> None:
        """Report ``total`` in every search and page on to it, repeating the first page's hits past the real end.

        A client that trusts ``total`` or ``links.next`` to stop never stops; ``None`` tells the truth again.
        """
        with self._lock:
            self._lied_total = total

    def add_codeload(self, owner: str, repo: str, ref: str, data: bytes, *, kind: str = "tags") -> None:
        """Serve ``data`` (a zip, see :func:`make_zip`) at ``{codeload}/<owner>/<repo>/zip/refs/<kind>/<ref>``."""
        if kind not in ("tags", "heads"):
            raise ValueError(f"kind must be 'tags' or 'heads', not {kind!r}")
        with self._lock:
            self._codeload[(owner, repo, kind, ref)] = bytes(data)

    # ----------------------------------------------------------------------------------------------- faults

    def fail(self, path: str, mode: str, times: int = 1, **opts: Any) -> None:
        """Make the next ``times`` requests to ``path`` misbehave (queued after faults already set for it).

        ``path`` is a URL path such as ``/api/records/5/files/x.zip/content`` (a full URL is accepted too;
        quoting does not matter). Modes: :data:`FAULT_MODES`. Options: ``slow`` takes ``seconds=`` (wait before
        answering, default 1.0); ``trickle`` takes ``seconds=`` (per byte, default 1.0); ``sleepy`` takes
        ``headers=`` (sent as given, e.g. ``{"Retry-After": "1000000000"}``) and ``status=`` (default 429; a 2xx
        status keeps the normal answer and only adds the headers); ``redirect`` takes ``to=`` (a URL, answered
        with a 302). A ``redirect_loop`` keeps redirecting the client's follow-up requests without using up
        ``times``. ``cut`` reads half of the request's body, then resets the connection (an upload cut off in the
        middle); ``echo`` takes ``status=`` (default 400) and answers a JSON error that repeats the credential the
        request carried, raw, as an HTTP ``Basic`` credential (base64 of ``zenodo-hpc:<token>``) and URL-quoted,
        as a careless server or proxy might. A ``path`` holding ``*`` is a pattern (:func:`fnmatch.fnmatchcase`)
        matched when no fault is queued for the exact path, e.g. ``/api/files/*/image.sqsh``.
        """
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose from {', '.join(FAULT_MODES)}")
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        fault = _make_fault(mode, opts)
        with self._lock:
            self._faults.setdefault(_normalize_path(path), deque()).extend(fault for _ in range(times))

    def reset_log(self) -> None:
        """Forget the requests seen so far, so a test can assert on the next step alone."""
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------------------------------------ hit builder

    @staticmethod
    def make_hit(
        record_id: int,
        *,
        created: str,
        title: str | None = None,
        github: tuple[str, str, str] | None = None,
        conceptrecid: str | None = None,
        updated: str | None = None,
        resource_type: str = "software",
        access_right: str = "open",
        related: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """A hit with the keys of today's Zenodo answer (``record_current_2025.json``), without files.

        ``created``/``updated`` accept ISO dates or datetimes and are written the way Zenodo writes them
        (``2018-03-01T12:00:00.000000+00:00``). ``github=(owner, repo, tag)`` adds the related identifier
        the Zenodo-GitHub integration leaves; ``related`` adds others as given (e.g. a GitHub URL with
        relation ``isIdenticalTo``). ``access_right`` is one of :data:`ACCESS_RIGHTS`.
        """
        if access_right not in ACCESS_RIGHTS:
            raise ValueError(f"access_right must be one of {ACCESS_RIGHTS}, not {access_right!r}")
        created_text = _zenodo_timestamp(created)
        updated_text = _zenodo_timestamp(updated) if updated is not None else created_text
        concept = conceptrecid if conceptrecid is not None else str(record_id)
        record_title = title if title is not None else f"Software record {record_id}"
        return {
            "created": created_text,
            "modified": updated_text,
            "id": record_id,
            "conceptrecid": concept,
            "doi": f"10.5281/zenodo.{record_id}",
            "conceptdoi": f"10.5281/zenodo.{concept}",
            "doi_url": f"https://doi.org/10.5281/zenodo.{record_id}",
            "metadata": _hit_metadata(record_id, record_title, created_text, resource_type, access_right,
                                      _related_identifiers(github, related), github),
            "title": record_title,
            "links": {},
            "updated": updated_text,
            "recid": str(record_id),
            "revision": 1,
            "files": [],
            "swh": {},
            "owners": [{"id": "1"}],
            "status": "published",
            "stats": dict.fromkeys(("downloads", "unique_downloads", "views", "unique_views", "version_downloads",
                                    "version_unique_downloads", "version_unique_views", "version_views"), 0),
            "state": "done",
            "submitted": True,
        }

    # --------------------------------------------------------------------------------- request processing

    def _plan(self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> _Plan:
        """Decide the whole answer to one request and log it; called by the handler for every request."""
        arrival = time.monotonic()
        incoming = self._parse_incoming(method, target, headers, body)
        with self._lock:
            fault = self._take_fault(incoming)
            plan = self._fault_plan(fault, incoming) if fault else None
            if plan is not None:  # the fault replaced the answer; it still used up a slot of the rate limit
                self._count(incoming.path, arrival)
            else:
                plan = self._normal_plan(incoming, arrival)
                if fault is not None:
                    _alter(plan, fault)
            self.requests.append(_log_entry(incoming, plan, arrival, fault))
        return plan

    def _parse_incoming(self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> _Incoming:
        """Split the target, drop any ``access_token`` from what is kept, and check the token."""
        parts = urlsplit(target)
        items = parse_qsl(parts.query, keep_blank_values=True)
        authorization = headers.get("Authorization")
        token = _bearer_token(authorization)
        token_params = [value for name, value in items if name == "access_token"]
        if token is None and token_params:
            token = token_params[-1]
        kept = [(name, value) for name, value in items if name != "access_token"]
        return _Incoming(
            method=method,
            path=unquote(parts.path),
            query=dict(kept),
            query_items=kept,
            authenticated=token is not None and token in self._tokens,
            authorization=authorization is not None,
            accept=headers.get("Accept"),
            body=body,
            content_type=headers.get("Content-Type"),
            credential=token,
        )

    def _take_fault(self, incoming: _Incoming) -> _Fault | None:
        """The fault for this request: a running redirect loop, else the next one queued for the path."""
        if LOOP_MARKER in incoming.query:
            return _Fault("redirect_loop")
        return self._pop_fault(incoming.path)

    def _pop_fault(self, path: str, only: str | None = None) -> _Fault | None:
        """The next fault queued for ``path`` (exactly, else the first pattern matching it); with ``only``, just
        a fault of that mode (the others stay queued)."""
        key = path if self._faults.get(path) else next(
            (k for k in self._faults if "*" in k and fnmatch.fnmatchcase(path, k)), None)
        if key is None or (only is not None and self._faults[key][0].mode != only):
            return None
        queue = self._faults[key]
        fault = queue.popleft()
        if not queue:
            del self._faults[key]
        return fault

    def _take_cut(self, method: str, target: str, headers: Mapping[str, str]) -> bool:
        """Whether this request's upload is to be cut off (a ``cut`` fault): logged here, as the plan never runs."""
        incoming = self._parse_incoming(method, target, headers)
        with self._lock:
            if self._pop_fault(incoming.path, only="cut") is None:
                return False
            self.requests.append(_log_entry(incoming, _Plan(0, action="reset"), time.monotonic(), _Fault("cut")))
        return True

    def _fault_plan(self, fault: _Fault, incoming: _Incoming) -> _Plan | None:
        """The answer of a fault that replaces the normal one (None for faults that only alter it)."""
        if fault.mode in ("500", "502", "503", "404"):
            status = int(fault.mode)
            return _json_plan(status, {"status": status, "message": f"Injected fault: HTTP {status}."})
        if fault.mode == "html":
            return _Plan(200, _HTML_ERROR_PAGE, [("Content-Type", "text/html; charset=utf-8")])
        if fault.mode == "redirect_loop":
            items = list(incoming.query_items)
            if LOOP_MARKER not in incoming.query:
                items.append((LOOP_MARKER, "1"))
            location = f"{quote(incoming.path)}?{urlencode(items)}"
            return _Plan(302, b"", [("Location", location), ("Content-Type", "text/html; charset=utf-8")])
        if fault.mode == "redirect":
            return _Plan(302, b"", [("Location", fault.location), ("Content-Type", "text/html; charset=utf-8")])
        if fault.mode == "sleepy" and not 200 <= fault.status < 300:
            plan = _json_plan(fault.status, {"message": f"Injected fault: HTTP {fault.status}.",
                                             "status": fault.status})
            plan.headers.extend(fault.headers)
            return plan
        if fault.mode == "reset":
            return _Plan(0, action="reset")
        if fault.mode == "echo":
            return _json_plan(fault.status, {"status": fault.status, "message": _echoed(incoming.credential)})
        return None

    def _normal_plan(self, incoming: _Incoming, now: float) -> _Plan:
        """The answer a healthy server gives: rate limit, authentication, then routing."""
        if not _is_api(incoming.path):
            return self._codeload_plan(incoming)
        windows = self._windows_for(incoming.path)
        breached = _admit(windows, now)
        shown = breached or (windows[0] if windows else None)
        if breached is not None:
            plan = _json_plan(429, {"message": breached.label, "status": 429})  # invenio-rest's jsonify: sorted
        else:
            plan = self._answer(incoming)
        if shown is not None:
            plan.headers.extend(shown.headers(now, retry_after=self.send_retry_after))
        return plan

    def _answer(self, incoming: _Incoming) -> _Plan:
        """Route the request. A token that is not known makes it anonymous, not a 401: invenio-oauth2server's
        ``verify_oauth_token_and_set_current_user`` only sets a user when the token verifies."""
        try:
            deposit = self._route_deposit(incoming)
            if deposit is not None:
                return deposit
            if incoming.method not in ("GET", "HEAD"):
                raise _HttpError(405, "The method is not allowed for the requested URL.")
            return self._route_api(incoming)
        except _HttpError as error:
            return _json_plan(error.status, error.payload())

    def _count(self, path: str, now: float) -> None:
        """Count an ``/api`` request answered by a fault in the windows that apply to its path."""
        if _is_api(path):
            _admit(self._windows_for(path), now)

    def _windows_for(self, path: str) -> list[_SlidingWindow]:
        """invenio-app's ``set_rate_limit``: an endpoint's own limit replaces the user limits, not adds to them."""
        if _is_search(path) and self._search_window is not None:
            return [self._search_window]
        return [w for w in (self._minute, self._hour) if w is not None]

    def _route_api(self, incoming: _Incoming) -> _Plan:
        path = incoming.path
        if _is_search(path):
            return self._search_plan(incoming)
        match = re.fullmatch(r"/api/records/([^/]+)/?", path)
        if match:
            return self._record_plan(match.group(1))
        match = re.fullmatch(r"/api/records/(\d+)/files/(.+)/content", path)
        if match:
            return self._file_plan(self._file_record(int(match.group(1)), match.group(2)), match.group(2))
        match = re.fullmatch(r"/api/records/(\d+)/files/(.+)", path)
        if match:
            return self._file_metadata_plan(int(match.group(1)), match.group(2))
        match = re.fullmatch(r"/api/files/([0-9a-f-]+)/(.+)", path)
        if match and match.group(1) in self._buckets:
            record = self._file_record(self._buckets[match.group(1)], match.group(2))
            return self._file_plan(record, match.group(2))
        raise _HttpError(404, _NOT_FOUND)

    def _record_plan(self, wanted: str) -> _Plan:
        """``GET /api/records/<id>``: a stored hit, or a raw one added with that ``record_id``."""
        if wanted.isdigit() and int(wanted) in self._records:
            if int(wanted) in self._private:
                raise _HttpError(403, "Permission denied.")
            return _json_plan(200, self._records[int(wanted)].hit)
        if wanted.isdigit() and int(wanted) in self._tombstones:
            self._raise_deleted(int(wanted))
        for raw in reversed(self._raw_hits):
            if raw.record_id == wanted:
                return _Plan(200, raw.text.encode(), [("Content-Type", "application/json")])
        raise _HttpError(404, "The persistent identifier does not exist.")

    def _file_record(self, record_id: int, key: str) -> _Record:
        """The record of a file URL: 404 for an unknown record or key, 403 when its files are not open."""
        record = self._records.get(record_id)
        if record is None and record_id in self._tombstones:
            self._raise_deleted(record_id)
        if record is None:
            raise _HttpError(404, "The persistent identifier does not exist.")
        if record.hidden:
            raise _HttpError(403, "Permission denied.")
        if key not in record.files:
            raise _HttpError(404, f"Record '{record_id}' has no file '{key}'.")
        return record

    def _raise_deleted(self, record_id: int) -> None:
        """The answer for a deleted record: 410 and its tombstone, or 404 when the tombstone is hidden."""
        tombstone = self._tombstones[record_id]
        if not tombstone["is_visible"]:
            raise _HttpError(404, "Record not found")
        raise _Gone(tombstone)

    def _file_plan(self, record: _Record, key: str) -> _Plan:
        filename = key.rsplit("/", 1)[-1]
        return _Plan(
            200,
            record.files[key],
            [("Content-Type", "application/octet-stream"),
             ("Content-Disposition", f"attachment; filename={quote(filename)}")],
        )

    def _file_metadata_plan(self, record_id: int, key: str) -> _Plan:
        """``/api/records/<id>/files/<key>``: the file's metadata (the 2023 ``links.self``), since the migration."""
        record = self._file_record(record_id, key)
        if record.shape == "legacy":
            raise _HttpError(404, _NOT_FOUND)
        return _json_plan(200, self._file_metadata(record, key))

    def _file_metadata(self, record: _Record, key: str) -> dict[str, Any]:
        """The keys of ``file_metadata_2025.json``, without the draft-only ``commit`` link."""
        when = {name: str(record.hit.get(name) or "") for name in ("created", "updated")}
        return {
            **when,
            "mimetype": _mimetype(key),
            "version_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record.record_id}/{key}/version")),
            "file_id": _file_id(record, key),
            "bucket_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record.record_id}/bucket")),
            "metadata": None,
            "access": {"hidden": False},
            "links": {"self": self._metadata_url(record, key), "content": self._content_url(record, key)},
            "key": key,
            "checksum": record.checksums[key],
            "size": len(record.files[key]),
            "transfer": {"type": "L"},
            "status": "completed",
            "storage_class": "L",
        }

    def _codeload_plan(self, incoming: _Incoming) -> _Plan:
        """GitHub codeload: ``/<owner>/<repo>/zip/refs/{tags,heads}/<ref>`` (and the short ``zip/<ref>``)."""
        match = re.fullmatch(r"/codeload/([^/]+)/([^/]+)/zip/(?:refs/(tags|heads)/)?(.+)", incoming.path)
        data = None
        if match and incoming.method in ("GET", "HEAD"):
            owner, repo, kind, ref = match.groups()
            for candidate in (kind,) if kind else ("tags", "heads"):
                data = self._codeload.get((owner, repo, candidate, ref))
                if data is not None:
                    break
        if data is None:
            return _Plan(404, b"404: Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        name = f"{repo}-{ref.replace('/', '-')}.zip"
        return _Plan(200, data, [("Content-Type", "application/zip"),
                                 ("Content-Disposition", f"attachment; filename={name}")])

    # ------------------------------------------------------------------------------------------- deposit API

    def deposition(self, deposit_id: int) -> dict[str, Any]:
        """A deposition as ``GET {api}/deposit/depositions/<id>`` serves it (a copy); KeyError when unknown."""
        with self._lock:
            return self._deposit_json(self._deposits[deposit_id])

    def depositions(self) -> list[dict[str, Any]]:
        """Every deposition (drafts and published versions, of every concept), in creation order."""
        with self._lock:
            return [self._deposit_json(d) for d in self._deposits.values()]

    def deposit_file(self, deposit_id: int, key: str) -> bytes:
        """The bytes a deposition holds under ``key``, as they were uploaded; KeyError when it has no such file."""
        with self._lock:
            return self._deposits[deposit_id].files[key].data

    def override_deposit_links(self, /, **links: str) -> None:
        """Show these ``links`` (``bucket=``, ``latest_draft=``, ``html=``, ...) in every deposition answer from now
        on, whatever they point to: a hostile or broken server. Routing is not changed. No argument: stop."""
        with self._lock:
            self._link_overrides = dict(links)

    def hide_drafts_from_search(self, hidden: bool = True) -> None:
        """Leave unpublished drafts out of ``GET {api}/deposit/depositions``, as a search index that has not caught
        up yet would (the drafts still exist and answer at their own URLs)."""
        with self._lock:
            self._drafts_unlisted = hidden

    def _route_deposit(self, incoming: _Incoming) -> _Plan | None:
        """The legacy deposit API (``/api/deposit/depositions``) and its buckets (``/api/files/<bucket>/<key>``),
        as zenodo-rdm's ``legacy/resources.py`` routes them; None for any other URL."""
        path = incoming.path
        bucket = re.fullmatch(r"/api/files/([0-9a-f-]+)(?:/(.*))?", path)
        in_bucket = bucket is not None and bucket.group(1) in self._deposit_buckets
        if not (in_bucket or path.rstrip("/") == DEPOSITIONS or path.startswith(DEPOSITIONS + "/")):
            return None
        if not incoming.authenticated:  # invenio-records-resources: PermissionDeniedError for an anonymous identity
            raise (_HttpError(401, _UNAUTHORIZED) if self.unauthorized_status == 401
                   else _HttpError(403, "Permission denied."))
        method = "GET" if incoming.method == "HEAD" else incoming.method
        if bucket is not None and in_bucket:
            return self._bucket_plan(method, incoming, self._deposits[self._deposit_buckets[bucket.group(1)]],
                                     bucket.group(2) or "")
        parts = [p for p in path[len(DEPOSITIONS):].split("/") if p]
        if not parts:
            if method == "GET":
                return self._deposit_list_plan(incoming)
            if method == "POST":
                return self._deposit_create_plan(incoming)
            raise _HttpError(405, "The method is not allowed for the requested URL.")
        deposit = self._deposit_for(parts[0])
        if len(parts) == 1:
            return self._deposit_item_plan(method, incoming, deposit)
        if len(parts) == 3 and parts[1] == "actions":
            if method != "POST":
                raise _HttpError(405, "The method is not allowed for the requested URL.")
            return self._deposit_action_plan(parts[2], deposit)
        if parts[1] == "files" and len(parts) <= 3:
            return self._deposit_files_plan(method, deposit, parts[2] if len(parts) == 3 else None)
        raise _HttpError(404, _NOT_FOUND)

    def _deposit_for(self, text: str) -> _Deposit:
        deposit = self._deposits.get(int(text)) if text.isdigit() else None
        if deposit is None:
            raise _HttpError(404, "The persistent identifier does not exist.")
        return deposit

    def _deposit_item_plan(self, method: str, incoming: _Incoming, deposit: _Deposit) -> _Plan:
        """``GET`` (a draft, or the published version: the legacy ``read_draft`` falls back to the record), ``PUT``
        (replaces the whole metadata of a draft) and ``DELETE`` (a draft that was never published)."""
        if method == "GET":
            return _json_plan(200, self._deposit_json(deposit))
        if method == "PUT":
            if deposit.published:  # no draft to update: zenodo-rdm's own test expects a 404 here
                raise _HttpError(404, "Not found.")
            deposit.metadata = _load_deposit_body(_json_body(incoming))
            deposit.modified = _now()
            return _json_plan(200, self._deposit_json(deposit))
        if method == "DELETE":
            self._discard(deposit)
            return _Plan(204)
        raise _HttpError(405, "The method is not allowed for the requested URL.")

    def _deposit_action_plan(self, action: str, deposit: _Deposit) -> _Plan:
        if action == "publish":
            return self._publish_plan(deposit)
        if action == "newversion":
            return self._new_version_plan(deposit)
        if action == "discard":
            self._discard(deposit)
            return _Plan(204)
        if action in ("edit", "registerconceptdoi"):
            raise _HttpError(400, f"The double does not model the {action!r} action.")
        raise _HttpError(404, _NOT_FOUND)

    def _deposit_create_plan(self, incoming: _Incoming) -> _Plan:
        """``POST {api}/deposit/depositions``: a new concept and its first draft (ids in a row, as recorded)."""
        metadata = _load_deposit_body(_json_body(incoming))
        concept = _Concept(self._take_deposit_id())
        self._concepts[concept.concept_id] = concept
        deposit = self._new_deposit(concept, metadata)
        return _json_plan(201, self._deposit_json(deposit))

    def _take_deposit_id(self) -> int:
        taken = self._next_deposit_id
        self._next_deposit_id += 1
        return taken

    def _new_deposit(self, concept: _Concept, metadata: dict[str, Any]) -> _Deposit:
        now = _now()
        deposit = _Deposit(self._take_deposit_id(), concept.concept_id, now, now, str(uuid.uuid4()), metadata)
        self._deposits[deposit.deposit_id] = deposit
        self._deposit_buckets[deposit.bucket] = deposit.deposit_id
        concept.next_draft = deposit.deposit_id
        return deposit

    def _discard(self, deposit: _Deposit) -> None:
        """Delete a draft that was never published; a published version cannot be deleted (404, as zenodo-rdm)."""
        if deposit.published:
            raise _HttpError(404, "Not found.")
        del self._deposits[deposit.deposit_id]
        del self._deposit_buckets[deposit.bucket]
        concept = self._concepts[deposit.concept]
        if concept.next_draft == deposit.deposit_id:
            concept.next_draft = None
        if not concept.versions:
            del self._concepts[concept.concept_id]

    def _new_version_plan(self, deposit: _Deposit) -> _Plan:
        """``POST .../actions/newversion``, as zenodo-rdm's ``LegacyRecordResource.new_version`` does it.

        invenio-drafts-resources' ``new_version`` returns the concept's pending draft when there is one, else makes a
        new draft of the latest version (metadata copied, ``version`` dropped, ``publication_date`` today); then the
        legacy resource imports the latest version's files, which fails with ``Please remove all files first.``
        when the draft already holds files. The answer is the draft itself (201), whose ``latest_draft`` is itself.
        """
        if not deposit.published:
            raise _HttpError(404, "The persistent identifier is not registered.")
        concept = self._concepts[deposit.concept]
        latest = self._deposits[concept.versions[-1]]
        if concept.next_draft is not None:
            draft = self._deposits[concept.next_draft]
            if draft.files:
                raise _field_error("files.enabled", "Please remove all files first.")
        else:
            metadata = {k: copy.deepcopy(v) for k, v in latest.metadata.items() if k != "version"}
            metadata["publication_date"] = datetime.now(timezone.utc).date().isoformat()
            draft = self._new_deposit(concept, metadata)
        for key, source in latest.files.items():
            draft.files[key] = _DepositFile(str(uuid.uuid4()), key, source.data, source.md5, str(uuid.uuid4()),
                                            _now())
        return _json_plan(201, self._deposit_json(draft))

    def _publish_plan(self, deposit: _Deposit) -> _Plan:
        """``POST .../actions/publish``: 202 and the published version, or 400 with the validation errors."""
        if deposit.published:  # the draft is gone once published: zenodo-rdm's own test expects a 404
            raise _HttpError(404, "Not found.")
        errors = _publish_errors(deposit.metadata)
        if errors:
            raise _HttpError(400, _VALIDATION, errors)
        if not deposit.files:
            raise _field_error("files.enabled", _MISSING_FILES)
        concept = self._concepts[deposit.concept]
        deposit.published = True
        deposit.doi = f"{self.doi_prefix}/zenodo.{deposit.deposit_id}"
        deposit.modified = _now()
        concept.versions.append(deposit.deposit_id)
        if concept.next_draft == deposit.deposit_id:
            concept.next_draft = None
        concept.doi = concept.doi or f"{self.doi_prefix}/zenodo.{concept.concept_id}"
        self._index_published(deposit, concept)
        return _json_plan(202, self._deposit_json(deposit))

    def _index_published(self, deposit: _Deposit, concept: _Concept) -> None:
        """Serve the new version as a record too (``/api/records/<id>``, the search), in today's shape."""
        metadata = deposit.metadata
        hit = self.make_hit(deposit.deposit_id, created=deposit.created, title=str(metadata.get("title") or ""),
                            conceptrecid=str(concept.concept_id), resource_type=str(metadata.get("upload_type")))
        hit.update(doi=deposit.doi, conceptdoi=concept.doi, doi_url=f"https://doi.org/{deposit.doi}")
        hit["metadata"].update(
            doi=deposit.doi, publication_date=metadata.get("publication_date"),
            creators=copy.deepcopy(metadata.get("creators", [])), version=metadata.get("version"),
            related_identifiers=copy.deepcopy(metadata.get("related_identifiers", [])),
            license={"id": metadata.get("license")},
            **{k: copy.deepcopy(metadata[k]) for k in ("description", "keywords") if k in metadata})
        record = _Record(deposit.deposit_id, hit, "current")
        self._store_files(record, {k: f.data for k, f in deposit.files.items()}, {})
        self._finish_hit(record, True, {})
        self._records[deposit.deposit_id] = record

    def _deposit_files_plan(self, method: str, deposit: _Deposit, file_id: str | None) -> _Plan:
        """``{api}/deposit/depositions/<id>/files[/<file id>]``: list, read, delete (not the form upload)."""
        if file_id is None:
            if method == "GET":
                return _json_plan(200, [self._file_json(deposit, f) for f in deposit.files.values()])
            if method == "POST":
                raise _HttpError(400, "The double does not model the multipart upload: PUT the file to links.bucket.")
            raise _HttpError(405, "The method is not allowed for the requested URL.")
        entry = next((f for f in deposit.files.values() if f.file_id == file_id), None)
        if entry is None:
            raise _HttpError(404, _NOT_FOUND)
        if method == "GET":
            return _json_plan(200, self._file_json(deposit, entry))
        if method == "DELETE":
            if deposit.published:
                raise _HttpError(403, "Permission denied.")
            del deposit.files[entry.key]
            deposit.modified = _now()
            return _Plan(204)
        raise _HttpError(405, "The method is not allowed for the requested URL.")

    def _bucket_plan(self, method: str, incoming: _Incoming, deposit: _Deposit, key: str) -> _Plan:
        """``{api}/files/<bucket>/<key>``: ``PUT`` stores the body (replacing a file of that name), ``GET``, ``DELETE``.

        A key with ``/`` is not routed (404), as flask's default converter does not match it."""
        if not key:
            raise _HttpError(400, "The double does not model listing a bucket.")
        if "/" in key:
            raise _HttpError(404, _NOT_FOUND)
        if method == "PUT":
            if deposit.published:
                raise _HttpError(403, "Permission denied.")
            now = _now()
            entry = _DepositFile(str(uuid.uuid4()), key, incoming.body, _md5(incoming.body), str(uuid.uuid4()), now)
            deposit.files.pop(key, None)
            deposit.files[key] = entry
            deposit.modified = now
            return _json_plan(201, self._bucket_file_json(deposit, entry))
        entry = deposit.files.get(key)
        if entry is None:
            raise _HttpError(404, f"Record '{deposit.deposit_id}' has no file '{key}'.")
        if method == "GET":
            return _Plan(200, entry.data, [("Content-Type", _mimetype(key))])
        if method == "DELETE":
            if deposit.published:
                raise _HttpError(403, "Permission denied.")
            del deposit.files[key]
            deposit.modified = _now()
            return _Plan(204)
        raise _HttpError(405, "The method is not allowed for the requested URL.")

    def _deposit_list_plan(self, incoming: _Incoming) -> _Plan:
        """``GET {api}/deposit/depositions``: the user's depositions as a bare JSON array (``LegacyListSchema``).

        Unless ``all_versions`` is set, each concept shows only its latest draft (``versions.is_latest_draft``: the
        pending draft, else the latest published version). ``status`` is accepted and ignored, as in zenodo-rdm
        (``ZenodoArgsSchema`` takes it; no interpreter of the drafts search reads it). ``q`` holds ANDed
        ``conceptrecid:<id>``, ``recid:<id>``, ``title:"<phrase>"`` (or words, matched in the title).
        """
        query = incoming.query
        size = _int_param(query, "size", DEFAULT_PAGE_SIZE)
        page = _int_param(query, "page", 1)
        if size > self.page_cap_token:
            raise _field_error("size", f"Page size cannot be greater than {self.page_cap_token}.")
        matches = _deposit_query(query.get("q", ""))
        field_name, descending = _deposit_sort(query.get("sort"), bool(query.get("q")))
        every = _flag(query, "all_versions")
        if every and self._drafts_unlisted:
            matches = _both(matches, lambda deposit: deposit.published)
        found = [d for d in self._deposits.values() if (every or self._is_latest_draft(d)) and matches(d)]
        found.sort(key=lambda d: (getattr(d, field_name), d.deposit_id), reverse=descending)
        return _json_plan(200, [self._deposit_json(d) for d in found[(page - 1) * size: page * size]])

    def _is_latest_draft(self, deposit: _Deposit) -> bool:
        """``versions.is_latest_draft``; while drafts are hidden, as the index knew it before the draft was made."""
        concept = self._concepts[deposit.concept]
        if self._drafts_unlisted:
            return deposit.published and concept.versions[-1] == deposit.deposit_id
        if concept.next_draft is not None:
            return concept.next_draft == deposit.deposit_id
        return bool(concept.versions) and concept.versions[-1] == deposit.deposit_id

    def _deposit_json(self, deposit: _Deposit) -> dict[str, Any]:
        """A deposition in zenodo-rdm's legacy serializer (``LegacySchema``), keys in the recorded order."""
        rid, concept = deposit.deposit_id, self._concepts[deposit.concept]
        body: dict[str, Any] = {"created": deposit.created, "modified": deposit.modified, "id": rid,
                                "conceptrecid": str(concept.concept_id)}
        if deposit.doi:
            body["doi"] = deposit.doi
        if concept.doi:
            body["conceptdoi"] = concept.doi
        if deposit.doi:
            body["doi_url"] = f"https://doi.org/{deposit.doi}"
        metadata = _dump_metadata(deposit)
        body.update(metadata=metadata, title=metadata.get("title", ""), links=self._deposit_links(deposit, concept),
                    record_id=rid, owner=DEPOSIT_OWNER)
        body["files"] = [self._file_json(deposit, f) for f in deposit.files.values()]
        body.update(state="done" if deposit.published else "unsubmitted", submitted=deposit.published)
        return body

    def _deposit_links(self, deposit: _Deposit, concept: _Concept) -> dict[str, str]:
        """zenodo-rdm ``LegacyRecordServiceConfig.links_item``; ``latest_draft`` names the deposition itself."""
        rid, api, ui = deposit.deposit_id, self.api_url, self.ui_url
        own = f"{api}/deposit/depositions/{rid}"
        links = {"self": f"{api}/records/{rid}" if deposit.published else own,
                 "html": f"{ui}/records/{rid}" if deposit.published else f"{ui}/deposit/{rid}"}
        if deposit.doi:
            links["doi"] = f"https://doi.org/{deposit.doi}"
            if concept.doi:
                links["parent_doi"] = f"https://doi.org/{concept.doi}"
            links["badge"] = f"{ui}/badge/doi/{quote(deposit.doi, safe='')}.svg"
            if concept.doi:
                links["conceptbadge"] = f"{ui}/badge/doi/{quote(concept.doi, safe='')}.svg"
        links.update(files=f"{api}/records/{rid}/files" if deposit.published else f"{own}/files",
                     bucket=f"{api}/files/{deposit.bucket}", latest_draft=own, latest_draft_html=f"{ui}/deposit/{rid}",
                     publish=f"{own}/actions/publish", edit=f"{own}/actions/edit", discard=f"{own}/actions/discard",
                     newversion=f"{own}/actions/newversion", registerconceptdoi=f"{own}/actions/registerconceptdoi")
        if deposit.published:
            links.update(record=f"{api}/records/{rid}", record_html=f"{ui}/record/{rid}",
                         latest=f"{api}/records/{rid}/versions/latest",
                         latest_html=f"{ui}/record/{rid}/versions/latest")
        links.update(self._link_overrides)
        return links

    def _file_json(self, deposit: _Deposit, entry: _DepositFile) -> dict[str, Any]:
        """One file of a deposition (``LegacySchema.dump_files``): bare md5, ``self`` under ``links.files``."""
        rid = deposit.deposit_id
        files = f"{self.api_url}/records/{rid}/files" if deposit.published else \
            f"{self.api_url}/deposit/depositions/{rid}/files"
        download = f"{self.api_url}/records/{rid}/draft/files/{quote(entry.key, safe=_KEY_SAFE)}/content"
        return {"id": entry.file_id, "filename": entry.key, "filesize": len(entry.data), "checksum": entry.md5,
                "links": {"self": f"{files}/{entry.file_id}", "download": download}}

    def _bucket_file_json(self, deposit: _Deposit, entry: _DepositFile) -> dict[str, Any]:
        """The answer to a bucket ``PUT`` (``LegacyFilesRESTSchema``), keys in the recorded order."""
        url = f"{self.api_url}/files/{deposit.bucket}/{quote(entry.key, safe=_KEY_SAFE)}"
        return {"created": entry.created, "updated": entry.created, "version_id": entry.version_id, "key": entry.key,
                "size": len(entry.data), "mimetype": _mimetype(entry.key), "checksum": f"md5:{entry.md5}",
                "is_head": True, "delete_marker": False,
                "links": {"self": url, "version": f"{url}?versionId={entry.version_id}", "uploads": f"{url}?uploads"}}

    # -------------------------------------------------------------------------------------------- search

    def _search_plan(self, incoming: _Incoming) -> _Plan:
        """``GET /api/records``: validated in Zenodo's order (arguments, query, window, sort), then paged."""
        query = incoming.query
        size = _int_param(query, "size", DEFAULT_PAGE_SIZE)
        page = _int_param(query, "page", 1)
        self._check_page_size(size, incoming.authenticated)
        matches = _compile_query(query.get("q", ""))
        if (page - 1) * size >= self.window:
            raise _HttpError(400, "Invalid querystring parameters.")
        order = _sort_order(query.get("sort"), bool(query.get("q")))
        latest_only = not _flag(query, "all_versions")
        wanted_type = query.get("type")
        records = self._latest_versions() if latest_only else list(self._records.values())
        records = [r for r in records if (not wanted_type or _resource_type(r.hit) == wanted_type) and matches(r.hit)
                   and r.record_id not in self._private]
        items: list[Any] = [r.hit for r in _sorted(records, order)] + list(self._raw_hits)
        total = len(items) if self._lied_total is None else self._lied_total
        page_items = items[(page - 1) * size : min(page * size, self.window)]
        if not page_items and self._lied_total is not None:
            page_items = items[:size]  # a lying server repeats what it already sent
        return _Plan(200, _search_body(page_items, total, self._search_links(incoming, page, size, total)),
                     [("Content-Type", "application/json")])

    def _check_page_size(self, size: int, authenticated: bool) -> None:
        """zenodo-rdm ``ZenodoArgsSchema.validate_max_page_size``, word for word."""
        if authenticated and size > self.page_cap_token:
            raise _field_error("size", f"Page size cannot be greater than {self.page_cap_token}.")
        if not authenticated and size > self.page_cap_anonymous:
            raise _field_error("size", f"Page size cannot be greater than {self.page_cap_anonymous}. Please use "
                                       f"authenticated requests to increase the limit to {self.page_cap_token}.")

    def _latest_versions(self) -> list[_Record]:
        """Only the highest id per concept: what Zenodo returns unless ``all_versions`` is set."""
        latest: dict[str, _Record] = {}
        for record in self._records.values():
            concept = _concept_of(record)
            if concept not in latest or record.record_id > latest[concept].record_id:
                latest[concept] = record
        return list(latest.values())

    def _search_links(self, incoming: _Incoming, page: int, size: int, total: int) -> dict[str, str]:
        """``self``, ``prev`` and ``next`` as invenio-records-resources builds them: ``next`` while page*size <
        total, even past the window (following it then gives the 400)."""
        links = {"self": self._search_url(incoming, page)}
        if page > 1:
            links["prev"] = self._search_url(incoming, page - 1)
        if page * size < total:
            links["next"] = self._search_url(incoming, page + 1)
        return links

    def _search_url(self, incoming: _Incoming, page: int) -> str:
        items = [(name, value) for name, value in incoming.query_items if name != "page"] + [("page", str(page))]
        return f"{self.api_url}/records?{urlencode(items)}"


class _Server(ThreadingHTTPServer):
    """The HTTP server, tracking open connections so ``stop()`` really cuts keep-alive clients off."""

    daemon_threads = True

    def __init__(self, double: ZenodoDouble) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.double = double
        self._connections: set[socket.socket] = set()
        self._to_abort: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def abort_later(self, request: socket.socket) -> None:
        """Close this connection with a TCP reset instead of a clean FIN once its handler returns."""
        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._connections_lock:
            self._to_abort.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
            abort = request in self._to_abort
            self._to_abort.discard(request)
        if abort:
            request.close()  # SO_LINGER 0: the kernel sends RST, the client sees "connection reset"
        else:
            super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up (timeouts, resets); keep tracebacks for real bugs."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :meth:`ZenodoDouble._plan` calls and writes the plan out."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real servers; every answer has a Content-Length
    server: _Server
    timeout = 30  # an idle keep-alive connection must not pin a thread forever
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall each

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line: the double logs to ``ZenodoDouble.requests`` instead."""

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        double = self.server.double
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0 and double._take_cut(self.command, self.path, self.headers):
            self.rfile.read(max(1, length // 2))  # half of the upload arrives, then the connection is cut
            self.close_connection = True
            self.server.abort_later(self.connection)
            return
        body = self.rfile.read(length) if length > 0 else b""
        try:
            plan = double._plan(self.command, self.path, self.headers, body)
        except Exception as exc:  # a bug in the double: answer 500 rather than leave the client hanging
            traceback.print_exc()
            plan = _json_plan(500, {"status": 500, "message": f"internal error in the double: {exc!r}"})
        if plan.action != "trickle" and plan.delay and double._stopping.wait(plan.delay):
            self.close_connection = True
            return
        if plan.action == "reset":
            self.close_connection = True
            self.server.abort_later(self.connection)
            return
        self._write(plan)

    def _write(self, plan: _Plan) -> None:
        self.send_response(plan.status)
        for name, value in plan.headers:
            self.send_header(name, value)
        declared = len(plan.body)
        body = plan.body
        if plan.action == "truncate":
            declared = max(declared, 1)  # even an empty body must come up short
            body = body[: len(body) // 2]
            self.close_connection = True
        self.send_header("Content-Length", str(declared))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            self.wfile.flush()
        elif plan.action == "trickle":
            self._trickle(body, plan.delay)
        else:
            self.wfile.write(body)
            self.wfile.flush()

    def _trickle(self, body: bytes, seconds: float) -> None:
        """One byte at once, then one more every ``seconds``; ``stop()`` cuts the rest off."""
        for index in range(len(body)):
            if index and self.server.double._stopping.wait(seconds):
                self.close_connection = True
                return
            self.wfile.write(body[index : index + 1])
            self.wfile.flush()


# -------------------------------------------------------------------------------------- the header recorder


@dataclass(frozen=True)
class RecordedRequest:
    """One request to a :class:`HeaderRecorder`: whether it carried a token, never the token itself."""

    method: str
    path: str
    authorization: bool
    accept: str | None


class HeaderRecorder:
    """A second loopback server (another port, so another origin) that serves ``body`` at any path.

    It records, for every request, whether an ``Authorization`` header came: point a file link or a redirect
    at ``url`` to prove a Zenodo token never leaves Zenodo's origin.
    """

    def __init__(self, body: bytes | None = None, *, content_type: str = "application/zip") -> None:
        self.body = make_zip({"elsewhere/README.md": b"served by another origin\n"}) if body is None else body
        self.content_type = content_type
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RecorderHandler)
        self._server.daemon_threads = True
        self._server.recorder = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def authorization_seen(self) -> bool:
        """Whether any request so far carried an ``Authorization`` header."""
        with self._lock:
            return any(r.authorization for r in self.requests)

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def start(self) -> HeaderRecorder:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="header-recorder", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HeaderRecorder:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _RecorderHandler(BaseHTTPRequestHandler):
    """Answers every request (GET, HEAD, POST, PUT, DELETE) with the recorder's body; one per connection."""

    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorder's ``requests`` is the log."""

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        recorder: HeaderRecorder = self.server.recorder  # type: ignore[attr-defined]
        recorder.record(RecordedRequest(self.command, unquote(urlsplit(self.path).path),
                                        self.headers.get("Authorization") is not None, self.headers.get("Accept")))
        self.send_response(200)
        self.send_header("Content-Type", recorder.content_type)
        self.send_header("Content-Length", str(len(recorder.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(recorder.body)


# ------------------------------------------------------------------------------------------------ helpers


def make_zip(files: Mapping[str, bytes]) -> bytes:
    """A deterministic zip (sorted names, fixed dates and modes): same input, same bytes, stable md5s."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below is honoured
            info.external_attr = (0o40755 if name.endswith("/") else 0o100644) << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


def _window_for(rate: float | None, span: float, unit: str) -> _SlidingWindow | None:
    """A window allowing ``floor(rate)`` requests (at least one) per ``span`` seconds, or none."""
    if rate is None:
        return None
    if rate <= 0:
        raise ValueError(f"a rate limit must be positive, not {rate}")
    limit = max(1, math.floor(rate))
    natural = 60.0 if unit == "minute" else 3600.0
    label = f"{limit} per 1 {unit}" if span == natural else f"{limit} per {span:g} seconds"
    return _SlidingWindow(limit, span, label)


def _admit(windows: list[_SlidingWindow], now: float) -> _SlidingWindow | None:
    """Count the request in each window, shortest first; stop at the first full one and return it.

    flask-limiter (``fail_on_first_breach``) hits its limits sorted by granularity: the minute slot is used
    even when the hour then turns out to be full. A window that is full does not count the request.
    """
    for window in sorted(windows, key=lambda w: w.span):
        if window.is_full(now):
            return window
        window.admit(now)
    return None


def _make_fault(mode: str, opts: Mapping[str, Any]) -> _Fault:
    """Check a fault's options and build it."""
    allowed = {"slow": {"seconds"}, "trickle": {"seconds"}, "sleepy": {"headers", "status"}, "redirect": {"to"},
               "echo": {"status"}}
    unexpected = sorted(set(opts) - allowed.get(mode, set()))
    if unexpected:
        raise ValueError(f"fault mode {mode!r} takes no option(s) {unexpected}")
    seconds = float(opts.get("seconds", 1.0))
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    if mode == "redirect" and not opts.get("to"):
        raise ValueError("fault mode 'redirect' needs to=<url>")
    headers = tuple((str(k), str(v)) for k, v in dict(opts.get("headers") or {}).items())
    status = int(opts.get("status", 400 if mode == "echo" else 429))
    return _Fault(mode, seconds, status, headers, str(opts.get("to", "")))


def _alter(plan: _Plan, fault: _Fault) -> None:
    """Faults that keep the normal answer but change how it is sent (or which headers it carries)."""
    if fault.mode == "slow":
        plan.delay = fault.seconds
    elif fault.mode == "truncate":
        plan.action = "truncate"
    elif fault.mode == "trickle":
        plan.action, plan.delay = "trickle", fault.seconds
    elif fault.mode == "sleepy":
        names = {name.lower() for name, _ in fault.headers}
        plan.headers = [h for h in plan.headers if h[0].lower() not in names] + list(fault.headers)


def _log_entry(incoming: _Incoming, plan: _Plan, arrival: float, fault: _Fault | None) -> RequestRecord:
    return RequestRecord(
        method=incoming.method,
        path=incoming.path,
        query=dict(incoming.query),
        status=0 if plan.action == "reset" else plan.status,
        authenticated=incoming.authenticated,
        time=arrival,
        fault=fault.mode if fault else None,
        authorization=incoming.authorization,
        accept=incoming.accept,
    )


def _resolve_shape(shape: str | None, legacy: bool) -> str:
    """``legacy=True`` meant the ``filename``/``filesize`` entries: Zenodo's 2023 shape."""
    if legacy and shape not in (None, "2023"):
        raise ValueError(f"legacy=True is shape '2023'; it contradicts shape={shape!r}")
    resolved = "2023" if legacy else (shape or "current")
    if resolved not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, not {resolved!r}")
    return resolved


def _files_value(shape: str, entries: list[dict[str, Any]], hidden: bool) -> Any:
    """A record's ``files`` in its shape; when access is not open, what Zenodo shows anonymous clients.

    Legacy search hits had no ``files`` at all (zenodo/zenodo ``ZenodoJSONSerializer``); since the migration
    it is ``[]``; the native record keeps only ``enabled`` (invenio-rdm-records ``FilesSchema`` permissions).
    """
    if shape == "native":
        if hidden:
            return {"enabled": True}
        return {"enabled": True, "order": [], "count": len(entries),
                "total_bytes": sum(e["size"] for e in entries), "entries": {e["key"]: e for e in entries}}
    if hidden:
        return None if shape == "legacy" else []
    return entries


def _hides_files(hit: Mapping[str, Any]) -> bool:
    metadata = hit.get("metadata")
    right = metadata.get("access_right") if isinstance(metadata, Mapping) else None
    access = hit.get("access")
    native_restricted = isinstance(access, Mapping) and access.get("files") == "restricted"
    return right in HIDDEN_ACCESS or native_restricted


def _hit_metadata(record_id: int, title: str, created: str, resource_type: str, access_right: str,
                  related: list[dict[str, Any]], github: tuple[str, str, str] | None) -> dict[str, Any]:
    return {
        "title": title,
        "doi": f"10.5281/zenodo.{record_id}",
        "publication_date": created[:10],
        "access_right": access_right,
        "creators": [{"name": "Doe, Jane", "affiliation": "Example University"}],
        "related_identifiers": related,
        "version": github[2] if github is not None else "1.0",
        "resource_type": {"type": resource_type, "title": resource_type.capitalize()},
        "license": {"id": "mit"},
    }


def _related_identifiers(github: tuple[str, str, str] | None,
                         related: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The GitHub integration's ``isSupplementTo`` link (as in ``record_2023.json``), then the others given."""
    out = []
    if github is not None:
        owner, repo, tag = github
        out.append({"identifier": f"https://github.com/{owner}/{repo}/tree/{tag}", "relation": "isSupplementTo",
                    "scheme": "url"})
    return out + [dict(r) for r in related]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _file_id(record: _Record, key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record.record_id}/{key}"))


def _extension(key: str) -> str:
    """The legacy ``type`` / native ``ext``: the last suffix, lower case (``tar.gz`` gives ``gz``)."""
    name = key.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _mimetype(key: str) -> str:
    return mimetypes.guess_type(key.rsplit("/", 1)[-1])[0] or "application/octet-stream"


def _concept_of(record: _Record) -> str:
    hit = record.hit
    parent = hit.get("parent")
    parent_id = parent.get("id") if isinstance(parent, Mapping) else None
    return str(hit.get("conceptrecid") or parent_id or f"id:{record.record_id}")


def _search_body(items: list[Any], total: int, links: dict[str, str]) -> bytes:
    """The search answer as text, so raw hits go in verbatim: ``{"hits": {"hits", "total"}, "links"}``."""
    parts = [item.text if isinstance(item, _RawHit) else json.dumps(item) for item in items]
    return (f'{{"hits": {{"hits": [{", ".join(parts)}], "total": {json.dumps(total)}}}, '
            f'"links": {json.dumps(links)}}}').encode()


def _sorted(records: list[_Record], order: tuple[tuple[str, bool], ...]) -> list[_Record]:
    """Sort by the option's fields (ties by id), then verified owners first, as Zenodo's sort is prefixed."""
    descending = order[0][1]
    ordered = sorted(records, key=lambda r: (*(_sort_value(r.hit, name) for name, _ in order), r.record_id),
                     reverse=descending)
    return sorted(ordered, key=lambda r: not r.verified)


def _sort_value(hit: Mapping[str, Any], name: str) -> datetime:
    return _hit_time(hit, name) or datetime.min.replace(tzinfo=timezone.utc)


def _json_plan(status: int, payload: Any) -> _Plan:
    body = json.dumps(payload).encode()
    return _Plan(status, body, [("Content-Type", "application/json")])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _echoed(credential: str | None) -> str:
    """What the ``echo`` fault answers: the credential repeated raw, as ``Basic`` base64 and URL-quoted."""
    if not credential:
        return "Request refused: it carried no credential."
    basic = base64.b64encode(f"zenodo-hpc:{credential}".encode()).decode()
    return (f"Request refused. Authorization: Bearer {credential}; forwarded as Basic {basic}; "
            f"query: access_token={quote(credential, safe='')}")


def _json_body(incoming: _Incoming) -> Any:
    """A request's JSON body; ``{}`` when there is none."""
    if not incoming.body.strip():
        return {}
    try:
        return json.loads(incoming.body)
    except ValueError:
        raise _HttpError(400, "Unable to decode JSON data in request body.") from None


def _load_deposit_body(data: Any) -> dict[str, Any]:
    """A deposition's metadata as zenodo-rdm's ``LegacyJSONDeserializer`` loads it, with its refusals.

    Unknown top-level keys are refused (``unknown = RAISE``); unknown metadata keys are dropped (``EXCLUDE``). With
    a ``metadata`` object, ``publication_date`` defaults to today, ``imprint_publisher`` to ``Zenodo``, and an open
    record without ``license`` gets CC0 (a dataset) or CC-BY-4.0 (``load_default_license``). The whole metadata is
    replaced by what is sent: a ``PUT`` must send all of it (zenodo-rdm's own versioning test says so).
    """
    if not isinstance(data, Mapping):
        raise _field_error("_schema", "Invalid input type.")
    unknown = sorted(set(data) - {"metadata"})
    if unknown:
        raise _HttpError(400, _VALIDATION, [{"field": k, "messages": ["Unknown field."]} for k in unknown])
    if "metadata" not in data:
        return {}
    given = data["metadata"]
    if not isinstance(given, Mapping):
        raise _field_error("metadata", "Invalid input type.")
    metadata = {k: copy.deepcopy(given[k]) for k in _METADATA_KEYS if k in given and given[k] is not None}
    related = metadata.get("related_identifiers", [])
    if not isinstance(related, list):
        raise _field_error("metadata.related_identifiers", "related_identifiers must be a list")
    for index, item in enumerate(related):
        if not isinstance(item, Mapping):
            raise _field_error(f"metadata.related_identifiers.{index}", "Each related identifier must be an object")
    if metadata.get("access_right", "open") not in ("open", "restricted", "closed") and not (
            metadata.get("access_right") == "embargoed" and metadata.get("embargo_date")):
        raise _field_error("_schema", "Unknown access type.")
    if "license" not in metadata and metadata.get("access_right", "open") in ("open", "embargoed"):
        metadata["license"] = "cc0-1.0" if metadata.get("upload_type") == "dataset" else "cc-by-4.0"
    if "license" in metadata:
        metadata["license"] = _load_license(metadata["license"])
    creators = metadata.get("creators", [])
    if not isinstance(creators, list) or not all(isinstance(c, Mapping) for c in creators):
        raise _field_error("metadata.creators", "Not a valid list.")
    metadata["creators"] = [{"name": c.get("name"), "affiliation": c.get("affiliation"),
                             **({"orcid": c["orcid"]} if c.get("orcid") else {})} for c in creators]
    metadata.setdefault("publication_date", datetime.now(timezone.utc).date().isoformat())
    metadata.setdefault("access_right", "open")
    metadata["imprint_publisher"] = "Zenodo"
    return metadata


_METADATA_KEYS = ("title", "publication_date", "description", "access_right", "embargo_date", "creators", "keywords",
                  "related_identifiers", "version", "license", "upload_type", "notes", "language")


def _load_license(value: Any) -> str:
    """zenodo-rdm ``MetadataSchema.load_rights``: a string or ``{"id": ...}``, matched without regard to case."""
    if not isinstance(value, (str, Mapping)):
        raise _field_error("metadata.license", "Invalid license value provided (expected string, or object with "
                                               f"'id' key): {value}")
    if isinstance(value, Mapping):
        if "id" not in value:
            raise _field_error("metadata.license", f"Invalid license object provided (missing 'id' key): {value}")
        value = value["id"]
    shown = _LICENSES.get(str(value).strip().lower())
    if shown is None:
        raise _field_error("metadata.license", f"Invalid license provided: {value}")
    return shown


def _dump_metadata(deposit: _Deposit) -> dict[str, Any]:
    """The ``metadata`` of a deposition answer: what was loaded, the DOI once published, and ``prereserve_doi``.

    ``prereserve_doi`` always names the 10.5281 prefix (``LegacySchema.dump_prereserve_doi`` writes it so), even on the
    sandbox whose DOIs are 10.5072: the recorded sandbox answers show it. The real DOI is the top-level ``doi``.
    """
    stored = deposit.metadata
    order = ("title", "doi", "publication_date", "description", "access_right", "embargo_date", "creators",
             "keywords", "related_identifiers", "version", "license", "imprint_publisher", "upload_type", "notes",
             "language")
    values = dict(stored, doi=deposit.doi) if deposit.doi else stored
    dumped = {k: copy.deepcopy(values[k]) for k in order if k in values and values[k] not in (None, [])}
    dumped["prereserve_doi"] = {"doi": f"10.5281/zenodo.{deposit.deposit_id}", "recid": deposit.deposit_id}
    return dumped


def _publish_errors(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What publishing refuses in the metadata (invenio-rdm-records ``MetadataSchema``), in marshmallow's words.

    Required: ``resource_type`` (the legacy ``upload_type``), ``creators`` (at least one, each with a name),
    ``title`` (3 characters or more), ``publication_date``; ``description`` has 3 characters or more when given,
    ``version`` at most 191. An upload type the legacy API does not know is the double's own refusal.
    """
    required = "Missing data for required field."
    errors: list[dict[str, Any]] = []

    def add(name: str, message: str) -> None:
        errors.append({"field": name, "messages": [message]})

    upload_type = metadata.get("upload_type")
    if not upload_type:
        add("metadata.resource_type", required)
    elif upload_type not in UPLOAD_TYPES:
        add("metadata.resource_type.id", f"Invalid value: {upload_type}.")
    creators = metadata.get("creators") or []
    if not creators:
        add("metadata.creators", required)
    for index, creator in enumerate(creators):
        if not str(creator.get("name") or "").strip():
            add(f"metadata.creators.{index}.person_or_org.family_name", "Family name must be filled.")
    title = str(metadata.get("title") or "")
    if not title:
        add("metadata.title", required)
    elif len(title) < 3:
        add("metadata.title", "Shorter than minimum length 3.")
    when = str(metadata.get("publication_date") or "")
    if not when:
        add("metadata.publication_date", required)
    elif not re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", when):
        add("metadata.publication_date", "Please provide a valid date or interval.")
    if "description" in metadata and len(str(metadata["description"])) < 3:
        add("metadata.description", "Shorter than minimum length 3.")
    if len(str(metadata.get("version") or "")) > 191:
        add("metadata.version", "Longer than maximum length 191.")
    return errors


def _deposit_query(q: str) -> Any:
    """A predicate on depositions for ``q``: ANDed ``conceptrecid:N``, ``recid:N``, ``title:"phrase"`` and words
    (matched in the title, case-insensitively). Anything else is a 400, as for the record search."""
    tests = []
    for match in re.finditer(r'(?:(\w+):)?("[^"]*"|\S+)', q):
        name, quoted = match.group(1), match.group(2).startswith('"')
        value = match.group(2)[1:-1] if quoted else match.group(2)
        if name is None and value == "AND" and not quoted:
            continue
        if name in ("conceptrecid", "recid") and value.isdigit():
            tests.append(_id_test("concept" if name == "conceptrecid" else "deposit_id", int(value)))
        elif name in (None, "title") and (quoted or (value not in ("OR", "NOT")
                                                     and not any(c in value for c in "()[]{}:"))):
            tests.append(_title_test(value.lower()))
        else:
            raise _HttpError(400, f"The double does not support this query syntax: {match.group(0)!r} in {q!r}.")
    return lambda deposit: all(test(deposit) for test in tests)


def _both(first: Any, second: Any) -> Any:
    return lambda deposit: first(deposit) and second(deposit)


def _id_test(attribute: str, wanted: int) -> Any:
    return lambda deposit: getattr(deposit, attribute) == wanted


def _title_test(needle: str) -> Any:
    return lambda deposit: needle in str(deposit.metadata.get("title") or "").lower()


def _deposit_sort(sort: str | None, has_query: bool) -> tuple[str, bool]:
    name = sort or ("bestmatch" if has_query else "newest")
    if name in _DEPOSIT_SORTS:
        return _DEPOSIT_SORTS[name]
    if name in _SORTS or name in _UNMODELLED_SORTS:
        raise _HttpError(400, f"The double does not model sort {name!r} for depositions; it knows "
                              f"{', '.join(_DEPOSIT_SORTS)}.")
    raise _field_error("_schema", f"Invalid sort option '{name}'.")


def _normalize_path(path: str) -> str:
    """Fault keys compare decoded paths, so quoted and unquoted spellings of a key are the same path."""
    return unquote(urlsplit(path).path)


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _is_search(path: str) -> bool:
    return path in ("/api/records", "/api/records/")


def _bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; any other non-empty header is a bad token."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else header


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    """An integer parameter, refused with marshmallow's messages (``fields.Int``, ``Range(min=1)``)."""
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _field_error(name, "Not a valid integer.") from None
    if value < 1:
        raise _field_error(name, "Must be greater than or equal to 1.")
    return value


def _flag(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name)
    if text is None:
        return False
    if text.lower() in _TRUTHY:
        return True
    if text.lower() in _FALSY:
        return False
    raise _HttpError(400, f"The double does not understand {name}={text!r}.")


def _sort_order(sort: str | None, has_query: bool) -> tuple[tuple[str, bool], ...]:
    """The fields of a sort option; Zenodo's default is ``newest`` without a query, ``bestmatch`` with one."""
    name = sort or ("bestmatch" if has_query else "newest")
    if name in _UNMODELLED_SORTS:
        raise _HttpError(400, f"The double does not model sort {name!r}; it knows {', '.join(_SORTS)}.")
    if name not in _SORTS:
        raise _field_error("_schema", f"Invalid sort option '{name}'.")
    return _SORTS[name]


def _resource_type(hit: Mapping[str, Any]) -> str | None:
    metadata = hit.get("metadata")
    kind = metadata.get("resource_type") if isinstance(metadata, Mapping) else None
    return (kind.get("type") or kind.get("id")) if isinstance(kind, Mapping) else None


def _hit_time(hit: Mapping[str, Any], name: str) -> datetime | None:
    metadata = hit.get("metadata")
    value = metadata.get(name) if name == "publication_date" and isinstance(metadata, Mapping) else hit.get(name)
    try:
        return _parse_when(str(value)) if value is not None else None
    except ValueError:
        return None


def _parse_when(text: str) -> datetime:
    """An ISO date or datetime as an aware datetime: a bare date is midnight UTC, a naive time is UTC."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _zenodo_timestamp(text: str) -> str:
    """The way Zenodo writes times: UTC, microseconds, explicit offset."""
    return _parse_when(text).astimezone(timezone.utc).isoformat(timespec="microseconds")


def _compile_query(q: str) -> Any:
    """Turn ``q`` into a predicate on hits: ANDed date ranges and title words, ``NOT``/``-`` negation.

    Anything else Elasticsearch would accept (OR, groups, other fields) is a 400, so a client relying on
    syntax the double does not emulate finds out at once instead of getting silently wrong results.
    """
    tests = [_range_test(m) for m in _RANGE.finditer(q)] + [_recid_test(m) for m in _RECIDS.finditer(q)]
    rest = _RECIDS.sub(" ", _RANGE.sub(" ", q))
    negate = False
    for token in _TOKEN.findall(rest):
        if token == "AND":
            continue
        if token == "NOT":
            negate = True
            continue
        if token in ("OR", "TO") or any(c in token for c in "()[]{}") or (":" in token and '"' not in token):
            raise _HttpError(400, f"The double does not support this query syntax: {token!r} in {q!r}.")
        if token.startswith("-") and len(token) > 1:
            negate, token = True, token[1:]
        tests.append(_word_test(token.strip('"'), negate))
        negate = False

    def matches(hit: Mapping[str, Any]) -> bool:
        return all(test(hit) for test in tests)

    return matches


def _recid_test(match: re.Match[str]) -> Any:
    """``recid:(1 OR 2)`` or ``recid:1``: zenodo-rdm maps the legacy ``recid`` to the record's ``id``."""
    wanted = set(re.findall(r"\d+", match.group(0).split(":", 1)[1]))
    return lambda hit: str(hit.get("id")) in wanted


def _range_test(match: re.Match[str]) -> Any:
    """A predicate for ``field:[low TO high]`` with ``{``/``}`` exclusive bounds and ``*`` open ends."""
    name = match.group("field")
    if name not in _RANGE_FIELDS:
        raise _HttpError(400, f"The double only supports ranges on {', '.join(_RANGE_FIELDS)}, not {name!r}.")
    try:
        low = None if match.group("low") == "*" else _parse_when(match.group("low"))
        high = None if match.group("high") == "*" else _parse_when(match.group("high"))
    except ValueError:
        raise _HttpError(400, f"Cannot parse the dates of {match.group(0)!r}.") from None
    low_inclusive = match.group("open") == "["
    high_inclusive = match.group("close") == "]"

    def test(hit: Mapping[str, Any]) -> bool:
        when = _hit_time(hit, name)
        if when is None:
            return False
        if low is not None and (when < low or (when == low and not low_inclusive)):
            return False
        return not (high is not None and (when > high or (when == high and not high_inclusive)))

    return test


def _word_test(word: str, negate: bool) -> Any:
    """A case-insensitive match of a word or phrase against the title (``*`` alone matches everything)."""
    needle = word.lower()

    def test(hit: Mapping[str, Any]) -> bool:
        if needle in ("", "*"):
            return not negate
        metadata = hit.get("metadata")
        title = str((metadata.get("title") if isinstance(metadata, Mapping) else "") or "").lower()
        return (needle in title) != negate

    return test

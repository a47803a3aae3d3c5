"""A loopback Zenodo: the records, search and files of Zenodo's REST API, and GitHub's codeload, on 127.0.0.1.

The server the offline ``zenodo-hpc demo`` publishes its sample on (zenodo_hpc/demo/demo.py), not part of the
product's path: only ``zenodo_hpc.demo`` imports it (the import contracts in pyproject.toml keep every stage below
the demo). The harvester and fetcher talk to it with plain ``requests``, as to zenodo.org: only the base URL differs
(``api_url`` / ``codeload_url``). :class:`LoopbackZenodo` is one ``ThreadingHTTPServer`` in a daemon thread, stdlib
only; it serves the search (paging, page-size caps, the 10,000-result window, filters, sorts), records in every shape
Zenodo has served, their files, and codeload's release archives.

Its answers come from the real service, not from our assumptions: recorded responses kept by public clients and
Zenodo's own code, listed in ``tests/fixtures/zenodo/SOURCES.md`` (see ``docs/doubles.md``). The tests' double
(tests/doubles/, not installed with the package) extends it with what only tests need: faults, rate limits, withdrawn
records, hostile answers and the deposit API.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import mimetypes
import re
import socket
import sys
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = [
    "ACCESS_RIGHTS",
    "SHAPES",
    "LoopbackZenodo",
    "RequestRecord",
    "make_zip",
]

SHAPES: tuple[str, ...] = ("current", "legacy", "2023", "native")  # see docs/doubles.md, "Record shapes"
ACCESS_RIGHTS: tuple[str, ...] = ("open", "embargoed", "restricted", "closed")
HIDDEN_ACCESS = frozenset({"embargoed", "restricted", "closed"})  # files not served to anonymous clients

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # earliest date a zip can hold: fixed so archives are byte-identical
DEFAULT_PAGE_SIZE = 25  # invenio-records-resources SearchOptions: default_results_per_page
_TRUTHY = {"", "1", "true", "yes", "on"}  # a bare ``all_versions`` flag means true, as on Zenodo
_FALSY = {"0", "false", "no", "off"}
# Sort options the double orders by: name -> (field, descending) pairs, from zenodo-rdm's RDM_SORT_OPTIONS.
# "bestmatch" (relevance) is not modelled: it orders like "newest", which is what Zenodo uses without a query.
SORTS: dict[str, tuple[tuple[str, bool], ...]] = {
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
UNMODELLED_SORTS = frozenset({
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
KEY_SAFE = "/!$&'()*+,;=:@"  # zenodo-rdm ZenodoSchema.dump_files: quote(key, safe=...)

NOT_FOUND = (  # werkzeug's NotFound description, answered by invenio-rest's 404 handler
    "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again."
)
VALIDATION = "A validation error occurred."
_Served = TypeVar("_Served", bound="LoopbackZenodo")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it, so tests can assert on what the client really sent.

    ``status`` is 0 when the connection was reset without an answer; ``fault`` names the fault a test double
    injected, if any (tests/doubles/zenodo.py). No token is ever stored: ``authenticated`` says whether a known
    token came, ``authorization`` whether an ``Authorization`` header came at all, and ``accept`` is the ``Accept``
    header.
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
class Plan:
    """What the handler must put on the wire: decided under the lock, written outside it."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Incoming:
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
class StoredRecord:
    """A stored record: the hit exactly as served, and what the file URLs need."""

    record_id: int
    hit: dict[str, Any]
    shape: str
    verified: bool = False
    hidden: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)  # "md5:<hex>" served per key (may be wrong on purpose)
    bucket: str | None = None


class HttpError(Exception):
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


def field_error(name: str, message: str) -> HttpError:
    """Zenodo's answer to a bad query parameter: marshmallow's validation error, as flask-resources words it."""
    return HttpError(400, VALIDATION, [{"field": name, "messages": [message]}])


class LoopbackZenodo:
    """A Zenodo API (``/api``: records, search, files) and GitHub codeload (``/codeload``) on one local HTTP server.

    The port is bound when the server is created, so ``api_url`` and the file links built by :meth:`add_record` are
    valid before :meth:`start`; a stopped server cannot be restarted. ``tokens`` are the access tokens it knows: a
    request with one gets the bigger page-size cap (``page_cap_token``), as on Zenodo.
    """

    _server_class: ClassVar[type[LoopbackHTTPServer]]  # set below the class: the HTTP server it runs

    def __init__(
        self,
        *,
        page_cap_anonymous: int = 25,
        page_cap_token: int = 100,
        window: int = 10_000,
        tokens: Iterable[str] = (),
    ) -> None:
        self.page_cap_anonymous = page_cap_anonymous
        self.page_cap_token = page_cap_token
        self.window = window
        self._tokens = frozenset(tokens)
        self._lock = threading.Lock()
        self._records: dict[int, StoredRecord] = {}
        self._buckets: dict[str, int] = {}
        self._codeload: dict[tuple[str, str, str, str], bytes] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.requests: list[RequestRecord] = []
        self._server = self._server_class(self)
        base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.ui_url = base  # where Zenodo's web pages live (``links.html``); the API is under ``/api``
        self.api_url = f"{base}/api"
        self.codeload_url = f"{base}/codeload"

    # ----------------------------------------------------------------------------------------------- lifecycle

    def start(self: _Served) -> _Served:
        """Serve in a daemon thread, so a forgotten server never keeps the process alive."""
        if self._stopped:
            raise RuntimeError(f"this {type(self).__name__} was stopped; create a new one")
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

    def __enter__(self: _Served) -> _Served:
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
        record = StoredRecord(record_id, copy.deepcopy(hit), shape, verified=verified, hidden=_hides_files(hit))
        with self._lock:
            if files is not None:
                self._store_files(record, files, dict(checksums or {}))
            self._finish_hit(record, files is not None, dict(file_links or {}))
            self._records[record_id] = record
        return copy.deepcopy(record.hit)

    def _store_files(self, record: StoredRecord, files: Mapping[str, bytes], checksums: dict[str, str]) -> None:
        """Keep the bytes and the md5 to serve for each key; a legacy record also gets a bucket."""
        for key, data in files.items():
            record.files[key] = bytes(data)
            given = checksums.get(key)
            record.checksums[key] = given if given and ":" in given else f"md5:{given or md5_hex(data)}"
        if record.shape == "legacy":
            record.bucket = str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record.record_id}"))
            self._buckets[record.bucket] = record.record_id

    def _finish_hit(self, record: StoredRecord, has_files: bool, file_links: dict[str, str]) -> None:
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

    def _file_entry(self, record: StoredRecord, key: str, link: str | None) -> dict[str, Any]:
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
                    "size": len(data), "mimetype": mimetype_of(key), "storage_class": "L", "key": key,
                    "metadata": None, "access": {"hidden": False},
                    "links": {"self": self._metadata_url(record, key), "content": content}}
        return {"id": _file_id(record, key), "key": key, "size": len(data), "checksum": checksum,
                "links": {"self": content}}

    def _content_url(self, record: StoredRecord, key: str) -> str:
        if record.shape == "legacy":
            return f"{self.api_url}/files/{record.bucket}/{quote(key, safe=KEY_SAFE)}"
        return f"{self._metadata_url(record, key)}/content"

    def _metadata_url(self, record: StoredRecord, key: str) -> str:
        return f"{self.api_url}/records/{record.record_id}/files/{quote(key, safe=KEY_SAFE)}"

    def add_codeload(self, owner: str, repo: str, ref: str, data: bytes, *, kind: str = "tags") -> None:
        """Serve ``data`` (a zip, see :func:`make_zip`) at ``{codeload}/<owner>/<repo>/zip/refs/<kind>/<ref>``."""
        if kind not in ("tags", "heads"):
            raise ValueError(f"kind must be 'tags' or 'heads', not {kind!r}")
        with self._lock:
            self._codeload[(owner, repo, kind, ref)] = bytes(data)

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

    def _plan(self, method: str, target: str, headers: Mapping[str, str] | Message, body: bytes = b"") -> Plan:
        """Decide the whole answer to one request and log it; called by the handler for every request."""
        arrival = time.monotonic()
        incoming = self._parse_incoming(method, target, headers, body)
        with self._lock:
            plan = self._decide(incoming, arrival)
            self.requests.append(self._log_entry(incoming, plan, arrival))
        return plan

    def _decide(self, incoming: Incoming, arrival: float) -> Plan:
        """The answer to a parsed request, under the lock (a test double adds its faults here)."""
        return self._normal_plan(incoming, arrival)

    def _log_entry(self, incoming: Incoming, plan: Plan, arrival: float) -> RequestRecord:
        return RequestRecord(
            method=incoming.method,
            path=incoming.path,
            query=dict(incoming.query),
            status=plan.status,
            authenticated=incoming.authenticated,
            time=arrival,
            authorization=incoming.authorization,
            accept=incoming.accept,
        )

    def _parse_incoming(self, method: str, target: str, headers: Mapping[str, str] | Message,
                        body: bytes = b"") -> Incoming:
        """Split the target, drop any ``access_token`` from what is kept, and check the token."""
        parts = urlsplit(target)
        items = parse_qsl(parts.query, keep_blank_values=True)
        authorization = headers.get("Authorization")
        token = _bearer_token(authorization)
        token_params = [value for name, value in items if name == "access_token"]
        if token is None and token_params:
            token = token_params[-1]
        kept = [(name, value) for name, value in items if name != "access_token"]
        return Incoming(
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

    def _normal_plan(self, incoming: Incoming, now: float) -> Plan:
        """The answer a healthy server gives: codeload, or Zenodo's API."""
        if not is_api(incoming.path):
            return self._codeload_plan(incoming)
        return self._api_plan(incoming, now)

    def _api_plan(self, incoming: Incoming, now: float) -> Plan:
        """An ``/api`` answer (a test double puts its rate limits around this)."""
        return self._answer(incoming)

    def _answer(self, incoming: Incoming) -> Plan:
        """Route the request. A token that is not known makes it anonymous, not a 401: invenio-oauth2server's
        ``verify_oauth_token_and_set_current_user`` only sets a user when the token verifies."""
        try:
            return self._route(incoming)
        except HttpError as error:
            return json_plan(error.status, error.payload())

    def _route(self, incoming: Incoming) -> Plan:
        """Records, search and files are read-only: any other method is refused."""
        if incoming.method not in ("GET", "HEAD"):
            raise HttpError(405, "The method is not allowed for the requested URL.")
        return self._route_api(incoming)

    def _route_api(self, incoming: Incoming) -> Plan:
        path = incoming.path
        if is_search(path):
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
        raise HttpError(404, NOT_FOUND)

    def _record_plan(self, wanted: str) -> Plan:
        """``GET /api/records/<id>``: a stored hit."""
        if wanted.isdigit() and int(wanted) in self._records:
            return json_plan(200, self._records[int(wanted)].hit)
        raise HttpError(404, "The persistent identifier does not exist.")

    def _file_record(self, record_id: int, key: str) -> StoredRecord:
        """The record of a file URL: 404 for an unknown record or key, 403 when its files are not open."""
        record = self._records.get(record_id)
        if record is None:
            self._raise_missing(record_id)
            raise HttpError(404, "The persistent identifier does not exist.")
        if record.hidden:
            raise HttpError(403, "Permission denied.")
        if key not in record.files:
            raise HttpError(404, f"Record '{record_id}' has no file '{key}'.")
        return record

    def _raise_missing(self, record_id: int) -> None:
        """A test double's own answer for a record it does not serve (a deleted one); else the 404 follows."""

    def _file_plan(self, record: StoredRecord, key: str) -> Plan:
        filename = key.rsplit("/", 1)[-1]
        return Plan(
            200,
            record.files[key],
            [("Content-Type", "application/octet-stream"),
             ("Content-Disposition", f"attachment; filename={quote(filename)}")],
        )

    def _file_metadata_plan(self, record_id: int, key: str) -> Plan:
        """``/api/records/<id>/files/<key>``: the file's metadata (the 2023 ``links.self``), since the migration."""
        record = self._file_record(record_id, key)
        if record.shape == "legacy":
            raise HttpError(404, NOT_FOUND)
        return json_plan(200, self._file_metadata(record, key))

    def _file_metadata(self, record: StoredRecord, key: str) -> dict[str, Any]:
        """The keys of ``file_metadata_2025.json``, without the draft-only ``commit`` link."""
        when = {name: str(record.hit.get(name) or "") for name in ("created", "updated")}
        return {
            **when,
            "mimetype": mimetype_of(key),
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

    def _codeload_plan(self, incoming: Incoming) -> Plan:
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
            return Plan(404, b"404: Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        name = f"{repo}-{ref.replace('/', '-')}.zip"
        return Plan(200, data, [("Content-Type", "application/zip"),
                                 ("Content-Disposition", f"attachment; filename={name}")])

    # -------------------------------------------------------------------------------------------- search

    def _search_plan(self, incoming: Incoming) -> Plan:
        """``GET /api/records``: validated in Zenodo's order (arguments, query, window, sort), then paged."""
        query = incoming.query
        size = int_param(query, "size", DEFAULT_PAGE_SIZE)
        page = int_param(query, "page", 1)
        self._check_page_size(size, incoming.authenticated)
        matches = _compile_query(query.get("q", ""))
        if (page - 1) * size >= self.window:
            raise HttpError(400, "Invalid querystring parameters.")
        order = _sort_order(query.get("sort"), bool(query.get("q")))
        latest_only = not flag_param(query, "all_versions")
        wanted_type = query.get("type")
        records = self._latest_versions() if latest_only else list(self._records.values())
        records = [r for r in records if (not wanted_type or _resource_type(r.hit) == wanted_type) and matches(r.hit)]
        items = self._search_items(_sorted(records, order))
        page_items, total = self._search_page(items, page, size)
        return Plan(200, _search_body(page_items, total, self._search_links(incoming, page, size, total)),
                     [("Content-Type", "application/json")])

    def _search_items(self, records: list[StoredRecord]) -> list[Any]:
        """What the search lists, in order: hits, or hits already written as JSON text (a test double's raw ones)."""
        return [r.hit for r in records]

    def _search_page(self, items: list[Any], page: int, size: int) -> tuple[list[Any], int]:
        """A page of ``items``, cut at the result window, and the ``total`` to report."""
        return items[(page - 1) * size : min(page * size, self.window)], len(items)

    def _check_page_size(self, size: int, authenticated: bool) -> None:
        """zenodo-rdm ``ZenodoArgsSchema.validate_max_page_size``, word for word."""
        if authenticated and size > self.page_cap_token:
            raise field_error("size", f"Page size cannot be greater than {self.page_cap_token}.")
        if not authenticated and size > self.page_cap_anonymous:
            raise field_error("size", f"Page size cannot be greater than {self.page_cap_anonymous}. Please use "
                                       f"authenticated requests to increase the limit to {self.page_cap_token}.")

    def _latest_versions(self) -> list[StoredRecord]:
        """Only the highest id per concept: what Zenodo returns unless ``all_versions`` is set."""
        latest: dict[str, StoredRecord] = {}
        for record in self._records.values():
            concept = _concept_of(record)
            if concept not in latest or record.record_id > latest[concept].record_id:
                latest[concept] = record
        return list(latest.values())

    def _search_links(self, incoming: Incoming, page: int, size: int, total: int) -> dict[str, str]:
        """``self``, ``prev`` and ``next`` as invenio-records-resources builds them: ``next`` while page*size <
        total, even past the window (following it then gives the 400)."""
        links = {"self": self._search_url(incoming, page)}
        if page > 1:
            links["prev"] = self._search_url(incoming, page - 1)
        if page * size < total:
            links["next"] = self._search_url(incoming, page + 1)
        return links

    def _search_url(self, incoming: Incoming, page: int) -> str:
        items = [(name, value) for name, value in incoming.query_items if name != "page"] + [("page", str(page))]
        return f"{self.api_url}/records?{urlencode(items)}"

class LoopbackHTTPServer(ThreadingHTTPServer):
    """The HTTP server, tracking open connections so ``stop()`` really cuts keep-alive clients off."""

    daemon_threads = True
    handler_class: ClassVar[type[BaseHTTPRequestHandler]]  # set below: LoopbackHandler

    def __init__(self, double: LoopbackZenodo) -> None:
        super().__init__(("127.0.0.1", 0), self.handler_class)
        self.double = double
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self._untrack(request)
        super().shutdown_request(request)

    def _untrack(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)

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


class LoopbackHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :meth:`LoopbackZenodo._plan` calls and writes the plan out."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real servers; every answer has a Content-Length
    server: LoopbackHTTPServer
    timeout = 30  # an idle keep-alive connection must not pin a thread forever
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall each

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line: the server logs to ``LoopbackZenodo.requests`` instead."""

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
        self._write(self._plan_for(self._read_body()))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _plan_for(self, body: bytes) -> Plan:
        try:
            return self.server.double._plan(self.command, self.path, self.headers, body)
        except Exception as exc:  # a bug in the double: answer 500 rather than leave the client hanging
            traceback.print_exc()
            return json_plan(500, {"status": 500, "message": f"internal error in the double: {exc!r}"})

    def _write(self, plan: Plan) -> None:
        self._send_head(plan, len(plan.body))
        if self.command != "HEAD":
            self.wfile.write(plan.body)
        self.wfile.flush()

    def _send_head(self, plan: Plan, declared: int) -> None:
        """Status, the plan's headers, ``Content-Length: declared`` (and ``Connection: close`` when closing)."""
        self.send_response(plan.status)
        for name, value in plan.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(declared))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()


LoopbackHTTPServer.handler_class = LoopbackHandler
LoopbackZenodo._server_class = LoopbackHTTPServer


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


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _file_id(record: StoredRecord, key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record.record_id}/{key}"))


def _extension(key: str) -> str:
    """The legacy ``type`` / native ``ext``: the last suffix, lower case (``tar.gz`` gives ``gz``)."""
    name = key.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def mimetype_of(key: str) -> str:
    return mimetypes.guess_type(key.rsplit("/", 1)[-1])[0] or "application/octet-stream"


def _concept_of(record: StoredRecord) -> str:
    hit = record.hit
    parent = hit.get("parent")
    parent_id = parent.get("id") if isinstance(parent, Mapping) else None
    return str(hit.get("conceptrecid") or parent_id or f"id:{record.record_id}")


def _search_body(items: list[Any], total: int, links: dict[str, str]) -> bytes:
    """The search answer as text, so a hit given as JSON text goes in verbatim:
    ``{"hits": {"hits", "total"}, "links"}``."""
    parts = [item if isinstance(item, str) else json.dumps(item) for item in items]
    return (f'{{"hits": {{"hits": [{", ".join(parts)}], "total": {json.dumps(total)}}}, '
            f'"links": {json.dumps(links)}}}').encode()


def _sorted(records: list[StoredRecord], order: tuple[tuple[str, bool], ...]) -> list[StoredRecord]:
    """Sort by the option's fields (ties by id), then verified owners first, as Zenodo's sort is prefixed."""
    descending = order[0][1]
    ordered = sorted(records, key=lambda r: (*(_sort_value(r.hit, name) for name, _ in order), r.record_id),
                     reverse=descending)
    return sorted(ordered, key=lambda r: not r.verified)


def _sort_value(hit: Mapping[str, Any], name: str) -> datetime:
    return _hit_time(hit, name) or datetime.min.replace(tzinfo=timezone.utc)


def json_plan(status: int, payload: Any) -> Plan:
    body = json.dumps(payload).encode()
    return Plan(status, body, [("Content-Type", "application/json")])


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")

def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_search(path: str) -> bool:
    return path in ("/api/records", "/api/records/")


def _bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; any other non-empty header is a bad token."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else header


def int_param(query: Mapping[str, str], name: str, default: int) -> int:
    """An integer parameter, refused with marshmallow's messages (``fields.Int``, ``Range(min=1)``)."""
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise field_error(name, "Not a valid integer.") from None
    if value < 1:
        raise field_error(name, "Must be greater than or equal to 1.")
    return value


def flag_param(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name)
    if text is None:
        return False
    if text.lower() in _TRUTHY:
        return True
    if text.lower() in _FALSY:
        return False
    raise HttpError(400, f"The double does not understand {name}={text!r}.")


def _sort_order(sort: str | None, has_query: bool) -> tuple[tuple[str, bool], ...]:
    """The fields of a sort option; Zenodo's default is ``newest`` without a query, ``bestmatch`` with one."""
    name = sort or ("bestmatch" if has_query else "newest")
    if name in UNMODELLED_SORTS:
        raise HttpError(400, f"The double does not model sort {name!r}; it knows {', '.join(SORTS)}.")
    if name not in SORTS:
        raise field_error("_schema", f"Invalid sort option '{name}'.")
    return SORTS[name]


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
            raise HttpError(400, f"The double does not support this query syntax: {token!r} in {q!r}.")
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
        raise HttpError(400, f"The double only supports ranges on {', '.join(_RANGE_FIELDS)}, not {name!r}.")
    try:
        low = None if match.group("low") == "*" else _parse_when(match.group("low"))
        high = None if match.group("high") == "*" else _parse_when(match.group("high"))
    except ValueError:
        raise HttpError(400, f"Cannot parse the dates of {match.group(0)!r}.") from None
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


"""Offline stand-ins for the Zenodo REST API and GitHub's codeload, served over real HTTP on 127.0.0.1.

The harvester and fetcher talk to Zenodo with plain ``requests``; the only way to test them honestly (paging,
page-size caps, the 10,000-result window, rate limits, legacy record shapes, broken downloads) without the
network is a real server that answers the same URLs the same way. :class:`ZenodoDouble` is that server: one
``ThreadingHTTPServer`` in a daemon thread, stdlib only, so the test suite and the offline ``zenodo-hpc demo``
can both use it. Only the base URL differs from production (``api_url`` / ``codeload_url``).

It can also misbehave on demand (:meth:`ZenodoDouble.fail`): error statuses, truncated bodies, slow answers,
HTML error pages, redirect loops and reset connections, so the retry and verification paths get exercised.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
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

__all__ = ["FAULT_MODES", "RequestRecord", "ZenodoDouble", "make_zip"]

FAULT_MODES: tuple[str, ...] = ("500", "502", "503", "404", "truncate", "slow", "html", "redirect_loop", "reset")
LOOP_MARKER = "double_redirect_loop"  # query parameter that keeps a redirect loop going once it started
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # earliest date a zip can hold: fixed so archives are byte-identical
_TRUTHY = {"", "1", "true", "yes", "on"}  # a bare ``all_versions`` flag means true, as on Zenodo
_FALSY = {"0", "false", "no", "off"}
_SORTS = {"oldest": False, "-mostrecent": False, "newest": True, "mostrecent": True}  # name -> descending
_RANGE = re.compile(
    r"(?P<field>[\w.]+):(?P<open>[\[{])\s*(?P<low>[^\s\]}]+)\s+TO\s+(?P<high>[^\s\]}]+)\s*(?P<close>[\]}])"
)
_TOKEN = re.compile(r'"[^"]*"|\S+')
_RANGE_FIELDS = ("created", "updated")
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>\n"
    b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the double saw it, so tests can assert on what the client really sent.

    ``status`` is 0 when the connection was reset without an answer; ``fault`` names the injected fault
    mode, if any. The token itself is never stored: only whether the request was ``authenticated``.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    authenticated: bool
    time: float
    fault: str | None = None


@dataclass
class _Plan:
    """What the handler must put on the wire: decided under the lock, written outside it."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: str = "send"  # "send", "truncate" (half the body, then close) or "reset" (RST, no answer)
    delay: float = 0.0


@dataclass(frozen=True)
class _Fault:
    mode: str
    seconds: float = 0.0


@dataclass(frozen=True)
class _Incoming:
    """A parsed request: decoded path, query (last value per name, token removed) and authentication."""

    method: str
    path: str
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    token_given: bool
    authenticated: bool


class _HttpError(Exception):
    """Ends request handling with a JSON error answer ``{"status": .., "message": ..}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _SlidingWindow:
    """Request times of the last ``span`` seconds, so rate limits behave like Zenodo's (not a token bucket)."""

    def __init__(self, limit: int, span: float) -> None:
        self.limit = limit
        self.span = span
        self.times: deque[float] = deque()

    def prune(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.span:
            self.times.popleft()

    def is_full(self, now: float) -> bool:
        self.prune(now)
        return len(self.times) >= self.limit

    def admit(self, now: float) -> None:
        self.times.append(now)

    def remaining(self, now: float) -> int:
        self.prune(now)
        return max(0, self.limit - len(self.times))

    def seconds_until_slot(self, now: float) -> float:
        """Seconds until the oldest request leaves the window (0 when the window is empty)."""
        self.prune(now)
        return max(0.0, self.times[0] + self.span - now) if self.times else 0.0

    def headers(self, now: float) -> list[tuple[str, str]]:
        reset_epoch = math.ceil(time.time() + self.seconds_until_slot(now))
        return [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining(now))),
            ("X-RateLimit-Reset", str(reset_epoch)),
        ]


class ZenodoDouble:
    """A Zenodo API (``/api``) and GitHub codeload (``/codeload``) double on one local HTTP server.

    The port is bound when the double is created, so ``api_url`` and the file links built by
    :meth:`add_record` are valid before :meth:`start`; a stopped double cannot be restarted.
    Rate limits apply to ``/api`` only: codeload is another service (github.com) in production.
    ``rate_window_seconds`` shortens the 60 s sliding window for tests that must see a slot free up.
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
    ) -> None:
        self.page_cap_anonymous = page_cap_anonymous
        self.page_cap_token = page_cap_token
        self.window = window
        self.send_retry_after = send_retry_after
        self._tokens = frozenset(tokens)
        self._all_window = _window_for(rate_per_min, rate_window_seconds)
        self._search_window = _window_for(search_rate_per_min, rate_window_seconds)
        self._lock = threading.Lock()
        self._records: dict[int, dict[str, Any]] = {}
        self._files: dict[tuple[int, str], bytes] = {}
        self._buckets: dict[str, int] = {}
        self._codeload: dict[tuple[str, str, str, str], bytes] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.requests: list[RequestRecord] = []
        self._server = _Server(self)
        base = f"http://127.0.0.1:{self._server.server_address[1]}"
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
        """Stop serving, close the port and every open connection (also wakes "slow" answers early)."""
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
    ) -> dict[str, Any]:
        """Store a hit (a copy) and serve its files; returns the stored hit with links to this server.

        ``legacy`` writes the old file shape (``filename``/``filesize``, bare md5, ``links.download``) that
        clients must still accept. ``checksums`` overrides the md5 of some keys, to serve a wrong one.
        Without ``files`` the hit's own ``files`` list is kept as given.
        """
        record_id = hit.get("id")
        if not isinstance(record_id, int):
            raise ValueError(f"a hit needs an integer 'id', got {record_id!r}")
        stored = copy.deepcopy(hit)
        stored.setdefault("links", {})["self"] = f"{self.api_url}/records/{record_id}"
        overrides = dict(checksums or {})
        unknown = sorted(set(overrides) - set(files or {}))
        if unknown:
            raise ValueError(f"checksums given for keys that are not files: {unknown}")
        with self._lock:
            if files is not None:
                stored["files"] = [
                    self._file_entry(record_id, key, data, legacy=legacy, checksum=overrides.get(key))
                    for key, data in files.items()
                ]
                for key, data in files.items():
                    self._files[(record_id, key)] = bytes(data)
            stored.setdefault("files", [])
            self._records[record_id] = stored
        return copy.deepcopy(stored)

    def _file_entry(self, record_id: int, key: str, data: bytes, *, legacy: bool, checksum: str | None) -> dict:
        """The ``files[]`` entry of one file in the new shape or the legacy one, linking to this server."""
        md5 = hashlib.md5(data).hexdigest()
        if legacy:
            bucket = str(uuid.uuid5(uuid.NAMESPACE_URL, f"zenodo-double/{record_id}"))
            self._buckets[bucket] = record_id
            shown = (checksum or md5).removeprefix("md5:")
            link = f"{self.api_url}/files/{bucket}/{quote(key)}"
            return {"filename": key, "filesize": len(data), "checksum": shown, "links": {"download": link}}
        shown = checksum if checksum and ":" in checksum else f"md5:{checksum or md5}"
        link = f"{self.api_url}/records/{record_id}/files/{quote(key)}/content"
        return {"key": key, "size": len(data), "checksum": shown, "links": {"self": link}}

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
        quoting does not matter). Modes: ``FAULT_MODES``; ``slow`` takes ``seconds=`` (default 1.0).
        A ``redirect_loop`` keeps redirecting the client's follow-up requests without using up ``times``.
        """
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose from {', '.join(FAULT_MODES)}")
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        allowed = {"seconds"} if mode == "slow" else set()
        unexpected = sorted(set(opts) - allowed)
        if unexpected:
            raise ValueError(f"fault mode {mode!r} takes no option(s) {unexpected}")
        seconds = float(opts.get("seconds", 1.0))
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            queue = self._faults.setdefault(_normalize_path(path), deque())
            queue.extend(_Fault(mode, seconds) for _ in range(times))

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
    ) -> dict[str, Any]:
        """A realistic Zenodo hit (the current API shape) without files, for :meth:`add_record`.

        ``created``/``updated`` accept ISO dates or datetimes and are written the way Zenodo writes them
        (``2018-03-01T12:00:00.000000+00:00``). ``github=(owner, repo, tag)`` adds the related identifier
        the Zenodo-GitHub integration leaves, which the fetcher's codeload fallback relies on.
        """
        created_text = _zenodo_timestamp(created)
        concept = conceptrecid if conceptrecid is not None else str(record_id)
        related = []
        if github is not None:
            owner, repo, tag = github
            related.append(
                {"identifier": f"https://github.com/{owner}/{repo}/tree/{tag}", "relation": "isSupplementTo",
                 "scheme": "url"}
            )
        return {
            "id": record_id,
            "conceptrecid": concept,
            "doi": f"10.5281/zenodo.{record_id}",
            "conceptdoi": f"10.5281/zenodo.{concept}",
            "created": created_text,
            "updated": _zenodo_timestamp(updated) if updated is not None else created_text,
            "metadata": {
                "title": title if title is not None else f"Software record {record_id}",
                "publication_date": created_text[:10],
                "resource_type": {"type": resource_type, "title": resource_type.capitalize()},
                "related_identifiers": related,
                "license": {"id": "mit"},
                "version": github[2] if github is not None else "1.0",
                "creators": [{"name": "Doe, Jane", "affiliation": "Example University"}],
                "access_right": "open",
            },
            "files": [],
        }

    # --------------------------------------------------------------------------------- request processing

    def _plan(self, method: str, target: str, headers: Mapping[str, str]) -> _Plan:
        """Decide the whole answer to one request and log it; called by the handler for every request."""
        arrival = time.monotonic()
        incoming = self._parse_incoming(method, target, headers)
        with self._lock:
            fault = self._take_fault(incoming)
            plan = self._fault_plan(fault, incoming) if fault else None
            if plan is not None:  # the fault replaced the answer; it still used up a slot of the rate limit
                self._count(incoming.path, arrival)
            else:
                plan = self._normal_plan(incoming, arrival)
                if fault is not None:  # "slow" and "truncate" alter the normal answer
                    plan.delay = fault.seconds if fault.mode == "slow" else 0.0
                    plan.action = "truncate" if fault.mode == "truncate" else plan.action
            self.requests.append(
                RequestRecord(
                    method=method,
                    path=incoming.path,
                    query=dict(incoming.query),
                    status=0 if plan.action == "reset" else plan.status,
                    authenticated=incoming.authenticated,
                    time=arrival,
                    fault=fault.mode if fault else None,
                )
            )
        return plan

    def _parse_incoming(self, method: str, target: str, headers: Mapping[str, str]) -> _Incoming:
        """Split the target, drop any ``access_token`` from what is kept, and check the token."""
        parts = urlsplit(target)
        items = parse_qsl(parts.query, keep_blank_values=True)
        token = _bearer_token(headers.get("Authorization"))
        token_params = [value for name, value in items if name == "access_token"]
        if token is None and token_params:
            token = token_params[-1]
        kept = [(name, value) for name, value in items if name != "access_token"]
        return _Incoming(
            method=method,
            path=unquote(parts.path),
            query=dict(kept),
            query_items=kept,
            token_given=token is not None,
            authenticated=token is not None and token in self._tokens,
        )

    def _take_fault(self, incoming: _Incoming) -> _Fault | None:
        """The fault for this request: a running redirect loop, else the next one queued for the path."""
        if LOOP_MARKER in incoming.query:
            return _Fault("redirect_loop")
        queue = self._faults.get(incoming.path)
        if not queue:
            return None
        fault = queue.popleft()
        if not queue:
            del self._faults[incoming.path]
        return fault

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
        if fault.mode == "reset":
            return _Plan(0, action="reset")
        return None

    def _normal_plan(self, incoming: _Incoming, now: float) -> _Plan:
        """The answer a healthy server gives: rate limit, authentication, then routing."""
        if not self._is_api(incoming.path):
            return self._codeload_plan(incoming)
        windows = self._windows_for(incoming.path)
        full = [w for w in windows if w.is_full(now)]
        if full:
            return self._too_many_requests(full, now)  # not counted: a 429 does not use up a slot
        self._count(incoming.path, now)
        rate_headers = _tightest(windows, now)
        try:
            if incoming.token_given and not incoming.authenticated:
                raise _HttpError(401, "The server could not verify that you are authorized to access the URL.")
            if incoming.method not in ("GET", "HEAD"):
                raise _HttpError(405, f"The method {incoming.method} is not allowed for the requested URL.")
            plan = self._route_api(incoming)
        except _HttpError as error:
            plan = _json_plan(error.status, {"status": error.status, "message": error.message})
        plan.headers.extend(rate_headers.headers(now) if rate_headers else [])
        return plan

    def _count(self, path: str, now: float) -> None:
        """Add an answered ``/api`` request to the rate windows that apply to its path."""
        if not self._is_api(path):
            return
        for sliding in self._windows_for(path):
            sliding.admit(now)

    def _windows_for(self, path: str) -> list[_SlidingWindow]:
        windows = [self._all_window]
        if _is_search(path):
            windows.append(self._search_window)
        return [w for w in windows if w is not None]

    def _too_many_requests(self, full: list[_SlidingWindow], now: float) -> _Plan:
        """A 429 naming the window that frees up last, with ``Retry-After`` unless switched off."""
        binding = max(full, key=lambda w: w.seconds_until_slot(now))
        plan = _json_plan(429, {"status": 429, "message": "Too many requests. Please slow down and retry later."})
        plan.headers.extend(binding.headers(now))
        if self.send_retry_after:
            plan.headers.append(("Retry-After", str(max(1, math.ceil(binding.seconds_until_slot(now))))))
        return plan

    @staticmethod
    def _is_api(path: str) -> bool:
        return path == "/api" or path.startswith("/api/")

    def _route_api(self, incoming: _Incoming) -> _Plan:
        path = incoming.path
        if _is_search(path):
            return _json_plan(200, self._search(incoming))
        match = re.fullmatch(r"/api/records/(\d+)/?", path)
        if match:
            return _json_plan(200, self._record(int(match.group(1))))
        match = re.fullmatch(r"/api/records/(\d+)/files/(.+)/content", path)
        if match:
            return self._file_plan(int(match.group(1)), match.group(2))
        match = re.fullmatch(r"/api/files/([0-9a-f-]+)/(.+)", path)
        if match and match.group(1) in self._buckets:
            return self._file_plan(self._buckets[match.group(1)], match.group(2))
        raise _HttpError(404, "The requested URL was not found on the server.")

    def _record(self, record_id: int) -> dict[str, Any]:
        if record_id not in self._records:
            raise _HttpError(404, "PID does not exist.")
        return self._records[record_id]

    def _file_plan(self, record_id: int, key: str) -> _Plan:
        data = self._files.get((record_id, key))
        if data is None:
            raise _HttpError(404, f"File {key!r} of record {record_id} does not exist.")
        filename = key.rsplit("/", 1)[-1]
        return _Plan(
            200,
            data,
            [("Content-Type", "application/octet-stream"),
             ("Content-Disposition", f"attachment; filename={quote(filename)}")],
        )

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

    # -------------------------------------------------------------------------------------------- search

    def _search(self, incoming: _Incoming) -> dict[str, Any]:
        """``GET /api/records``: validate paging, filter, de-duplicate versions, sort, cut the page."""
        query = incoming.query
        size = _int_param(query, "size", 10)
        page = _int_param(query, "page", 1)
        cap = self.page_cap_token if incoming.authenticated else self.page_cap_anonymous
        if size > cap:
            raise _HttpError(400, f"Page size cannot be greater than {cap}.")
        if (page - 1) * size >= self.window:
            raise _HttpError(400, f"Maximum number of {self.window} results have been reached.")
        descending = _sort_order(query.get("sort"))
        latest_only = not _flag(query, "all_versions")
        matches = _compile_query(query.get("q", ""))
        wanted_type = query.get("type")
        hits = self._latest_versions() if latest_only else list(self._records.values())
        hits = [h for h in hits if (not wanted_type or _resource_type(h) == wanted_type) and matches(h)]
        hits.sort(key=_sort_key, reverse=descending)
        reachable = hits[: self.window]
        page_hits = reachable[(page - 1) * size : page * size]
        links = {"self": self._search_url(incoming, page)}
        if page * size < len(reachable):
            links["next"] = self._search_url(incoming, page + 1)
        if page > 1:
            links["prev"] = self._search_url(incoming, page - 1)
        return {"hits": {"hits": page_hits, "total": len(hits)}, "links": links}

    def _latest_versions(self) -> list[dict[str, Any]]:
        """Only the highest id per ``conceptrecid``: what Zenodo returns unless ``all_versions`` is set."""
        latest: dict[str, dict[str, Any]] = {}
        for hit in self._records.values():
            concept = str(hit.get("conceptrecid") or f"id:{hit['id']}")
            if concept not in latest or hit["id"] > latest[concept]["id"]:
                latest[concept] = hit
        return list(latest.values())

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
        self._drain_request_body()
        double = self.server.double
        try:
            plan = double._plan(self.command, self.path, self.headers)
        except Exception as exc:  # a bug in the double: answer 500 rather than leave the client hanging
            traceback.print_exc()
            plan = _json_plan(500, {"status": 500, "message": f"internal error in the double: {exc!r}"})
        if plan.delay and double._stopping.wait(plan.delay):
            self.close_connection = True
            return
        if plan.action == "reset":
            self.close_connection = True
            self.server.abort_later(self.connection)
            return
        self._write(plan)

    def _drain_request_body(self) -> None:
        """Read a request body we ignore, so the keep-alive connection stays in sync."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

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
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


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


def _window_for(rate_per_min: float | None, span: float) -> _SlidingWindow | None:
    """A sliding window allowing ``floor(rate)`` requests (at least one) per ``span`` seconds, or none."""
    if rate_per_min is None:
        return None
    if rate_per_min <= 0:
        raise ValueError(f"a rate limit must be positive, not {rate_per_min}")
    return _SlidingWindow(max(1, math.floor(rate_per_min)), span)


def _tightest(windows: list[_SlidingWindow], now: float) -> _SlidingWindow | None:
    """The window whose headers a client should obey: the one with the fewest requests left."""
    return min(windows, key=lambda w: (w.remaining(now), w.limit), default=None)


def _json_plan(status: int, payload: Any) -> _Plan:
    body = json.dumps(payload).encode()
    return _Plan(status, body, [("Content-Type", "application/json")])


def _normalize_path(path: str) -> str:
    """Fault keys compare decoded paths, so quoted and unquoted spellings of a key are the same path."""
    return unquote(urlsplit(path).path)


def _is_search(path: str) -> bool:
    return path in ("/api/records", "/api/records/")


def _bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; any other non-empty header is a bad token."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else header


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _HttpError(400, f"Invalid value for '{name}': {text!r} is not an integer.") from None
    if value < 1:
        raise _HttpError(400, f"Invalid value for '{name}': must be at least 1.")
    return value


def _flag(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name)
    if text is None:
        return False
    if text.lower() in _TRUTHY:
        return True
    if text.lower() in _FALSY:
        return False
    raise _HttpError(400, f"Invalid value for '{name}': {text!r}.")


def _sort_order(sort: str | None) -> bool:
    """True for descending (newest first). Unknown sort names are a 400, as on Zenodo."""
    if not sort:
        return False
    if sort not in _SORTS:
        raise _HttpError(400, f"Invalid sort {sort!r}; the double knows {', '.join(_SORTS)}.")
    return _SORTS[sort]


def _resource_type(hit: Mapping[str, Any]) -> str | None:
    return ((hit.get("metadata") or {}).get("resource_type") or {}).get("type")


def _sort_key(hit: Mapping[str, Any]) -> tuple[datetime, int]:
    return (_hit_time(hit, "created") or datetime.min.replace(tzinfo=timezone.utc), hit["id"])


def _hit_time(hit: Mapping[str, Any], name: str) -> datetime | None:
    try:
        return _parse_when(str(hit[name]))
    except (KeyError, ValueError):
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
    tests = [_range_test(m) for m in _RANGE.finditer(q)]
    rest = _RANGE.sub(" ", q)
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
        title = str((hit.get("metadata") or {}).get("title") or "").lower()
        return (needle in title) != negate

    return test

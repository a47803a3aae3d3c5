"""The Zenodo double the tests use: the whole service, misbehaving on demand, with Zenodo's rate limits.

:class:`ZenodoDouble` is :class:`~doubles.zenodo_deposit.ZenodoDeposit` (records, search, files, codeload, withdrawn
records, the deposit API) plus what concerns every URL of the service: the request budgets of flask-limiter's moving
windows (as zenodo-rdm's ``invenio.cfg`` sets them, with their ``X-RateLimit-*`` and ``Retry-After`` headers) and
faults injected on demand (:meth:`ZenodoDouble.fail`): error statuses, truncated or trickling bodies, slow answers,
HTML error pages, redirect loops, reset connections, uploads cut off, absurd wait headers and a server echoing the
credential, so that the retry, verification and safety paths get exercised. Its answers come from the real service:
``tests/fixtures/zenodo/SOURCES.md`` cites the code and recorded responses behind them (see ``docs/doubles.md``).
"""

from __future__ import annotations

import base64
import fnmatch
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from zenodo_hpc.demo.server import (
    Incoming,
    LoopbackHandler,
    LoopbackHTTPServer,
    Plan,
    RequestRecord,
    is_api,
    is_search,
    json_plan,
)

from .zenodo_deposit import ZenodoDeposit

__all__ = ["FAULT_MODES", "ZENODO_GUEST_LIMITS", "ZENODO_TOKEN_LIMITS", "ZenodoDouble"]

FAULT_MODES: tuple[str, ...] = (
    "500", "502", "503", "404", "truncate", "slow", "html", "redirect_loop", "reset", "trickle", "sleepy", "redirect",
    "cut", "echo",
)
# zenodo-rdm invenio.cfg: RATELIMIT_GUEST_USER "8000 per hour;133 per minute", "records.search": "30 per minute";
# invenio-app's RATELIMIT_AUTHENTICATED_USER default "5000 per hour;100 per minute" (see SOURCES.md).
ZENODO_GUEST_LIMITS: dict[str, float] = {"rate_per_min": 133, "rate_per_hour": 8000, "search_rate_per_min": 30}
ZENODO_TOKEN_LIMITS: dict[str, float] = {"rate_per_min": 100, "rate_per_hour": 5000, "search_rate_per_min": 30}
LOOP_MARKER = "double_redirect_loop"  # query parameter that keeps a redirect loop going once it started
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>\n"
    b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"
)


@dataclass(frozen=True)
class _Fault:
    mode: str
    seconds: float = 0.0
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    location: str = ""


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


@dataclass
class _WirePlan(Plan):
    """A plan with how to send it (a fault's doing) and the fault's mode, for the request log."""

    action: str = "send"  # "send", "truncate", "trickle" (one byte per ``delay``) or "reset" (RST, no answer)
    delay: float = 0.0
    fault: str | None = None

    @classmethod
    def of(cls, plan: Plan) -> _WirePlan:
        return plan if isinstance(plan, _WirePlan) else cls(plan.status, plan.body, plan.headers)


class _FaultyHandler(LoopbackHandler):
    """The loopback handler, also able to stall, reset, truncate, trickle and cut off an upload."""

    server: _FaultyHTTPServer

    def _serve(self) -> None:
        double = self.server.double
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0 and double._take_cut(self.command, self.path, self.headers):
            self.rfile.read(max(1, length // 2))  # half of the upload arrives, then the connection is cut
            self.close_connection = True
            self.server.abort_later(self.connection)
            return
        plan = _WirePlan.of(self._plan_for(self._read_body()))
        if plan.action != "trickle" and plan.delay and double._stopping.wait(plan.delay):
            self.close_connection = True
            return
        if plan.action == "reset":
            self.close_connection = True
            self.server.abort_later(self.connection)
            return
        self._write(plan)

    def _write(self, plan: Plan) -> None:
        wire = _WirePlan.of(plan)
        if wire.action == "truncate":
            self.close_connection = True
            self._send_head(wire, max(len(wire.body), 1))  # even an empty body must come up short
            if self.command != "HEAD":
                self.wfile.write(wire.body[: len(wire.body) // 2])
            self.wfile.flush()
        elif wire.action == "trickle":
            self._send_head(wire, len(wire.body))
            if self.command == "HEAD":
                self.wfile.flush()
            else:
                self._trickle(wire.body, wire.delay)
        else:
            super()._write(wire)

    def _trickle(self, body: bytes, seconds: float) -> None:
        """One byte at once, then one more every ``seconds``; ``stop()`` cuts the rest off."""
        for index in range(len(body)):
            if index and self.server.double._stopping.wait(seconds):
                self.close_connection = True
                return
            self.wfile.write(body[index : index + 1])
            self.wfile.flush()


class _FaultyHTTPServer(LoopbackHTTPServer):
    """The loopback HTTP server, also able to end a connection with a TCP reset."""

    handler_class = _FaultyHandler
    double: ZenodoDouble

    def __init__(self, double: ZenodoDouble) -> None:
        self._to_abort: set[socket.socket] = set()
        super().__init__(double)

    def abort_later(self, request: socket.socket) -> None:
        """Close this connection with a TCP reset instead of a clean FIN once its handler returns."""
        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._connections_lock:
            self._to_abort.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            abort = request in self._to_abort
            self._to_abort.discard(request)
        if abort:
            self._untrack(request)
            request.close()  # SO_LINGER 0: the kernel sends RST, the client sees "connection reset"
        else:
            super().shutdown_request(request)


class ZenodoDouble(ZenodoDeposit):
    """The Zenodo double of the tests: records, search, files, codeload and the deposit API on one local HTTP server,
    with rate limits and faults on demand.

    Rate limits apply to ``/api`` only: codeload is another service (github.com) in production.
    ``rate_window_seconds`` shortens the 60 s window (and the hour, in proportion, unless ``hour_window_seconds``
    gives the "hour" its own length) for tests that must see a slot free up or the hour run out.
    ``ZenodoDouble(**ZENODO_GUEST_LIMITS)`` gives Zenodo's own numbers. The other options are those of
    :class:`~doubles.zenodo_deposit.ZenodoDeposit`, :class:`~doubles.zenodo_records.ZenodoRecords` and
    :class:`~zenodo_hpc.demo.server.LoopbackZenodo`.
    """

    _server_class = _FaultyHTTPServer

    def __init__(
        self,
        *,
        rate_per_min: float | None = None,
        search_rate_per_min: float | None = None,
        send_retry_after: bool = True,
        rate_window_seconds: float = 60.0,
        rate_per_hour: float | None = None,
        hour_window_seconds: float | None = None,
        **deposit: Any,
    ) -> None:
        self.send_retry_after = send_retry_after
        self._minute = _window_for(rate_per_min, rate_window_seconds, "minute")
        self._hour = _window_for(rate_per_hour, hour_window_seconds or rate_window_seconds * 60, "hour")
        self._search_window = _window_for(search_rate_per_min, rate_window_seconds, "minute")
        self._faults: dict[str, deque[_Fault]] = {}
        super().__init__(**deposit)

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

    def _decide(self, incoming: Incoming, arrival: float) -> _WirePlan:
        """A fault queued for the path replaces the answer or changes how it is sent; rate limits apply either way."""
        fault = self._take_fault(incoming)
        replaced = self._fault_plan(fault, incoming) if fault else None
        if replaced is not None:  # the fault replaced the answer; it still used up a slot of the rate limit
            self._count(incoming.path, arrival)
            plan = _WirePlan.of(replaced)
        else:
            plan = _WirePlan.of(super()._decide(incoming, arrival))
            if fault is not None:
                _alter(plan, fault)
        plan.fault = fault.mode if fault else None
        return plan

    def _log_entry(self, incoming: Incoming, plan: Plan, arrival: float) -> RequestRecord:
        wire = _WirePlan.of(plan)
        entry = super()._log_entry(incoming, plan, arrival)
        return replace(entry, status=0 if wire.action == "reset" else entry.status, fault=wire.fault)

    def _api_plan(self, incoming: Incoming, now: float) -> Plan:
        """The rate limits first: over one, a 429 in flask-limiter's words; the limit's headers on every answer."""
        windows = self._windows_for(incoming.path)
        breached = _admit(windows, now)
        shown = breached or (windows[0] if windows else None)
        if breached is not None:
            plan = json_plan(429, {"message": breached.label, "status": 429})  # invenio-rest's jsonify: sorted
        else:
            plan = super()._api_plan(incoming, now)
        if shown is not None:
            plan.headers.extend(shown.headers(now, retry_after=self.send_retry_after))
        return plan

    def _take_fault(self, incoming: Incoming) -> _Fault | None:
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
            self.requests.append(self._log_entry(incoming, _WirePlan(0, action="reset", fault="cut"), time.monotonic()))
        return True

    def _fault_plan(self, fault: _Fault, incoming: Incoming) -> Plan | None:
        """The answer of a fault that replaces the normal one (None for faults that only alter it)."""
        if fault.mode in ("500", "502", "503", "404"):
            status = int(fault.mode)
            return json_plan(status, {"status": status, "message": f"Injected fault: HTTP {status}."})
        if fault.mode == "html":
            return Plan(200, _HTML_ERROR_PAGE, [("Content-Type", "text/html; charset=utf-8")])
        if fault.mode == "redirect_loop":
            items = list(incoming.query_items)
            if LOOP_MARKER not in incoming.query:
                items.append((LOOP_MARKER, "1"))
            location = f"{quote(incoming.path)}?{urlencode(items)}"
            return Plan(302, b"", [("Location", location), ("Content-Type", "text/html; charset=utf-8")])
        if fault.mode == "redirect":
            return Plan(302, b"", [("Location", fault.location), ("Content-Type", "text/html; charset=utf-8")])
        if fault.mode == "sleepy" and not 200 <= fault.status < 300:
            plan = json_plan(fault.status, {"message": f"Injected fault: HTTP {fault.status}.",
                                             "status": fault.status})
            plan.headers.extend(fault.headers)
            return plan
        if fault.mode == "reset":
            return _WirePlan(0, action="reset")
        if fault.mode == "echo":
            return json_plan(fault.status, {"status": fault.status, "message": _echoed(incoming.credential)})
        return None

    def _count(self, path: str, now: float) -> None:
        """Count an ``/api`` request answered by a fault in the windows that apply to its path."""
        if is_api(path):
            _admit(self._windows_for(path), now)

    def _windows_for(self, path: str) -> list[_SlidingWindow]:
        """invenio-app's ``set_rate_limit``: an endpoint's own limit replaces the user limits, not adds to them."""
        if is_search(path) and self._search_window is not None:
            return [self._search_window]
        return [w for w in (self._minute, self._hour) if w is not None]


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


def _alter(plan: _WirePlan, fault: _Fault) -> None:
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


def _echoed(credential: str | None) -> str:
    """What the ``echo`` fault answers: the credential repeated raw, as ``Basic`` base64 and URL-quoted."""
    if not credential:
        return "Request refused: it carried no credential."
    basic = base64.b64encode(f"zenodo-hpc:{credential}".encode()).decode()
    return (f"Request refused. Authorization: Bearer {credential}; forwarded as Basic {basic}; "
            f"query: access_token={quote(credential, safe='')}")


def _normalize_path(path: str) -> str:
    """Fault keys compare decoded paths, so quoted and unquoted spellings of a key are the same path."""
    return unquote(urlsplit(path).path)

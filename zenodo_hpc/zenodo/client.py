"""A polite HTTP client for Zenodo and GitHub: one rate budget, retries with backoff, timeouts everywhere.

The budget of the whole run has two windows, as Zenodo's limits do: ``zenodo.rate_limit_per_min`` and
``zenodo.rate_limit_per_hour`` (unset: Zenodo's published limits for guests or for a token). Coordinating many
processes on many nodes through shared scratch is fragile (file locks on Lustre/NFS are not to be trusted), so
the budget is split instead: with P workers running at once each one spaces its requests evenly at the
tightest of its shares, R/P a minute and H/P an hour, which together never exceed either window. Evenly
spaced, not bursty: a burst is what earns 429 answers, and a burst that spends the hour's budget in its first
minutes earns a 429 whose ``Retry-After`` is most of an hour. A new client waits one interval before its first
request too, so that a task starting right after another one ended never adds a request to its slot.

On top of that, every client reads what the server says on every answer. Zenodo limits through invenio-app
with Flask-Limiter (``moving-window`` strategy; ``flask_limiter/extension.py``, ``__evaluate_limits`` and
``__inject_headers``, tag 3.11.0): the limits are tried shortest window first, and the ``X-RateLimit-Limit``,
``-Remaining`` (what is left after this request) and ``-Reset`` (epoch seconds: the oldest request of the window
plus its length, plus one) headers describe the first limit (the minute) unless a limit is breached, when they
describe the breached one (a 429, with ``Retry-After``: ``Reset`` minus now). So the hour shows only once it is
exhausted: the hourly share above is what keeps a run out of it. The client spreads its part of what is left
(``Remaining`` over the time to ``Reset``, divided among the P workers) and never goes faster than its own
share; ``Remaining: 0`` holds it until ``Reset``; a ``429`` is waited out as its ``Retry-After`` says (or with
exponential backoff and jitter without one).

The token travels only in the ``Authorization`` header, and only to the origin (scheme, host, port) it
belongs to (``zenodo.api_url``'s): never to GitHub, never to a host a file link names, never on a redirect
to another origin. It is never part of a URL, a log line or an error.

Every wait is bounded: a server asking to wait longer than ``max_wait_s`` (``Retry-After: 1000000000``, a
date in 2099, an ``X-RateLimit-Reset`` far away) fails the request at once with reason ``rate_limited``
instead of holding a worker for hours.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import requests
import urllib3

from .. import __version__
from ..core.config import RequestBudget, ZenodoConfig
from ..core.errors import UserError

log = logging.getLogger(__name__)

USER_AGENT = f"zenodo-hpc/{__version__} (+https://github.com/zenodo-hpc; research dataset builder)"
CONNECT_TIMEOUT_S = 10.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 120.0
MAX_SERVER_WAIT_S = 3600.0  # default of ``max_wait_s``: never believe a server asking to wait longer
EPOCH_2001 = 1e9  # an X-RateLimit-Reset below this is a number of seconds, not an epoch time
JSON = "application/json"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_THROTTLED = 30  # 429 answers tolerated for one request before giving up
# The fraction of a budget a client's even spacing uses. At exactly the budget, the request that is a window's
# limit after another one comes exactly one window later, at the edge of the server's moving window, where a few
# milliseconds of jitter earn a 429; 2% slower moves it about 1.2 s past the minute's edge, 73 s past the hour's.
PACE = 0.98


class RequestFailed(UserError):
    """A request that kept failing; ``reason`` is what a record's failure records (``http_503``, ...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RateLimiter:
    """Evenly spaced requests at the tightest of ``per_minute`` and ``per_hour``; the server can push the next
    slot later. The first request also waits one interval: a client replacing one that just ended (the next
    task of a worker slot) must not add a request to the slot's budget."""

    def __init__(self, per_minute: float, *, per_hour: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = spacing_s(per_minute, per_hour)
        self._clock, self._sleep = clock, sleep
        self._next = clock() + self.interval
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for the next slot; return the seconds waited. The slot after it is one interval after the
        moment this one really began: a sleep that overslept must not shorten the next gap."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
            with self._lock:
                self._next = max(self._next, self._clock() + self.interval)
        return wait

    def hold_until(self, when: float) -> None:
        """No request before the monotonic time ``when`` (a 429, an exhausted quota or its headers said so)."""
        with self._lock:
            self._next = max(self._next, when)


def spacing_s(per_minute: float, per_hour: float | None = None) -> float:
    """Seconds between two requests of a client allowed ``per_minute`` and ``per_hour``: the tightest window,
    at :data:`PACE` of it."""
    if per_minute <= 0 or (per_hour is not None and per_hour <= 0):
        raise ValueError("a rate must be positive")
    return max(60.0 / per_minute, 0.0 if per_hour is None else 3600.0 / per_hour) / PACE


def share_of_budget(per_minute: float, concurrent: int) -> float:
    """Each of ``concurrent`` workers' share of a run-wide budget (a minute's or an hour's)."""
    return per_minute / max(1, concurrent)


def spread_s(remaining: int, until_reset: float, workers: int) -> float:
    """The spacing that spends one worker's part of what the server has left by its reset: ``remaining``
    requests over ``until_reset`` seconds, shared by ``workers`` clients. Never beyond the reset itself: by then
    at least one slot is free again, and the next answer says how many."""
    return until_reset * min(1.0, max(1, workers) / max(1, remaining))


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)], at least base/2."""
    uniform = rng.uniform if rng is not None else random.uniform
    ceiling = min(cap, base * (2 ** attempt))
    return max(base / 2, uniform(0, ceiling))


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value) if len(value) < 16 else math.inf
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def quota(headers: Mapping[str, str], *, now: float | None = None) -> tuple[int, float] | None:
    """``(X-RateLimit-Remaining, seconds until X-RateLimit-Reset)`` of an answer, or None without both."""
    remaining, reset = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Reset")
    if remaining is None or reset is None:
        return None
    try:
        left, value = int(remaining), float(reset)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(value):
        return max(0, left), math.inf
    if value < EPOCH_2001:  # some servers send seconds from now; Zenodo sends epoch seconds
        return max(0, left), max(0.0, value)
    return max(0, left), max(0.0, value - (time.time() if now is None else now))


def quota_exhausted_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` when ``X-RateLimit-Remaining`` says nothing is left."""
    found = quota(headers, now=now)
    if found is None or found[0] > 0:
        return None
    return found[1]


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0  # 429 answers
    waited_s: float = 0.0


class HttpClient:
    """GET with a rate budget, retries on 429/5xx/connection errors, and timeouts on every request.

    :meth:`send` does the same for POST, PUT and DELETE (the Zenodo deposit API).

    ``per_minute`` and ``per_hour`` are this client's share of the budget; ``workers`` is how many clients share
    the server's window at once (each spreads ``1/workers`` of what the server says is left). ``token`` is sent
    only to the origin of ``token_url`` (the API's); requests elsewhere carry no credential at all. A
    server-requested wait above ``max_wait_s`` fails the request (``rate_limited``).
    """

    def __init__(
        self,
        *,
        per_minute: float,
        per_hour: float | None = None,
        workers: int = 1,
        token: str | None = None,
        token_url: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
        max_wait_s: float = MAX_SERVER_WAIT_S,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if token and not token_url:
            raise ValueError("a token needs the URL of the API it belongs to (token_url)")
        self.limiter = RateLimiter(per_minute, per_hour=per_hour, sleep=sleep)
        self.workers = max(1, workers)
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        self.retries = retries
        self.max_wait_s = max_wait_s
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.pop("Authorization", None)
        self._token = token or None
        self._token_origin = origin(token_url) if token else None
        self.has_token = bool(token)
        self._server_hold_until = 0.0  # monotonic time before which the server said not to come back
        self.refused_until: float | None = None  # epoch time a refused long wait ends (``rate_limited``), if finite
        self._sleep = sleep
        self.stats = ClientStats()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers_for(self, url: str, *, accept: str | None = None) -> dict[str, str]:
        """The headers of one request: the token only for its own origin, ``Accept`` when asked."""
        headers = {"Accept": accept} if accept else {}
        if self._token and origin(url) == self._token_origin:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def get(self, url: str, *, params: Mapping[str, Any] | None = None, stream: bool = False,
            accept: str | None = None) -> requests.Response:
        """The final answer for ``url``: 2xx, or a 4xx other than 429 for the caller to judge.

        Raises :class:`RequestFailed` when 429/5xx answers or connection errors outlast the retries, when
        the server asks for a wait above ``max_wait_s``, for a link that is not http(s), and at once for a
        redirect loop. ``accept`` sets the ``Accept`` header (``JSON`` for API calls).
        """
        attempt = 0  # failures that count against the retries
        throttled = 0  # 429 answers: the server says when to come back, so they do not count
        headers = self.headers_for(url, accept=accept)
        while True:
            self._refuse_long_wait(url)
            self.stats.waited_s += self.limiter.acquire()
            self.stats.requests += 1
            try:
                response = self.session.get(url, params=params, stream=stream, timeout=self.timeout, headers=headers)
            except requests.TooManyRedirects:
                raise RequestFailed(f"{url}: redirect loop", reason="redirect_loop") from None
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                    requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader) as exc:
                raise RequestFailed(f"cannot download {url[:200]!r}: {_short(exc)}", reason="bad_link") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
                if attempt >= self.retries:
                    raise RequestFailed(f"cannot reach {_base(url)}: {_short(exc)}", reason=reason) from None
                self._back_off(attempt, f"{reason} on {url}")
                attempt += 1
                continue
            self._obey_quota_headers(response)
            if response.status_code not in RETRY_STATUSES:
                return response
            if response.status_code == 429:
                self.stats.throttled += 1
                throttled += 1
            else:
                attempt += 1
            self._wait_to_retry(response, url, url, attempt, throttled)

    def send(self, method: str, url: str, *, json_body: Any = None, body: Callable[[], IO[bytes]] | None = None,
             content_type: str | None = None, params: Mapping[str, Any] | None = None, accept: str | None = JSON,
             idempotent: bool = True) -> requests.Response:
        """POST, PUT or DELETE ``url``: the final answer, 2xx or any other status but 429/5xx for the caller.

        The same budget, token rule, bounded waits and retries as :meth:`get`, with three differences:

        - ``json_body`` is sent as JSON; ``body`` is a callable that opens the bytes to stream (a file), called
          again for each attempt, so a retried upload starts from its first byte;
        - redirects are not followed: a 3xx is returned as it is (a body is never replayed to another URL);
        - ``idempotent=False`` (creating something) retries only what surely did not reach the server: a 429
          and a connection that could not be opened. A 5xx, a timeout or a connection cut after the request
          went out raise :class:`RequestFailed` at once (``reason`` ``http_5xx``, ``timeout``,
          ``connection_error``), since repeating the request could do it twice; the caller finds out what
          happened instead.
        """
        if json_body is not None and body is not None:
            raise ValueError("give json_body or body, not both")
        attempt = 0
        throttled = 0
        headers = self.headers_for(url, accept=accept)
        if content_type:
            headers["Content-Type"] = content_type
        while True:
            self._refuse_long_wait(url)
            self.stats.waited_s += self.limiter.acquire()
            self.stats.requests += 1
            try:
                response = self._send_once(method, url, json_body, body, headers, params)
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                    requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader) as exc:
                raise RequestFailed(f"cannot send to {url[:200]!r}: {_short(exc)}", reason="bad_link") from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                reason = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
                if attempt >= self.retries or not (idempotent or _nothing_sent(exc)):
                    raise RequestFailed(f"{method} {_base(url)}: {_short(exc)}", reason=reason) from None
                self._back_off(attempt, f"{reason} on {method} {url}")
                attempt += 1
                continue
            self._obey_quota_headers(response)
            if response.status_code not in RETRY_STATUSES:
                return response
            if response.status_code == 429:
                self.stats.throttled += 1
                throttled += 1
            elif not idempotent:
                response.close()
                raise RequestFailed(f"{method} {url}: HTTP {response.status_code}",
                                    reason=f"http_{response.status_code}")
            else:
                attempt += 1
            self._wait_to_retry(response, url, f"{method} {url}", attempt, throttled)

    def _send_once(self, method: str, url: str, json_body: Any, body: Callable[[], IO[bytes]] | None,
                   headers: dict[str, str], params: Mapping[str, Any] | None) -> requests.Response:
        kwargs: dict[str, Any] = {"params": params, "timeout": self.timeout, "headers": headers,
                                  "allow_redirects": False}
        if json_body is not None:
            kwargs["json"] = json_body
        if body is None:
            return self.session.request(method, url, **kwargs)
        with body() as stream:
            return self.session.request(method, url, data=stream, **kwargs)

    def _wait_to_retry(self, response: requests.Response, url: str, label: str, attempt: int,
                       throttled: int) -> None:
        """After a 429 or 5xx that may be retried (``get`` and ``send`` alike): give up once the retries or
        the 429s are used up, else wait what the server asks (``Retry-After``, at most ``max_wait_s``) or
        back off. ``label`` names the request in messages (``url``, or ``METHOD url``)."""
        status = response.status_code
        if attempt > self.retries or throttled > MAX_THROTTLED:
            response.close()
            raise RequestFailed(f"{label}: HTTP {status} after {attempt + throttled} tries", reason=f"http_{status}")
        asked = retry_after_seconds(response.headers)
        response.close()
        if asked is not None:
            self._check_wait(asked, f"HTTP {status} from {_base(url)} with Retry-After", url)
            self.limiter.hold_until(time.monotonic() + asked + random.uniform(0, 0.1 * asked + 0.05))
            log.info("HTTP %s from %s: waiting %.1f s as asked (Retry-After)", status, url, asked)
            self.stats.retries += 1
        else:
            self._back_off(attempt + throttled - 1, f"HTTP {status} on {label}")

    def _check_wait(self, seconds: float, what: str, url: str) -> None:
        """A wait the server asks for, refused (``rate_limited``) when it is longer than ``max_wait_s``."""
        if seconds > self.max_wait_s:
            self.refused_until = time.time() + seconds if math.isfinite(seconds) else None
            shown = "for ever" if not math.isfinite(seconds) else f"{seconds:.0f} s"
            raise RequestFailed(f"{what} asks to wait {shown}, more than the {self.max_wait_s:.0f} s allowed "
                                f"(zenodo.max_wait_s); not waiting for {_base(url)}", reason="rate_limited")

    def hold_until_epoch(self, when: float) -> None:
        """No request before the epoch time ``when``: what the server told another worker of the run (the budget
        is shared), so that this one does not spend a request to hear it again; a longer wait than
        ``max_wait_s`` fails the next request at once (``rate_limited``), as an exhausted quota does."""
        until = time.monotonic() + (when - time.time())
        self._server_hold_until = max(self._server_hold_until, until)
        if until - time.monotonic() <= self.max_wait_s:
            self.limiter.hold_until(until)

    def _refuse_long_wait(self, url: str) -> None:
        """An exhausted quota whose reset is too far away fails the next request at once.

        Only what the server imposed counts: our own even spacing may be slow (a small share of the
        budget), and is never refused.
        """
        pending = self._server_hold_until - time.monotonic()
        if pending > self.max_wait_s:
            self._check_wait(pending, "an exhausted rate-limit quota (X-RateLimit-Reset)", url)

    def _back_off(self, attempt: int, what: str) -> None:
        delay = backoff_delay(attempt)
        log.info("%s: retrying in %.1f s (retry %d of %d)", what, delay, attempt + 1, self.retries)
        self.stats.retries += 1
        self.limiter.hold_until(time.monotonic() + delay)

    def _obey_quota_headers(self, response: requests.Response) -> None:
        """Pace by what the server says is left of its window (``X-RateLimit-*``, on every answer)."""
        found = quota(response.headers)
        if found is None:
            return
        remaining, until_reset = found
        if remaining == 0:
            self._hold_for_reset(until_reset)
            return
        spacing = min(spread_s(remaining, until_reset, self.workers), self.max_wait_s)
        if spacing > self.limiter.interval:
            log.debug("%d requests left for %.1f s among %d workers: next request in %.1f s", remaining,
                      until_reset, self.workers, spacing)
            self.limiter.hold_until(time.monotonic() + spacing)

    def _hold_for_reset(self, wait: float) -> None:
        """``X-RateLimit-Remaining: 0``: nothing before ``X-RateLimit-Reset`` (refused later if too far away)."""
        if not wait:
            return
        log.info("rate-limit quota used up: next request in %.1f s", wait)
        until = time.monotonic() + min(wait, 10 * 365 * 86400.0)
        self._server_hold_until = max(self._server_hold_until, until)
        if wait <= self.max_wait_s:
            self.limiter.hold_until(until)


def origin(url: str | None) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a URL, default ports filled in: what "the same server" means for a token."""
    if not url:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def read_token(env_name: str) -> str | None:
    """The Zenodo token from the environment variable named in the config (never from a file)."""
    value = os.environ.get(env_name, "").strip()
    return value or None


def run_budget(zenodo: ZenodoConfig) -> RequestBudget:
    """The run's budget in this process: the keys set, else the published limits for a guest or for the token
    found in the environment (``zenodo.token_env``)."""
    return zenodo.request_budget(has_token=read_token(zenodo.token_env) is not None)


def _nothing_sent(exc: Exception) -> bool:
    """Whether a requests failure happened before the request left: no connection could be opened."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _base(url: str) -> str:
    parts = urllib.parse.urlparse(url)
    return f"{parts.scheme}://{parts.netloc}"


def _short(exc: Exception) -> str:
    """A one-line description of a requests exception, without urllib3's nested reprs."""
    text = str(exc)
    for marker in ("Failed to establish a new connection: ", "Read timed out", "Connection refused"):
        if marker in text:
            tail = text.split(marker, 1)[1] if marker.endswith(": ") else marker
            return tail.split("'))")[0].split("\n")[0].strip() or marker
    return text.splitlines()[0][:200] if text else type(exc).__name__

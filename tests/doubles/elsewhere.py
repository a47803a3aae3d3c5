"""Another origin for the Zenodo double's tests: a loopback server that records whether a token reached it.

:class:`HeaderRecorder` serves the same bytes at any path on another port (so another origin than the Zenodo
double's). Point a file link, a codeload URL or a ``redirect`` fault at it to prove that a Zenodo token never leaves
Zenodo's origin (``docs/doubles.md``, "Another origin").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from zenodo_hpc.demo.server import make_zip

from .serving import ServedInThread

__all__ = ["HeaderRecorder", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request to a :class:`HeaderRecorder`: whether it carried a token, never the token itself."""

    method: str
    path: str
    authorization: bool
    accept: str | None


class HeaderRecorder(ServedInThread):
    """A second loopback server (another port, so another origin) that serves ``body`` at any path.

    It records, for every request, whether an ``Authorization`` header came: point a file link or a redirect
    at ``url`` to prove a Zenodo token never leaves Zenodo's origin.
    """

    thread_name = "header-recorder"

    def __init__(self, body: bytes | None = None, *, content_type: str = "application/zip") -> None:
        self.body = make_zip({"elsewhere/README.md": b"served by another origin\n"}) if body is None else body
        self.content_type = content_type
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RecorderHandler)
        self._server.daemon_threads = True
        self._server.recorder = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def authorization_seen(self) -> bool:
        """Whether any request so far carried an ``Authorization`` header."""
        with self._lock:
            return any(r.authorization for r in self.requests)

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(entry)


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



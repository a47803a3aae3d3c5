"""The lifecycle the tests' own HTTP doubles share: serve a loopback server from a daemon thread, stop it and close
its port (the package's demo server, zenodo_hpc/demo/server.py, has its own, with open connections to close)."""

from __future__ import annotations

import threading
from socketserver import BaseServer
from types import TracebackType
from typing import TypeVar

_Served = TypeVar("_Served", bound="ServedInThread")


class ServedInThread:
    """Mixed into a double whose ``__init__`` sets ``self._server`` (bound to 127.0.0.1, not yet serving)."""

    _server: BaseServer
    _thread: threading.Thread | None = None
    thread_name = "test-double"

    def start(self: _Served) -> _Served:
        """Serve in a daemon thread, so a forgotten double never keeps the test process alive."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self: _Served) -> _Served:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

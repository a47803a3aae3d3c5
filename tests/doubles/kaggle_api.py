"""A Kaggle API double: a real HTTP server on 127.0.0.1 that the official ``kaggle`` client talks to.

``zenodo-hpc publish kaggle`` drives the real client (``kaggle`` + ``kagglesdk``); the only honest way to test
it offline is to let that client speak HTTP to a server answering the same endpoints the same way. The client
reaches the double when ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` is set before ``import kaggle`` and
``kagglesdk.kaggle_env._env_to_endpoint[KaggleEnv.LOCAL]`` points at :attr:`KaggleDouble.url`
(:func:`child_main` does both). Every call of the client is then a JSON ``POST /api/v1/<service>/<method>``:

- ``datasets.DatasetApiService/GetDatasetStatus`` ``{ownerSlug, datasetSlug}`` -> ``{status}`` (of the newest
  version: ``READY``, or what :attr:`KaggleDouble.processing` says while it is processed) or 404;
- ``datasets.DatasetApiService/GetDataset`` ``{ownerSlug, datasetSlug}`` -> the dataset with its
  ``currentVersionNumber``, or 404 (``KaggleApi.dataset_status(ref, format="json")`` asks both);
- ``blobs.BlobApiService/StartBlobUpload`` ``{type, name, contentLength, ...}`` -> ``{token, createUrl}``;
  the bytes then go in a ``PUT`` to ``createUrl`` (served here, under ``/upload/<token>``), following the
  resumable-upload protocol of Google Cloud Storage (a ``Content-Range: bytes */N`` probe answered 200 when
  complete, 308 with a ``Range`` header when partial);
- ``datasets.DatasetApiService/CreateDataset`` / ``CreateDatasetVersion`` with the upload tokens;
- ``datasets.DatasetApiService/ListDatasetFiles`` ``{ownerSlug, datasetSlug, datasetVersionNumber, pageToken,
  pageSize}`` -> ``{datasetFiles: [{name, totalBytes, ...}], nextPageToken}``, a page at a time;
- ``security.OAuthService/IntrospectToken`` when the client authenticates with an access token.

Every request is recorded (:class:`Request`: method, path, JSON body, uploaded bytes, the user it
authenticated as). :meth:`KaggleDouble.fail` makes the next matching request answer an error.

The shapes of the answers are those of the request/response classes of ``kagglesdk`` (the client's SDK,
``kagglesdk/datasets/types/dataset_api_service.py`` and ``kagglesdk/blobs/types/blob_api_service.py``,
kagglesdk 0.1.38); each handler names the class it follows.

Run as a script, ``python tests/doubles/kaggle_api.py child SPEC.json`` is the child process the tests start: it
points the client at the double, calls :func:`zenodo_hpc.dataset.publish.publish_kaggle` and prints what
``zenodo-hpc publish kaggle`` prints.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Fault", "KaggleDouble", "Request", "child_main"]

API_PREFIX = "/api/v1/"
UPLOAD_PREFIX = "/upload/"
_CONTENT_RANGE = re.compile(r"bytes (?:(?P<first>\d+)-(?P<last>\d+)|\*)/(?P<total>\d+|\*)")


@dataclass(frozen=True)
class Request:
    """One request as the double received it."""

    method: str
    path: str  # without the query string
    json: Any = None  # the parsed JSON body of an API call, else None
    body: bytes = b""  # the raw bytes of an upload PUT
    headers: dict[str, str] = field(default_factory=dict)  # Content-Range and Content-Type, when sent
    user: str | None = None  # who the request authenticated as (never the key itself)

    @property
    def call(self) -> str:
        """``GetDatasetStatus`` for an API call, ``PUT`` for an upload, else the path."""
        if self.path.startswith(API_PREFIX):
            return self.path.rsplit("/", 1)[-1]
        if self.path.startswith(UPLOAD_PREFIX):
            return self.method
        return self.path


@dataclass
class Fault:
    """An error answer queued for the next request whose :attr:`Request.call` equals ``call``."""

    call: str
    status: int = 500
    message: str = "Internal Server Error"
    error_answer: bool = False  # 200 with {"status": "error", "error": message}, as Kaggle answers a refusal
    times: int = 1
    after: int = 0  # let this many matching requests through first


@dataclass
class _Blob:
    name: str
    length: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def complete(self) -> bool:
        return len(self.data) == self.length


class KaggleDouble:
    """The Kaggle API endpoints ``kaggle datasets create/version/status`` use, with real HTTP.

    ``users`` maps user name -> API key (legacy key authentication, HTTP Basic); ``tokens`` maps access
    token -> user name (``KAGGLE_API_TOKEN``, HTTP Bearer). A request without valid credentials gets 401.
    ``known_tags``: keywords Kaggle knows; others come back in ``invalidTags`` (None: every tag is known).
    A new version reports the statuses in :attr:`processing` (one per status request) before
    :attr:`final_status`; :attr:`max_page_size` caps the files per ``ListDatasetFiles`` page, as a server may;
    a new version is left without the files named in :attr:`lose`.
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        known_tags: Iterable[str] | None = None,
    ) -> None:
        self.users = dict(users or {})
        self.tokens = dict(tokens or {})
        self.known_tags = None if known_tags is None else set(known_tags)
        self.requests: list[Request] = []
        self.datasets: dict[str, dict[str, Any]] = {}  # "owner/slug" -> settings and versions
        self.blobs: dict[str, _Blob] = {}
        self.faults: list[Fault] = []
        # DatabundleVersionStatus names (kagglesdk datasets/types/dataset_enums.py): what a new version reports
        # while it is processed, e.g. ["BLOBS_RECEIVED"], one per status request, then its final status
        self.processing: list[str] = []
        self.final_status = "READY"
        self.max_page_size: int | None = None
        self.lose: set[str] = set()  # file names a new version ends up without, whatever the client sent
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- life cycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KaggleDouble:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kaggle-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KaggleDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- test controls --------------------------------------------------------------------------------

    def fail(self, call: str, status: int = 500, message: str = "Internal Server Error", *,
             error_answer: bool = False, times: int = 1, after: int = 0) -> None:
        """Answer ``times`` requests whose :attr:`Request.call` is ``call`` with an error, after ``after`` of them."""
        with self._lock:
            self.faults.append(Fault(call, status, message, error_answer, times, after))

    def add_dataset(self, ref: str, files: dict[str, bytes], *, title: str = "Existing dataset",
                    private: bool = True) -> None:
        """A dataset that already exists on the server, with one version."""
        with self._lock:
            self.datasets[ref] = {"title": title, "isPrivate": private, "license": "CC0-1.0", "keywords": [],
                                  "versions": [self._version("Initial release", files, processed=True)]}

    def calls(self) -> list[str]:
        """The sequence of :attr:`Request.call` of every request received so far."""
        with self._lock:
            return [r.call for r in self.requests]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def blob_name(self, request: Request) -> str | None:
        """The file name an upload ``PUT`` was for (announced by its StartBlobUpload)."""
        blob = self.blobs.get(request.path[len(UPLOAD_PREFIX):]) if request.path.startswith(UPLOAD_PREFIX) else None
        return blob.name if blob else None

    def files_of(self, ref: str, version: int = -1) -> dict[str, bytes]:
        """name -> bytes of a version of a dataset (default: the newest)."""
        with self._lock:
            return dict(self.datasets[ref]["versions"][version]["files"])

    # --- what the handler calls -----------------------------------------------------------------------

    def _take_fault(self, call: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.call == call and fault.times > 0:
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    return fault
        return None

    def _version(self, notes: str | None, files: dict[str, bytes], processed: bool = False) -> dict[str, Any]:
        return {"notes": notes, "files": dict(files), "pending": [] if processed else list(self.processing),
                "status": "READY" if processed else self.final_status}

    def _authenticate(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme == "Basic":
            try:
                user, _, key = base64.b64decode(value).decode("utf-8").partition(":")
            except ValueError:
                return None
            return user if self.users.get(user) == key else None
        if scheme == "Bearer":
            return self.tokens.get(value)
        return None

    def _api(self, method: str, body: Any, user: str | None) -> tuple[int, Any]:
        if method == "IntrospectToken":
            name = self.tokens.get(str(body.get("token", "")))
            return 200, ({"active": True, "username": name} if name else {"active": False})
        if user is None:
            return 401, {"code": 401, "message": "Unauthenticated"}
        handler = {
            "GetDatasetStatus": self._status,
            "GetDataset": self._dataset,
            "ListDatasetFiles": self._list_files,
            "StartBlobUpload": self._start_upload,
            "CreateDataset": self._create,
            "CreateDatasetVersion": self._create_version,
        }.get(method)
        if handler is None:
            return 404, {"code": 404, "message": f"No such method: {method}"}
        with self._lock:
            return handler(body, user)

    def _status(self, body: dict[str, Any], user: str) -> tuple[int, Any]:
        """ApiGetDatasetStatusRequest -> ApiGetDatasetStatusResponse {status: DatabundleVersionStatus name}."""
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        if ref not in self.datasets:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}
        newest = self.datasets[ref]["versions"][-1]
        return 200, {"status": newest["pending"].pop(0) if newest["pending"] else newest["status"]}

    def _dataset(self, body: dict[str, Any], user: str) -> tuple[int, Any]:
        """ApiGetDatasetRequest -> ApiDataset (the fields the double knows; currentVersionNumber counts from 1)."""
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        if ref not in self.datasets:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}
        dataset = self.datasets[ref]
        return 200, {"id": list(self.datasets).index(ref) + 1, "ref": ref, "title": dataset["title"],
                     "isPrivate": dataset["isPrivate"], "licenseName": dataset["license"],
                     "ownerRef": ref.split("/")[0], "url": f"https://www.kaggle.com/datasets/{ref}",
                     "currentVersionNumber": len(dataset["versions"])}

    def _list_files(self, body: dict[str, Any], user: str) -> tuple[int, Any]:
        """ApiListDatasetFilesRequest -> ApiListDatasetFilesResponse {datasetFiles: [ApiDatasetFile], nextPageToken};
        the page token is the offset of the page's first file. No version number: the newest version."""
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        versions = self.datasets.get(ref, {}).get("versions", [])
        number = int(body.get("datasetVersionNumber") or len(versions))
        if not 1 <= number <= len(versions):
            return 404, {"code": 404, "message": f"Dataset {ref} version {number} not found"}
        names = sorted(versions[number - 1]["files"].items())
        start = int(body.get("pageToken") or 0)
        size = min(int(body.get("pageSize") or 20), self.max_page_size or 1 << 30)
        page = names[start:start + size]
        files = [{"ref": f"{ref}/{name}", "datasetRef": ref, "ownerRef": ref.split("/")[0], "name": name,
                  "totalBytes": len(data)} for name, data in page]
        more = start + size < len(names)
        return 200, {"datasetFiles": files, "nextPageToken": str(start + size) if more else ""}

    def _start_upload(self, body: dict[str, Any], user: str) -> tuple[int, Any]:
        """ApiStartBlobUploadRequest -> ApiStartBlobUploadResponse {token, createUrl}."""
        if body.get("type") != "DATASET" or not body.get("name") or "contentLength" not in body:
            return 400, {"code": 400, "message": "type, name and contentLength are required"}
        token = uuid.uuid4().hex
        self.blobs[token] = _Blob(str(body["name"]), int(body["contentLength"]))
        return 200, {"token": token, "createUrl": f"{self.url}{UPLOAD_PREFIX}{token}"}

    def _files(self, entries: list[dict[str, Any]]) -> dict[str, bytes] | str:
        files: dict[str, bytes] = {}
        for entry in entries:
            blob = self.blobs.get(str(entry.get("token")))
            if blob is None or not blob.complete:
                return f"Unknown or incomplete upload token {entry.get('token')!r}"
            if blob.name not in self.lose:
                files[blob.name] = bytes(blob.data)
        return files

    def _tags(self, tags: list[str]) -> tuple[list[str], list[str]]:
        if self.known_tags is None:
            return list(tags), []
        return [t for t in tags if t in self.known_tags], [t for t in tags if t not in self.known_tags]

    def _create(self, body: dict[str, Any], user: str) -> tuple[int, Any]:
        """ApiCreateDatasetRequest -> ApiCreateDatasetResponse {ref, url, status, error, invalidTags}."""
        owner, slug = body.get("ownerSlug", ""), body.get("slug", "")
        ref = f"{owner}/{slug}"
        if owner != user:
            return 403, {"code": 403, "message": f"{user} may not create datasets for {owner}"}
        if ref in self.datasets:
            return 200, {"status": "error", "error": f"The requested slug {slug!r} is already in use."}
        files = self._files(body.get("files", []))
        if isinstance(files, str):
            return 200, {"status": "error", "error": files}
        tags, invalid = self._tags(body.get("categoryIds", []))
        self.datasets[ref] = {"title": body.get("title"), "isPrivate": bool(body.get("isPrivate", False)),
                              "license": body.get("licenseName"), "keywords": tags,
                              "versions": [self._version(None, files)]}
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok",
                     "invalidTags": invalid}

    def _create_version(self, body: dict[str, Any], user: str) -> tuple[int, Any]:
        """ApiCreateDatasetVersionRequest {ownerSlug, datasetSlug, body} -> ApiCreateDatasetResponse."""
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        if ref not in self.datasets:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}
        version = body.get("body", {})
        if not version.get("versionNotes"):
            return 200, {"status": "error", "error": "Version notes are required"}
        files = self._files(version.get("files", []))
        if isinstance(files, str):
            return 200, {"status": "error", "error": files}
        tags, invalid = self._tags(version.get("categoryIds", []))
        dataset = self.datasets[ref]
        dataset["keywords"] = tags
        dataset["versions"].append(self._version(version["versionNotes"], files))
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok",
                     "invalidTags": invalid}

    def _put(self, token: str, content_range: str | None, data: bytes) -> tuple[int, dict[str, str]]:
        with self._lock:
            blob = self.blobs.get(token)
            if blob is None:
                return 404, {}
            match = _CONTENT_RANGE.fullmatch(content_range.strip()) if content_range else None
            if content_range and not match:
                return 400, {}
            if match and match["first"] is None:  # status probe: "bytes */N"
                pass
            else:
                start = int(match["first"]) if match else 0
                if start > len(blob.data):
                    return 400, {}
                del blob.data[start:]
                blob.data += data
                if len(blob.data) > blob.length:
                    del blob.data[:]
                    return 400, {}
            if blob.complete:
                return 200, {}
            return 308, ({"Range": f"bytes=0-{len(blob.data) - 1}"} if blob.data else {})


def _handler_for(double: KaggleDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, body: Any, raw: bytes, user: str | None) -> Request:
            kept = {k: v for k, v in self.headers.items() if k.lower() in ("content-range", "content-type")}
            request = Request(self.command, self.path.split("?", 1)[0], body, raw, kept, user)
            with double._lock:
                double.requests.append(request)
            return request

        def do_POST(self) -> None:  # the stdlib's name
            raw = self._read_body()
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            user = double._authenticate(self.headers.get("Authorization"))
            request = self._record(body, b"", user)
            if not request.path.startswith(API_PREFIX) or not isinstance(body, dict):
                self._answer(404 if isinstance(body, dict) else 400, {"code": 400, "message": "Bad request"})
                return
            fault = double._take_fault(request.call)
            if fault is not None:
                if fault.error_answer:
                    self._answer(200, {"status": "error", "error": fault.message})
                else:
                    self._answer(fault.status, {"code": fault.status, "message": fault.message})
                return
            status, payload = double._api(request.call, body, user)
            self._answer(status, payload)

        def do_PUT(self) -> None:  # the stdlib's name
            raw = self._read_body()
            request = self._record(None, raw, None)
            if not request.path.startswith(UPLOAD_PREFIX):
                self._answer(404)
                return
            fault = double._take_fault("PUT")
            if fault is not None:  # the bytes are lost, as when the storage server fails mid-upload
                self._answer(fault.status, {"code": fault.status, "message": fault.message})
                return
            status, headers = double._put(request.path[len(UPLOAD_PREFIX):], self.headers.get("Content-Range"), raw)
            self._answer(status, None, headers)

    return Handler


def child_main(spec_path: str) -> int:
    """The child process of the tests: run one ``publish kaggle`` against the double described in a JSON file.

    The environment (``KAGGLE_API_ENVIRONMENT=LOCALHOST``, credentials, ``TMPDIR``, ``HOME``) is set by the
    parent; here the local endpoint is pointed at the double before anything imports ``kaggle``. Output is
    what the CLI prints: the summary on stdout, ``zenodo-hpc publish: error: ...`` on stderr and exit 1.
    """
    from pathlib import Path

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if spec.get("endpoint"):
        from kagglesdk import kaggle_env

        kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.LOCAL] = spec["endpoint"]

    from zenodo_hpc.core.errors import UserError
    from zenodo_hpc.dataset import publish
    from zenodo_hpc.dataset.publish import format_summary, publish_kaggle

    if "poll_seconds" in spec:  # the pause between status requests while the double "processes" a version
        publish.POLL_SECONDS = (spec["poll_seconds"], spec["poll_seconds"])

    try:
        result = publish_kaggle(Path(spec["folder"]), **spec["kwargs"])
    except UserError as exc:
        print(f"zenodo-hpc publish: error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        sys.exit(child_main(sys.argv[2]))
    print("usage: python tests/doubles/kaggle_api.py child SPEC.json", file=sys.stderr)
    sys.exit(2)

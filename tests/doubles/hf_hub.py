"""A Hugging Face Hub double: a real HTTP server on 127.0.0.1 that ``huggingface_hub`` talks to.

``zenodo-hpc publish huggingface`` drives the real client (``huggingface_hub`` 2.5, through the LFS transfer:
docs/publishing.md says why not Xet). This double answers exactly the endpoints that client calls for
``create_repo``, ``upload_folder`` (``create_commit``), ``list_repo_refs`` and ``create_tag``, read from its
source (``huggingface_hub/hf_api.py``, ``_commit_api.py``, ``lfs.py``, 2.5.0) and shaped as the Hub's own
JavaScript client types them (huggingface.js ``packages/hub/src/types/api/api-commit.ts``):

- ``POST /api/repos/create`` ``{name, organization, visibility, type}`` -> ``{url}``, 409 when it exists;
- ``GET /api/datasets/<repo>/refs`` -> ``{branches, converts, tags, pullRequests}`` of ``{name, ref, targetCommit}``;
- ``GET /api/datasets/<repo>[/revision/<rev>]`` -> ``{id, sha, private}`` (the client asks it when a commit would
  change nothing);
- ``GET /api/datasets/<repo>/tree/<rev>?recursive=True`` -> ``[{type, path, size, oid, lfs?: {oid, size,
  pointerSize}}]``, the files of ``rev``;
- ``POST /api/validate-yaml`` ``{content, repoType}`` -> ``{errors, warnings}`` (the card's front matter);
- ``POST /api/datasets/<repo>/preupload/<rev>`` ``{files: [{path, sample, size}]}`` -> ``{files: [{path,
  uploadMode, shouldIgnore, oid}]}``: ``lfs`` for a file the repository's ``.gitattributes`` sends to LFS, a
  binary sample or 10 MB and more, else ``regular``; ``oid`` is the file's id at ``rev`` (a git blob sha1, or the
  LFS sha256), so that an unchanged file is left out of the commit;
- ``POST /datasets/<repo>.git/info/lfs/objects/batch`` (git-lfs batch API) -> per object either no ``actions``
  (already stored: not uploaded again, which is how a re-run resumes) or an ``upload`` action (``basic``: one
  ``PUT``; ``multipart`` from :attr:`HubDouble.multipart_threshold` bytes: ``header`` with ``chunk_size`` and one
  URL per part, then a completion ``POST`` with the parts' ETags) and a ``verify`` action;
- ``PUT /storage/<oid>[/<part>]`` (a presigned storage URL: no token expected), ``POST /storage/<oid>``
  (multipart completion), ``POST /api/datasets/<repo>/lfs/verify``;
- ``POST /api/datasets/<repo>/commit/<rev>`` (NDJSON: ``header``, ``file`` base64, ``lfsFile`` sha256) ->
  ``{commitUrl, commitOid}``; refused (400) when an ``lfsFile`` names an object never uploaded;
- ``POST /api/datasets/<repo>/tag/<rev>`` ``{tag, message}`` -> 200, 409 when the tag exists.

Every API request must carry ``Authorization: Bearer <token>`` (401 otherwise); every request is recorded
(:class:`Request`, with whether the token came, never the token). :meth:`HubDouble.fail_upload` makes the next
storage ``PUT`` of one file fail (403, as a storage URL refuses an expired signature), :meth:`HubDouble.fail`
the next API call of a kind; ``elsewhere`` sends the
``verify`` action, or a redirect of it, to another origin.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .serving import ServedInThread

__all__ = ["DEFAULT_GITATTRIBUTES", "HubDouble", "Request"]

# What the Hub writes as .gitattributes into a new repository's first commit sends binary formats to LFS; the
# double keeps the patterns that matter for a dataset folder (Parquet shards, archives, arrays).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.7z", "*.arrow", "*.bin", "*.gz", "*.h5", "*.npy", "*.parquet", "*.tar", "*.zip", "*.zst")
)
LFS_SIZE = 10 * 1000 * 1000  # from this size on, a file goes to LFS whatever its name (tests/fixtures/hf/SOURCES.md)


@dataclass(frozen=True)
class Request:
    """One request as the double received it."""

    method: str
    path: str  # without the query string
    authorized: bool  # carried the expected Bearer token
    authorization: bool  # carried any Authorization header
    json: Any = None
    body_size: int = 0


@dataclass
class Entry:
    """One file of a commit's tree."""

    kind: str  # "regular" or "lfs"
    oid: str  # git blob sha1 (regular) or sha256 (lfs)
    size: int
    data: bytes


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    tree: dict[str, Entry]


@dataclass
class Repo:
    private: bool
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def tree(self, revision: str) -> dict[str, Entry]:
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        for commit in self.commits:
            if commit.oid == oid:
                return commit.tree
        raise KeyError(revision)


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubDouble(ServedInThread):
    """The Hub endpoints ``huggingface_hub`` 2.5 calls to create a dataset repository, commit a folder through
    LFS and tag it; ``token``: the one token accepted."""

    thread_name = "hub-double"

    def __init__(self, token: str, *, multipart_threshold: int = LFS_SIZE, chunk_size: int = 5 * 1024 * 1024) -> None:
        self.token = token
        self.multipart_threshold = multipart_threshold
        self.chunk_size = chunk_size
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # LFS storage: sha256 -> bytes
        self.puts: list[str] = []  # sha256 of every storage PUT that stored bytes (parts: once per object)
        self.requests: list[Request] = []
        self.elsewhere: str | None = None  # another origin: the verify action points there (see verify_redirect)
        self.verify_redirect = False  # True: the verify action is ours, answered by a 307 to ``elsewhere``
        self._fail: dict[str, int] = {}  # sha256 -> storage PUTs still to refuse
        self._faults: dict[tuple[str, str], tuple[int, int]] = {}  # (method, action) -> (status, times left)
        self._parts: dict[str, dict[int, bytes]] = {}
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.double = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- test controls -------------------------------------------------------------------------------------------

    def fail_upload(self, data: bytes, times: int = 1) -> None:
        """Refuse the next ``times`` storage PUTs of these bytes (403, as an expired presigned URL)."""
        with self._lock:
            self._fail[hashlib.sha256(data).hexdigest()] = times

    def fail(self, method: str, action: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` API requests ``method .../<action>/...`` (``commit``, ``tag``, ``preupload``,
        ``refs``, ``tree``) with ``status``, the Hub's JSON error."""
        with self._lock:
            self._faults[(method, action)] = (status, times)

    def add_file(self, repo: str, path: str, data: bytes) -> str:
        """Commit one small file to ``main``, as an edit on the website would; its commit id."""
        with self._lock:
            target = self.repos[repo]
            tree = {**target.tree("main"), path: Entry("regular", git_blob_oid(data), len(data), data)}
            return self._add_commit(target, f"Upload {path}", tree)

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo`` at ``revision``, as a user downloading them would get them."""
        with self._lock:
            return {path: entry.data for path, entry in self.repos[repo].tree(revision).items()}

    def calls(self, method: str, prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # --- lifecycle -----------------------------------------------------------------------------------------------

    # --- the endpoints ----------------------------------------------------------------------------------------

    def create_repo(self, payload: dict[str, Any]) -> tuple[int, Any]:
        if payload.get("type") != "dataset" or not payload.get("name"):
            return 400, {"error": "expected a dataset repository with a name"}
        repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if repo in self.repos:
            return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/datasets/{repo}"}
        created = Repo(private=payload.get("visibility", "private" if payload.get("private") else "public")
                       == "private")
        attributes = DEFAULT_GITATTRIBUTES.encode()
        self._add_commit(created, "initial commit",
                         {".gitattributes": Entry("regular", git_blob_oid(attributes), len(attributes), attributes)})
        self.repos[repo] = created
        return 200, {"url": f"{self.url}/datasets/{repo}"}

    def _add_commit(self, repo: Repo, summary: str, tree: dict[str, Entry]) -> str:
        parent = repo.branches.get("main")
        oid = hashlib.sha1(f"{parent}\n{summary}\n{uuid.uuid4()}".encode()).hexdigest()
        repo.commits.append(Commit(oid, parent, summary, tree))
        repo.branches["main"] = oid
        return oid

    def refs(self, repo: Repo) -> dict[str, Any]:
        def ref(kind: str, name: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}
        return {"branches": [ref("heads", n, o) for n, o in repo.branches.items()], "converts": [],
                "tags": [ref("tags", n, o) for n, o in repo.tags.items()], "pullRequests": []}

    def preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> tuple[int, Any]:
        try:
            tree = repo.tree(revision)
        except KeyError:
            return 404, {"error": f"Invalid rev id: {revision}"}
        attributes = tree.get(".gitattributes")
        patterns = [line.split()[0] for line in (attributes.data.decode() if attributes else "").splitlines()
                    if "filter=lfs" in line]
        answer = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            name = path.rsplit("/", 1)[-1]
            lfs = size >= LFS_SIZE or b"\0" in sample or any(fnmatch.fnmatch(name, p) for p in patterns)
            existing = tree.get(path)
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": existing.oid if existing else None})
        return 200, {"files": answer}

    def batch(self, repo_name: str, payload: dict[str, Any]) -> tuple[int, Any]:
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            return 422, {"message": "only basic and multipart uploads"}
        objects = []
        multipart = False
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            if oid in self.objects:
                objects.append({"oid": oid, "size": size})  # already stored: nothing to upload
                continue
            verify = (f"{self.elsewhere}/verify" if self.elsewhere and not self.verify_redirect
                      else f"{self.url}/api/datasets/{repo_name}/lfs/verify")
            upload: dict[str, Any] = {"href": f"{self.url}/storage/{oid}"}
            if size >= self.multipart_threshold:
                multipart = True
                parts = -(-size // self.chunk_size)
                upload["header"] = {"chunk_size": str(self.chunk_size),
                                    **{f"{n:05d}": f"{self.url}/storage/{oid}/{n}" for n in range(1, parts + 1)}}
            objects.append({"oid": oid, "size": size, "authenticated": True,
                            "actions": {"upload": upload, "verify": {"href": verify}}})
        return 200, {"transfer": "multipart" if multipart else "basic", "objects": objects}

    def store(self, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        """A storage PUT: the whole object, or one part of it."""
        oid, _, part = path[len("/storage/"):].partition("/")
        if self._fail.get(oid, 0) > 0:
            self._fail[oid] -= 1
            return 403, {"error": "Request has expired"}, {}
        if part:
            self._parts.setdefault(oid, {})[int(part)] = body
            return 200, {}, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "content does not match its oid"}, {}
        self.objects[oid] = body
        self.puts.append(oid)
        return 200, {}, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def complete(self, oid: str, payload: dict[str, Any]) -> tuple[int, Any]:
        parts = self._parts.pop(oid, {})
        numbers = [int(p["partNumber"]) for p in payload.get("parts", [])]
        if payload.get("oid") != oid or numbers != sorted(parts) or not numbers:
            return 400, {"error": "parts missing"}
        for p in payload["parts"]:
            if p.get("etag") != f'"{hashlib.md5(parts[int(p["partNumber"])]).hexdigest()}"':
                return 400, {"error": "etag mismatch"}
        data = b"".join(parts[n] for n in numbers)
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {"error": "content does not match its oid"}
        self.objects[oid] = data
        self.puts.append(oid)
        return 200, {}

    def commit(self, repo: Repo, revision: str, body: bytes) -> tuple[int, Any]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "the first line must be the header"}
        header = lines[0]["value"]
        try:
            tree = dict(repo.tree(revision))
        except KeyError:
            return 404, {"error": f"Invalid rev id: {revision}"}
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.branches.get(revision):
            return 412, {"error": "A commit has happened since. Please refresh and try again."}
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                    else value["content"].encode()
                tree[value["path"]] = Entry("regular", git_blob_oid(data), len(data), data)
            elif key == "lfsFile":
                stored = self.objects.get(value["oid"])
                if stored is None or len(stored) != value.get("size"):
                    return 400, {"error": f"Your push was rejected because an LFS pointer pointed to a file "
                                          f"that does not exist: {value['path']}"}
                tree[value["path"]] = Entry("lfs", value["oid"], len(stored), stored)
            elif key in ("deletedFile", "deletedFolder"):
                gone = value["path"].rstrip("/")
                tree = {p: e for p, e in tree.items() if p != gone and not p.startswith(gone + "/")}
            else:
                return 400, {"error": f"unknown key {key!r}"}
        oid = self._add_commit(repo, header.get("summary", ""), tree)
        return 200, {"success": True, "commitOid": oid, "commitMessage": header.get("summary", ""),
                     "commitUrl": f"{self.url}/datasets/{self._name(repo)}/commit/{oid}", "hookOutput": ""}

    def _name(self, repo: Repo) -> str:
        return next(name for name, r in self.repos.items() if r is repo)

    def tag(self, repo: Repo, revision: str, payload: dict[str, Any]) -> tuple[int, Any]:
        name = payload.get("tag")
        if not isinstance(name, str) or not name:
            return 400, {"error": "tag required"}
        if name in repo.tags:
            return 409, {"error": f"Tag {name} already exists"}
        target = repo.branches.get(revision, revision)
        if not any(c.oid == target for c in repo.commits):
            return 404, {"error": f"Invalid rev id: {revision}"}
        repo.tags[name] = target
        return 200, {}

    def list_tree(self, repo: Repo, revision: str) -> tuple[int, Any]:
        """The whole tree, recursive, in one page (the Hub pages by 1,000 with a ``Link`` header)."""
        try:
            tree = repo.tree(revision)
        except KeyError:
            return 404, {"error": f"Invalid rev id: {revision}"}
        answer: list[dict[str, Any]] = []
        for path, entry in sorted(tree.items()):
            item: dict[str, Any] = {"type": "file", "path": path, "size": entry.size,
                                    "oid": git_blob_oid(entry.data) if entry.kind == "regular" else
                                    git_blob_oid(f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                                                 f"{entry.oid}\nsize {entry.size}\n".encode())}
            if entry.kind == "lfs":
                item["lfs"] = {"oid": entry.oid, "size": entry.size, "pointerSize": 134}
            answer.append(item)
        return 200, answer

    def info(self, repo_name: str, repo: Repo, revision: str) -> tuple[int, Any]:
        sha = repo.branches.get(revision) or repo.tags.get(revision)
        if sha is None:
            return 404, {"error": f"Invalid rev id: {revision}"}
        return 200, {"id": repo_name, "sha": sha, "private": repo.private}


_PREFIX = "/api/datasets/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the double's ``requests`` is the log."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        double: HubDouble = self.server.double  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization")
        authorized = auth == f"Bearer {double.token}"
        payload: Any = None
        if body and "json" in (self.headers.get("Content-Type") or "") and "ndjson" not in self.headers["Content-Type"]:
            try:
                payload = json.loads(body)
            except ValueError:
                self._send(400, {"error": "not JSON"})
                return
        with double._lock:
            double.requests.append(Request(self.command, path, authorized, auth is not None, payload, len(body)))
            if path.startswith("/storage/"):  # a presigned storage URL: no token needed
                if self.command == "PUT":
                    status, answer, headers = double.store(path, body)
                    self._send(status, answer, headers)
                else:
                    self._send(*double.complete(path[len("/storage/"):], payload or {}))
                return
            if not authorized:
                self._send(401, {"error": "Invalid credentials in Authorization header"})
                return
            self._route(double, path, parse_qs(parts.query), payload, body)

    def _route(self, double: HubDouble, path: str, query: dict[str, list[str]], payload: Any, body: bytes) -> None:
        if path == "/api/repos/create" and self.command == "POST":
            self._send(*double.create_repo(payload or {}))
            return
        if path == "/api/validate-yaml" and self.command == "POST":
            self._send(200, {"errors": [], "warnings": []})
            return
        if path.startswith("/datasets/") and path.endswith(".git/info/lfs/objects/batch"):
            name = path[len("/datasets/"):-len(".git/info/lfs/objects/batch")]
            if name not in double.repos:
                self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return
            self._send(*double.batch(name, payload or {}))
            return
        if not path.startswith(_PREFIX):
            self._send(404, {"error": f"no route {self.command} {path}"})
            return
        rest = path[len(_PREFIX):].split("/")
        name, action, argument = "/".join(rest[:2]), (rest[2] if len(rest) > 2 else ""), "/".join(rest[3:])
        status, times = double._faults.get((self.command, action), (0, 0))
        if times > 0:
            double._faults[(self.command, action)] = (status, times - 1)
            self._send(status, {"error": "Internal Error - We're working hard to fix this as soon as possible!"})
            return
        repo = double.repos.get(name)
        if repo is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        if action == "refs" and self.command == "GET":
            self._send(200, double.refs(repo))
        elif action == "" and self.command == "GET":
            self._send(*double.info(name, repo, "main"))
        elif action == "tree" and self.command == "GET":
            self._send(*double.list_tree(repo, argument))
        elif action == "revision" and self.command == "GET":
            self._send(*double.info(name, repo, argument))
        elif action == "preupload" and self.command == "POST":
            self._send(*double.preupload(repo, argument, payload or {}))
        elif action == "commit" and self.command == "POST":
            self._send(*double.commit(repo, argument, body))
        elif action == "tag" and self.command == "POST":
            self._send(*double.tag(repo, argument, payload or {}))
        elif action == "lfs" and argument == "verify" and self.command == "POST":
            if double.verify_redirect and double.elsewhere:
                self._send(307, {}, {"Location": f"{double.elsewhere}/verify"})
            elif (payload or {}).get("oid") in double.objects:
                self._send(200, {})
            else:
                self._send(404, {"error": "object not found"})
        else:
            self._send(404, {"error": f"no route {self.command} {path}"})

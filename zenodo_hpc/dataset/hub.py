"""Publish a dataset folder (``README.md`` card + ``data/`` files) to the Hugging Face Hub, one release at a time.

``publish_huggingface`` checks the folder, the repository id and the tag before any network call, then, with
the official client (``huggingface_hub``, the optional extra ``huggingface``: :data:`INSTALL_HINT`):

1. lists the repository's refs (``list_repo_refs``): 404 means "no such repository", which is then created,
   private unless ``public`` (``create_repo``); an existing one is never created again;
2. makes ONE commit on ``main`` (``create_commit``, whose ``parent_commit`` is the head read in 1., so a commit
   made meanwhile by someone else is never overwritten): every file of the folder, and the deletion of every
   file under ``data/`` that the repository holds and the folder no longer has (``list_repo_tree``); files
   outside ``data/`` other than the card (``.gitattributes``, a file added on the website) are left alone;
3. tags that commit (``create_tag``);
4. lists the tag's files and checks that each file of the folder is there, with its size and its hash (sha256
   of an LFS file, git blob id of a small one).

Transfers go through git LFS, not Xet: ``huggingface_hub`` >= 1.0 uploads through Xet whenever ``hf_xet`` is
installed (which 2.5 requires), and the tests' Hub double implements the LFS transfer only (docs/publishing.md,
"Hugging Face: LFS, not Xet"). The Hub accepts LFS uploads into Xet-backed repositories. A failed upload is
resumed by running the same command again: the Hub answers that the objects it already holds need no upload,
and files whose content it already has at ``main`` are left out of the commit, so nothing is sent or committed
twice. When the commit was made but the tag was not, the re-run finds nothing to commit and tags ``main``.

The token is ``HF_TOKEN`` or the one stored by ``hf auth login`` (``huggingface_hub.get_token``). It is sent
only to the Hub's own origin: the client gets an HTTP session (``set_client_factory``) that drops the
``Authorization`` header of any request to another origin (a storage URL, a redirect, a ``verify`` URL the Hub
would name elsewhere), and whose waits are bounded (:data:`TIMEOUTS`). It is never printed or logged: every
message of the client's logger and every error goes through :class:`~zenodo_hpc.core.redact.Redactor`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.config import HUB_REPO_RULE, hub_repo_ok
from ..core.errors import UserError
from ..core.redact import Redactor
from ..core.state import sha256_of
from ..core.units import byte_size

__all__ = ["HubResult", "check_folder", "format_summary", "publish_huggingface"]

log = logging.getLogger(__name__)

INSTALL_HINT = "python -m pip install 'huggingface_hub>=2.5,<2.6'"  # the huggingface extra
ENDPOINT = "https://huggingface.co"
CARD = "README.md"
DATA = "data"
TIMEOUTS = {"connect": 30.0, "read": 600.0, "write": 600.0, "pool": 60.0}  # seconds, per request
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class HubResult:
    """What ``publish_huggingface`` did."""

    repo: str
    url: str
    tag: str
    commit: str
    created: bool  # True: the repository was created by this run
    private: bool | None  # the new repository's visibility; None when it existed
    files: list[tuple[str, int]]  # (path in the repository, bytes) of every file of the folder
    changed: int  # files added or replaced by the commit
    deleted: list[str] = field(default_factory=list)  # files of the previous release the folder no longer has
    committed: bool = True  # False: the Hub already held exactly this folder (a re-run), nothing committed
    tagged: bool = True  # False: the commit already carried this tag

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


# --- checks (no network, no huggingface_hub import) ------------------------------------------------------------


def check_repo_id(repo: str) -> str:
    repo = (repo or "").strip()
    if not hub_repo_ok(repo):
        raise UserError(f"--repo {repo!r} {HUB_REPO_RULE}")
    return repo


def check_tag(tag: str) -> str:
    if not TAG.fullmatch(tag) or ".." in tag or tag.endswith((".lock", ".")):
        raise UserError(f"--tag {tag!r} must be letters, digits, '.', '_' or '-' (at most 100), e.g. 2026.12.07")
    return tag


def check_folder(folder: Path) -> list[tuple[str, Path]]:
    """The files to publish, ``(path in the repository, local path)``: ``README.md`` and everything under
    ``data/``. Refuses what would otherwise be left out silently or uploaded from elsewhere."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: write the dataset folder (README.md and data/) first")
    if not (folder / CARD).is_file():
        raise UserError(f"{folder} has no {CARD} (the dataset card): it is not a dataset folder")
    others = sorted(p.name for p in folder.iterdir() if p.name not in (CARD, DATA) and not p.name.startswith("."))
    if others:
        raise UserError(f"{folder} holds {', '.join(others[:5])}: a dataset folder holds only {CARD} and {DATA}/")
    files = [(CARD, folder / CARD)]
    data = folder / DATA
    for path in sorted(data.rglob("*")) if data.is_dir() else []:
        relative = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            raise UserError(f"{path}: hidden files are not published; remove it")
        if path.is_symlink():
            raise UserError(f"{path} is a symbolic link: publish a copy of the file instead")
        if path.is_file():
            files.append((relative, path))
    if len(files) == 1:
        raise UserError(f"{folder / DATA} holds no file: nothing to publish")
    if (folder / CARD).is_symlink():
        raise UserError(f"{folder / CARD} is a symbolic link: publish a copy of the file instead")
    return files


def default_tag(taken: set[str], today: datetime | None = None) -> str:
    """``2026.12.07``, or ``2026.12.07.2`` when that tag exists (as release versions are named)."""
    day = (today or datetime.now(timezone.utc)).strftime("%Y.%m.%d")
    n, tag = 1, day
    while tag in taken:
        n += 1
        tag = f"{day}.{n}"
    return tag


def git_blob_id(path: Path) -> str:
    """The id git (and the Hub's tree listing) gives a small file: sha1 of ``blob <size>\\0`` + bytes."""
    hasher = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


# --- the client, held to the Hub's origin --------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


@contextlib.contextmanager
def _client(endpoint: str) -> Iterator[Any]:
    """``huggingface_hub`` with LFS transfers, bounded waits, and the token kept to ``endpoint``'s origin."""
    import httpx2
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    home = _origin(endpoint)

    def keep_token_home(request: Any) -> None:
        if _origin(str(request.url)) != home:
            request.headers.pop("Authorization", None)

    def factory() -> Any:
        client = default_client_factory()
        client.timeout = httpx2.Timeout(TIMEOUTS["read"], connect=TIMEOUTS["connect"], write=TIMEOUTS["write"],
                                        pool=TIMEOUTS["pool"])
        client.event_hooks = {**client.event_hooks,
                              "request": [*client.event_hooks.get("request", []), keep_token_home]}
        return client

    xet = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    set_client_factory(factory)
    try:
        yield
    finally:
        set_client_factory(default_client_factory)
        constants.HF_HUB_DISABLE_XET = xet


class _RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), ()
        return True


@contextlib.contextmanager
def _redacted_logs(redact: Redactor) -> Iterator[None]:
    """Masks the token in every record the handlers of the root logger and of the client's logger write
    meanwhile (a filter on a handler sees the records of every child logger, a filter on a logger would not)."""
    handlers = {*logging.getLogger().handlers, *logging.getLogger("huggingface_hub").handlers}
    masking = _RedactingFilter(redact)
    for handler in handlers:
        handler.addFilter(masking)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(masking)


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


# --- publishing ----------------------------------------------------------------------------------------------


def _error(what: str, exc: BaseException, redact: Redactor) -> UserError:
    message = " ".join(redact(exc).split()) or type(exc).__name__
    if getattr(getattr(exc, "response", None), "status_code", None) == 401:
        return UserError(f"{what}: the Hub refused the token (401): set HF_TOKEN to a token with write access, "
                         "or run `hf auth login`")
    return UserError(f"{what}: {message[:400]}; nothing is lost: run the same command again to resume")


def _state(api: Any, repo: str) -> tuple[bool, str | None, dict[str, str]]:
    """(exists, head commit of main, tags -> commit)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo, repo_type="dataset")
    except RepositoryNotFoundError:
        return False, None, {}
    head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
    return True, head, {t.name: t.target_commit for t in refs.tags}


def _remote_files(api: Any, repo: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    return {item.path: item for item in api.list_repo_tree(repo, repo_type="dataset", revision=revision,
                                                          recursive=True) if isinstance(item, RepoFile)}


def _same(item: Any, path: Path, digests: dict[tuple[Path, str], str]) -> bool:
    """Whether the Hub's file (a ``RepoFile`` or None) holds exactly the bytes of ``path``; ``digests`` keeps each
    file's hashes, so that the check after the commit does not read the files again."""
    if item is None or item.size != path.stat().st_size:
        return False
    kind = "sha256" if item.lfs is not None else "blob"
    if (path, kind) not in digests:
        digests[(path, kind)] = sha256_of(path)[0] if kind == "sha256" else git_blob_id(path)
    return bool(digests[(path, kind)] == (item.lfs.sha256 if item.lfs is not None else item.blob_id))


def _check_published(api: Any, repo: str, tag: str, files: list[tuple[str, Path]],
                     digests: dict[tuple[Path, str], str]) -> None:
    remote = _remote_files(api, repo, tag)
    for name, path in files:
        if not _same(remote.get(name), path, digests):
            raise UserError(f"the Hub's tag {tag} of {repo} does not hold {name} as {path} has it: publish "
                            "again with another --tag")


def publish_huggingface(
    folder: Path,
    repo: str,
    *,
    public: bool = False,
    tag: str | None = None,
    message: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    today: datetime | None = None,
) -> HubResult:
    """Publish ``folder`` as a release of the dataset repository ``repo``: one commit on ``main``, one tag.

    ``tag`` defaults to the date (``2026.12.07``, ``.2`` for a second the same day); ``endpoint`` to
    ``HF_ENDPOINT`` or https://huggingface.co; ``token`` to ``HF_TOKEN`` or the stored login.
    """
    folder = Path(folder)
    repo = check_repo_id(repo)
    if tag is not None:
        tag = check_tag(tag.strip())
    files = check_folder(folder)
    if importlib.util.find_spec("huggingface_hub") is None:
        raise UserError(f"publishing to the Hugging Face Hub needs huggingface_hub: {INSTALL_HINT}")
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT or ENDPOINT).rstrip("/")
    token = token or _token()
    redact = Redactor([token])
    with _redacted_logs(redact), _client(endpoint):
        api = HfApi(endpoint=endpoint, token=token)
        step = "reading the repository"
        try:
            exists, head, tags = _state(api, repo)
            if tag is not None and tag in tags and tags[tag] != head:
                raise UserError(f"the tag {tag} already names another commit of {repo}: choose another --tag")
            created = not exists
            if created:
                step = "creating the repository"
                api.create_repo(repo, repo_type="dataset", private=not public, exist_ok=False)
                exists, head, tags = _state(api, repo)
            step = "listing the repository's files"
            remote = _remote_files(api, repo, head or "main")
            gone = sorted(n for n in set(remote) - {n for n, _ in files} if n.startswith(f"{DATA}/"))
            digests: dict[tuple[Path, str], str] = {}
            changed = sum(1 for n, p in files if not _same(remote.get(n), p, digests))
            on_head = sorted(name for name, oid in tags.items() if oid == head)
            if tag is None:  # a re-run of a finished release keeps its tag rather than adding one
                tag = on_head[0] if on_head and not (changed or gone) else default_tag(set(tags), today)
            if tag in tags and (changed or gone):
                raise UserError(f"the tag {tag} already names the last release of {repo} and the folder differs "
                                "from it: choose another --tag")
            step = "uploading"
            operations: list[Any] = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(p)) for n, p in files]
            operations += [CommitOperationDelete(path_in_repo=n) for n in gone]
            log.info("publishing %d files to the dataset %s (%s)", len(files), repo, endpoint)
            commit = api.create_commit(repo, operations, repo_type="dataset", revision="main", parent_commit=head,
                                       commit_message=message or f"Release {tag}")
            committed = commit.oid != head
            tagged = tags.get(tag) != commit.oid
            if tagged:
                step = "tagging the commit"
                api.create_tag(repo, tag=tag, revision=commit.oid, repo_type="dataset",
                               tag_message=message or f"Release {tag}")
            step = "checking the published files"
            _check_published(api, repo, tag, files, digests)
        except UserError as exc:
            raise UserError(redact(exc)) from None
        except Exception as exc:  # the client's HTTP, validation and I/O errors: one line, the token masked
            raise _error(f"{step} ({repo})", exc, redact) from None
    return HubResult(repo=repo, url=f"{endpoint}/datasets/{repo}", tag=tag, commit=commit.oid, created=created,
                     private=not public if created else None,
                     files=[(n, p.stat().st_size) for n, p in files], changed=changed, deleted=gone,
                     committed=committed, tagged=tagged)


def format_summary(result: HubResult) -> str:
    """What ``zenodo-hpc publish huggingface`` prints: what was done, then the dataset URL on its own line."""
    count = f"{len(result.files)} file{'s' if len(result.files) != 1 else ''}, {byte_size(result.total_bytes)}"
    lines = []
    if result.created:
        lines.append(f"created the {'private' if result.private else 'public'} Hugging Face dataset {result.repo}")
        if result.private:
            lines.append("only you (and your organization) can see it until you make it public in its Settings")
    if result.committed:
        removed = f", {len(result.deleted)} removed" if result.deleted else ""
        lines.append(f"committed {result.changed} changed of {count}{removed} as {result.commit[:12]}")
    else:
        lines.append(f"the Hub already held these {count} at {result.commit[:12]}: nothing committed")
    lines.append(f"tagged {result.tag}" if result.tagged else f"the commit is already tagged {result.tag}")
    lines.append(f"checked: the tag {result.tag} holds every file, with its size and hash")
    lines.append(result.url)
    return "\n".join(lines)


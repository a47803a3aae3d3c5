"""Publish the by-language export (``zenodo-hpc organize``) as a Kaggle dataset, with the official client.

``publish_kaggle`` checks everything Kaggle would refuse before any network call, writes the
``dataset-metadata.json`` the client wants into the folder, then, through the official ``kaggle`` client
(the optional extra ``pip install 'zenodo-hpc[kaggle]'``), creates the dataset (private unless asked
otherwise) or, when it exists, a new version of it.

How the client is used, and why not just ``KaggleApi.dataset_create_new``/``dataset_create_version``:

- those treat *any* error of the status call as "the dataset does not exist", and
- when one file's upload fails they print "Upload unsuccessful" and create the dataset *without that file*.

So the steps are taken one by one with the client's own pieces: ``dataset_status`` (404 = new dataset),
``upload_files`` in a ``ResumableUploadContext`` (StartBlobUpload, then a PUT of the bytes per file), a check
that every file got an upload token, then ``CreateDataset`` or ``CreateDatasetVersion``. The upload state the
client keeps for resuming lives in ``$TMPDIR/.kaggle/uploads``, never in the folder: after a failed upload
the files already sent are kept (re-running resumes), the failed ones start over; after a refused create,
everything starts over.

Credentials are the client's own (``~/.kaggle/kaggle.json``, ``$KAGGLE_CONFIG_DIR/kaggle.json``,
``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``, ``kaggle auth login``).
The key is never printed, logged or put in an error message.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .state import atomic_write_json

__all__ = [
    "KAGGLE_LICENSES",
    "MAX_FILES",
    "METADATA_FILE",
    "PACKAGE_FILE",
    "PublishResult",
    "format_summary",
    "prepare_kaggle_metadata",
    "publish_kaggle",
]

log = logging.getLogger(__name__)

PACKAGE_FILE = "datapackage.json"  # written by ``zenodo-hpc organize``
METADATA_FILE = "dataset-metadata.json"  # what the kaggle client reads
COVER_IMAGES = tuple(f"dataset-cover-image{ext}" for ext in (".png", ".jpg", ".jpeg", ".webp"))
MAX_FILES = 1000
WEB_URL = "https://www.kaggle.com/datasets"
INSTALL_HINT = "pip install 'zenodo-hpc[kaggle]'"

# The license names Kaggle accepts in dataset-metadata.json (Kaggle/kaggle-api, docs/datasets_metadata.md,
# "Licenses"). Matched without regard to case; the spelling below is what is sent.
KAGGLE_LICENSES: tuple[str, ...] = (
    "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0",
    "CC-BY-NC-ND-4.0", "CC-BY-3.0", "CC-BY-SA-3.0", "CC-BY-3.0-IGO", "CC-BY-NC-SA-3.0-IGO", "PDDL",
    "ODC-BY-1.0", "ODbL-1.0", "DbCL-1.0", "CDLA-Permissive-1.0", "CDLA-Sharing-1.0", "GPL-2.0", "GPL-3.0",
    "LGPL-3.0", "AGPL-3.0", "FDL-1.3", "apache-2.0", "US-Government-Works", "EU-ODP-Legal-Notice",
    "copyright-authors", "other", "unknown",
)  # fmt: skip
_LICENSES_BY_LOWER = {name.lower(): name for name in KAGGLE_LICENSES}

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # the client's own slug rule (_validate_slug_syntax)
_OWNER = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")  # ... and its owner-slug rule
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class PublishResult:
    """What ``publish_kaggle`` did."""

    ref: str  # "<owner>/<slug>"
    url: str  # https://www.kaggle.com/datasets/<owner>/<slug>
    created: bool  # True: a new dataset; False: a new version of an existing one
    private: bool | None  # the new dataset's visibility; None for a new version (unchanged)
    title: str
    license: str
    keywords: list[str]
    files: list[tuple[str, int]]  # (name, bytes) of every uploaded file
    version_notes: str | None
    metadata_path: Path
    invalid_keywords: list[str] = field(default_factory=list)  # keywords Kaggle did not know (not added)
    notes: list[str] = field(default_factory=list)  # anything else worth telling

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


# --- checks and metadata (no network, no kaggle import) ---------------------------------------------------


def _load_package(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise UserError(f"{folder} does not exist: run `zenodo-hpc organize RUN_DIR --out {folder}` first")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    try:
        entries = [p.name for p in folder.iterdir()]
    except OSError as exc:
        raise UserError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    if not [name for name in entries if not name.startswith(".")]:
        raise UserError(f"{folder} is empty: run `zenodo-hpc organize RUN_DIR --out {folder}` first")
    path = folder / PACKAGE_FILE
    if not path.is_file():
        raise UserError(f"{folder} has no {PACKAGE_FILE}: it is not the output of `zenodo-hpc organize`")
    try:
        package = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable or not JSON ({exc})") from None
    if not isinstance(package, dict):
        raise UserError(f"{path}: expected a JSON object")
    return package


def _check_length(what: str, value: str, low: int = 6, high: int = 50) -> None:
    if not low <= len(value) <= high:
        raise UserError(f"the dataset {what} must be {low} to {high} characters long, {value!r} has {len(value)}")


def _license(package: dict[str, Any], override: str | None, path: Path) -> str:
    if override is not None:
        names = [override.strip()]
    else:
        licenses = package.get("licenses")
        if not licenses:
            raise UserError(f"{path} names no license: pass --license (e.g. CC0-1.0)")
        if not isinstance(licenses, list) or not all(isinstance(x, dict) for x in licenses):
            raise UserError(f'{path}: "licenses" must be a list of {{"name": ...}} objects')
        names = [str(x.get("name", "")).strip() for x in licenses]
        if len(names) != 1:
            raise UserError(f"Kaggle takes exactly one license, {path} names {len(names)} ({', '.join(names)}): "
                            "pass --license to choose one")
    canonical = _LICENSES_BY_LOWER.get(names[0].lower())
    if canonical is None:
        raise UserError(f"Kaggle does not know the license {names[0]!r}; use one of: {', '.join(KAGGLE_LICENSES)}")
    return canonical


def _keywords(package: dict[str, Any], override: list[str] | None, path: Path) -> list[str]:
    raw = override if override is not None else package.get("keywords") or []
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise UserError(f'{path}: "keywords" must be a list of strings')
    seen: dict[str, None] = {}
    for keyword in raw:
        keyword = keyword.strip()
        if keyword:
            seen.setdefault(keyword, None)
    return list(seen)


def _hash_matches(path: Path, expected: str) -> bool | None:
    """Whether the file matches a Frictionless ``hash`` ("<algorithm>:<hex>", bare hex = md5); None: unknown."""
    algorithm, _, digest = expected.rpartition(":")
    algorithm = (algorithm or "md5").lower()
    if algorithm not in hashlib.algorithms_available or not _HEX.fullmatch(digest):
        return None
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest() == digest.lower()


def _resources(package: dict[str, Any], folder: Path, path: Path) -> list[dict[str, Any]]:
    resources = package.get("resources")
    if not resources:
        raise UserError(f"{path} lists no files (resources): nothing to publish")
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise UserError(f'{path}: "resources" must be a list of objects')
    if len(resources) > MAX_FILES:
        raise UserError(f"{path} lists {len(resources)} files; a Kaggle dataset holds at most {MAX_FILES}")
    names: set[str] = set()
    for resource in resources:
        name = resource.get("path")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise UserError(f"{path}: resource path {name!r} is not a file name in {folder}")
        if name in names:
            raise UserError(f"{path} lists {name} twice")
        if name.startswith(".") or name in (PACKAGE_FILE, METADATA_FILE, *COVER_IMAGES):
            raise UserError(f"{path}: {name} cannot be uploaded as a data file (the kaggle client skips it)")
        names.add(name)
        file = folder / name
        if not file.is_file():
            raise UserError(f"{file} is listed in {PACKAGE_FILE} but missing: re-run `zenodo-hpc organize`")
        size = file.stat().st_size
        expected = resource.get("bytes")
        if isinstance(expected, int) and expected != size:
            raise UserError(f"{file} has {size} bytes, {PACKAGE_FILE} says {expected}: re-run `zenodo-hpc organize`")
        digest = resource.get("hash")
        if isinstance(digest, str) and _hash_matches(file, digest) is False:
            raise UserError(f"{file} does not match its hash in {PACKAGE_FILE}: re-run `zenodo-hpc organize`")
    # folders are never uploaded (the <ext>/ PNG trees beside their <ext>.tar.gz); any other visible file
    # would be uploaded by the client without being described in the package: refused
    allowed = names | {PACKAGE_FILE, METADATA_FILE, *COVER_IMAGES}
    extra = sorted(p.name for p in folder.iterdir()
                   if p.name not in allowed and not p.name.startswith(".") and not p.is_dir())
    if extra:
        raise UserError(f"{folder} holds {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}, not listed in "
                        f"{PACKAGE_FILE}: remove it or re-run `zenodo-hpc organize`")
    return resources


def prepare_kaggle_metadata(
    folder: Path,
    *,
    username: str,
    title: str,
    name: str | None = None,
    keywords: list[str] | None = None,
    license: str | None = None,  # noqa: A002 - the CLI's name
) -> dict[str, Any]:
    """Check what Kaggle would refuse and return the ``dataset-metadata.json`` for ``folder``; no network.

    The metadata is ``datapackage.json`` with ``id`` = ``<username>/<name>``, ``name``, ``title``,
    ``keywords`` and ``licenses`` set from the arguments (``None``: keep the package's own).
    """
    folder = Path(folder)
    package = _load_package(folder)
    path = folder / PACKAGE_FILE
    username = (username or "").strip()
    if not _OWNER.fullmatch(username):
        raise UserError(f"the Kaggle user name {username!r} must be lowercase letters, digits, hyphens or "
                        "underscores, as in the profile URL")
    title = (title or "").strip()
    _check_length("title", title)
    if name is None:
        package_id = package.get("id")
        name = package_id.rpartition("/")[2] if isinstance(package_id, str) and package_id else package.get("name")
        if not isinstance(name, str) or not name:
            raise UserError(f"{path} has no dataset name (id or name): pass --name")
    name = name.strip()
    _check_length("name (URL slug)", name)
    if not _SLUG.fullmatch(name):
        raise UserError(f"the dataset name {name!r} may hold only lowercase letters, digits and single hyphens "
                        "(no spaces), e.g. zenodo-ml-by-language")
    subtitle = package.get("subtitle")
    if subtitle is not None and (not isinstance(subtitle, str) or not 20 <= len(subtitle) <= 80):
        raise UserError(f"{path}: the subtitle must be 20 to 80 characters long")
    chosen_license = _license(package, license, path)
    chosen_keywords = _keywords(package, keywords, path)
    _resources(package, folder, path)
    metadata = copy.deepcopy(package)
    metadata.pop("id_no", None)  # the client would prefer it to "id"
    metadata.update({"id": f"{username}/{name}", "name": name, "title": title,
                     "licenses": [{"name": chosen_license}], "keywords": chosen_keywords})
    return metadata


# --- credentials (no import of the client: it authenticates at import time) -------------------------------


@dataclass
class _Credentials:
    kind: str  # how the client will authenticate: "access token", "API key", "OAuth"
    where: str
    secrets: list[str]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _config_dir() -> Path:
    """Where the client looks for kaggle.json (KaggleApi.config_dir, kaggle 2.x)."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    home = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not home.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return home


def _find_credentials() -> _Credentials:
    """The credentials the client will use, found the way it finds them; UserError when there are none."""
    token = os.environ.get("KAGGLE_API_TOKEN", "").strip()
    if token:
        value = _read_text(Path(token)) if Path(token).is_file() else token
        if value:
            return _Credentials("access token", "KAGGLE_API_TOKEN", [value, token])
    for candidate in ("access_token", "access_token.txt"):
        value = _read_text(Path.home() / ".kaggle" / candidate)
        if value:
            return _Credentials("access token", f"~/.kaggle/{candidate}", [value])
    config = _config_dir() / "kaggle.json"
    values: dict[str, Any] = {}
    if config.is_file():
        try:
            loaded = json.loads(config.read_text(encoding="utf-8"))
            values.update(loaded if isinstance(loaded, dict) else {})
        except (OSError, ValueError):
            log.warning("%s is unreadable or not JSON: ignored", config)
    for key in ("username", "key"):
        if os.environ.get(f"KAGGLE_{key.upper()}"):
            values[key] = os.environ[f"KAGGLE_{key.upper()}"]
    if values.get("username") and values.get("key"):
        where = "KAGGLE_USERNAME/KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(config)
        if where == str(config) and os.name != "nt" and config.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("%s is readable by other users: chmod 600 %s", config, config)
        return _Credentials("API key", where, [str(values["key"])])
    if (Path.home() / ".kaggle" / "credentials.json").is_file():
        return _Credentials("OAuth", "~/.kaggle/credentials.json", [])
    raise UserError(
        f"no Kaggle credentials: create an API token at https://www.kaggle.com/settings/api and save kaggle.json "
        f"as {config} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
    )


class _Redactor:
    def __init__(self, secrets: list[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


# --- the client --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _client_output(quiet: bool) -> Iterator[None]:
    """The client prints to stdout; keep stdout for the summary: its lines go to stderr (or nowhere)."""
    target = io.StringIO() if quiet else sys.stderr
    with contextlib.redirect_stdout(target):
        yield


def _import_client(creds: _Credentials, redact: _Redactor) -> Any:
    """``kaggle.api``, authenticated. Importing ``kaggle`` authenticates (and may print or exit): contained."""
    if importlib.util.find_spec("kaggle") is None:
        raise UserError(f"publishing to Kaggle needs the official kaggle client: {INSTALL_HINT}")
    swallowed = io.StringIO()
    try:
        with contextlib.redirect_stdout(swallowed), contextlib.redirect_stderr(swallowed):
            import kaggle
    except (Exception, SystemExit) as exc:  # older clients raise OSError or exit when credentials are missing
        detail = redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
        raise UserError(f"the kaggle client could not start ({detail}); credentials: {creds.where}") from None
    api = kaggle.api
    # VERBOSE=1 makes the client print every request with its Authorization header: never.
    api.args = [arg for arg in api.args if arg not in ("--verbose", "-v")]
    authenticated = getattr(api, "_authenticated", None)
    if authenticated is None:  # a client that does not say: ask it
        try:
            with contextlib.redirect_stdout(swallowed), contextlib.redirect_stderr(swallowed):
                api.authenticate()
            authenticated = True
        except (Exception, SystemExit):
            authenticated = False
    if not authenticated:
        raise UserError(f"Kaggle did not accept the {creds.kind} from {creds.where}: "
                        "create a new token at https://www.kaggle.com/settings/api")
    return api


def _http_detail(exc: BaseException) -> str:
    """'HTTP 500: <Kaggle's message>' for an HTTP error, the first line of anything else."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    message = ""
    if response is not None:
        try:
            body = response.json()
            if isinstance(body, dict):
                message = str(body.get("message") or body.get("error") or "")
        except ValueError:
            message = (response.text or "").strip()
    if not message:
        message = str(exc).strip()
    message = message.splitlines()[0][:300] if message else type(exc).__name__
    return f"HTTP {status}: {message}" if status else message


def _is_http_error(exc: BaseException, status: int | None = None) -> bool:
    import requests

    if not isinstance(exc, requests.exceptions.HTTPError) or exc.response is None:
        return False
    return status is None or exc.response.status_code == status


def _uploaded(context: Any, path: str) -> bool:
    """Whether the client's resume state (``$TMPDIR/.kaggle/uploads``) says ``path`` was uploaded completely."""
    try:
        info = json.loads(Path(context.get_upload_info_file_path(path)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and bool(info.get("upload_complete"))


def _forget_uploads(context: Any, paths: list[str], *, keep_complete: bool) -> None:
    """Drop the client's resume state of ``paths`` so that a re-run uploads them from the start."""
    for path in paths:
        if keep_complete and _uploaded(context, path):
            continue
        with contextlib.suppress(OSError):
            Path(context.get_upload_info_file_path(path)).unlink()


def _exists(api: Any, ref: str, redact: _Redactor) -> bool:
    import requests

    try:
        api.dataset_status(ref)
    except requests.exceptions.HTTPError as exc:
        if _is_http_error(exc, 404):
            return False
        if _is_http_error(exc, 401):
            raise UserError("Kaggle refused the credentials (HTTP 401): "
                            "create a new token at https://www.kaggle.com/settings/api") from None
        raise UserError(redact(f"Kaggle could not tell whether {ref} exists ({_http_detail(exc)})")) from None
    except requests.exceptions.RequestException as exc:
        raise UserError(redact(f"cannot reach Kaggle: {_http_detail(exc)}")) from None
    return True


def _upload_and_create(api: Any, request: Any, body: Any, method: str, metadata: dict[str, Any], folder: Path,
                       quiet: bool, redact: _Redactor) -> Any:
    """Upload every resource (filling ``body.files``), then send ``request`` with the dataset API's ``method``."""
    import requests
    from kaggle.api.kaggle_api_extended import ResumableUploadContext
    from kagglesdk.blobs.types.blob_api_service import ApiBlobType

    resources = metadata["resources"]
    names = [r["path"] for r in resources]
    base = str(folder.resolve())
    paths = [os.path.join(base, n) for n in names]
    body.files = []
    with ResumableUploadContext() as context:
        try:
            # hidden entries (a crashed writer's temporary files) are never uploaded; dataset-metadata.json,
            # datapackage.json and cover images the client skips by itself
            api.upload_files(body, resources, base, ApiBlobType.DATASET, context, quiet, "skip", [".*"])
        except (requests.exceptions.RequestException, ValueError) as exc:  # ValueError: the client's own checks
            _forget_uploads(context, paths, keep_complete=True)
            raise UserError(redact(f"upload to Kaggle failed ({_http_detail(exc)}); nothing was published: "
                                   "re-run the same command to resume")) from None
        if len(body.files) != len(names):
            failed = [name for name, path in zip(names, paths, strict=True) if not _uploaded(context, path)]
            _forget_uploads(context, paths, keep_complete=True)
            raise UserError(f"upload to Kaggle failed for {', '.join(failed) or 'some files'} "
                            f"({len(body.files)} of {len(names)} files sent); nothing was published: "
                            "re-run the same command to resume")
        try:
            with api.build_kaggle_client() as kaggle_client:
                response = api.with_retry(getattr(kaggle_client.datasets.dataset_api_client, method))(request)
        except requests.exceptions.RequestException as exc:
            _forget_uploads(context, paths, keep_complete=False)
            raise UserError(redact(f"Kaggle refused the dataset ({_http_detail(exc)}); "
                                   "re-running uploads the files again")) from None
        if (response.status or "").lower() != "ok" or response.error:
            _forget_uploads(context, paths, keep_complete=False)
            raise UserError(redact(f"Kaggle refused the dataset: {response.error or response.status or 'no answer'}"
                                   "; re-running uploads the files again"))
    return response


def publish_kaggle(
    folder: Path,
    *,
    username: str,
    title: str,
    name: str | None = None,
    keywords: list[str] | None = None,
    license: str | None = None,  # noqa: A002 - the CLI's name
    public: bool = False,
    version_notes: str | None = None,
) -> PublishResult:
    """Publish ``folder`` (the output of ``zenodo-hpc organize``) as the Kaggle dataset ``<username>/<name>``.

    Checks everything Kaggle would refuse, then writes ``folder/dataset-metadata.json`` (atomically), then
    with the official client: a new dataset, private unless ``public``; or, when it exists, a new version,
    which needs ``version_notes``. Every refusal and failure is a :class:`UserError` of one line.
    """
    folder = Path(folder)
    metadata = prepare_kaggle_metadata(folder, username=username, title=title, name=name, keywords=keywords,
                                       license=license)
    notes_text = (version_notes or "").strip() or None
    creds = _find_credentials()
    redact = _Redactor(creds.secrets)
    metadata_path = folder / METADATA_FILE
    try:
        atomic_write_json(metadata_path, metadata)
    except OSError as exc:
        raise UserError(f"{metadata_path}: cannot write ({exc.strerror or exc})") from None

    ref = metadata["id"]
    owner, slug = ref.split("/")
    quiet = not sys.stderr.isatty()
    api = _import_client(creds, redact)

    from kagglesdk.datasets.types.dataset_api_service import (
        ApiCreateDatasetRequest,
        ApiCreateDatasetVersionRequest,
        ApiCreateDatasetVersionRequestBody,
    )

    with _client_output(quiet):
        exists = _exists(api, ref, redact)
        result_notes: list[str] = []
        if exists and notes_text is None:
            raise UserError(f"the Kaggle dataset {ref} already exists: pass --version-notes TEXT to publish "
                            "a new version of it")
        if exists:
            request = ApiCreateDatasetVersionRequest()
            request.owner_slug, request.dataset_slug = owner, slug
            body = ApiCreateDatasetVersionRequestBody()
            body.version_notes = notes_text
            body.category_ids = metadata["keywords"]
            body.subtitle = metadata.get("subtitle")
            body.description = metadata.get("description")
            body.delete_old_versions = False
            request.body = body
            method = "create_dataset_version"
            if public:
                result_notes.append("--public does not change an existing dataset: set its visibility on Kaggle")
            log.info("uploading %d files for a new version of the Kaggle dataset %s", len(metadata["resources"]),
                     ref)
        else:
            request = body = ApiCreateDatasetRequest()
            request.owner_slug, request.slug = owner, slug
            request.title = metadata["title"]
            request.license_name = metadata["licenses"][0]["name"]
            request.is_private = not public
            request.category_ids = metadata["keywords"]
            request.subtitle = metadata.get("subtitle")
            request.description = metadata.get("description")
            method = "create_dataset"
            if notes_text is not None:
                result_notes.append("the dataset is new: the version notes were not used")
            log.info("uploading %d files to the new %s Kaggle dataset %s", len(metadata["resources"]),
                     "public" if public else "private", ref)
        response = _upload_and_create(api, request, body, method, metadata, folder, quiet, redact)

    files = [(r["path"], (folder / r["path"]).stat().st_size) for r in metadata["resources"]]
    invalid = [str(t) for t in (response.invalid_tags or [])]
    return PublishResult(
        ref=ref, url=f"{WEB_URL}/{ref}", created=not exists, private=None if exists else not public,
        title=metadata["title"], license=metadata["licenses"][0]["name"], keywords=list(metadata["keywords"]),
        files=files, version_notes=notes_text if exists else None, metadata_path=metadata_path,
        invalid_keywords=invalid, notes=result_notes,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_summary(result: PublishResult) -> str:
    """What ``zenodo-hpc publish kaggle`` prints: what was done, then the dataset URL on its own line."""
    count = f"{len(result.files)} file{'s' if len(result.files) != 1 else ''}, {_size(result.total_bytes)}"
    if result.created:
        visibility = "private" if result.private else "public"
        lines = [f"created the {visibility} Kaggle dataset {result.ref} ({count}, license {result.license})"]
        if result.private:
            lines.append("only you can see it until you make it public on its Settings page")
    else:
        lines = [f"published a new version of the Kaggle dataset {result.ref} ({count}): {result.version_notes}"]
    if result.invalid_keywords:
        lines.append(f"Kaggle does not know these keywords, not added: {', '.join(result.invalid_keywords)}")
    lines.extend(result.notes)
    lines.append("Kaggle processes the files for a few minutes before they show")
    lines.append(result.url)
    return "\n".join(lines)

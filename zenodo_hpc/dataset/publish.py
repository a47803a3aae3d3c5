"""Publish the by-language export (``zenodo-hpc organize``) as a Kaggle dataset, with the official client.

``publish_kaggle`` checks everything Kaggle would refuse before any network call, writes the
``dataset-metadata.json`` the client reads into the folder, then, through the official ``kaggle`` client
(the optional extra ``kaggle``: :data:`INSTALL_HINT`), creates the dataset (private unless asked
otherwise) or, when it exists, a new version of it, and finally checks that Kaggle holds every file.

Only the client's public, documented API is used, so that a new release cannot break publishing by
changing what it does inside (kaggle 2.2.5 moved its resume state and made a failed upload raise where
2.2.4 skipped the file):

- ``KaggleApi.authenticate()``: returns when the credentials are usable, exits when they are not;
- ``dataset_status(ref, format="json")``: a 404 means "no such dataset", else its status and current version
  number. It is asked first because the client's own create takes *any* status error for "does not exist";
- ``dataset_create_new(folder, public=, quiet=, dir_mode="skip", ignore_patterns=[".*"])`` or
  ``dataset_create_version(folder, notes, quiet=, dir_mode="skip", delete_old_versions=False, ...)``: the
  uploads and the create. The client resumes interrupted uploads by itself, with state it keeps in the
  system's temporary folder, never in the export; this module never touches that state;
- the answer's documented fields ``status``, ``error`` and ``invalid_tags`` (``invalidTags``);
- once Kaggle reports the new version ``ready``, ``dataset_list_files("<ref>/<version>")``: every file of
  the export must be listed, with its size.

A client whose upload of one file fails may publish without that file (kaggle 2.2.4 does, printing "Upload
unsuccessful") or raise (2.2.5, documented). The user gets the same either way: a version that the listing
shows to hold every file, or one line saying what to do. After an exception or a refusal a status call tells
whether anything was published; when nothing was, re-running the same command converges (the client resumes
the uploads it finished). When a version lacks a file, re-running with ``--version-notes`` publishes a
complete one. The check takes Kaggle to list each uploaded file (the ``.tar.gz`` archives too) under its own
name and size once the version is ``ready``, as the test double does; docs/publishing.md says what could not
be checked against the real service.

The pin (the ``kaggle`` extra in pyproject.toml) is ``kaggle>=2.2.5,<3`` and ``six``. 2.2.5 is the first
release whose documented behaviour is to raise rather than publish without a file whose upload failed, so
with it a failed upload publishes nothing; the code still works with 2.2.4 (the listing catches the missing
file), but that user would be left with an incomplete version to replace, so ``pip install`` upgrades it.
Below 3: a major release may change the public API. ``six``: kaggle 2.2.4 and 2.2.5 import it without
declaring it, and recent python-dateutil releases (4.0) no longer bring it.

Credentials are the client's own (``kaggle.json`` in ``$KAGGLE_CONFIG_DIR``, else in ``~/.kaggle/`` when it
exists, else in ``~/.config/kaggle/`` on Linux; ``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``KAGGLE_API_TOKEN``,
``~/.kaggle/access_token``, ``kaggle auth login``).
The key is never printed, logged or put in an error message: everything the client prints passes through a
filter that masks it (the package's one redactor, :mod:`zenodo_hpc.core.redact`: raw, URL-quoted, and as base64,
whole ``Basic`` credential ``user:key`` included).
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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..core.errors import UserError
from ..core.redact import Redactor, kaggle_key_secrets
from ..core.state import atomic_write_json
from ..core.units import byte_size
from .organize import KAGGLE_LENGTHS, KAGGLE_OWNER, KAGGLE_SLUG, MARKER

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
INSTALL_HINT = "python -m pip install 'kaggle>=2.2.5,<3' six"  # the kaggle extra, from PyPI (zenodo-hpc is not there)
PROCESSING_WAIT = 1800.0  # seconds to wait for Kaggle to process a new version before its files are checked
POLL_SECONDS = (5.0, 60.0)  # the first and the longest pause between two status calls meanwhile
LIST_PAGE_SIZE = 100  # files asked for per dataset_list_files call

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
    version: int | None = None  # the dataset version that Kaggle listed with every file (None: not checked)

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


def _check_length(what: str, value: str) -> None:
    low, high = KAGGLE_LENGTHS
    if not low <= len(value) <= high:
        raise UserError(f"the dataset {what} must be {low} to {high} characters long, {value!r} has {len(value)}")


def _license(package: dict[str, Any], override: str | None, path: Path) -> str:
    """The one license Kaggle gets: ``--license``; else the export's choice (``organize`` writes it as
    ``zenodo_hpc.kaggle_license``, its ``licenses`` being the records' real set); else the one license named."""
    chosen = package.get(MARKER, {}).get("kaggle_license") if isinstance(package.get(MARKER), dict) else None
    if override is not None:
        names = [override.strip()]
    elif chosen is not None:
        if not isinstance(chosen, str):
            raise UserError(f'{path}: "{MARKER}.kaggle_license" must be a license name: pass --license')
        names = [chosen.strip()]
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
    license: str | None = None,  # the CLI's name
) -> dict[str, Any]:
    """Check what Kaggle would refuse and return the ``dataset-metadata.json`` for ``folder``; no network.

    The metadata is ``datapackage.json`` with ``id`` = ``<username>/<name>``, ``name``, ``title``,
    ``keywords`` and ``licenses`` set from the arguments (``None``: keep the package's own).
    """
    folder = Path(folder)
    package = _load_package(folder)
    path = folder / PACKAGE_FILE
    username = (username or "").strip()
    if not KAGGLE_OWNER.fullmatch(username):
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
    if not KAGGLE_SLUG.fullmatch(name):
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
        return _Credentials("API key", where, kaggle_key_secrets(str(values["username"]), str(values["key"])))
    if (Path.home() / ".kaggle" / "credentials.json").is_file():
        return _Credentials("OAuth", "~/.kaggle/credentials.json", [])
    raise UserError(
        f"no Kaggle credentials: create an API token at https://www.kaggle.com/settings/api and save kaggle.json "
        f"as {config} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
    )


# --- the client: its public API only ----------------------------------------------------------------------


class _RedactingStream(io.TextIOBase):
    """Writes to ``target`` with every secret masked: whatever the client prints goes through one of these.

    Text is held back until its line ends (``\\n``, or ``\\r`` for a progress bar), so that a secret written in
    two pieces is still masked.
    """

    def __init__(self, target: TextIO, redact: Redactor) -> None:
        super().__init__()
        self._target = target
        self._redact = redact
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._target.isatty()

    # ignore: typeshed declares TextIOBase.encoding a writable str, CPython's is a read-only property that may be None
    @property
    def encoding(self) -> str | None:  # type: ignore[override]  # the target's: progress bars draw with it
        return getattr(self._target, "encoding", None)

    def write(self, text: str) -> int:
        self._pending += text
        end = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
        if end:
            self._target.write(self._redact(self._pending[:end]))
            self._pending = self._pending[end:]
        return len(text)

    def flush(self) -> None:  # the pending part of a line stays pending: it may hold half a secret
        self._target.flush()

    def finish(self) -> None:
        """Write what is still held back (the client is done)."""
        if self._pending:
            self._target.write(self._redact(self._pending))
            self._pending = ""
        self._target.flush()


@contextlib.contextmanager
def _client_output(quiet: bool, redact: Redactor) -> Iterator[None]:
    """The client's prints, masked: its stdout goes to stderr on a terminal (stdout is for the summary) and
    nowhere otherwise; its stderr (retry notices, progress bars) to stderr."""
    out = _RedactingStream(io.StringIO() if quiet else sys.stderr, redact)
    err = _RedactingStream(sys.stderr, redact)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.finish()
        err.finish()


@contextlib.contextmanager
def _verbose_off() -> Iterator[None]:
    """Hide ``VERBOSE``/``VERBOSE_OUTPUT``: read when the client is imported, they make it print every request
    with its ``Authorization`` header."""
    saved = {name: os.environ.pop(name) for name in ("VERBOSE", "VERBOSE_OUTPUT") if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _import_client(creds: _Credentials, redact: Redactor) -> Any:
    """``kaggle.api``, authenticated, or one line saying why not (missing, cannot start, credentials refused)."""
    if importlib.util.find_spec("kaggle") is None:
        raise UserError(f"publishing to Kaggle needs the official kaggle client: {INSTALL_HINT}")
    held_back = io.StringIO()  # importing the client authenticates at once, and may print help or exit
    try:
        with _verbose_off(), contextlib.redirect_stdout(held_back), contextlib.redirect_stderr(held_back):
            import kaggle
    except (Exception, SystemExit) as exc:
        raise UserError(redact(f"the kaggle client could not start ({_http_detail(exc)}); "
                               f"credentials: {creds.where}")) from None
    api = kaggle.api
    try:  # documented: returns when the credentials are usable, prints help and exits when none is
        with contextlib.redirect_stdout(held_back), contextlib.redirect_stderr(held_back):
            api.authenticate()
    except SystemExit:
        raise UserError(f"Kaggle did not accept the {creds.kind} from {creds.where}: "
                        "create a new token at https://www.kaggle.com/settings/api") from None
    except Exception as exc:
        raise UserError(redact(f"the kaggle client could not authenticate ({_http_detail(exc)}); "
                               f"credentials: {creds.where}")) from None
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


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a ``requests`` HTTP error, None for anything else."""
    import requests

    if not isinstance(exc, requests.exceptions.HTTPError) or exc.response is None:
        return None
    return exc.response.status_code


@dataclass(frozen=True)
class _State:
    """What ``dataset_status(ref, format="json")`` says of an existing dataset."""

    status: str  # the current version's processing status, lowercase: "ready", "failed", "blobs_received", ...
    version: int  # the current version number


def _dataset_state(api: Any, ref: str) -> _State | None:
    """The dataset's status and current version; None when Kaggle answers 404 (no such dataset, or not yet)."""
    import requests

    try:
        text = api.dataset_status(ref, format="json")
    except requests.exceptions.HTTPError as exc:
        if _http_status(exc) == 404:
            return None
        raise
    try:
        answer = json.loads(text)
        return _State(str(answer.get("status") or "").lower(), int(answer.get("current_version_number") or 0))
    except (TypeError, ValueError, AttributeError):
        raise UserError(f"the kaggle client answered {str(text)[:80]!r} for the status of {ref}, not the JSON "
                        f"it documents: {INSTALL_HINT} installs a client that works") from None


def _current_version(api: Any, ref: str, redact: Redactor) -> int | None:
    """The dataset's current version number, None when it does not exist. Any other answer stops everything:
    the client's own create would take it for "does not exist"."""
    import requests

    try:
        state = _dataset_state(api, ref)
    except requests.exceptions.HTTPError as exc:
        if _http_status(exc) == 401:
            raise UserError("Kaggle refused the credentials (HTTP 401): "
                            "create a new token at https://www.kaggle.com/settings/api") from None
        raise UserError(redact(f"Kaggle could not tell whether {ref} exists ({_http_detail(exc)})")) from None
    except requests.exceptions.RequestException as exc:
        raise UserError(redact(f"cannot reach Kaggle: {_http_detail(exc)}")) from None
    return None if state is None else state.version


def _create(api: Any, folder: Path, notes: str | None, new: bool, public: bool, quiet: bool) -> Any:
    """Upload the export and create the dataset or its new version, with the client's documented calls.

    Folders (the ``<ext>/`` PNG trees) and hidden entries (a crashed writer's temporary files) are not
    uploaded; nor are ``dataset-metadata.json``, ``datapackage.json`` and cover images, which the client skips.
    """
    if new:
        return api.dataset_create_new(str(folder), public=public, quiet=quiet, dir_mode="skip",
                                      ignore_patterns=[".*"])
    return api.dataset_create_version(str(folder), notes, quiet=quiet, dir_mode="skip", delete_old_versions=False,
                                      ignore_patterns=[".*"])


def _refusal(response: Any) -> str | None:
    """Kaggle's reason when the create's answer is not ``ok`` (its documented ``status`` and ``error``)."""
    if response is None:
        return "no answer"
    status = str(getattr(response, "status", "") or "")
    error = str(getattr(response, "error", "") or "")
    if status.lower() == "ok" and not error:
        return None
    return error or status or "no answer"


def _stop_unless_published(api: Any, ref: str, before: int, failure: str, redact: Redactor) -> None:
    """After a failed or refused create: one line when Kaggle shows nothing new (re-running is then safe);
    when a version was published all the same, return and let its listing decide."""
    import requests

    try:
        state = _dataset_state(api, ref)
    except requests.exceptions.RequestException as exc:
        raise UserError(redact(f"{failure}; Kaggle could not say whether anything was published "
                               f"({_http_detail(exc)}): check `kaggle datasets status {ref}` before re-running")
                        ) from None
    if state is None or state.version <= before:
        raise UserError(redact(f"{failure}; nothing was published: re-run the same command"))


def _send(api: Any, folder: Path, ref: str, before: int | None, notes: str | None, public: bool, quiet: bool,
          redact: Redactor) -> Any:
    """Upload and create (``before`` None: a new dataset); the create's answer. When the client raises or Kaggle
    refuses, one line if Kaggle shows nothing new, else None: a version appeared all the same, its check decides.
    """
    new = before is None
    try:
        response = _create(api, folder, notes, new, public, quiet)
    except (Exception, SystemExit) as exc:  # a failed upload raises ValueError (kaggle >= 2.2.5), HTTP errors ...
        failure = f"publishing to Kaggle failed ({_http_detail(exc)})"
    else:
        refusal = _refusal(response)
        if refusal is None:
            return response
        failure = f"Kaggle refused the {'dataset' if new else 'version'} ({refusal})"
    _stop_unless_published(api, ref, before or 0, failure, redact)
    return None


def _is_transient(exc: BaseException) -> bool:
    """A failure worth asking again about: no connection, 429 Too Many Requests, or a server error."""
    status = _http_status(exc)
    return status is None or status == 429 or status >= 500


def _wait_until_processed(api: Any, ref: str, before: int, wait: float, redact: Redactor) -> int:
    """The number of the version published after ``before``, once Kaggle reports it ``ready``: its file list
    is only complete then. One line when Kaggle fails to process it, or has not after ``wait`` seconds."""
    import requests

    deadline = time.monotonic() + wait
    pause, longest = POLL_SECONDS
    seen = "not listed yet"
    while True:
        try:
            state = _dataset_state(api, ref)
        except requests.exceptions.RequestException as exc:
            if not _is_transient(exc):
                raise UserError(redact(f"{ref} was published, but Kaggle does not show its status "
                                       f"({_http_detail(exc)}): check `kaggle datasets files {ref}`")) from None
            seen = _http_detail(exc)
        else:
            if state is not None and state.version > before:
                if state.status == "ready":
                    return state.version
                if state.status in ("failed", "error", "deleted"):
                    raise UserError(f"Kaggle could not process version {state.version} of {ref} (status "
                                    f"{state.status}): re-run with --version-notes TEXT to publish it again")
                seen = f"status {state.status}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UserError(redact(f"Kaggle had not processed the new version of {ref} after {wait:.0f} s "
                                   f"({seen}), so its files are not checked: check `kaggle datasets files {ref}` "
                                   "later, and re-run with --version-notes TEXT if a file is missing"))
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, longest)


def _listed_sizes(api: Any, ref: str, version: int, redact: Redactor) -> dict[str, int | None]:
    """name -> bytes of every file Kaggle lists in ``version`` (all pages of ``dataset_list_files``)."""
    import requests

    where = f"{ref}/{version}"
    sizes: dict[str, int | None] = {}
    token: str | None = None
    for _ in range(MAX_FILES + 1):  # at least one file per page: more pages than that is a loop
        try:
            page = api.dataset_list_files(where, page_token=token, page_size=LIST_PAGE_SIZE)
            problem = "no answer" if page is None else str(getattr(page, "error_message", "") or "")
        except (requests.exceptions.RequestException, ValueError) as exc:  # ValueError: the client's own checks
            problem = _http_detail(exc)
        if problem:
            raise UserError(redact(f"version {version} of {ref} was published, but Kaggle did not list its files "
                                   f"({problem}): check `kaggle datasets files {where}`"))
        for entry in getattr(page, "files", None) or getattr(page, "dataset_files", None) or []:
            size = getattr(entry, "total_bytes", None)
            sizes[str(entry.name)] = size if isinstance(size, int) else None
        token = str(getattr(page, "next_page_token", "") or "") or None
        if token is None:
            return sizes
    raise UserError(f"Kaggle kept paging the files of {where}: check `kaggle datasets files {where}`")


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".7z")


def _check_complete(expected: dict[str, int], listed: dict[str, int | None], ref: str, version: int) -> None:
    """Every file of the export is in the version, with its size; else one line saying what to do.

    Kaggle may unpack an uploaded archive and list its members instead of the archive itself: an archive
    missing by name counts as present when the listing holds files that are not in the export (what
    unpacking leaves), so that a complete version is never called incomplete.
    """
    unpacked = any(name not in expected for name in listed)
    missing = [name for name in expected if name not in listed
               and not (unpacked and name.lower().endswith(_ARCHIVE_SUFFIXES))]
    problems = [f"{name} missing" for name in missing]
    problems += [f"{name} has {listed[name]} bytes, not {size}" for name, size in expected.items()
                 if name in listed and listed[name] != size]
    if problems:
        shown = "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        raise UserError(f"version {version} of the Kaggle dataset {ref} is incomplete ({shown}): "
                        "re-run with --version-notes TEXT to publish a complete version")


def _invalid_tags(response: Any) -> list[str]:
    """The keywords Kaggle did not know, from the answer's ``invalid_tags`` (``invalidTags``)."""
    tags = getattr(response, "invalid_tags", None) or getattr(response, "invalidTags", None) or []
    return [str(tag) for tag in tags]


def publish_kaggle(
    folder: Path,
    *,
    username: str,
    title: str,
    name: str | None = None,
    keywords: list[str] | None = None,
    license: str | None = None,  # the CLI's name
    public: bool = False,
    version_notes: str | None = None,
    wait: float = PROCESSING_WAIT,
) -> PublishResult:
    """Publish ``folder`` (the output of ``zenodo-hpc organize``) as the Kaggle dataset ``<username>/<name>``.

    Checks everything Kaggle would refuse, then writes ``folder/dataset-metadata.json`` (atomically), then
    with the official client: a new dataset, private unless ``public``; or, when it exists, a new version,
    which needs ``version_notes``. Then waits (at most ``wait`` seconds) for Kaggle to process it and checks
    that it lists every file with its size. Every refusal and failure is a :class:`UserError` of one line.
    """
    folder = Path(folder)
    metadata = prepare_kaggle_metadata(folder, username=username, title=title, name=name, keywords=keywords,
                                       license=license)
    notes_text = (version_notes or "").strip() or None
    creds = _find_credentials()
    redact = Redactor(creds.secrets)
    metadata_path = folder / METADATA_FILE
    try:
        atomic_write_json(metadata_path, metadata)
    except OSError as exc:
        raise UserError(f"{metadata_path}: cannot write ({exc.strerror or exc})") from None

    ref = metadata["id"]
    files = [(r["path"], (folder / r["path"]).stat().st_size) for r in metadata["resources"]]
    quiet = not sys.stderr.isatty()
    api = _import_client(creds, redact)
    result_notes: list[str] = []
    with _client_output(quiet, redact):
        before = _current_version(api, ref, redact)
        new = before is None
        if not new and notes_text is None:
            raise UserError(f"the Kaggle dataset {ref} already exists: pass --version-notes TEXT to publish "
                            "a new version of it")
        if not new and public:
            result_notes.append("--public does not change an existing dataset: set its visibility on Kaggle")
        if new and notes_text is not None:
            result_notes.append("the dataset is new: the version notes were not used")
        target = (f"the new {'public' if public else 'private'} Kaggle dataset {ref}" if new
                  else f"a new version of the Kaggle dataset {ref}")
        log.info("uploading %d files to %s", len(files), target)
        response = _send(api, folder, ref, before, notes_text, public, quiet, redact)
        version = _wait_until_processed(api, ref, before or 0, wait, redact)
        _check_complete(dict(files), _listed_sizes(api, ref, version, redact), ref, version)

    return PublishResult(
        ref=ref, url=f"{WEB_URL}/{ref}", created=new, private=not public if new else None,
        title=metadata["title"], license=metadata["licenses"][0]["name"], keywords=list(metadata["keywords"]),
        files=files, version_notes=None if new else notes_text, metadata_path=metadata_path,
        invalid_keywords=_invalid_tags(response), notes=result_notes, version=version,
    )


def _size(n: int) -> str:
    return byte_size(n, kilo="KB")


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
    if result.version is not None:
        lines.append(f"checked: version {result.version} on Kaggle lists every file, with its size")
    lines.append(result.url)
    return "\n".join(lines)

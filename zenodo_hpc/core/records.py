"""What a Zenodo record (a search hit) holds, read defensively: every field of an API answer is untrusted.

Zenodo has served its records' files in several shapes, and a run's ``records.jsonl`` may hold any of them:

- before October 2023: ``files: [{key, size, checksum: "md5:<hex>", links: {self: <content>}}]``
  (``self`` is ``/api/files/<bucket>/<key>``, the bytes);
- 13-25 October 2023, just after the move to InvenioRDM: ``files: [{filename, filesize, checksum: "<hex>",
  links: {self: <the file's metadata>, download: <the bytes>}}]``;
- since then: ``files: [{key, size, checksum: "md5:<hex>", links: {self: .../files/<key>/content}}]``;
- InvenioRDM's own shape (its JSON, Zenodo's bulk exports): ``files: {enabled, entries: {<key>: {key, size,
  checksum, links: {content, self}}}}``.

:func:`file_entries` reads them all into :class:`FileEntry` (the content link of whichever shape), and the
other functions answer the questions the pipeline asks of a hit: its id (:func:`record_id`), whether its
code may be fetched at all (:func:`restriction`), its GitHub release (:func:`github_release`), its total
declared size (:func:`declared_size`). None of them raises on a malformed hit except :func:`record_id`,
whose :class:`BadRecord` carries the reason that hit is skipped for.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

RECORD_ID = re.compile(r"[1-9][0-9]{0,18}")  # Zenodo's ids are positive integers (fits an int64)
_GITHUB_URL = re.compile(r"https?://(?:www\.)?github\.com/([^/\s?#]+)/([^/\s?#]+)(.*)", re.IGNORECASE)
_GITHUB_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_MD5 = re.compile(r"[0-9a-f]{32}")
MAX_DECLARED_SIZE = 1 << 50  # 1 PiB: a declared size above this is a lie, not a file
OPEN = "open"
INTEGRATION_RELATION = "issupplementto"  # what the Zenodo-GitHub integration writes for the release


class BadRecord(ValueError):
    """A hit that cannot be a Zenodo record (its id, its shape); ``reason`` is what harvest counts."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def record_id(hit: Any) -> str:
    """The hit's id as a string of digits, safe as a file name; :class:`BadRecord` otherwise.

    The id names the record's folder, its markers and its cache: an id like ``../../x`` or ``/etc`` would
    write outside the run directory, so only what Zenodo's ids really are (positive integers) passes.
    """
    if not isinstance(hit, dict):
        raise BadRecord(f"a hit that is not a JSON object: {_clip(hit)}", reason="malformed")
    value = hit.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRecord(f"a hit whose id is not an integer: {_clip(value)}", reason="bad_id")
    text = str(value)
    if not RECORD_ID.fullmatch(text):
        raise BadRecord(f"a hit whose id is not a positive integer: {_clip(text)}", reason="bad_id")
    return text


def check_hit(hit: Any, *, plain: bool = False) -> str:
    """The id of a hit that the pipeline can work with; :class:`BadRecord` (with its reason) otherwise.

    Beyond the id: ``metadata`` must be an object, ``files`` a list or InvenioRDM's ``{entries}`` object,
    and no number may be infinite or NaN (Python's JSON reader accepts ``Infinity``; no other reader does).
    ``plain``: the hit was read by :func:`loads_hit`, which found it holds none and nests shallowly, so the walk
    through the whole value (half the time of reading a run's records) is spared.
    """
    rid = record_id(hit)
    metadata = hit.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRecord(f"record {rid}: metadata is not an object ({_clip(metadata)})", reason="malformed")
    files = hit.get("files")
    if files is not None and not isinstance(files, (list, dict)):
        raise BadRecord(f"record {rid}: files is neither a list nor an object ({_clip(files)})", reason="malformed")
    if not plain and _has_non_finite(hit):
        raise BadRecord(f"record {rid}: a number in the hit is infinite or NaN", reason="malformed")
    return rid


class _NonFinite(ValueError):
    """An infinite or NaN number met while reading JSON."""


def _no_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf
        raise _NonFinite(text)
    return value


_FINITE_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
MAX_PLAIN_BRACKETS = 100  # a text with at most this many { and [ nests at most as deep as _has_non_finite allows


def loads_hit(text: str) -> tuple[Any, bool]:
    """A JSON text's value, and whether it is plain: no infinite or NaN number (found while reading, by the
    decoder's hooks, at no cost for a text without floats) and nesting at most 100 deep, so that
    ``check_hit(value, plain=True)`` may spare its walk. ValueError (``json.JSONDecodeError``) for what is not JSON."""
    try:
        value = _FINITE_JSON.decode(text)
    except _NonFinite:
        return json.loads(text), False
    return value, text.count("{") + text.count("[") <= MAX_PLAIN_BRACKETS


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    """Whether an infinite or NaN float hides anywhere in a JSON value (nesting beyond 100 counts as bad)."""
    if depth > 100:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v, depth + 1) for v in value)
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def without_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` (a checked hit: nesting bounded) with every unpaired UTF-16 surrogate as U+FFFD, and how many
    strings held one.

    JSON may spell one (``"\\ud800"``), Python reads it, and no UTF-8 can hold it: written as it is, a title
    holding one stops the harvest and every file the record reaches (records.jsonl, its metadata, the card).
    It is no character, so the text loses nothing a reader could see, and the record keeps its place.
    """
    if isinstance(value, str):
        fixed, count = _SURROGATE.subn(REPLACEMENT, value)
        return fixed, int(count > 0)
    if isinstance(value, list):
        items = [without_surrogates(item) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        repaired = 0
        out: dict[Any, Any] = {}
        for key, item in value.items():
            key, n_key = without_surrogates(key)
            out[key], n_item = without_surrogates(item)
            repaired += n_key + n_item
        return out, repaired
    return value, 0


def _clip(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def metadata_of(hit: dict[str, Any]) -> dict[str, Any]:
    metadata = hit.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


# --- access -------------------------------------------------------------------------------------------


def restriction(hit: dict[str, Any]) -> str | None:
    """Why the record's code must not be fetched (``access_right: restricted``, files not public), or None.

    The author chose not to share these files: they are fetched from nowhere, GitHub included.
    """
    metadata = metadata_of(hit)
    access_right = metadata.get("access_right")
    if access_right is not None and str(access_right).lower() != OPEN:
        return f"access_right is {str(access_right)[:40]!r}"
    access = hit.get("access")  # InvenioRDM's shape: {"record": "public", "files": "restricted", ...}
    if isinstance(access, dict):
        for part in ("record", "files"):
            value = access.get(part)
            if value is not None and str(value).lower() != "public":
                return f"access.{part} is {str(value)[:40]!r}"
    return None


# --- files --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of a record as the API describes it; ``url`` is None when no usable link was given."""

    key: str
    size: int | None  # declared size, None when absent or absurd
    md5: str | None  # expected md5, None when absent or not an md5
    url: str | None  # the link to the file's bytes (http or https), None when there is none
    problem: str | None = None  # why ``url`` is None, when a link was given but is unusable


def raw_file_list(hit: dict[str, Any]) -> list[Any]:
    """The ``files`` of a hit as a list, from the list shapes or InvenioRDM's ``{"entries": {...}}``."""
    files = hit.get("files")
    if isinstance(files, list):
        return files
    if isinstance(files, dict):
        entries = files.get("entries")
        if isinstance(entries, dict):
            return [dict(value, key=value.get("key") or key) if isinstance(value, dict) else value
                    for key, value in entries.items()]
        if isinstance(entries, list):
            return entries
    return []


def file_entries(hit: dict[str, Any]) -> list[FileEntry]:
    """Every file of the record that has a name, in sorted key order, whatever the shape."""
    entries = [entry for raw in raw_file_list(hit) if (entry := _file_entry(raw)) is not None]
    return sorted(entries, key=lambda e: e.key)


def _file_entry(raw: Any) -> FileEntry | None:
    if not isinstance(raw, dict):
        return None
    key = raw.get("key") or raw.get("filename")
    if not isinstance(key, str) or not key:
        return None
    url, problem = _content_link(raw.get("links"))
    return FileEntry(key=key, size=_size(raw.get("size", raw.get("filesize"))), md5=parse_md5(raw.get("checksum")),
                     url=url, problem=problem)


def _content_link(links: Any) -> tuple[str | None, str | None]:
    """The link to the bytes: ``download`` (2023, where ``self`` is the metadata), ``content``, else ``self``."""
    if not isinstance(links, dict):
        return None, None
    for name in ("download", "content", "self"):
        value = links.get(name)
        if value is None:
            continue
        problem = link_problem(value)
        return (None, problem) if problem else (str(value), None)
    return None, None


def link_problem(url: Any) -> str | None:
    """Why ``url`` cannot be downloaded (not http(s), no host, not a string), or None when it can."""
    if not isinstance(url, str) or not url or len(url) > 8192:
        return f"not a URL: {_clip(url)}"
    if any(c in url for c in "\r\n\t "):
        return f"a URL with whitespace: {_clip(url)}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"an invalid URL: {_clip(url)}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) link: {_clip(url)}"
    if not parts.hostname:
        return f"a link without a host: {_clip(url)}"
    return None


def _size(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0 or value > MAX_DECLARED_SIZE:
        return None
    return int(value)


def parse_md5(checksum: Any) -> str | None:
    """``md5:<hex>`` or a bare 32-hex md5; anything else (sha256:..., missing) gives None."""
    if not isinstance(checksum, str):
        return None
    algorithm, _, value = checksum.partition(":")
    if not value:
        algorithm, value = "md5", algorithm
    value = value.strip().lower()
    if algorithm.strip().lower() != "md5" or not _MD5.fullmatch(value):
        return None
    return value


def file_keys(hit: dict[str, Any]) -> list[str]:
    """The names of a record's files, whatever the shape (for exclusion patterns)."""
    return [entry.key for entry in file_entries(hit)]


def declared_size(hit: dict[str, Any]) -> int:
    """The total declared size of a record's files (0 when unknown): what shard balancing needs."""
    return sum(entry.size or 0 for entry in file_entries(hit))


# --- GitHub -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GithubRelease:
    owner: str
    repo: str
    tag: str


def _related(hit: dict[str, Any]) -> list[tuple[str, str]]:
    """(identifier, relation) of every related identifier that is a string."""
    related = metadata_of(hit).get("related_identifiers")
    out = []
    for item in related if isinstance(related, list) else []:
        if isinstance(item, dict) and isinstance(item.get("identifier"), str):
            out.append((item["identifier"].strip(), str(item.get("relation") or "")[:60]))
    return out


def github_urls(hit: dict[str, Any]) -> list[tuple[str, str]]:
    """(url, relation) of every related identifier on github.com, whatever the relation."""
    return [(identifier, relation) for identifier, relation in _related(hit) if _GITHUB_URL.match(identifier)]


def github_repository(hit: dict[str, Any]) -> tuple[str, str] | None:
    """``(owner, repo)`` of the first GitHub URL among the related identifiers (for exclusion patterns)."""
    for identifier, _ in github_urls(hit):
        match = _GITHUB_URL.match(identifier)
        if match:
            return match.group(1), match.group(2).removesuffix(".git")
    return None


def github_release(hit: dict[str, Any]) -> GithubRelease | None:
    """The release the Zenodo-GitHub integration archived, or None.

    Only the integration's own link counts: relation ``isSupplementTo`` and
    ``https://github.com/<owner>/<repo>/tree/<tag>``, the tag URL-decoded once. Other relations
    (``isIdenticalTo`` a folder on a branch, ``isDerivedFrom`` ...) name a place, not a release.
    """
    for identifier, relation in _related(hit):
        if relation.lower() != INTEGRATION_RELATION:
            continue
        match = _GITHUB_URL.match(identifier)
        if not match:
            continue
        owner, repo, rest = match.group(1), match.group(2).removesuffix(".git"), match.group(3)
        if not rest.startswith("/tree/") or not (_GITHUB_NAME.fullmatch(owner) and _GITHUB_NAME.fullmatch(repo)):
            continue
        tag = urllib.parse.unquote(rest[len("/tree/"):].strip("/"))
        if tag and _is_safe_tag(tag):
            return GithubRelease(owner, repo, tag)
    return None


def _is_safe_tag(tag: str) -> bool:
    """A git ref name as git allows it (no ``..``, no control characters, no spaces), at most 250 characters."""
    return (len(tag) <= 250 and ".." not in tag and not tag.startswith(("/", "-"))
            and not any(ord(c) < 33 or c in "~^:?*[\\\x7f" for c in tag))


def github_hint(hit: dict[str, Any]) -> str | None:
    """When GitHub is named but not as the integration's release: what to tell the user, else None.

    A ``.zenodo.json`` in the repository replaces the related identifiers the integration would write, so
    such records often name their repository (or a branch) without the ``isSupplementTo .../tree/<tag>``
    link that says which release was archived.
    """
    if github_release(hit) is not None:
        return None
    urls = github_urls(hit)
    if not urls:
        return None
    url, relation = urls[0]
    return (f"it names GitHub ({url[:120]}, relation {relation or 'none'}) but not the integration's release "
            "link (isSupplementTo https://github.com/<owner>/<repo>/tree/<tag>): a .zenodo.json may have "
            "replaced the integration's identifiers")

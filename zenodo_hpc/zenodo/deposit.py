"""Publish a release's image on Zenodo as a new version of one record, over Zenodo's deposit API.

Every release of the dataset becomes a version of the same Zenodo record (a *concept*): each version has its own
DOI, the concept DOI always resolves to the latest one, and Zenodo hosts the files. :func:`publish_zenodo_version`
does one release:

1. **Find where to work.** With a concept id, ``GET {api}/deposit/depositions?q=conceptrecid:<id>`` gives the
   concept's latest draft: a draft left by an earlier run (continued, never a second one), else the latest
   published version. Without one (the first release), the depositions titled like this release are looked up
   (``q=title:"..."``, every version): an unpublished draft of that title is continued; a published record of that
   title stops the run (pass its concept id to add a version to it), unless it already holds exactly these files.
2. **Make the draft**: ``POST {api}/deposit/depositions`` with the metadata (the first release), or
   ``POST .../actions/newversion`` on the latest version, then the draft named by ``links.latest_draft`` (zenodo-rdm
   answers with the draft itself, the older docs with the record; both are followed, and the concept's draft is
   looked up when neither names it).
3. **Metadata**: ``PUT .../depositions/<id>`` with all of it (a new version starts without ``version`` and with
   today's ``publication_date``): ``upload_type: dataset``, title, creators, description, version, publication date,
   license, keywords, related identifiers, open access.
4. **Files**: the draft's files that are not exactly ours (name, size and md5) are deleted, so a new version holds
   only this release's files (Zenodo copies the previous version's files into a new draft); then each missing file
   is streamed with ``PUT <links.bucket>/<name>`` and the answer's ``key``, ``size`` and ``checksum`` (``md5:``) are
   checked. A file already in the draft with the same size and md5 (an earlier run's upload) is not sent again.
5. **Publish**: the draft is read again and must list exactly our files, then ``POST .../actions/publish``; the
   answer must be the published version (``submitted``, ``state: done``, a DOI) listing every file with its size
   and md5.

Running it again is always safe: nothing creates a second draft, a failed upload leaves the draft to be continued,
and when the latest version already holds exactly these files (a publish whose answer was lost) nothing is done.

**The token** (a personal access token with the ``deposit:write`` and ``deposit:actions`` scopes) travels only in the
``Authorization`` header and only to the API's origin (:class:`~zenodo_hpc.zenodo.client.HttpClient`); every link Zenodo
answers with is checked to be on that origin (and where it must be: a bucket under ``{api}/files/``, an action under
``{api}/deposit/depositions/<id>/``) before anything is sent to it. It is never printed, logged or written: every
message made of what a server said goes through the package's one redactor (:mod:`zenodo_hpc.core.redact`), which
masks the token raw, URL-quoted and inside any base64 text (an HTTP ``Basic`` credential ``user:token``, whatever
``user``).

Waits are bounded and failures retried as by the rest of the package (:mod:`zenodo_hpc.zenodo.client`): an
upload (a ``PUT`` that replaces) and reads are retried; creating a draft, a new version or publishing is never
repeated blindly (the next run finds out what happened instead). Every failure is one line saying what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import requests

from ..core.errors import UserError
from ..core.redact import Redactor
from ..core.units import byte_size
from .client import JSON, HttpClient, RequestFailed, origin

__all__ = [
    "DEFAULT_TOKEN_ENV",
    "SANDBOX_API",
    "ZENODO_API",
    "DepositError",
    "DepositResult",
    "deposit_metadata",
    "format_deposit_summary",
    "publish_release_on_zenodo",
    "publish_zenodo_version",
    "read_deposit_token",
]

log = logging.getLogger(__name__)

ZENODO_API = "https://zenodo.org/api"
SANDBOX_API = "https://sandbox.zenodo.org/api"  # its own accounts and tokens; test DOIs (10.5072); cleaned at times
DEFAULT_TOKEN_ENV = "ZENODO_DEPOSIT_TOKEN"
MAX_FILES = 100  # developers.zenodo.org quickstart: "up to 100 files in the record"
MAX_TOTAL_BYTES = 50 * 1000**3  # ... and "a limit of 50GB total in the record"
LIST_PAGE_SIZE = 100  # the largest page Zenodo gives an authenticated client
MAX_LIST_PAGES = 20
_READ_CHUNK = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}")
_DOI = re.compile(r"10\.\d{4,9}/\S+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LICENSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]*")
_STATES = ("unsubmitted", "inprogress", "done")
# The relations of related identifiers the legacy API takes (DataCite's, as zenodo-rdm's serializer names them).
RELATIONS: tuple[str, ...] = (
    "isCitedBy", "cites", "isSupplementTo", "isSupplementedBy", "isContinuedBy", "continues", "isDescribedBy",
    "describes", "hasMetadata", "isMetadataFor", "hasVersion", "isVersionOf", "isNewVersionOf",
    "isPreviousVersionOf", "isPartOf", "hasPart", "isPublishedIn", "isReferencedBy", "references",
    "isDocumentedBy", "documents", "isCompiledBy", "compiles", "isVariantFormOf", "isOriginalFormOf",
    "isIdenticalTo", "isReviewedBy", "reviews", "isDerivedFrom", "isSourceOf", "isRequiredBy", "requires",
    "isObsoletedBy", "obsoletes", "isAlternateIdentifier",
)  # fmt: skip
_METADATA_KEYS = ("title", "creators", "description", "version", "publication_date", "license", "keywords",
                  "related_identifiers", "notes", "upload_type", "access_right")


class DepositError(UserError):
    """Publishing on Zenodo failed; the message (one line, token masked) says what to do."""


@dataclass(frozen=True)
class DepositResult:
    """What :func:`publish_zenodo_version` did."""

    doi: str  # the new version's DOI
    record_id: int
    concept_id: str  # the record's concept (conceptrecid): pass it for every later release
    concept_doi: str | None  # resolves to the latest version
    url: str  # the version's page
    version: str
    files: list[tuple[str, int]]  # (name, bytes), the image first
    created: bool  # True: the first version of a new record; False: a new version of the concept
    resumed: bool = False  # continued a draft that an earlier run left
    already_published: bool = False  # the latest version held exactly these files: nothing was done
    uploaded: list[str] = field(default_factory=list)  # files sent by this run
    kept: list[str] = field(default_factory=list)  # files already in the draft with the same size and md5
    deleted: list[str] = field(default_factory=list)  # files removed from the draft (the previous version's)
    sandbox: bool = False  # published on sandbox.zenodo.org: a test DOI

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


# --- the token: read it, and keep it out of every message ----------------------------------------------------


def read_deposit_token(env_name: str = DEFAULT_TOKEN_ENV, *, api_url: str = ZENODO_API) -> str:
    """The deposit token from the environment variable ``env_name`` (its name is configured, never the token)."""
    value = os.environ.get(env_name, "").strip()
    if not value:
        site = _site(api_url)
        raise DepositError(f"no Zenodo deposit token: set the environment variable {env_name} to a personal access "
                           f"token with the deposit:write and deposit:actions scopes, created at "
                           f"{site}/account/settings/applications/tokens/new/")
    return value


# --- metadata -------------------------------------------------------------------------------------------------


def deposit_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The legacy deposit metadata for one release, checked before any network call (one line naming the field).

    Keys: ``title``, ``creators`` (``[{"name": "Family, Given", "affiliation"?, "orcid"?}]``), ``description``
    (HTML allowed), ``version``, ``publication_date`` (``YYYY-MM-DD``, default today in UTC), ``license`` (a Zenodo
    license id, default ``cc-by-4.0``), ``keywords``, ``related_identifiers`` (``[{"identifier", "relation",
    "scheme"?, "resource_type"?}]``), ``notes``. ``upload_type`` is always ``dataset`` and ``access_right``
    ``open``.
    """
    if not isinstance(metadata, Mapping):
        raise DepositError("the Zenodo metadata must be a mapping of fields")
    unknown = sorted(set(metadata) - set(_METADATA_KEYS))
    if unknown:
        raise DepositError(f"unknown Zenodo metadata field(s) {', '.join(map(repr, unknown))}; known: "
                           f"{', '.join(_METADATA_KEYS)}")
    for key, wanted in (("upload_type", "dataset"), ("access_right", "open")):
        if metadata.get(key, wanted) != wanted:
            raise DepositError(f"Zenodo metadata {key} must be {wanted!r} for the dataset, not {metadata[key]!r}")
    out: dict[str, Any] = {"upload_type": "dataset", "access_right": "open"}
    for key in ("title", "description", "version"):
        out[key] = _text(metadata.get(key), key)
    if len(out["title"]) < 3:
        raise DepositError(f"Zenodo metadata title must be at least 3 characters long, not {out['title']!r}")
    if len(out["version"]) > 191:
        raise DepositError("Zenodo metadata version must be at most 191 characters long")
    out["creators"] = _creators(metadata.get("creators"))
    when = metadata.get("publication_date") or datetime.now(timezone.utc).date().isoformat()
    if isinstance(when, date):
        when = when.isoformat()
    if not isinstance(when, str) or not _DATE.fullmatch(when) or not _valid_date(when):
        raise DepositError(f"Zenodo metadata publication_date must be a date YYYY-MM-DD, not {when!r}")
    out["publication_date"] = when
    license_id = metadata.get("license") or "cc-by-4.0"
    if not isinstance(license_id, str) or not _LICENSE.fullmatch(license_id):
        raise DepositError(f"Zenodo metadata license must be a license id such as cc-by-4.0, not {license_id!r}")
    out["license"] = license_id
    keywords = metadata.get("keywords") or []
    if not isinstance(keywords, (list, tuple)) or not all(isinstance(k, str) and k.strip() for k in keywords):
        raise DepositError(f"Zenodo metadata keywords must be a list of non-empty strings, not {keywords!r}")
    out["keywords"] = [k.strip() for k in keywords]
    out["related_identifiers"] = _related(metadata.get("related_identifiers") or [])
    if metadata.get("notes"):
        out["notes"] = _text(metadata["notes"], "notes")
    return out


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DepositError(f"Zenodo metadata {key} is missing or empty")
    return value.strip()


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _creators(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise DepositError("Zenodo metadata creators must be a non-empty list of {name: 'Family, Given', "
                           "affiliation, orcid}")
    out = []
    for index, creator in enumerate(value):
        if isinstance(creator, str):
            creator = {"name": creator}
        if not isinstance(creator, Mapping) or not isinstance(creator.get("name"), str) or not creator["name"].strip():
            raise DepositError(f"Zenodo metadata creators[{index}].name is missing or empty")
        extra = sorted(set(creator) - {"name", "affiliation", "orcid"})
        if extra:
            raise DepositError(f"Zenodo metadata creators[{index}] has unknown field(s) {', '.join(extra)}")
        entry = {"name": creator["name"].strip()}
        for key in ("affiliation", "orcid"):
            if creator.get(key):
                entry[key] = str(creator[key]).strip()
        out.append(entry)
    return out


def _related(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, (list, tuple)):
        raise DepositError("Zenodo metadata related_identifiers must be a list of {identifier, relation}")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("identifier"), str) or not item["identifier"]:
            raise DepositError(f"Zenodo metadata related_identifiers[{index}].identifier is missing or empty")
        if item.get("relation") not in RELATIONS:
            raise DepositError(f"Zenodo metadata related_identifiers[{index}].relation {item.get('relation')!r} is "
                               f"not one of Zenodo's relations (e.g. isSupplementTo, isDerivedFrom, isNewVersionOf)")
        extra = sorted(set(item) - {"identifier", "relation", "scheme", "resource_type"})
        if extra:
            raise DepositError(f"Zenodo metadata related_identifiers[{index}] has unknown field(s) {', '.join(extra)}")
        out.append({k: str(item[k]) for k in ("identifier", "relation", "scheme", "resource_type") if item.get(k)})
    return out


# --- answers, checked --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Local:
    name: str
    path: Path
    size: int
    md5: str


@dataclass(frozen=True)
class _RemoteFile:
    file_id: str
    name: str
    size: int
    md5: str
    link: str  # links.self: where the file is deleted


@dataclass(frozen=True)
class _Deposition:
    deposit_id: int
    concept: str
    submitted: bool
    state: str
    title: str
    version: str | None
    doi: str | None
    concept_doi: str | None
    links: dict[str, str]
    files: tuple[_RemoteFile, ...]

    def holds(self, local: Sequence[_Local]) -> bool:
        """Whether the deposition lists exactly these files, each with its size and md5."""
        listed = {f.name: (f.size, f.md5) for f in self.files}
        return len(self.files) == len(local) and listed == {f.name: (f.size, f.md5) for f in local}


class _Api:
    """The deposit API on one origin: every request checked, every answer parsed, every message masked."""

    def __init__(self, http: HttpClient, api_url: str, redact: Redactor, token_env: str | None) -> None:
        self.http = http
        self.api_url = api_url
        self.origin = origin(api_url)
        self.api_path = urllib.parse.urlsplit(api_url).path.rstrip("/")
        self.redact = redact
        self.token_env = token_env

    # links ------------------------------------------------------------------------------------------------------

    def check_link(self, url: Any, what: str, *, path: str | None = None) -> str:
        """``url`` if it is on the API's origin (and its path matches ``path``, a regex); else a DepositError.

        Runs before anything, the token above all, is sent to a link an answer named.
        """
        if not isinstance(url, str) or not url:
            raise DepositError(f"Zenodo's answer has no {what} link: it is not a deposition as Zenodo sends them; "
                               f"nothing was sent")
        if origin(url) != self.origin:
            shown = self.redact(_origin_text(url))
            raise DepositError(f"Zenodo's answer points the {what} link to {shown}, not to the API's origin "
                               f"{_origin_text(self.api_url)}: refusing to send the deposit token there; nothing was "
                               f"sent to it")
        if path is not None and not re.fullmatch(re.escape(self.api_path) + path,
                                                 urllib.parse.unquote(urllib.parse.urlsplit(url).path)):
            raise DepositError(f"Zenodo's answer points the {what} link to an unexpected place "
                               f"({self.redact(url[:200])}); nothing was sent to it")
        return url

    # requests ---------------------------------------------------------------------------------------------------

    def call(self, method: str, url: str, what: str, *, ok: tuple[int, ...] = (200,), then: str,
             unsure: str | None = None, json_body: Any = None, body: Any = None,
             params: Mapping[str, Any] | None = None, idempotent: bool = True,
             content_type: str | None = None) -> Any:
        """The parsed JSON answer of one request (None for a 204). ``then`` is what to do after a refusal,
        ``unsure`` after a failure that leaves it unknown whether the server did it (no answer, a 5xx)."""
        if origin(url) != self.origin:  # every caller checked already; this is the last line of defence
            raise DepositError(f"{what}: {_origin_text(url)} is not the API's origin; nothing was sent")
        try:
            if method == "GET":
                response = self.http.get(url, params=params, accept=JSON)
            else:
                response = self.http.send(method, url, json_body=json_body, body=body, params=params,
                                          idempotent=idempotent, content_type=content_type)
        except RequestFailed as exc:
            raise DepositError(self.redact(f"{what} failed ({_one_line(str(exc))}); {unsure or then}")) from None
        with response:
            if response.status_code in ok:
                if response.status_code == 204 or not response.content.strip():
                    return None
                try:
                    return response.json()
                except ValueError:
                    raise DepositError(self.redact(f"{what}: Zenodo answered HTTP {response.status_code} with "
                                                   f"something that is not JSON ({_snippet(response)}); {then}")
                                       ) from None
            raise self.refusal(what, response, then)

    def refusal(self, what: str, response: requests.Response, then: str) -> DepositError:
        status = response.status_code
        detail = _error_detail(response)
        if status in (401, 403):
            env = f"${self.token_env}" if self.token_env else "the deposit token"
            return DepositError(self.redact(
                f"{what}: Zenodo refused the deposit token (HTTP {status}: {detail}): check that {env} holds a "
                f"personal access token with the deposit:write and deposit:actions scopes, created on "
                f"{_site(self.api_url)} by the account that owns the record (the sandbox has its own accounts and "
                f"tokens); {then}"))
        if status == 400 and "metadata." in detail:
            return DepositError(self.redact(f"{what}: Zenodo refused the metadata (HTTP 400: {detail}): correct the "
                                            f"field named (the publish.zenodo settings) and re-run; {then}"))
        return DepositError(self.redact(f"{what}: Zenodo answered HTTP {status} ({detail}); {then}"))

    def deposition(self, answer: Any, what: str) -> _Deposition:
        """A deposition answer, checked: its id, concept, state, links and files."""
        if not isinstance(answer, Mapping):
            raise DepositError(f"{what}: Zenodo's answer is not a deposition (a JSON object was expected)")
        deposit_id = answer.get("id")
        if not isinstance(deposit_id, int) or isinstance(deposit_id, bool) or deposit_id <= 0:
            raise DepositError(f"{what}: Zenodo's answer has no valid deposition id ({self.redact(deposit_id)!s:.80})")
        concept = answer.get("conceptrecid")
        concept = str(concept) if isinstance(concept, (str, int)) and not isinstance(concept, bool) else ""
        if not concept.isdigit():
            raise DepositError(f"{what}: deposition {deposit_id} has no valid conceptrecid")
        submitted, state = answer.get("submitted"), answer.get("state")
        if not isinstance(submitted, bool) or state not in _STATES:
            raise DepositError(f"{what}: deposition {deposit_id} has no valid submitted/state "
                               f"({self.redact(submitted)!s:.20}/{self.redact(state)!s:.20})")
        links = answer.get("links")
        if not isinstance(links, Mapping):
            raise DepositError(f"{what}: deposition {deposit_id} has no links")
        raw_metadata = answer.get("metadata")
        metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
        raw_title = metadata.get("title")
        title = raw_title if isinstance(raw_title, str) else ""
        version = metadata.get("version") if isinstance(metadata.get("version"), str) else None
        doi = answer.get("doi") if isinstance(answer.get("doi"), str) and _DOI.fullmatch(answer["doi"]) else None
        concept_doi = answer.get("conceptdoi")
        concept_doi = concept_doi if isinstance(concept_doi, str) and _DOI.fullmatch(concept_doi) else None
        files = answer.get("files", [])
        if not isinstance(files, list):
            raise DepositError(f"{what}: deposition {deposit_id} lists its files as something else than a list")
        return _Deposition(deposit_id, concept, submitted, state, title, version, doi, concept_doi,
                           {str(k): v for k, v in links.items() if isinstance(v, str)},
                           tuple(self.remote_file(f, deposit_id, what) for f in files))

    def remote_file(self, entry: Any, deposit_id: int, what: str) -> _RemoteFile:
        if not isinstance(entry, Mapping):
            raise DepositError(f"{what}: deposition {deposit_id} lists a file that is not an object")
        name, size, md5 = entry.get("filename"), entry.get("filesize"), entry.get("checksum")
        raw_links = entry.get("links")
        links = raw_links if isinstance(raw_links, Mapping) else {}
        if (not isinstance(name, str) or not name or not isinstance(size, int) or isinstance(size, bool) or size < 0
                or not isinstance(md5, str) or not _MD5.fullmatch(md5.lower())):
            raise DepositError(f"{what}: deposition {deposit_id} lists a file without a valid filename, filesize and "
                               f"md5 checksum ({self.redact(repr(dict(entry)))[:160]})")
        return _RemoteFile(str(entry.get("id") or ""), name, size, md5.lower(), str(links.get("self") or ""))

    def depositions(self, query: str, what: str, then: str, *, all_versions: bool = False) -> list[_Deposition]:
        """``GET {api}/deposit/depositions`` for ``query``, every page (a page shorter than asked is the last)."""
        url = f"{self.api_url}/deposit/depositions"
        found: list[_Deposition] = []
        for page in range(1, MAX_LIST_PAGES + 1):
            params = {"q": query, "size": LIST_PAGE_SIZE, "page": page, "sort": "mostrecent"}
            if all_versions:
                params["all_versions"] = "true"
            answer = self.call("GET", url, what, params=params, then=then)
            if not isinstance(answer, list):
                raise DepositError(f"{what}: Zenodo's answer is not a list of depositions; {then}")
            found.extend(self.deposition(item, what) for item in answer)
            if len(answer) < LIST_PAGE_SIZE:
                return found
        raise DepositError(f"{what}: more than {MAX_LIST_PAGES * LIST_PAGE_SIZE} depositions match {query!r}; "
                           f"{then}")


# --- the release ------------------------------------------------------------------------------------------------


class _Release:
    """One call of :func:`publish_zenodo_version`: find or make the draft, fill it, publish it."""

    def __init__(self, api: _Api, local: list[_Local], metadata: dict[str, Any], concept_id: str | None) -> None:
        self.api = api
        self.local = local
        self.metadata = metadata
        self.concept_id = concept_id
        self.uploaded: list[str] = []
        self.kept: list[str] = []
        self.deleted: list[str] = []

    def run(self) -> DepositResult:
        draft, how = self.find_draft()
        if how == "published":
            log.info("zenodo: record %s (concept %s) holds exactly these files already: nothing to do",
                     draft.deposit_id, draft.concept)
            return self.result(draft, created=False, resumed=False, already=True)
        then = self.keep_draft(draft)
        self.check_links(draft)
        if how != "created":
            draft = self.put_metadata(draft, then)
        draft = self.sync_files(draft, then)
        published = self.publish(draft, then)
        return self.result(published, created=how == "created" or (how == "resumed" and not self.concept_id),
                           resumed=how == "resumed", already=False)

    # finding the draft -----------------------------------------------------------------------------------------

    def find_draft(self) -> tuple[_Deposition, str]:
        """The deposition to work on, and how it was found: created, new_version, resumed, or published."""
        then = "nothing was changed on Zenodo: re-run later"
        if self.concept_id:
            log.info("zenodo: looking for record %s on %s", self.concept_id, self.api.api_url)
            found = [d for d in self.api.depositions(f"conceptrecid:{self.concept_id}",
                                                     f"looking for record {self.concept_id} on Zenodo", then)
                     if d.concept == self.concept_id]
            if not found:
                raise DepositError(f"no deposition of record {self.concept_id} is visible with this token on "
                                   f"{_site(self.api.api_url)}: check the concept id (publish.zenodo.concept_id), and "
                                   f"that the token belongs to the account that owns the record (the sandbox has its "
                                   f"own records)")
            drafts = [d for d in found if not d.submitted]
            if drafts:
                return self.resume(drafts)
            latest = max(found, key=lambda d: d.deposit_id)
            if latest.holds(self.local):
                return latest, "published"
            return self.new_version(latest)
        title = self.metadata["title"]
        what = f"looking for a deposition titled {title!r} on Zenodo"
        found = [d for d in self.api.depositions(f'title:"{_quoted(title)}"', what, then, all_versions=True)
                 if d.title == title]
        published = [d for d in found if d.submitted]
        for record in sorted(published, key=lambda d: -d.deposit_id):
            if record.holds(self.local):
                return record, "published"
        if published:
            concept = published[0].concept
            raise DepositError(f"Zenodo already holds a published record titled {title!r} (concept {concept}): "
                               f"to publish this release as a new version of it, set publish.zenodo.concept_id to "
                               f"{concept}; to start a new record instead, change the title")
        drafts = [d for d in found if not d.submitted]
        if drafts:
            return self.resume(drafts)
        return self.create(), "created"

    def resume(self, drafts: list[_Deposition]) -> tuple[_Deposition, str]:
        if len(drafts) > 1:
            ids = ", ".join(str(d.deposit_id) for d in sorted(drafts, key=lambda d: d.deposit_id))
            raise DepositError(f"Zenodo holds several unpublished drafts for this release ({ids}): delete all but one "
                               f"on Zenodo ({_site(self.api.api_url)}/me/uploads), then re-run")
        draft = drafts[0]
        log.info("zenodo: continuing draft %s (record %s), left by an earlier run", draft.deposit_id, draft.concept)
        return draft, "resumed"

    def create(self) -> _Deposition:
        """``POST {api}/deposit/depositions`` with the metadata: the first version of a new record."""
        what = "creating the Zenodo deposition"
        answer = self.api.call(
            "POST", f"{self.api.api_url}/deposit/depositions", what, ok=(201,), json_body={"metadata": self.metadata},
            idempotent=False, then="nothing was created on Zenodo",
            unsure="if Zenodo created it anyway, the next run finds it by its title and continues it")
        draft = self.api.deposition(answer, what)
        self.check_draft(draft, what)
        log.info("zenodo: created draft %s (a new record, concept %s)", draft.deposit_id, draft.concept)
        return draft

    def new_version(self, latest: _Deposition) -> tuple[_Deposition, str]:
        """``POST .../actions/newversion`` on the latest version, then the draft ``links.latest_draft`` names."""
        what = f"creating a new version of Zenodo record {latest.deposit_id}"
        then = "re-run: the next run finds the new draft if Zenodo made it, or makes it"
        refused = "nothing was changed on Zenodo: re-run later"
        url = self.api.check_link(latest.links.get("newversion"), "newversion",
                                  path=rf"/deposit/depositions/{latest.deposit_id}/actions/newversion")
        try:
            answer = self.api.call("POST", url, what, ok=(201,), idempotent=False, then=refused, unsure=then)
        except DepositError as exc:
            if "Please remove all files first" not in str(exc):
                raise
            # zenodo-rdm: a draft of this concept exists already (newversion returned it and could not import the
            # files into it); the list did not show it yet. Look for it among every version.
            return self.pending_draft(latest, what, f"Zenodo says a draft of record {latest.concept} exists already "
                                                    f"(it holds files), but its search does not show it yet: re-run "
                                                    f"in a few minutes to continue it"), "resumed"
        answered = self.api.deposition(answer, what)
        draft_url = self.api.check_link(answered.links.get("latest_draft"), "latest_draft",
                                        path=r"/deposit/depositions/\d+")
        if draft_url.rstrip("/").endswith(f"/{answered.deposit_id}"):
            draft = answered
        else:
            draft = self.api.deposition(self.api.call("GET", draft_url, what, then=then), what)
        if draft.submitted or draft.deposit_id == latest.deposit_id:  # the older API: the answer was the record
            draft = self.pending_draft(latest, what, f"Zenodo does not show the new version's draft; {then}")
        if draft.concept != latest.concept:
            raise DepositError(f"{what}: Zenodo's new draft {draft.deposit_id} belongs to record {draft.concept}, not "
                               f"to {latest.concept}; nothing was uploaded; {then}")
        self.check_draft(draft, what)
        log.info("zenodo: new version of record %s (concept %s): draft %s", latest.deposit_id, latest.concept,
                 draft.deposit_id)
        return draft, "new_version"

    def pending_draft(self, latest: _Deposition, what: str, missing: str) -> _Deposition:
        """The concept's one unpublished draft, among every version; ``missing`` is the error when there is none."""
        then = "nothing was uploaded: re-run"
        drafts = [d for d in self.api.depositions(f"conceptrecid:{latest.concept}", what, then, all_versions=True)
                  if d.concept == latest.concept and not d.submitted]
        if not drafts:
            raise DepositError(f"{what}: {missing}")
        return self.resume(drafts)[0]

    def check_draft(self, draft: _Deposition, what: str) -> None:
        if draft.submitted:
            raise DepositError(f"{what}: Zenodo answered with published deposition {draft.deposit_id}, not a draft")

    def check_links(self, draft: _Deposition) -> None:
        """The draft's own links, checked before anything in it is changed."""
        self.self_link(draft)
        self.api.check_link(draft.links.get("bucket"), "bucket", path=r"/files/[0-9A-Za-z-]+")
        self.api.check_link(draft.links.get("publish"), "publish",
                            path=rf"/deposit/depositions/{draft.deposit_id}/actions/publish")

    def keep_draft(self, draft: _Deposition) -> str:
        return f"draft {draft.deposit_id} stays on Zenodo: re-run to continue it"

    # filling it ------------------------------------------------------------------------------------------------

    def put_metadata(self, draft: _Deposition, then: str) -> _Deposition:
        what = f"setting the metadata of Zenodo draft {draft.deposit_id}"
        url = self.self_link(draft)
        answer = self.api.call("PUT", url, what, json_body={"metadata": self.metadata}, then=then)
        updated = self.api.deposition(answer, what)
        if updated.deposit_id != draft.deposit_id or updated.title != self.metadata["title"]:
            raise DepositError(f"{what}: Zenodo's answer is deposition {updated.deposit_id} titled "
                               f"{self.api.redact(updated.title)[:80]!r}, not the draft as sent; {then}")
        return updated

    def self_link(self, draft: _Deposition) -> str:
        return self.api.check_link(draft.links.get("self"), "self", path=rf"/deposit/depositions/{draft.deposit_id}")

    def sync_files(self, draft: _Deposition, then: str) -> _Deposition:
        """Delete what is not exactly ours, upload what is missing, then read the draft back and compare."""
        wanted = {f.name: f for f in self.local}
        present = set()
        for remote in draft.files:
            mine = wanted.get(remote.name)
            if mine is not None and (remote.size, remote.md5) == (mine.size, mine.md5) and remote.name not in present:
                present.add(remote.name)
                self.kept.append(remote.name)
                log.info("zenodo: %s is in draft %s already (same size and md5): not sent again", remote.name,
                         draft.deposit_id)
                continue
            link = self.api.check_link(remote.link, f"file {remote.name!r}",
                                       path=rf"/deposit/depositions/{draft.deposit_id}/files/[^/]+")
            why = "not a file of this release" if mine is None else "not this release's bytes: the previous version's"
            log.info("zenodo: deleting %s from draft %s (%s)", remote.name, draft.deposit_id, why)
            self.api.call("DELETE", link, f"deleting {remote.name} from Zenodo draft {draft.deposit_id}",
                          ok=(204, 404), then=then)
            self.deleted.append(remote.name)
        bucket = self.api.check_link(draft.links.get("bucket"), "bucket", path=r"/files/[0-9A-Za-z-]+")
        for local in self.local:
            if local.name not in present:
                self.upload(bucket, local, draft, then)
        what = f"reading Zenodo draft {draft.deposit_id} back"
        draft = self.api.deposition(self.api.call("GET", self.self_link(draft), what, then=then), what)
        if not draft.holds(self.local):
            raise DepositError(f"after the uploads, Zenodo draft {draft.deposit_id} lists "
                               f"{_listing(draft.files)}, not this release's files; {then}")
        return draft

    def upload(self, bucket: str, local: _Local, draft: _Deposition, then: str) -> None:
        """``PUT <bucket>/<name>``, streamed; the answer must hold the name, the size and the md5 sent."""
        what = f"uploading {local.name} ({_size(local.size)}) to Zenodo draft {draft.deposit_id}"
        log.info("zenodo: %s", what)
        url = f"{bucket}/{urllib.parse.quote(local.name, safe='')}"
        answer = self.api.call("PUT", url, what, ok=(200, 201), body=lambda: local.path.open("rb"),
                               content_type="application/octet-stream", then=then)
        if not isinstance(answer, Mapping):
            raise DepositError(f"{what}: Zenodo's answer is not a file description; {then}")
        stored = (answer.get("key"), answer.get("size"), str(answer.get("checksum") or "").lower())
        if stored != (local.name, local.size, f"md5:{local.md5}"):
            raise DepositError(self.api.redact(
                f"{what}: Zenodo stored {stored[0]!r} with {stored[1]!r} bytes and checksum {stored[2][:40]!r}, not "
                f"{local.size} bytes with md5 {local.md5}: the upload was damaged on the way; {then}"))
        self.uploaded.append(local.name)

    # publishing ------------------------------------------------------------------------------------------------

    def publish(self, draft: _Deposition, then: str) -> _Deposition:
        what = f"publishing Zenodo draft {draft.deposit_id}"
        log.info("zenodo: publishing draft %s (%d files, %s)", draft.deposit_id, len(self.local),
                 _size(sum(f.size for f in self.local)))
        url = self.api.check_link(draft.links.get("publish"), "publish",
                                  path=rf"/deposit/depositions/{draft.deposit_id}/actions/publish")
        answer = self.api.call(
            "POST", url, what, ok=(200, 202), idempotent=False, then=then,
            unsure=f"{then} (if Zenodo published it anyway, the next run finds the published version and stops)")
        published = self.api.deposition(answer, what)
        if (published.deposit_id != draft.deposit_id or not published.submitted or published.state != "done"
                or published.doi is None):
            raise DepositError(f"{what}: Zenodo's answer is not the published draft (id {published.deposit_id}, "
                               f"submitted {published.submitted}, state {published.state}, DOI {published.doi}); "
                               f"check it on Zenodo ({_site(self.api.api_url)}/me/uploads)")
        if not published.holds(self.local):
            raise DepositError(f"{what}: Zenodo published version {published.deposit_id} ({published.doi}) but lists "
                               f"{_listing(published.files)}, not this release's files: publish a new version")
        return published

    def result(self, record: _Deposition, *, created: bool, resumed: bool, already: bool) -> DepositResult:
        if record.doi is None:
            raise DepositError(f"Zenodo's published record {record.deposit_id} has no DOI")
        html = record.links.get("html") or record.links.get("record_html")
        if not html or origin(html) != self.api.origin:
            html = f"{_site(self.api.api_url)}/records/{record.deposit_id}"
        return DepositResult(
            doi=record.doi, record_id=record.deposit_id, concept_id=record.concept, concept_doi=record.concept_doi,
            url=html, version=record.version or self.metadata["version"],
            files=[(f.name, f.size) for f in self.local], created=created, resumed=resumed, already_published=already,
            uploaded=list(self.uploaded), kept=list(self.kept), deleted=list(self.deleted),
            sandbox=urllib.parse.urlsplit(self.api.api_url).hostname == "sandbox.zenodo.org")


def publish_zenodo_version(
    image: Path | str,
    files: Sequence[Path | str] = (),
    *,
    api_url: str = ZENODO_API,
    token: str,
    concept_id: str | int | None,
    metadata: Mapping[str, Any],
    token_env: str | None = None,
    per_minute: float = 30.0,
    timeout_s: float = 300.0,
    retries: int = 3,
    max_wait_s: float = 600.0,
    session: requests.Session | None = None,
) -> DepositResult:
    """Publish ``image`` and ``files`` (its checksum files...) as a new version of record ``concept_id`` on Zenodo.

    ``concept_id`` is the record's concept id (``conceptrecid``, or a Zenodo concept DOI ``10.5281/zenodo.<id>``);
    ``None`` for the first release, which creates the record (its concept id is in the result: pass it from then
    on). ``metadata``: see :func:`deposit_metadata`. ``api_url``: :data:`ZENODO_API`, or :data:`SANDBOX_API` to try
    it (with a sandbox token). ``token_env`` only names the token's variable in messages. ``per_minute``,
    ``timeout_s`` (per request; an upload's answer may take a while), ``retries`` and ``max_wait_s`` bound the
    requests as in :class:`~zenodo_hpc.zenodo.client.HttpClient`. Raises :class:`DepositError` (one line, token masked).
    """
    redact = Redactor([token])
    try:
        return _publish(image, files, api_url=api_url, token=token, concept_id=concept_id, metadata=metadata,
                        token_env=token_env, per_minute=per_minute, timeout_s=timeout_s, retries=retries,
                        max_wait_s=max_wait_s, session=session, redact=redact)
    except UserError as exc:  # every message once more through the mask, on one line
        raise DepositError(redact(_one_line(str(exc), limit=1000))) from None


def publish_release_on_zenodo(files: Sequence[Path | str], *, release: Any, settings: Any, run_name: str = "zenodo-ml",
                              concept_id: str | int | None = None) -> dict[str, Any]:
    """One release (``files``: the image first, then its checksum files...) as a new version on Zenodo, for the
    ``update`` command: what the release records about it (``doi``, ``url``, ``record_id``, ``concept_id``,
    ``concept_doi``, ``sandbox``, ``already_published``).

    ``release.version`` is the version; ``settings`` are the ``publish.zenodo`` settings: ``api_url``, ``token_env``,
    ``concept_id`` (``concept_id=`` here wins: the one an earlier release recorded), ``title`` (default
    ``<run_name>: code images of Zenodo software records``), ``creators``, ``description``, ``license``,
    ``keywords``, ``related_identifiers``, and optionally ``rate_limit_per_min``, ``timeout_s``, ``retries``,
    ``max_wait_s``. The token is read from the variable ``token_env`` names.
    """
    def setting(name: str, default: Any = None) -> Any:
        value = getattr(settings, name, None) if not isinstance(settings, Mapping) else settings.get(name)
        return default if value is None or value == "" else value

    if not files:
        raise DepositError("no file to publish on Zenodo")
    api_url = setting("api_url", ZENODO_API)
    token_env = setting("token_env", DEFAULT_TOKEN_ENV)
    version = str(getattr(release, "version", "") or "")
    metadata = {
        "title": setting("title", f"{run_name}: code images of Zenodo software records"),
        "creators": [dict(c) if isinstance(c, Mapping) else c for c in setting("creators", [])],
        "description": setting("description", f"The {run_name} dataset, release {version}: every software record "
                                              f"harvested from Zenodo, its code as images, in one squashfs image."),
        "version": version,
        "license": setting("license", "cc-by-4.0"),
        "keywords": list(setting("keywords", [])),
        "related_identifiers": [dict(r) for r in setting("related_identifiers", [])],
    }
    result = publish_zenodo_version(
        files[0], list(files[1:]), api_url=api_url, token=read_deposit_token(token_env, api_url=api_url),
        concept_id=concept_id if concept_id not in (None, "") else setting("concept_id"), metadata=metadata,
        token_env=token_env, per_minute=float(setting("rate_limit_per_min", 30.0)),
        timeout_s=float(setting("timeout_s", 300.0)), retries=int(setting("retries", 3)),
        max_wait_s=float(setting("max_wait_s", 600.0)))
    log.info("%s", format_deposit_summary(result).replace("\n", "; "))
    return {"doi": result.doi, "url": result.url, "record_id": result.record_id, "concept_id": result.concept_id,
            "concept_doi": result.concept_doi, "sandbox": result.sandbox, "already_published": result.already_published}


def _publish(image: Path | str, files: Sequence[Path | str], *, api_url: str, token: str, concept_id: Any,
             metadata: Mapping[str, Any], token_env: str | None, per_minute: float, timeout_s: float, retries: int,
             max_wait_s: float, session: requests.Session | None, redact: Redactor) -> DepositResult:
    api_url = _check_api_url(api_url)
    if not isinstance(token, str) or not token.strip():
        raise DepositError(f"no Zenodo deposit token{f' (${token_env} is empty)' if token_env else ''}")
    if token != token.strip() or any(c.isspace() or ord(c) < 32 for c in token):
        raise DepositError("the Zenodo deposit token holds spaces or control characters: copy it again")
    concept = _concept_id(concept_id)
    payload = deposit_metadata(metadata)
    local = _local_files([Path(image), *map(Path, files)])
    with HttpClient(per_minute=per_minute, token=token, token_url=api_url, timeout_s=timeout_s, retries=retries,
                    max_wait_s=max_wait_s, session=session) as http:
        api = _Api(http, api_url, redact, token_env)
        return _Release(api, local, payload, concept).run()


def _check_api_url(api_url: str) -> str:
    """The API's URL, without a trailing slash; https, except on this machine (the test double)."""
    url = str(api_url or "").strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if origin(url) is None or parts.query or parts.fragment or parts.username or parts.password:
        raise DepositError(f"the Zenodo API URL must be like {ZENODO_API} (or {SANDBOX_API}), not {api_url!r}")
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise DepositError(f"the Zenodo API URL must use https, not {parts.scheme}: the deposit token would travel in "
                           f"clear ({api_url})")
    return url


def _concept_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip()
    match = re.fullmatch(r"(?:https?://doi\.org/)?10\.\d{4,9}/zenodo\.(\d+)", text)
    if match:
        text = match.group(1)
    if not text.isdigit() or isinstance(value, bool):
        raise DepositError(f"the Zenodo concept id must be a record number (conceptrecid) or its concept DOI "
                           f"10.5281/zenodo.<number>, not {value!r}")
    return str(int(text))


def _local_files(paths: list[Path]) -> list[_Local]:
    """Each file's name, size and md5 (one pass over each), after the checks Zenodo would make."""
    names: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise DepositError(f"{path} is not a file: nothing to publish on Zenodo")
        if path.name in names:
            raise DepositError(f"two files to publish are named {path.name} ({names[path.name]} and {path}): Zenodo "
                               f"keeps one folder of files per record")
        names[path.name] = path
    if len(paths) > MAX_FILES:
        raise DepositError(f"{len(paths)} files to publish: a Zenodo record holds at most {MAX_FILES}")
    local = []
    for path in paths:
        digest, size = hashlib.md5(), 0
        try:
            with path.open("rb") as stream:
                while chunk := stream.read(_READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise DepositError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        local.append(_Local(path.name, path, size, digest.hexdigest()))
    total = sum(f.size for f in local)
    if total > MAX_TOTAL_BYTES:
        raise DepositError(f"the files to publish hold {_size(total)}: a Zenodo record holds at most "
                           f"{_size(MAX_TOTAL_BYTES)}")
    return local


# --- text ---------------------------------------------------------------------------------------------------------


def _error_detail(response: requests.Response) -> str:
    """Zenodo's error body in one line: ``message`` and each ``errors`` entry (``field: message(s)``)."""
    try:
        payload = response.json()
    except ValueError:
        return _snippet(response) or response.reason or "no details"
    if not isinstance(payload, Mapping):
        return _snippet(response)
    parts = [str(payload.get("message") or response.reason or "")]
    errors = payload.get("errors")
    if isinstance(errors, list):
        for entry in errors[:10]:
            if isinstance(entry, Mapping):
                messages = entry.get("messages", entry.get("message", ""))
                if isinstance(messages, (list, tuple)):
                    messages = " ".join(str(m) for m in messages)
                parts.append(f"{entry.get('field') or '(record)'}: {messages}")
    return _one_line("; ".join(p for p in parts if p))


def _snippet(response: requests.Response) -> str:
    return _one_line(response.text[:300]) if response.content else ""


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted(text: str) -> str:
    """``text`` inside a double-quoted phrase of a search query."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _origin_text(url: str) -> str:
    found = origin(url)
    if found is None:
        return repr(url[:80])
    scheme, host, port = found
    return f"{scheme}://{host}:{port}"


def _site(api_url: str) -> str:
    parts = urllib.parse.urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}"


def _listing(files: Iterable[_RemoteFile]) -> str:
    shown = [f"{f.name} ({f.size} bytes, md5 {f.md5[:8]})" for f in files]
    return ", ".join(shown) if shown else "no file"


def _size(n: int) -> str:
    return byte_size(n, kilo="kB")


def format_deposit_summary(result: DepositResult) -> str:
    """What the command prints after publishing (or finding the release published already)."""
    what = f"version {result.version}"
    if result.already_published:
        head = (f"{what} is on Zenodo already: record {result.record_id}, DOI {result.doi} holds exactly these "
                f"files; nothing was uploaded")
    elif result.created:
        head = f"published {what} on Zenodo as a new record (concept {result.concept_id}): DOI {result.doi}"
    else:
        head = f"published {what} on Zenodo as a new version of record {result.concept_id}: DOI {result.doi}"
    lines = [head]
    if not result.already_published:
        sent = f"{len(result.uploaded)} uploaded" + (f", {len(result.kept)} already there" if result.kept else "")
        gone = f"; removed {', '.join(result.deleted)}" if result.deleted else ""
        lines.append(f"{len(result.files)} files, {_size(result.total_bytes)} ({sent}{gone}); checked: Zenodo lists "
                     f"each with its size and md5")
    if result.concept_doi:
        lines.append(f"concept DOI {result.concept_doi} (always the latest version); concept id {result.concept_id} "
                     f"for the next release")
    if result.sandbox:
        lines.append("sandbox.zenodo.org: a test DOI (10.5072), never registered; the sandbox may be cleaned at any "
                     "time")
    lines.append(result.url)
    return "\n".join(lines)

"""The Zenodo double's deposit API: depositions, their files, versions and publishing, as zenodo-rdm serves them.

:class:`ZenodoDeposit` adds the legacy deposit API (``/api/deposit/depositions`` and the buckets under ``/api/files``)
to :class:`~doubles.zenodo_records.ZenodoRecords`: a published version is also served as a record, so the harvester
sees it. It follows zenodo-rdm's ``site/zenodo_rdm/legacy/`` on top of InvenioRDM's drafts and versions;
``tests/fixtures/zenodo/SOURCES.md`` ("The deposit API") cites the recorded answers in
``tests/fixtures/zenodo/deposit/`` and the code behind each rule (see ``docs/doubles.md``, "The deposit API").
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from zenodo_hpc.demo.server import (
    DEFAULT_PAGE_SIZE,
    KEY_SAFE,
    NOT_FOUND,
    SORTS,
    UNMODELLED_SORTS,
    VALIDATION,
    HttpError,
    Incoming,
    Plan,
    StoredRecord,
    field_error,
    flag_param,
    int_param,
    json_plan,
    md5_hex,
    mimetype_of,
    now_iso,
)

from .zenodo_records import ZenodoRecords

__all__ = ["DEPOSITIONS", "UPLOAD_TYPES", "ZenodoDeposit"]

_UNAUTHORIZED = (  # werkzeug's Unauthorized description: the 401 that developers.zenodo.org documents
    "The server could not verify that you are authorized to access the URL requested. You either supplied the wrong "
    "credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials required."
)
_MISSING_FILES = "Missing uploaded files. To disable files for this record please mark it as metadata-only."
DEPOSITIONS = "/api/deposit/depositions"
DEPOSIT_OWNER = 1  # every known token is the same user: the owner of every deposition
# The legacy upload types (developers.zenodo.org, "Deposit metadata"); the double refuses others when publishing.
UPLOAD_TYPES: tuple[str, ...] = (
    "publication", "poster", "presentation", "dataset", "image", "video", "software", "lesson", "physicalobject",
    "other",
)
# Licenses the double knows (a few of zenodo-rdm's ``legacy_to_rdm_map.json``, and its aliases ``cc-by``, ``cc-zero``,
# ``cc-by-sa``): legacy id, lower case -> the id the legacy serializer shows (``rdm_to_legacy``; CC0 shows as cc-zero,
# as recorded in 2024).
_LICENSES: dict[str, str] = {
    "cc-by-4.0": "cc-by-4.0", "cc-by": "cc-by-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0", "cc-by-sa": "cc-by-sa-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0", "cc0-1.0": "cc-zero", "cc-zero": "cc-zero", "mit": "mit",
    "apache-2.0": "apache-2.0", "bsd-3-clause": "bsd-3-clause", "gpl-3.0": "gpl-3.0", "odc-by-1.0": "odc-by-1.0",
    "odbl-1.0": "odbl-1.0",
}
_DEPOSIT_SORTS: dict[str, tuple[str, bool]] = {  # invenio-drafts-resources SearchDraftsOptions + the legacy names
    "bestmatch": ("created", True), "newest": ("created", True), "mostrecent": ("created", True),
    "oldest": ("created", False), "-mostrecent": ("created", False), "updated-desc": ("modified", True),
    "updated-asc": ("modified", False),
}


@dataclass
class _DepositFile:
    """A file of a deposition: the bytes as uploaded, and the ids Zenodo gives it."""

    file_id: str
    key: str
    data: bytes
    md5: str
    version_id: str
    created: str


@dataclass
class _Deposit:
    """A deposition: a draft (never published) or a published version. ``created``/``modified`` are ISO times."""

    deposit_id: int
    concept: int
    created: str
    modified: str
    bucket: str
    metadata: dict[str, Any]
    files: dict[str, _DepositFile] = field(default_factory=dict)
    published: bool = False
    doi: str | None = None


@dataclass
class _Concept:
    """What InvenioRDM keeps on the parent: the published versions (oldest first), the pending draft, the DOI."""

    concept_id: int
    versions: list[int] = field(default_factory=list)
    next_draft: int | None = None
    doi: str | None = None  # registered when the first version is published


class ZenodoDeposit(ZenodoRecords):
    """The records double, plus Zenodo's deposit API for the token holders (every known token is one user).

    ``unauthorized_status`` is the answer without a known token: 403 (zenodo-rdm's) or 401 (the documented one);
    deposition ids count up from ``first_deposit_id``.
    """

    def __init__(self, *, unauthorized_status: int = 403, first_deposit_id: int = 4_000_000, **records: Any) -> None:
        if unauthorized_status not in (401, 403):
            raise ValueError("unauthorized_status must be 401 (the documented answer) or 403 (zenodo-rdm's)")
        super().__init__(**records)
        self.unauthorized_status = unauthorized_status
        self._next_deposit_id = first_deposit_id
        self._deposits: dict[int, _Deposit] = {}
        self._concepts: dict[int, _Concept] = {}
        self._deposit_buckets: dict[str, int] = {}
        self._link_overrides: dict[str, str] = {}
        self._drafts_unlisted = False

    def _route(self, incoming: Incoming) -> Plan:
        """The deposit API first; any other URL as the records double routes it."""
        deposit = self._route_deposit(incoming)
        return deposit if deposit is not None else super()._route(incoming)

    def deposition(self, deposit_id: int) -> dict[str, Any]:
        """A deposition as ``GET {api}/deposit/depositions/<id>`` serves it (a copy); KeyError when unknown."""
        with self._lock:
            return self._deposit_json(self._deposits[deposit_id])

    def depositions(self) -> list[dict[str, Any]]:
        """Every deposition (drafts and published versions, of every concept), in creation order."""
        with self._lock:
            return [self._deposit_json(d) for d in self._deposits.values()]

    def deposit_file(self, deposit_id: int, key: str) -> bytes:
        """The bytes a deposition holds under ``key``, as they were uploaded; KeyError when it has no such file."""
        with self._lock:
            return self._deposits[deposit_id].files[key].data

    def override_deposit_links(self, /, **links: str) -> None:
        """Show these ``links`` (``bucket=``, ``latest_draft=``, ``html=``, ...) in every deposition answer from now
        on, whatever they point to: a hostile or broken server. Routing is not changed. No argument: stop."""
        with self._lock:
            self._link_overrides = dict(links)

    def hide_drafts_from_search(self, hidden: bool = True) -> None:
        """Leave unpublished drafts out of ``GET {api}/deposit/depositions``, as a search index that has not caught
        up yet would (the drafts still exist and answer at their own URLs)."""
        with self._lock:
            self._drafts_unlisted = hidden

    def _route_deposit(self, incoming: Incoming) -> Plan | None:
        """The legacy deposit API (``/api/deposit/depositions``) and its buckets (``/api/files/<bucket>/<key>``),
        as zenodo-rdm's ``legacy/resources.py`` routes them; None for any other URL."""
        path = incoming.path
        bucket = re.fullmatch(r"/api/files/([0-9a-f-]+)(?:/(.*))?", path)
        in_bucket = bucket is not None and bucket.group(1) in self._deposit_buckets
        if not (in_bucket or path.rstrip("/") == DEPOSITIONS or path.startswith(DEPOSITIONS + "/")):
            return None
        if not incoming.authenticated:  # invenio-records-resources: PermissionDeniedError for an anonymous identity
            raise (HttpError(401, _UNAUTHORIZED) if self.unauthorized_status == 401
                   else HttpError(403, "Permission denied."))
        method = "GET" if incoming.method == "HEAD" else incoming.method
        if bucket is not None and in_bucket:
            return self._bucket_plan(method, incoming, self._deposits[self._deposit_buckets[bucket.group(1)]],
                                     bucket.group(2) or "")
        parts = [p for p in path[len(DEPOSITIONS):].split("/") if p]
        if not parts:
            if method == "GET":
                return self._deposit_list_plan(incoming)
            if method == "POST":
                return self._deposit_create_plan(incoming)
            raise HttpError(405, "The method is not allowed for the requested URL.")
        deposit = self._deposit_for(parts[0])
        if len(parts) == 1:
            return self._deposit_item_plan(method, incoming, deposit)
        if len(parts) == 3 and parts[1] == "actions":
            if method != "POST":
                raise HttpError(405, "The method is not allowed for the requested URL.")
            return self._deposit_action_plan(parts[2], deposit)
        if parts[1] == "files" and len(parts) <= 3:
            return self._deposit_files_plan(method, deposit, parts[2] if len(parts) == 3 else None)
        raise HttpError(404, NOT_FOUND)

    def _deposit_for(self, text: str) -> _Deposit:
        deposit = self._deposits.get(int(text)) if text.isdigit() else None
        if deposit is None:
            raise HttpError(404, "The persistent identifier does not exist.")
        return deposit

    def _deposit_item_plan(self, method: str, incoming: Incoming, deposit: _Deposit) -> Plan:
        """``GET`` (a draft, or the published version: the legacy ``read_draft`` falls back to the record), ``PUT``
        (replaces the whole metadata of a draft) and ``DELETE`` (a draft that was never published)."""
        if method == "GET":
            return json_plan(200, self._deposit_json(deposit))
        if method == "PUT":
            if deposit.published:  # no draft to update: zenodo-rdm's own test expects a 404 here
                raise HttpError(404, "Not found.")
            deposit.metadata = _load_deposit_body(_json_body(incoming))
            deposit.modified = now_iso()
            return json_plan(200, self._deposit_json(deposit))
        if method == "DELETE":
            self._discard(deposit)
            return Plan(204)
        raise HttpError(405, "The method is not allowed for the requested URL.")

    def _deposit_action_plan(self, action: str, deposit: _Deposit) -> Plan:
        if action == "publish":
            return self._publish_plan(deposit)
        if action == "newversion":
            return self._new_version_plan(deposit)
        if action == "discard":
            self._discard(deposit)
            return Plan(204)
        if action in ("edit", "registerconceptdoi"):
            raise HttpError(400, f"The double does not model the {action!r} action.")
        raise HttpError(404, NOT_FOUND)

    def _deposit_create_plan(self, incoming: Incoming) -> Plan:
        """``POST {api}/deposit/depositions``: a new concept and its first draft (ids in a row, as recorded)."""
        metadata = _load_deposit_body(_json_body(incoming))
        concept = _Concept(self._take_deposit_id())
        self._concepts[concept.concept_id] = concept
        deposit = self._new_deposit(concept, metadata)
        return json_plan(201, self._deposit_json(deposit))

    def _take_deposit_id(self) -> int:
        taken = self._next_deposit_id
        self._next_deposit_id += 1
        return taken

    def _new_deposit(self, concept: _Concept, metadata: dict[str, Any]) -> _Deposit:
        now = now_iso()
        deposit = _Deposit(self._take_deposit_id(), concept.concept_id, now, now, str(uuid.uuid4()), metadata)
        self._deposits[deposit.deposit_id] = deposit
        self._deposit_buckets[deposit.bucket] = deposit.deposit_id
        concept.next_draft = deposit.deposit_id
        return deposit

    def _discard(self, deposit: _Deposit) -> None:
        """Delete a draft that was never published; a published version cannot be deleted (404, as zenodo-rdm)."""
        if deposit.published:
            raise HttpError(404, "Not found.")
        del self._deposits[deposit.deposit_id]
        del self._deposit_buckets[deposit.bucket]
        concept = self._concepts[deposit.concept]
        if concept.next_draft == deposit.deposit_id:
            concept.next_draft = None
        if not concept.versions:
            del self._concepts[concept.concept_id]

    def _new_version_plan(self, deposit: _Deposit) -> Plan:
        """``POST .../actions/newversion``, as zenodo-rdm's ``LegacyRecordResource.new_version`` does it.

        invenio-drafts-resources' ``new_version`` returns the concept's pending draft when there is one, else makes a
        new draft of the latest version (metadata copied, ``version`` dropped, ``publication_date`` today); then the
        legacy resource imports the latest version's files, which fails with ``Please remove all files first.``
        when the draft already holds files. The answer is the draft itself (201), whose ``latest_draft`` is itself.
        """
        if not deposit.published:
            raise HttpError(404, "The persistent identifier is not registered.")
        concept = self._concepts[deposit.concept]
        latest = self._deposits[concept.versions[-1]]
        if concept.next_draft is not None:
            draft = self._deposits[concept.next_draft]
            if draft.files:
                raise field_error("files.enabled", "Please remove all files first.")
        else:
            metadata = {k: copy.deepcopy(v) for k, v in latest.metadata.items() if k != "version"}
            metadata["publication_date"] = datetime.now(timezone.utc).date().isoformat()
            draft = self._new_deposit(concept, metadata)
        for key, source in latest.files.items():
            draft.files[key] = _DepositFile(str(uuid.uuid4()), key, source.data, source.md5, str(uuid.uuid4()),
                                            now_iso())
        return json_plan(201, self._deposit_json(draft))

    def _publish_plan(self, deposit: _Deposit) -> Plan:
        """``POST .../actions/publish``: 202 and the published version, or 400 with the validation errors."""
        if deposit.published:  # the draft is gone once published: zenodo-rdm's own test expects a 404
            raise HttpError(404, "Not found.")
        errors = _publish_errors(deposit.metadata)
        if errors:
            raise HttpError(400, VALIDATION, errors)
        if not deposit.files:
            raise field_error("files.enabled", _MISSING_FILES)
        concept = self._concepts[deposit.concept]
        deposit.published = True
        deposit.doi = f"{self.doi_prefix}/zenodo.{deposit.deposit_id}"
        deposit.modified = now_iso()
        concept.versions.append(deposit.deposit_id)
        if concept.next_draft == deposit.deposit_id:
            concept.next_draft = None
        concept.doi = concept.doi or f"{self.doi_prefix}/zenodo.{concept.concept_id}"
        self._index_published(deposit, concept)
        return json_plan(202, self._deposit_json(deposit))

    def _index_published(self, deposit: _Deposit, concept: _Concept) -> None:
        """Serve the new version as a record too (``/api/records/<id>``, the search), in today's shape."""
        metadata = deposit.metadata
        hit = self.make_hit(deposit.deposit_id, created=deposit.created, title=str(metadata.get("title") or ""),
                            conceptrecid=str(concept.concept_id), resource_type=str(metadata.get("upload_type")))
        hit.update(doi=deposit.doi, conceptdoi=concept.doi, doi_url=f"https://doi.org/{deposit.doi}")
        hit["metadata"].update(
            doi=deposit.doi, publication_date=metadata.get("publication_date"),
            creators=copy.deepcopy(metadata.get("creators", [])), version=metadata.get("version"),
            related_identifiers=copy.deepcopy(metadata.get("related_identifiers", [])),
            license={"id": metadata.get("license")},
            **{k: copy.deepcopy(metadata[k]) for k in ("description", "keywords") if k in metadata})
        record = StoredRecord(deposit.deposit_id, hit, "current")
        self._store_files(record, {k: f.data for k, f in deposit.files.items()}, {})
        self._finish_hit(record, True, {})
        self._records[deposit.deposit_id] = record

    def _deposit_files_plan(self, method: str, deposit: _Deposit, file_id: str | None) -> Plan:
        """``{api}/deposit/depositions/<id>/files[/<file id>]``: list, read, delete (not the form upload)."""
        if file_id is None:
            if method == "GET":
                return json_plan(200, [self._file_json(deposit, f) for f in deposit.files.values()])
            if method == "POST":
                raise HttpError(400, "The double does not model the multipart upload: PUT the file to links.bucket.")
            raise HttpError(405, "The method is not allowed for the requested URL.")
        entry = next((f for f in deposit.files.values() if f.file_id == file_id), None)
        if entry is None:
            raise HttpError(404, NOT_FOUND)
        if method == "GET":
            return json_plan(200, self._file_json(deposit, entry))
        if method == "DELETE":
            if deposit.published:
                raise HttpError(403, "Permission denied.")
            del deposit.files[entry.key]
            deposit.modified = now_iso()
            return Plan(204)
        raise HttpError(405, "The method is not allowed for the requested URL.")

    def _bucket_plan(self, method: str, incoming: Incoming, deposit: _Deposit, key: str) -> Plan:
        """``{api}/files/<bucket>/<key>``: ``PUT`` stores the body (replacing a file of that name), ``GET``, ``DELETE``.

        A key with ``/`` is not routed (404), as flask's default converter does not match it."""
        if not key:
            raise HttpError(400, "The double does not model listing a bucket.")
        if "/" in key:
            raise HttpError(404, NOT_FOUND)
        if method == "PUT":
            if deposit.published:
                raise HttpError(403, "Permission denied.")
            now = now_iso()
            entry = _DepositFile(str(uuid.uuid4()), key, incoming.body, md5_hex(incoming.body), str(uuid.uuid4()), now)
            deposit.files.pop(key, None)
            deposit.files[key] = entry
            deposit.modified = now
            return json_plan(201, self._bucket_file_json(deposit, entry))
        entry = deposit.files.get(key)
        if entry is None:
            raise HttpError(404, f"Record '{deposit.deposit_id}' has no file '{key}'.")
        if method == "GET":
            return Plan(200, entry.data, [("Content-Type", mimetype_of(key))])
        if method == "DELETE":
            if deposit.published:
                raise HttpError(403, "Permission denied.")
            del deposit.files[key]
            deposit.modified = now_iso()
            return Plan(204)
        raise HttpError(405, "The method is not allowed for the requested URL.")

    def _deposit_list_plan(self, incoming: Incoming) -> Plan:
        """``GET {api}/deposit/depositions``: the user's depositions as a bare JSON array (``LegacyListSchema``).

        Unless ``all_versions`` is set, each concept shows only its latest draft (``versions.is_latest_draft``: the
        pending draft, else the latest published version). ``status`` is accepted and ignored, as in zenodo-rdm
        (``ZenodoArgsSchema`` takes it; no interpreter of the drafts search reads it). ``q`` holds ANDed
        ``conceptrecid:<id>``, ``recid:<id>``, ``title:"<phrase>"`` (or words, matched in the title).
        """
        query = incoming.query
        size = int_param(query, "size", DEFAULT_PAGE_SIZE)
        page = int_param(query, "page", 1)
        if size > self.page_cap_token:
            raise field_error("size", f"Page size cannot be greater than {self.page_cap_token}.")
        matches = _deposit_query(query.get("q", ""))
        field_name, descending = _deposit_sort(query.get("sort"), bool(query.get("q")))
        every = flag_param(query, "all_versions")
        if every and self._drafts_unlisted:
            matches = _both(matches, lambda deposit: deposit.published)
        found = [d for d in self._deposits.values() if (every or self._is_latest_draft(d)) and matches(d)]
        found.sort(key=lambda d: (getattr(d, field_name), d.deposit_id), reverse=descending)
        return json_plan(200, [self._deposit_json(d) for d in found[(page - 1) * size: page * size]])

    def _is_latest_draft(self, deposit: _Deposit) -> bool:
        """``versions.is_latest_draft``; while drafts are hidden, as the index knew it before the draft was made."""
        concept = self._concepts[deposit.concept]
        if self._drafts_unlisted:
            return deposit.published and concept.versions[-1] == deposit.deposit_id
        if concept.next_draft is not None:
            return concept.next_draft == deposit.deposit_id
        return bool(concept.versions) and concept.versions[-1] == deposit.deposit_id

    def _deposit_json(self, deposit: _Deposit) -> dict[str, Any]:
        """A deposition in zenodo-rdm's legacy serializer (``LegacySchema``), keys in the recorded order."""
        rid, concept = deposit.deposit_id, self._concepts[deposit.concept]
        body: dict[str, Any] = {"created": deposit.created, "modified": deposit.modified, "id": rid,
                                "conceptrecid": str(concept.concept_id)}
        if deposit.doi:
            body["doi"] = deposit.doi
        if concept.doi:
            body["conceptdoi"] = concept.doi
        if deposit.doi:
            body["doi_url"] = f"https://doi.org/{deposit.doi}"
        metadata = _dump_metadata(deposit)
        body.update(metadata=metadata, title=metadata.get("title", ""), links=self._deposit_links(deposit, concept),
                    record_id=rid, owner=DEPOSIT_OWNER)
        body["files"] = [self._file_json(deposit, f) for f in deposit.files.values()]
        body.update(state="done" if deposit.published else "unsubmitted", submitted=deposit.published)
        return body

    def _deposit_links(self, deposit: _Deposit, concept: _Concept) -> dict[str, str]:
        """zenodo-rdm ``LegacyRecordServiceConfig.links_item``; ``latest_draft`` names the deposition itself."""
        rid, api, ui = deposit.deposit_id, self.api_url, self.ui_url
        own = f"{api}/deposit/depositions/{rid}"
        links = {"self": f"{api}/records/{rid}" if deposit.published else own,
                 "html": f"{ui}/records/{rid}" if deposit.published else f"{ui}/deposit/{rid}"}
        if deposit.doi:
            links["doi"] = f"https://doi.org/{deposit.doi}"
            if concept.doi:
                links["parent_doi"] = f"https://doi.org/{concept.doi}"
            links["badge"] = f"{ui}/badge/doi/{quote(deposit.doi, safe='')}.svg"
            if concept.doi:
                links["conceptbadge"] = f"{ui}/badge/doi/{quote(concept.doi, safe='')}.svg"
        links.update(files=f"{api}/records/{rid}/files" if deposit.published else f"{own}/files",
                     bucket=f"{api}/files/{deposit.bucket}", latest_draft=own, latest_draft_html=f"{ui}/deposit/{rid}",
                     publish=f"{own}/actions/publish", edit=f"{own}/actions/edit", discard=f"{own}/actions/discard",
                     newversion=f"{own}/actions/newversion", registerconceptdoi=f"{own}/actions/registerconceptdoi")
        if deposit.published:
            links.update(record=f"{api}/records/{rid}", record_html=f"{ui}/record/{rid}",
                         latest=f"{api}/records/{rid}/versions/latest",
                         latest_html=f"{ui}/record/{rid}/versions/latest")
        links.update(self._link_overrides)
        return links

    def _file_json(self, deposit: _Deposit, entry: _DepositFile) -> dict[str, Any]:
        """One file of a deposition (``LegacySchema.dump_files``): bare md5, ``self`` under ``links.files``."""
        rid = deposit.deposit_id
        files = f"{self.api_url}/records/{rid}/files" if deposit.published else \
            f"{self.api_url}/deposit/depositions/{rid}/files"
        download = f"{self.api_url}/records/{rid}/draft/files/{quote(entry.key, safe=KEY_SAFE)}/content"
        return {"id": entry.file_id, "filename": entry.key, "filesize": len(entry.data), "checksum": entry.md5,
                "links": {"self": f"{files}/{entry.file_id}", "download": download}}

    def _bucket_file_json(self, deposit: _Deposit, entry: _DepositFile) -> dict[str, Any]:
        """The answer to a bucket ``PUT`` (``LegacyFilesRESTSchema``), keys in the recorded order."""
        url = f"{self.api_url}/files/{deposit.bucket}/{quote(entry.key, safe=KEY_SAFE)}"
        return {"created": entry.created, "updated": entry.created, "version_id": entry.version_id, "key": entry.key,
                "size": len(entry.data), "mimetype": mimetype_of(entry.key), "checksum": f"md5:{entry.md5}",
                "is_head": True, "delete_marker": False,
                "links": {"self": url, "version": f"{url}?versionId={entry.version_id}", "uploads": f"{url}?uploads"}}


def _json_body(incoming: Incoming) -> Any:
    """A request's JSON body; ``{}`` when there is none."""
    if not incoming.body.strip():
        return {}
    try:
        return json.loads(incoming.body)
    except ValueError:
        raise HttpError(400, "Unable to decode JSON data in request body.") from None


def _load_deposit_body(data: Any) -> dict[str, Any]:
    """A deposition's metadata as zenodo-rdm's ``LegacyJSONDeserializer`` loads it, with its refusals.

    Unknown top-level keys are refused (``unknown = RAISE``); unknown metadata keys are dropped (``EXCLUDE``). With
    a ``metadata`` object, ``publication_date`` defaults to today, ``imprint_publisher`` to ``Zenodo``, and an open
    record without ``license`` gets CC0 (a dataset) or CC-BY-4.0 (``load_default_license``). The whole metadata is
    replaced by what is sent: a ``PUT`` must send all of it (zenodo-rdm's own versioning test says so).
    """
    if not isinstance(data, Mapping):
        raise field_error("_schema", "Invalid input type.")
    unknown = sorted(set(data) - {"metadata"})
    if unknown:
        raise HttpError(400, VALIDATION, [{"field": k, "messages": ["Unknown field."]} for k in unknown])
    if "metadata" not in data:
        return {}
    given = data["metadata"]
    if not isinstance(given, Mapping):
        raise field_error("metadata", "Invalid input type.")
    metadata = {k: copy.deepcopy(given[k]) for k in _METADATA_KEYS if k in given and given[k] is not None}
    related = metadata.get("related_identifiers", [])
    if not isinstance(related, list):
        raise field_error("metadata.related_identifiers", "related_identifiers must be a list")
    for index, item in enumerate(related):
        if not isinstance(item, Mapping):
            raise field_error(f"metadata.related_identifiers.{index}", "Each related identifier must be an object")
    if metadata.get("access_right", "open") not in ("open", "restricted", "closed") and not (
            metadata.get("access_right") == "embargoed" and metadata.get("embargo_date")):
        raise field_error("_schema", "Unknown access type.")
    if "license" not in metadata and metadata.get("access_right", "open") in ("open", "embargoed"):
        metadata["license"] = "cc0-1.0" if metadata.get("upload_type") == "dataset" else "cc-by-4.0"
    if "license" in metadata:
        metadata["license"] = _load_license(metadata["license"])
    creators = metadata.get("creators", [])
    if not isinstance(creators, list) or not all(isinstance(c, Mapping) for c in creators):
        raise field_error("metadata.creators", "Not a valid list.")
    metadata["creators"] = [{"name": c.get("name"), "affiliation": c.get("affiliation"),
                             **({"orcid": c["orcid"]} if c.get("orcid") else {})} for c in creators]
    metadata.setdefault("publication_date", datetime.now(timezone.utc).date().isoformat())
    metadata.setdefault("access_right", "open")
    metadata["imprint_publisher"] = "Zenodo"
    return metadata


_METADATA_KEYS = ("title", "publication_date", "description", "access_right", "embargo_date", "creators", "keywords",
                  "related_identifiers", "version", "license", "upload_type", "notes", "language")


def _load_license(value: Any) -> str:
    """zenodo-rdm ``MetadataSchema.load_rights``: a string or ``{"id": ...}``, matched without regard to case."""
    if not isinstance(value, (str, Mapping)):
        raise field_error("metadata.license", "Invalid license value provided (expected string, or object with "
                                               f"'id' key): {value}")
    if isinstance(value, Mapping):
        if "id" not in value:
            raise field_error("metadata.license", f"Invalid license object provided (missing 'id' key): {value}")
        value = value["id"]
    shown = _LICENSES.get(str(value).strip().lower())
    if shown is None:
        raise field_error("metadata.license", f"Invalid license provided: {value}")
    return shown


def _dump_metadata(deposit: _Deposit) -> dict[str, Any]:
    """The ``metadata`` of a deposition answer: what was loaded, the DOI once published, and ``prereserve_doi``.

    ``prereserve_doi`` always names the 10.5281 prefix (``LegacySchema.dump_prereserve_doi`` writes it so), even on the
    sandbox whose DOIs are 10.5072: the recorded sandbox answers show it. The real DOI is the top-level ``doi``.
    """
    stored = deposit.metadata
    order = ("title", "doi", "publication_date", "description", "access_right", "embargo_date", "creators",
             "keywords", "related_identifiers", "version", "license", "imprint_publisher", "upload_type", "notes",
             "language")
    values = dict(stored, doi=deposit.doi) if deposit.doi else stored
    dumped = {k: copy.deepcopy(values[k]) for k in order if k in values and values[k] not in (None, [])}
    dumped["prereserve_doi"] = {"doi": f"10.5281/zenodo.{deposit.deposit_id}", "recid": deposit.deposit_id}
    return dumped


def _publish_errors(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What publishing refuses in the metadata (invenio-rdm-records ``MetadataSchema``), in marshmallow's words.

    Required: ``resource_type`` (the legacy ``upload_type``), ``creators`` (at least one, each with a name),
    ``title`` (3 characters or more), ``publication_date``; ``description`` has 3 characters or more when given,
    ``version`` at most 191. An upload type the legacy API does not know is the double's own refusal.
    """
    required = "Missing data for required field."
    errors: list[dict[str, Any]] = []

    def add(name: str, message: str) -> None:
        errors.append({"field": name, "messages": [message]})

    upload_type = metadata.get("upload_type")
    if not upload_type:
        add("metadata.resource_type", required)
    elif upload_type not in UPLOAD_TYPES:
        add("metadata.resource_type.id", f"Invalid value: {upload_type}.")
    creators = metadata.get("creators") or []
    if not creators:
        add("metadata.creators", required)
    for index, creator in enumerate(creators):
        if not str(creator.get("name") or "").strip():
            add(f"metadata.creators.{index}.person_or_org.family_name", "Family name must be filled.")
    title = str(metadata.get("title") or "")
    if not title:
        add("metadata.title", required)
    elif len(title) < 3:
        add("metadata.title", "Shorter than minimum length 3.")
    when = str(metadata.get("publication_date") or "")
    if not when:
        add("metadata.publication_date", required)
    elif not re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", when):
        add("metadata.publication_date", "Please provide a valid date or interval.")
    if "description" in metadata and len(str(metadata["description"])) < 3:
        add("metadata.description", "Shorter than minimum length 3.")
    if len(str(metadata.get("version") or "")) > 191:
        add("metadata.version", "Longer than maximum length 191.")
    return errors


def _deposit_query(q: str) -> Any:
    """A predicate on depositions for ``q``: ANDed ``conceptrecid:N``, ``recid:N``, ``title:"phrase"`` and words
    (matched in the title, case-insensitively). Anything else is a 400, as for the record search."""
    tests = []
    for match in re.finditer(r'(?:(\w+):)?("[^"]*"|\S+)', q):
        name, quoted = match.group(1), match.group(2).startswith('"')
        value = match.group(2)[1:-1] if quoted else match.group(2)
        if name is None and value == "AND" and not quoted:
            continue
        if name in ("conceptrecid", "recid") and value.isdigit():
            tests.append(_id_test("concept" if name == "conceptrecid" else "deposit_id", int(value)))
        elif name in (None, "title") and (quoted or (value not in ("OR", "NOT")
                                                     and not any(c in value for c in "()[]{}:"))):
            tests.append(_title_test(value.lower()))
        else:
            raise HttpError(400, f"The double does not support this query syntax: {match.group(0)!r} in {q!r}.")
    return lambda deposit: all(test(deposit) for test in tests)


def _both(first: Any, second: Any) -> Any:
    return lambda deposit: first(deposit) and second(deposit)


def _id_test(attribute: str, wanted: int) -> Any:
    return lambda deposit: getattr(deposit, attribute) == wanted


def _title_test(needle: str) -> Any:
    return lambda deposit: needle in str(deposit.metadata.get("title") or "").lower()


def _deposit_sort(sort: str | None, has_query: bool) -> tuple[str, bool]:
    name = sort or ("bestmatch" if has_query else "newest")
    if name in _DEPOSIT_SORTS:
        return _DEPOSIT_SORTS[name]
    if name in SORTS or name in UNMODELLED_SORTS:
        raise HttpError(400, f"The double does not model sort {name!r} for depositions; it knows "
                              f"{', '.join(_DEPOSIT_SORTS)}.")
    raise field_error("_schema", f"Invalid sort option '{name}'.")

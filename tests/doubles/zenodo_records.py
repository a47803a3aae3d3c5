"""The Zenodo double's records and search, beyond what the demo's server serves: withdrawn records and hostile answers.

:class:`ZenodoRecords` extends the package's :class:`~zenodo_hpc.demo.server.LoopbackZenodo` (the records, search,
files and codeload the offline demo needs) with what only tests need: records deleted by Zenodo's curators (a 410 and
their tombstone) or restricted after publication, hits served verbatim as JSON text (``"size": Infinity``, broken
JSON), and a search that lies about its ``total``. Each answer follows the real service: the code and recorded
responses are cited in ``tests/fixtures/zenodo/SOURCES.md`` (see ``docs/doubles.md``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from zenodo_hpc.demo.server import HttpError, LoopbackZenodo, Plan, StoredRecord, now_iso

__all__ = ["ZenodoRecords"]


class ZenodoRecords(LoopbackZenodo):
    """The loopback Zenodo, plus withdrawn and restricted records, raw hits and a lying ``total``.

    ``doi_prefix`` names the DOIs of its tombstones' citations (and of the deposit API's versions).
    """

    def __init__(self, *, doi_prefix: str = "10.5281", **server: Any) -> None:
        super().__init__(**server)
        self.doi_prefix = doi_prefix
        self._tombstones: dict[int, dict[str, Any]] = {}  # deleted records: their tombstone (delete_record)
        self._private: set[int] = set()  # records whose access.record is restricted (restrict_record)
        self._raw_hits: list[_RawHit] = []
        self._lied_total: int | None = None

    def delete_record(self, record_id: int, *, reason: str = "spam", note: str = "", visible: bool = True) -> None:
        """Delete a published record as Zenodo's curators do: it leaves the search, and ``/api/records/<id>`` and its
        file URLs answer ``410`` with its tombstone (``404 Record not found`` when the tombstone is not visible).

        invenio-rdm-records ``RecordDeletedException`` handler (``resources/config.py``) with its own
        ``HTTPJSONException`` (``resources/errors.py``: extra fields join the body) and ``Tombstone.dump``
        (``records/systemfields/tombstone.py``); ``reason`` is an id of its ``removal_reasons`` vocabulary
        (``spam``, ``copyright``, ``take-down-request``, ...). See tests/fixtures/zenodo/SOURCES.md.
        """
        with self._lock:
            record = self._records.pop(record_id)
            title = str((record.hit.get("metadata") or {}).get("title") or "")
            self._tombstones[record_id] = {
                "note": note, "removed_by": {"user": "1"}, "removal_date": now_iso(),
                "citation_text": f"Doe, Jane. {title}. Zenodo. https://doi.org/{self.doi_prefix}/zenodo.{record_id}",
                "is_visible": visible, "removal_reason": {"id": reason}}

    def restrict_record(self, record_id: int, *, whole_record: bool = False) -> None:
        """The owner restricts a record that was open. By default its files (``access.files``, what Zenodo allows:
        zenodo-rdm's ``RDM_ALLOW_RESTRICTED_RECORDS = False``): it stays in the search, now shown with
        ``access_right: restricted`` and no files, and its file URLs answer 403. ``whole_record`` restricts
        ``access.record`` too: it leaves the search and ``/api/records/<id>`` answers ``403 Permission denied.``
        (invenio-records-resources ``PermissionDeniedError``), as on InvenioRDM sites that allow it."""
        with self._lock:
            record = self._records[record_id]
            hit = record.hit
            if isinstance(hit.get("metadata"), dict):
                hit["metadata"]["access_right"] = "restricted"
            if isinstance(hit.get("access"), dict):
                hit["access"]["files"] = "restricted"
            for key in ("updated", "modified"):
                if key in hit:
                    hit[key] = now_iso()
            record.hidden = True
            self._finish_hit(record, bool(record.files), {})
            if whole_record:
                self._private.add(record_id)

    def add_raw_hit(self, json_text: str, *, record_id: str | int | None = None) -> None:
        """Serve ``json_text`` verbatim as one more search hit (and at ``/api/records/<record_id>`` if given).

        For hostile answers the ``json`` module would not write: ``"size": Infinity``, ``"metadata": "x"``, odd
        or duplicate ids, even broken JSON. Raw hits skip filters and version de-duplication, come after the
        ordinary hits in the order they were added, and count in ``total``.
        """
        if not isinstance(json_text, str):
            raise TypeError("json_text must be a str: it is written to the page as it is")
        with self._lock:
            self._raw_hits.append(_RawHit(json_text, None if record_id is None else str(record_id)))

    def lie_about_total(self, total: int | None) -> None:
        """Report ``total`` in every search and page on to it, repeating the first page's hits past the real end.

        A client that trusts ``total`` or ``links.next`` to stop never stops; ``None`` tells the truth again.
        """
        with self._lock:
            self._lied_total = total

    def _raise_deleted(self, record_id: int) -> None:
        """The answer for a deleted record: 410 and its tombstone, or 404 when the tombstone is hidden."""
        tombstone = self._tombstones[record_id]
        if not tombstone["is_visible"]:
            raise HttpError(404, "Record not found")
        raise _Gone(tombstone)

    def _record_plan(self, wanted: str) -> Plan:
        """``GET /api/records/<id>``: a stored hit (403 when the whole record is restricted), a deleted record's
        tombstone, or a raw hit added with that ``record_id``."""
        record_id = int(wanted) if wanted.isdigit() else None
        if record_id in self._records:
            if record_id in self._private:
                raise HttpError(403, "Permission denied.")
            return super()._record_plan(wanted)
        if record_id is not None and record_id in self._tombstones:
            self._raise_deleted(record_id)
        for raw in reversed(self._raw_hits):
            if raw.record_id == wanted:
                return Plan(200, raw.text.encode(), [("Content-Type", "application/json")])
        return super()._record_plan(wanted)

    def _raise_missing(self, record_id: int) -> None:
        if record_id in self._tombstones:
            self._raise_deleted(record_id)

    def _search_items(self, records: list[StoredRecord]) -> list[Any]:
        """Whole-restricted records leave the search; raw hits come after the others, in the order they were added."""
        listed = [r for r in records if r.record_id not in self._private]
        return super()._search_items(listed) + [raw.text for raw in self._raw_hits]

    def _search_page(self, items: list[Any], page: int, size: int) -> tuple[list[Any], int]:
        """A lying server reports its ``total`` and repeats what it already sent past the real end."""
        page_items, total = super()._search_page(items, page, size)
        if self._lied_total is None:
            return page_items, total
        return page_items or items[:size], self._lied_total


@dataclass(frozen=True)
class _RawHit:
    """A hit added verbatim as JSON text: served as given, wherever it sits in a page."""

    text: str
    record_id: str | None


class _Gone(HttpError):
    """410 of a deleted record: invenio-rdm-records' ``HTTPJSONException`` puts the tombstone beside status and
    message."""

    def __init__(self, tombstone: dict[str, Any]) -> None:
        super().__init__(410, "Record deleted")
        self.tombstone = tombstone

    def payload(self) -> dict[str, Any]:
        return {**super().payload(), "tombstone": copy.deepcopy(self.tombstone)}

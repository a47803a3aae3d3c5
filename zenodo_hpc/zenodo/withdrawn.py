"""Which records of a release Zenodo no longer shares: deleted (``410 Gone``, or ``404``), or no longer open.

Zenodo removes records (spam, legal requests, authors' requests) and authors restrict records that were open. A
release's records are checked in two steps, both through the run's rate budget:

1. **The search, by id**: ``q=recid:(1 OR 2 ...)`` with ``all_versions=true``, a page of ids at a time (zenodo-rdm
   maps the legacy ``recid`` to the record's ``id``: ``ZENODO_LEGACY_SEARCH_MAP`` in its ``invenio.cfg``). A hit
   that comes back still open keeps its record; one whose files are no longer open (``access_right`` or
   ``access.files`` restricted: the record stays in the search) removes it.
2. **The lookup** of every id the search did not return (it left the search): ``GET /api/records/<id>``. ``410``
   is a deleted record (invenio-rdm-records answers ``{"status": 410, "message": "Record deleted", "tombstone":
   {..., "removal_reason": {"id": "spam"}}}``), ``404`` a deleted record whose tombstone is hidden (``Record not
   found``) or an id that never existed, ``403``/``401`` a record that is not public (``Permission denied.``):
   each removes the record, with that reason. A ``200`` decides by the record's access, as in step 1.

Anything else (a 5xx or 429 that outlasts the client's retries, a timeout, a broken answer) decides nothing: the
record is **kept**, said so, and looked up again by the next update. One bad answer costs only its own record (a
failed search page falls back to looking its ids up one by one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.config import Config
from ..core.records import restriction, without_surrogates
from .client import JSON, HttpClient, RequestFailed, read_token

log = logging.getLogger(__name__)

ANONYMOUS_BATCH = 25  # ids per search: the page a guest may ask for (a token's is 100)
TOKEN_BATCH = 100


@dataclass
class Lookup:
    """What Zenodo said of the records looked up."""

    removed: dict[str, str] = field(default_factory=dict)  # id -> why it leaves the dataset
    kept: set[str] = field(default_factory=set)  # still open on Zenodo
    unresolved: dict[str, str] = field(default_factory=dict)  # id -> why no answer decided (kept, asked again)
    requests: int = 0


def look_up(cfg: Config, ids: Iterable[str], *, client: HttpClient | None = None) -> Lookup:
    """Ask Zenodo about each record of ``ids`` (see the module's doc); never raises for one record's answer."""
    wanted = sorted(set(ids), key=lambda i: (len(i), i))
    own = client is None
    if client is None:
        token = read_token(cfg.zenodo.token_env)
        budget = cfg.zenodo.request_budget(bool(token))  # the lookups count against the hour's budget too
        client = HttpClient(per_minute=min(budget.per_minute, cfg.zenodo.search_rate_limit_per_min),
                            per_hour=budget.per_hour, token=token, token_url=cfg.zenodo.api_url,
                            timeout_s=cfg.zenodo.timeout_s, retries=cfg.zenodo.retries,
                            max_wait_s=cfg.zenodo.max_wait_s)
    lookup = Lookup()
    before = client.stats.requests
    api = cfg.zenodo.api_url.rstrip("/")
    batch = TOKEN_BATCH if client.has_token else ANONYMOUS_BATCH
    try:
        for start in range(0, len(wanted), batch):
            _check_batch(client, api, wanted[start:start + batch], lookup)
    finally:
        lookup.requests = client.stats.requests - before
        if own:
            client.close()
    return lookup


def _check_batch(client: HttpClient, api: str, ids: list[str], lookup: Lookup) -> None:
    """One search for ``ids``; the ids it does not return are looked up one by one (all of them when it fails)."""
    found = _search_ids(client, api, ids)
    for record_id in ids:
        hit = found.get(record_id) if found is not None else None
        if hit is not None:
            _judge_open(record_id, hit, lookup)
        else:
            _look_up_one(client, api, record_id, lookup)


def _search_ids(client: HttpClient, api: str, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    """The hits of a search for these ids, by id; None when the search gave no usable answer."""
    query = f"recid:({' OR '.join(ids)})"
    try:
        response = client.get(f"{api}/records", accept=JSON,
                              params={"q": query, "size": len(ids), "page": 1, "all_versions": "true"})
    except RequestFailed as exc:
        log.warning("reconcile: the search for %d records failed (%s); looking them up one by one", len(ids), exc)
        return None
    try:
        hits = response.json()["hits"]["hits"] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        hits = None
    if not isinstance(hits, list):
        log.warning("reconcile: the search for %d records answered HTTP %d without hits; looking them up one by "
                    "one", len(ids), response.status_code)
        return None
    return {str(h.get("id")): h for h in hits if isinstance(h, dict) and str(h.get("id")) in ids}


def _judge_open(record_id: str, hit: dict[str, Any], lookup: Lookup) -> None:
    """A record Zenodo still shows: kept while its files are open, removed once restricted."""
    why = restriction(hit)
    if why:
        lookup.removed[record_id] = f"restricted on Zenodo ({why})"
    else:
        lookup.kept.add(record_id)


def _look_up_one(client: HttpClient, api: str, record_id: str, lookup: Lookup) -> None:
    """``GET /api/records/<id>`` of a record that left the search."""
    try:
        response = client.get(f"{api}/records/{record_id}", accept=JSON)
    except RequestFailed as exc:
        lookup.unresolved[record_id] = str(exc)
        return
    status = response.status_code
    body = _json_or_none(response)
    if status == 200 and isinstance(body, dict):
        _judge_open(record_id, body, lookup)
    elif status == 410:
        lookup.removed[record_id] = f"deleted from Zenodo (410 Gone{_removal_reason(body)})"
    elif status == 404:
        lookup.removed[record_id] = "deleted from Zenodo (404 Not Found)"
    elif status in (401, 403):
        lookup.removed[record_id] = f"restricted on Zenodo ({status}: not open to the public)"
    else:
        lookup.unresolved[record_id] = f"HTTP {status}{': the answer is not a record' if status == 200 else ''}"


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _removal_reason(body: Any) -> str:
    """``; removal reason: spam`` from a tombstone (invenio-rdm-records' vocabulary ids), or nothing."""
    tombstone = body.get("tombstone") if isinstance(body, dict) else None
    reason = tombstone.get("removal_reason") if isinstance(tombstone, dict) else None
    value = reason.get("id") if isinstance(reason, dict) else reason
    text = without_surrogates(" ".join(str(value).split())[:60])[0] if isinstance(value, str) else ""
    return f"; removal reason: {text}" if text else ""


def format_lookup(lookup: Lookup, checked: int) -> str:
    """One line: how many records were checked, removed (by kind), kept after a failed lookup."""
    kinds: dict[str, int] = {}
    for reason in lookup.removed.values():
        kind = reason.split(" (", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    unresolved = (f", {len(lookup.unresolved)} kept because Zenodo did not answer (the next update asks again)"
                  if lookup.unresolved else "")
    return (f"reconcile: {checked} records of the previous release checked with Zenodo, {len(lookup.removed)} "
            f"removed{f' ({by_kind})' if by_kind else ''}{unresolved}, {lookup.requests} requests")

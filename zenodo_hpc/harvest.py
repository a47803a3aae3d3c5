"""Harvest Zenodo's software records into ``<run>/records.jsonl``.

Zenodo answers at most ``search_window`` (10,000) results per query and its index changes while we page
through it (a new version makes the older one leave the "latest versions" results, shifting every later
page). So the harvest does not page deeply: it keeps a **cursor on ``created``**. Each search asks for the
records created at or after the cursor, oldest first; after each page the cursor moves to the second of
the newest record seen, and the next search starts from page 1 again. The boundary second is read twice
on purpose (records are deduplicated by id), so a record can only be missed if it was created before the
cursor after we passed it, which Zenodo never does. The first search has no lower bound at all.

The harvest ends when a page comes back short (the last one) or empty, and also when the server repeats
itself (a page of the very same records again, whatever ``total`` claims) or never moves the cursor; the
``total`` of an answer is shown, never trusted. Every hit is checked before it is kept: a hit whose id is
not a positive integer, whose ``metadata`` is not an object or which holds an infinite number is skipped
and counted by reason. The position is saved after every page in ``<run>/state/harvest/<job>.json``, so
an interrupted harvest continues where it stopped and a finished one, run again, adds nothing. Two
harvests on one run directory cannot run at once (``state/harvest.lock``). ``exclude`` patterns drop
records by title, GitHub repository or file name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tqdm import tqdm

from .client import JSON, HttpClient, RequestFailed, read_token
from .config import Config
from .errors import UserError
from .records import BadRecord, check_hit, file_keys, github_repository, metadata_of
from .state import (
    RunDir,
    append_records,
    atomic_write_json,
    driver_lock,
    iter_records,
    open_run,
    read_json,
    repair_records_file,
)

log = logging.getLogger(__name__)

SORT = "oldest"
ANONYMOUS_PAGE_CAP = 25
TOKEN_PAGE_CAP = 100
FUTURE_SLACK = timedelta(days=1)  # a ``created`` later than now + this is not believed (it would skip records)
HARVEST_LOCK = "harvest.lock"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _parse_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_since(text: str) -> datetime:
    """``--since 2024-01-31`` (or a full ISO datetime) as an aware UTC datetime; a clear error otherwise."""
    try:
        return _parse_datetime(text)
    except ValueError:
        raise UserError(f"--since {text!r}: expected a date like 2024-01-31 or 2024-01-31T12:00:00") from None


def created_second(hit: dict[str, Any], now: datetime) -> datetime | None:
    """A hit's ``created``, cut to the second, when it is a believable time (not in the future)."""
    value = hit.get("created")
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = _parse_datetime(value)
    except ValueError:
        return None
    if moment > now + FUTURE_SLACK:
        return None
    return moment.replace(microsecond=0)


@dataclass
class HarvestJob:
    """One harvest's parameters and position, saved after every page so that it can resume."""

    key: str
    params: dict[str, Any]
    cursor: str | None = None  # records created at or after this second are still to read (None: all)
    page: int = 1  # page of the search from the cursor (more than 1 only when a second fills a page)
    last_page_ids: list[str] = field(default_factory=list)  # to notice a server repeating itself
    added: int = 0
    excluded: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # hits that are not records, by reason
    done: bool = False
    ended: str = ""  # why the harvest ended, when it ended early (a repeating server, ...)

    def to_json(self) -> dict[str, Any]:
        return {"format": 2, "key": self.key, "params": self.params, "cursor": self.cursor, "page": self.page,
                "last_page_ids": self.last_page_ids, "added": self.added, "excluded": self.excluded,
                "duplicates": self.duplicates, "skipped": self.skipped, "done": self.done, "ended": self.ended}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HarvestJob:
        if data.get("format") != 2:  # a harvest saved by an older version: start from its first open window
            pending = data.get("pending") or []
            return cls(key=data["key"], params=data["params"], cursor=pending[0][0] if pending else None,
                       added=data.get("added", 0), excluded=data.get("excluded", 0),
                       duplicates=data.get("duplicates", 0), done=bool(data.get("done")) and not pending)
        return cls(key=data["key"], params=data["params"], cursor=data.get("cursor"), page=data.get("page", 1),
                   last_page_ids=list(data.get("last_page_ids") or []), added=data.get("added", 0),
                   excluded=data.get("excluded", 0), duplicates=data.get("duplicates", 0),
                   skipped=dict(data.get("skipped") or {}), done=bool(data.get("done")), ended=data.get("ended", ""))

    @property
    def malformed(self) -> int:
        return sum(self.skipped.values())


@dataclass
class HarvestResult:
    total: int  # records in records.jsonl now
    added: int  # by this invocation
    excluded: int
    duplicates: int
    malformed: int  # hits skipped because they are not records (bad id, broken shape), in all
    requests: int
    throttled: int
    seconds: float
    complete: bool
    path: Any = None
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # the malformed hits by reason


# --- exclusion ---------------------------------------------------------------------------------------

def is_excluded(hit: dict[str, Any], patterns: Iterable[re.Pattern[str]]) -> str | None:
    """The first pattern matching the title, the GitHub repository or a file name, or None."""
    repo = github_repository(hit)
    texts = [str(metadata_of(hit).get("title") or "")]
    if repo:
        texts.append(f"{repo[0]}/{repo[1]}")
    texts += file_keys(hit)
    for pattern in patterns:
        if any(pattern.search(text) for text in texts):
            return pattern.pattern
    return None


def compile_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    """``exclude`` entries are case-insensitive regular expressions searched anywhere (``gcube`` = substring)."""
    compiled = []
    for text in patterns:
        try:
            compiled.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            raise UserError(f"zenodo.exclude: {text!r} is not a valid pattern ({exc})") from None
    return compiled


# --- the harvest -------------------------------------------------------------------------------------


def job_params(cfg: Config, since: datetime | None) -> dict[str, Any]:
    z = cfg.zenodo
    return {"api_url": z.api_url.rstrip("/"), "type": z.type, "query": z.query, "all_versions": z.all_versions,
            "since": _iso(since) if since else None}


def new_job(params: dict[str, Any]) -> HarvestJob:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return HarvestJob(key=key, params=params)


def job_path(run: RunDir, key: str) -> Any:
    return run.state / "harvest" / f"{key}.json"


def load_or_start_job(run: RunDir, cfg: Config, since: datetime | None) -> HarvestJob:
    fresh = new_job(job_params(cfg, since))
    saved = read_json(job_path(run, fresh.key))
    if not isinstance(saved, dict):
        return fresh
    try:
        return HarvestJob.from_json(saved)
    except (KeyError, TypeError, ValueError, IndexError):
        log.warning("%s: unreadable harvest position, starting again (records are deduplicated by id)",
                    job_path(run, fresh.key))
        return fresh


def page_size(cfg: Config, has_token: bool) -> int:
    cap = TOKEN_PAGE_CAP if has_token else ANONYMOUS_PAGE_CAP
    return min(cfg.zenodo.page_size or cap, cap)


def search_query(params: dict[str, Any], cursor: str | None) -> str:
    """The ``q`` of a search: the cursor's open-ended range on ``created``, ``--since`` and the user's query."""
    clauses = []
    if cursor:
        clauses.append(f"created:[{cursor} TO *]")
    if params.get("since"):
        clauses.append(f"updated:[{params['since']} TO *]")
    if params["query"]:
        clauses.append(f"({params['query']})")
    return " AND ".join(clauses)


def search(client: HttpClient, params: dict[str, Any], cursor: str | None, page: int, size: int) -> dict[str, Any]:
    """One page of the search from ``cursor``; ``{"hits": [...], "total": N}``, or a clear error naming the URL."""
    query = search_query(params, cursor)
    url = f"{params['api_url']}/records"
    response = client.get(url, accept=JSON, params={"type": params["type"], "q": query, "size": size, "page": page,
                                                    "sort": SORT, "all_versions": str(params["all_versions"]).lower()})
    if response.status_code != 200:
        raise UserError(f"{url}: HTTP {response.status_code} for page {page} of {query or 'every record'!r}: "
                        f"{_message(response)}")
    try:
        body = response.json()
        hits = body["hits"]["hits"]
        total = body["hits"].get("total")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{url}: the answer is not a Zenodo search result (no hits.hits)") from None
    if not isinstance(hits, list):
        raise UserError(f"{url}: the answer is not a Zenodo search result (hits.hits is not a list)")
    if isinstance(total, dict):  # Elasticsearch 7 shape: {"value": N, "relation": "eq"}
        total = total.get("value")
    return {"hits": hits, "total": total if isinstance(total, int) and not isinstance(total, bool) else None}


def _message(response: Any) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except (ValueError, AttributeError):
        return response.text[:200].replace("\n", " ")


def harvest(
    cfg: Config,
    *,
    limit: int | None = None,
    since: datetime | None = None,
    progress: bool | None = None,
    client: HttpClient | None = None,
) -> HarvestResult:
    """Harvest up to ``limit`` (default ``zenodo.limit``) records into ``<run>/records.jsonl``."""
    run = open_run(cfg)
    with driver_lock(run, "harvest", name=HARVEST_LOCK):
        return _harvest_locked(run, cfg, limit=cfg.zenodo.limit if limit is None else limit, since=since,
                               progress=progress, client=client)


def _harvest_locked(run: RunDir, cfg: Config, *, limit: int, since: datetime | None, progress: bool | None,
                    client: HttpClient | None) -> HarvestResult:
    started = time.monotonic()
    repair_records_file(run.records)
    known = {str(record["id"]) for record in iter_records(run.records)}
    job = load_or_start_job(run, cfg, since)
    patterns = compile_patterns(cfg.zenodo.exclude)
    own_client = client is None
    if client is None:
        per_minute = min(cfg.zenodo.rate_limit_per_min, cfg.zenodo.search_rate_limit_per_min)
        client = HttpClient(per_minute=per_minute, token=read_token(cfg.zenodo.token_env),
                            token_url=cfg.zenodo.api_url, timeout_s=cfg.zenodo.timeout_s, retries=cfg.zenodo.retries,
                            max_wait_s=cfg.zenodo.max_wait_s)
    pager = _Pager(client, job, page_size(cfg, client.has_token), cfg.zenodo.search_window, known, patterns, run,
                   limit)
    added_before = job.added
    bar = tqdm(total=limit, initial=min(job.added, limit), unit="rec", desc="harvest", disable=_quiet(progress),
               leave=False)
    pager.bar = bar
    try:
        while not job.done and job.added < limit:
            pager.next_page()
            atomic_write_json(job_path(run, job.key), job.to_json())
    except RequestFailed as exc:
        raise UserError(f"harvest stopped: {exc}; run the same command again to continue") from None
    finally:
        bar.close()
        if own_client:
            client.close()
    notes = [job.ended] if job.ended else []
    return HarvestResult(
        total=len(known), added=job.added - added_before, excluded=job.excluded, duplicates=job.duplicates,
        malformed=job.malformed, requests=client.stats.requests, throttled=client.stats.throttled,
        seconds=time.monotonic() - started, complete=job.done or job.added >= limit, path=run.records,
        notes=notes, skipped=dict(job.skipped),
    )


class _Pager:
    """Reads one page after the other from the job's cursor, appending new records and moving the cursor."""

    def __init__(self, client: HttpClient, job: HarvestJob, size: int, window: int, known: set[str],
                 patterns: list[re.Pattern[str]], run: RunDir, limit: int) -> None:
        self.client, self.job, self.size, self.window = client, job, size, window
        self.known, self.patterns, self.run, self.limit = known, patterns, run, limit
        self.bar: tqdm | None = None

    def next_page(self) -> None:
        job = self.job
        answer = search(self.client, job.params, job.cursor, job.page, self.size)
        hits = answer["hits"]
        now = datetime.now(timezone.utc)
        page_ids = [str(hit.get("id"))[:40] for hit in hits if isinstance(hit, dict)]
        fresh, newest = self._take(hits, now)
        self._append(fresh)
        log.info("harvest: %d records so far (from %s, page %d; the server counts %s)", job.added,
                 job.cursor or "the start", job.page, answer["total"])
        if job.added >= self.limit:
            return  # the cursor stays: a larger limit reads this boundary again
        if len(hits) < self.size:
            job.done = True  # a short page is the last one
        elif page_ids == job.last_page_ids:
            self._end(f"the search answered the same {len(hits)} records twice (its total says {answer['total']}); "
                      "stopped there")
        elif newest is not None and (job.cursor is None or _iso(newest) > job.cursor):
            job.cursor, job.page = _iso(newest), 1
        elif job.page * self.size >= self.window:
            self._end(f"more than {self.window} records created in the second {job.cursor}: the rest of it "
                      "cannot be reached")
        else:
            job.page += 1  # a whole page in one second: read on within it
        job.last_page_ids = page_ids

    def _take(self, hits: list[Any], now: datetime) -> tuple[list[dict[str, Any]], datetime | None]:
        """The new, valid, not excluded hits of a page (in order) and the newest believable ``created``."""
        job = self.job
        fresh: list[dict[str, Any]] = []
        newest: datetime | None = None
        skipped: Counter[str] = Counter()
        for hit in hits:
            try:
                record_id = check_hit(hit)
            except BadRecord as exc:
                skipped[exc.reason] += 1
                log.warning("harvest: skipped a hit: %s", exc)
                continue
            if len(fresh) + job.added >= self.limit:
                break
            moment = created_second(hit, now)
            if moment is not None and (newest is None or moment > newest):
                newest = moment
            if record_id in self.known:
                job.duplicates += 1
            elif is_excluded(hit, self.patterns):
                job.excluded += 1
            else:
                fresh.append(hit)
                self.known.add(record_id)
        for reason, count in skipped.items():
            job.skipped[reason] = job.skipped.get(reason, 0) + count
        return fresh, newest

    def _append(self, fresh: list[dict[str, Any]]) -> None:
        append_records(self.run.records, fresh)
        self.job.added += len(fresh)
        if self.bar is not None:
            self.bar.update(len(fresh))

    def _end(self, why: str) -> None:
        log.warning("harvest: %s", why)
        self.job.done, self.job.ended = True, why


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm hide the bar when not on a terminal (CI, SLURM logs)."""
    return None if progress is None else not progress


def format_summary(result: HarvestResult) -> str:
    state = "complete" if result.complete else "incomplete (run again to continue)"
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.skipped.items()))
    notes = "".join(f"; {note}" for note in result.notes)
    return (f"harvest: {result.total} records in {result.path} (+{result.added} new, {result.excluded} excluded, "
            f"{result.duplicates} duplicates skipped"
            f"{f', {result.malformed} malformed hits skipped ({skipped})' if result.malformed else ''}), "
            f"{result.requests} requests{f', {result.throttled} throttled' if result.throttled else ''} "
            f"in {result.seconds:.1f} s; {state}{notes}")

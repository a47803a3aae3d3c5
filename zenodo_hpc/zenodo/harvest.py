"""Harvest Zenodo's software records into ``<run>/records.jsonl``.

Zenodo answers at most ``search_window`` (10,000) results per query, its index changes while we read it
(a new version makes the older one leave the "latest versions" results, shifting every later page), and
its ``oldest`` sort is not by ``created`` alone (Zenodo puts records of verified owners first). So the
harvest never pages: it reads the time axis in **windows on ``created`` that each fit in one page**. A
window ``[lo, hi)`` is asked for once; when the answer is a short page (or the whole window fits), every
record of it is in hand, whatever the order, and the next window starts exactly at ``hi``; when it holds
more than a page, it is shrunk (estimated from ``total``) and asked again. Only a single second holding
more than a page is paged through. Records are deduplicated by id, so reading a record twice costs nothing.
The first window has no lower bound at all; the last one no upper bound.

``total`` is only a hint: a short page ends a window whatever ``total`` claims. A server that answers
records outside the asked range, or the very same page twice, stops the harvest with an error (exit status
1): it is not complete, its position stays at the window asked, and the next harvest asks it again. More
than ``search_window`` records created in one second cannot all be reached by any query: the harvest names
that second and goes on with the next window (a note in its summary), instead of ending there. Every hit
is checked before it is kept: a hit whose id is not a positive integer, whose ``metadata`` is not an
object or which holds an infinite number is skipped and counted by reason. The position is saved after
every request in ``<run>/state/harvest/<job>.json``, so an interrupted harvest continues where it stopped
and a finished one, run again, adds nothing. Two harvests on one run directory cannot run at once
(``state/harvest.lock``). ``exclude`` patterns drop records by title, GitHub repository or file name.
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

from ..core.config import Config
from ..core.errors import UserError
from ..core.records import BadRecord, check_hit, file_keys, github_repository, metadata_of, without_surrogates
from ..core.state import (
    HARVEST_LOCK,
    RunDir,
    append_records,
    atomic_write_json,
    driver_lock,
    iter_records,
    open_run,
    read_json,
    repair_records_file,
)
from .client import JSON, HttpClient, RequestFailed, read_token

log = logging.getLogger(__name__)

SORT = "oldest"
ANONYMOUS_PAGE_CAP = 25
TOKEN_PAGE_CAP = 100
FIRST_BOUND = datetime(2013, 1, 1, tzinfo=timezone.utc)  # Zenodo opened in 2013: the first window is [*, this)
FIRST_SPAN = timedelta(days=30)
ONE_SECOND = timedelta(seconds=1)
MAX_SPAN = timedelta(days=3660)
FILL = 0.8  # a window that overflows is narrowed to hold about this share of a page


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


def created_time(hit: dict[str, Any]) -> datetime | None:
    """A hit's ``created`` as an aware datetime, or None when it is missing or not a time."""
    value = hit.get("created")
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return _parse_datetime(value)
    except ValueError:
        return None


@dataclass
class HarvestJob:
    """One harvest's parameters and position, saved after every request so that it can resume."""

    key: str
    params: dict[str, Any]
    low: str | None = None  # every record created before this second is in hand (None: nothing yet)
    span_s: int = int(FIRST_SPAN.total_seconds())  # the width of the next window, in seconds
    page: int = 1  # more than 1 only inside a one-second window that holds more than a page
    last_page_ids: list[str] = field(default_factory=list)  # to notice a server repeating itself
    added: int = 0
    excluded: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # hits that are not records, by reason
    done: bool = False
    notes: list[str] = field(default_factory=list)  # what a complete harvest could not reach (one second's overflow)
    started: str = ""  # when this harvest began (ISO, UTC): the first update of a run harvests from there

    def to_json(self) -> dict[str, Any]:
        return {"format": 3, "key": self.key, "params": self.params, "low": self.low, "span_s": self.span_s,
                "page": self.page, "last_page_ids": self.last_page_ids, "added": self.added,
                "excluded": self.excluded, "duplicates": self.duplicates, "skipped": self.skipped,
                "done": self.done, "notes": self.notes, "started": self.started}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HarvestJob:
        """A saved position; one that an older version wrote ``done`` with an ``ended`` reason (it stopped on an
        error then) is not done: the next harvest asks that window again."""
        if data.get("format") != 3:  # saved by an older version: start from its first open window
            pending = data.get("pending") or []
            return cls(key=data["key"], params=data["params"], low=pending[0][0] if pending else None,
                       added=data.get("added", 0), excluded=data.get("excluded", 0),
                       duplicates=data.get("duplicates", 0), done=bool(data.get("done")) and not pending)
        return cls(key=data["key"], params=data["params"], low=data.get("low"),
                   span_s=max(1, int(data.get("span_s") or 1)), page=max(1, int(data.get("page") or 1)),
                   last_page_ids=list(data.get("last_page_ids") or []), added=data.get("added", 0),
                   excluded=data.get("excluded", 0), duplicates=data.get("duplicates", 0),
                   skipped=dict(data.get("skipped") or {}), notes=list(data.get("notes") or []),
                   done=bool(data.get("done")) and not data.get("ended"), started=str(data.get("started") or ""))

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
    return HarvestJob(key=key, params=params, started=_iso(datetime.now(timezone.utc)) + "+00:00")


def load_or_start_job(run: RunDir, cfg: Config, since: datetime | None) -> HarvestJob:
    """The saved position of this search, to go on from where it stopped; a fresh one when there is none.

    A complete search *since* a date is made again rather than taken as done: an ``update`` that made no release
    is followed by one that searches from the same release, and Zenodo has gained records in between (records
    are deduplicated by id, so only the new ones are appended). The run's own harvest (no ``since``) stays done.
    """
    fresh = new_job(job_params(cfg, since))
    saved = read_json(run.harvest_job(fresh.key))
    if not isinstance(saved, dict):
        return fresh
    try:
        job = HarvestJob.from_json(saved)
    except (KeyError, TypeError, ValueError, IndexError):
        log.warning("%s: unreadable harvest position, starting again (records are deduplicated by id)",
                    run.harvest_job(fresh.key))
        return fresh
    return fresh if since is not None and job.done else job


def harvest_began(run: RunDir, cfg: Config) -> datetime | None:
    """When the run's own harvest (the one ``harvest``, ``run`` and ``submit`` make, without ``--since``) began, once
    it is complete (or stopped at ``zenodo.limit``): its position's ``started``; for a position an older version saved
    without it, when it was last saved (an ``update`` harvests with a day of overlap). None when this run has no
    complete harvest of its own (the update then continues it)."""
    path = run.harvest_job(new_job(job_params(cfg, None)).key)
    try:
        saved = read_json(path)
        job = HarvestJob.from_json(saved) if isinstance(saved, dict) else None
        if job is None or not (job.done or job.added >= cfg.zenodo.limit):
            return None
        began = saved.get("started")
        return _parse_datetime(str(began)) if began else datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        log.warning("%s: unreadable harvest position: the update harvests every record (deduplicated by id)", path)
        return None


def page_size(cfg: Config, has_token: bool) -> int:
    cap = TOKEN_PAGE_CAP if has_token else ANONYMOUS_PAGE_CAP
    return min(cfg.zenodo.page_size or cap, cap)


@dataclass(frozen=True)
class Window:
    """Records created in ``[low, high)``; None is an open end (``*``)."""

    low: datetime | None
    high: datetime | None

    def clause(self) -> str:
        low = _iso(self.low) if self.low else "*"
        high = _iso(self.high) if self.high else "*"
        return f"created:[{low} TO {high}{'}' if self.high else ']'}"

    def holds(self, moment: datetime) -> bool:
        return (self.low is None or moment >= self.low) and (self.high is None or moment < self.high)


def search_query(params: dict[str, Any], window: Window) -> str:
    """The ``q`` of a search: the window's range on ``created``, ``--since`` and the user's query."""
    clauses = [window.clause()]
    if params.get("since"):
        clauses.append(f"updated:[{params['since']} TO *]")
    if params["query"]:
        clauses.append(f"({params['query']})")
    return " AND ".join(clauses)


def search(client: HttpClient, params: dict[str, Any], window: Window, page: int, size: int) -> dict[str, Any]:
    """One page of one window; ``{"hits": [...], "total": N or None}``, or a clear error naming the URL."""
    query = search_query(params, window)
    url = f"{params['api_url']}/records"
    response = client.get(url, accept=JSON, params={"type": params["type"], "q": query, "size": size, "page": page,
                                                    "sort": SORT, "all_versions": str(params["all_versions"]).lower()})
    if response.status_code != 200:
        raise UserError(f"{url}: HTTP {response.status_code} for page {page} of {query!r}: {_message(response)}")
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
        # Searches count against their own limit only (invenio-app's set_rate_limit: an endpoint's limit replaces
        # the user's), 30 a minute, so the hourly budget of the downloads does not apply to them.
        token = read_token(cfg.zenodo.token_env)
        per_minute = min(cfg.zenodo.request_budget(has_token=token is not None).per_minute,
                         cfg.zenodo.search_rate_limit_per_min)
        client = HttpClient(per_minute=per_minute, token=token,
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
            atomic_write_json(run.harvest_job(job.key), job.to_json())
    except RequestFailed as exc:
        raise stopped(str(exc)) from None
    finally:
        bar.close()
        if own_client:
            client.close()
    return HarvestResult(
        total=len(known), added=job.added - added_before, excluded=job.excluded, duplicates=job.duplicates,
        malformed=job.malformed, requests=client.stats.requests, throttled=client.stats.throttled,
        seconds=time.monotonic() - started, complete=job.done or job.added >= limit, path=run.records,
        notes=list(job.notes), skipped=dict(job.skipped),
    )


class _Pager:
    """Asks for one window after the other, appending new records and moving the job's position."""

    def __init__(self, client: HttpClient, job: HarvestJob, size: int, window: int, known: set[str],
                 patterns: list[re.Pattern[str]], run: RunDir, limit: int) -> None:
        self.client, self.job, self.size, self.window = client, job, size, window
        self.known, self.patterns, self.run, self.limit = known, patterns, run, limit
        self.added_now: set[str] = set()
        self.bar: tqdm | None = None

    def current_window(self, now: datetime) -> Window:
        job = self.job
        if job.low is None:
            return Window(None, FIRST_BOUND)
        low = _parse_datetime(job.low)
        high = low + timedelta(seconds=job.span_s)
        return Window(low, None if high > now else high)

    def next_page(self) -> None:
        job = self.job
        now = datetime.now(timezone.utc).replace(microsecond=0)
        window = self.current_window(now)
        answer = search(self.client, job.params, window, job.page, self.size)
        hits, total = answer["hits"], answer["total"]
        outside = [h for h in hits if isinstance(h, dict) and (t := created_time(h)) and not window.holds(t)]
        if outside:
            raise stopped(f"the search answered records created outside {window.clause()} "
                          f"(record {str(outside[0].get('id'))[:20]}): the server ignores the query")
        page_ids = [str(hit.get("id"))[:40] for hit in hits if isinstance(hit, dict)]
        if job.page > 1 and page_ids == job.last_page_ids:
            raise stopped(f"the search answered the same {len(hits)} records twice for pages {job.page - 1} and "
                          f"{job.page} of {window.clause()} (its total says {total})")
        self._append(self._take(hits))
        log.log(logging.INFO if hits else logging.DEBUG, "harvest: %d records so far (%s, page %d: %d hits, "
                "the server counts %s)", job.added, window.clause(), job.page, len(hits), total)
        if job.added >= self.limit:
            return  # the position stays: a larger limit reads this window again
        job.last_page_ids = page_ids
        complete = len(hits) < self.size or total == job.page * self.size  # a total that disagrees is no help
        if complete:
            self._next_window(window, len(hits))
        elif window.low is not None and job.span_s <= 1:
            self._next_page_of_one_second(window)
        else:
            self._shrink(window, total)

    def _next_window(self, window: Window, found: int) -> None:
        job = self.job
        if window.high is None:
            job.done = True
            return
        job.low, job.page = _iso(window.high), 1
        if window.low is not None and found < self.size // 2:  # sparse: look further next time
            job.span_s = min(int(MAX_SPAN.total_seconds()), job.span_s * 2)

    def _shrink(self, window: Window, total: int | None) -> None:
        """A window holding more than a page: make it narrower (the first one: start it at Zenodo's opening)."""
        job = self.job
        if window.low is None:  # records before 2013 (imports): page through them, they are few
            self._next_page_of_one_second(window)
            return
        share = FILL * self.size / total if total and total > self.size else 0.5
        job.span_s = max(1, min(job.span_s - 1, int(job.span_s * share)))
        job.page = 1

    def _next_page_of_one_second(self, window: Window) -> None:
        """The next page of a window that cannot be narrowed (one second, or everything before 2013)."""
        job = self.job
        if job.page * self.size >= self.window:
            self._note(f"more than {self.window} records in {window.clause()}: the rest of them cannot be reached "
                       f"(Zenodo answers at most {self.window} per query)")
            self._next_window(window, self.size)
            return
        job.page += 1

    def _take(self, hits: list[Any]) -> list[dict[str, Any]]:
        """The new, valid, not excluded hits of a page, in order (at most up to the limit)."""
        job = self.job
        fresh: list[dict[str, Any]] = []
        skipped: Counter[str] = Counter()
        for hit in hits:
            try:
                record_id = check_hit(hit)
            except BadRecord as exc:
                skipped[exc.reason] += 1
                log.warning("harvest: skipped a hit: %s", exc)
                continue
            hit, repaired = without_surrogates(hit)
            if repaired:
                log.warning("harvest: record %s: %d text(s) held unpaired UTF-16 surrogates, which no UTF-8 can "
                            "hold: kept with U+FFFD in their place", record_id, repaired)
            if len(fresh) + job.added >= self.limit:
                break
            if record_id in self.known:
                if record_id not in self.added_now:  # a window read again is no duplicate on Zenodo's side
                    job.duplicates += 1
            elif is_excluded(hit, self.patterns):
                job.excluded += 1
            else:
                fresh.append(hit)
                self.known.add(record_id)
                self.added_now.add(record_id)
        for reason, count in skipped.items():
            job.skipped[reason] = job.skipped.get(reason, 0) + count
        return fresh

    def _append(self, fresh: list[dict[str, Any]]) -> None:
        append_records(self.run.records, fresh)
        self.job.added += len(fresh)
        if self.bar is not None:
            self.bar.update(len(fresh))

    def _note(self, what: str) -> None:
        log.warning("harvest: %s", what)
        self.job.notes.append(what)


def stopped(why: str) -> UserError:
    """The error of a harvest that cannot go on: not complete, resumed from its saved position next time."""
    return UserError(f"harvest stopped: {why}; the records so far are kept: run the same command again to continue")


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

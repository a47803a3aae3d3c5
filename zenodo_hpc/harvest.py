"""Harvest Zenodo's software records into ``<run>/records.jsonl``.

Zenodo answers at most ``search_window`` (10,000) results per query, so the harvest walks the time
axis: a date window whose query matches more than that is split in two, until every window fits; each
window is then paged through, oldest record first. Windows are explored lazily (only as far as
``limit`` needs) and the position is saved after every page in ``<run>/state/harvest/<job>.json``, so an
interrupted harvest continues where it stopped and a finished one, run again, adds nothing. Records
are unique by id; ``exclude`` patterns drop records by title, GitHub repository or file name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tqdm import tqdm

from .client import HttpClient, RequestFailed, read_token
from .config import Config
from .errors import UserError
from .records import file_keys, github_repository
from .state import RunDir, append_records, atomic_write_json, iter_records, open_run, read_json, repair_records_file

log = logging.getLogger(__name__)

ZENODO_EPOCH = datetime(2013, 1, 1, tzinfo=timezone.utc)  # Zenodo opened in 2013
SORT = "oldest"
ANONYMOUS_PAGE_CAP = 25
TOKEN_PAGE_CAP = 100
MIN_WINDOW = timedelta(seconds=1)


@dataclass
class Window:
    """A half-open date range ``[start, end)`` on ``field`` (``created``, or ``updated`` for --since)."""

    start: datetime
    end: datetime

    def query(self, field: str) -> str:
        return f"{field}:[{_iso(self.start)} TO {_iso(self.end)}}}"

    def halves(self) -> list[Window]:
        middle = self.start + (self.end - self.start) / 2
        middle = middle.replace(microsecond=0)
        return [Window(self.start, middle), Window(middle, self.end)]

    def to_json(self) -> list[str]:
        return [_iso(self.start), _iso(self.end)]

    @classmethod
    def from_json(cls, data: list[str]) -> Window:
        return cls(_parse_datetime(data[0]), _parse_datetime(data[1]))


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


@dataclass
class HarvestJob:
    """One harvest's parameters and progress, saved after every page so that it can resume."""

    key: str
    params: dict[str, Any]
    pending: list[Window]  # windows still to explore, earliest first
    page: int = 1  # next page of pending[0], once it is known to fit
    fits: bool = False  # pending[0] is known to fit in the search window
    added: int = 0
    excluded: int = 0
    duplicates: int = 0
    malformed: int = 0
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "params": self.params, "pending": [w.to_json() for w in self.pending],
                "page": self.page, "fits": self.fits, "added": self.added, "excluded": self.excluded,
                "duplicates": self.duplicates, "malformed": self.malformed, "done": self.done}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HarvestJob:
        return cls(key=data["key"], params=data["params"], pending=[Window.from_json(w) for w in data["pending"]],
                   page=data["page"], fits=data["fits"], added=data["added"], excluded=data["excluded"],
                   duplicates=data["duplicates"], malformed=data.get("malformed", 0), done=data["done"])


@dataclass
class HarvestResult:
    total: int  # records in records.jsonl now
    added: int  # by this invocation
    excluded: int
    duplicates: int
    malformed: int
    requests: int
    throttled: int
    seconds: float
    complete: bool
    path: Any = None
    notes: list[str] = field(default_factory=list)


# --- exclusion ---------------------------------------------------------------------------------------

def is_excluded(hit: dict[str, Any], patterns: Iterable[re.Pattern[str]]) -> str | None:
    """The first pattern matching the title, the GitHub repository or a file name, or None."""
    repo = github_repository(hit)
    texts = [str((hit.get("metadata") or {}).get("title") or "")]
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
            "field": "updated" if since else "created", "since": _iso(since) if since else None}


def new_job(params: dict[str, Any], since: datetime | None) -> HarvestJob:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    start = since or ZENODO_EPOCH
    end = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    return HarvestJob(key=key, params=params, pending=[Window(start, end)])


def job_path(run: RunDir, key: str) -> Any:
    return run.state / "harvest" / f"{key}.json"


def load_or_start_job(run: RunDir, cfg: Config, since: datetime | None) -> HarvestJob:
    params = job_params(cfg, since)
    fresh = new_job(params, since)
    saved = read_json(job_path(run, fresh.key))
    return HarvestJob.from_json(saved) if saved else fresh


def page_size(cfg: Config, has_token: bool) -> int:
    cap = TOKEN_PAGE_CAP if has_token else ANONYMOUS_PAGE_CAP
    return min(cfg.zenodo.page_size or cap, cap)


def search(client: HttpClient, params: dict[str, Any], window: Window, page: int, size: int) -> dict[str, Any]:
    """One page of one window; the answer as JSON, or a clear error naming the URL."""
    query = window.query(params["field"])
    if params["query"]:
        query = f"{query} AND ({params['query']})"
    url = f"{params['api_url']}/records"
    response = client.get(url, params={"type": params["type"], "q": query, "size": size, "page": page,
                                       "sort": SORT, "all_versions": str(params["all_versions"]).lower()})
    if response.status_code != 200:
        raise UserError(f"{url}: HTTP {response.status_code} for page {page} of {query!r}: "
                        f"{_message(response)}")
    try:
        body = response.json()
        hits = body["hits"]["hits"]
        total = body["hits"]["total"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{url}: the answer is not a Zenodo search result (no hits.hits/hits.total)") from None
    if isinstance(total, dict):  # Elasticsearch 7 shape: {"value": N, "relation": "eq"}
        total = total.get("value", 0)
    return {"hits": hits, "total": int(total)}


def _message(response: Any) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except ValueError:
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
    started = time.monotonic()
    limit = cfg.zenodo.limit if limit is None else limit
    run = open_run(cfg)
    repair_records_file(run.records)
    known = {str(record["id"]) for record in iter_records(run.records)}
    job = load_or_start_job(run, cfg, since)
    patterns = compile_patterns(cfg.zenodo.exclude)
    own_client = client is None
    if client is None:
        token = read_token(cfg.zenodo.token_env)
        per_minute = min(cfg.zenodo.rate_limit_per_min, cfg.zenodo.search_rate_limit_per_min)
        client = HttpClient(per_minute=per_minute, token=token, timeout_s=cfg.zenodo.timeout_s,
                            retries=cfg.zenodo.retries)
    size = page_size(cfg, client.has_token)
    added_before = job.added
    bar = tqdm(total=limit, initial=min(job.added, limit), unit="rec", desc="harvest", disable=_quiet(progress),
               leave=False)
    try:
        while not job.done and job.added < limit and job.pending:
            _harvest_one_page(client, job, size, cfg.zenodo.search_window, known, patterns, run, limit, bar)
            atomic_write_json(job_path(run, job.key), job.to_json())
        if not job.pending:
            job.done = True
            atomic_write_json(job_path(run, job.key), job.to_json())
    except RequestFailed as exc:
        raise UserError(f"harvest stopped: {exc}; run the same command again to continue") from None
    finally:
        bar.close()
        if own_client:
            client.close()
    return HarvestResult(
        total=len(known), added=job.added - added_before, excluded=job.excluded, duplicates=job.duplicates,
        malformed=job.malformed, requests=client.stats.requests, throttled=client.stats.throttled,
        seconds=time.monotonic() - started, complete=job.done or job.added >= limit, path=run.records,
    )


def _harvest_one_page(
    client: HttpClient, job: HarvestJob, size: int, window_cap: int, known: set[str],
    patterns: list[re.Pattern[str]], run: RunDir, limit: int, bar: tqdm,
) -> None:
    """Fetch the next page of the earliest pending window (splitting it first if it is too big)."""
    window = job.pending[0]
    answer = search(client, job.params, window, job.page, size)
    if not job.fits:
        if answer["total"] > window_cap and window.end - window.start > MIN_WINDOW:
            job.pending[0:1] = window.halves()
            return
        if answer["total"] > window_cap:
            log.warning("%s holds %d records in one second; only the first %d are reachable",
                        window.query(job.params["field"]), answer["total"], window_cap)
        job.fits = True
    fresh = []
    room = limit - job.added
    for hit in answer["hits"]:
        if not isinstance(hit, dict) or "id" not in hit:
            job.malformed += 1
            continue
        record_id = str(hit["id"])
        if record_id in known:
            job.duplicates += 1
            continue
        if is_excluded(hit, patterns):
            job.excluded += 1
            continue
        if len(fresh) >= room:
            return _append(run, job, fresh, bar)  # limit reached: this page is read again by a larger limit
        fresh.append(hit)
        known.add(record_id)
    _append(run, job, fresh, bar)
    last_page = job.page * size >= min(answer["total"], window_cap) or not answer["hits"]
    if last_page:
        job.pending.pop(0)
        job.page, job.fits = 1, False
    else:
        job.page += 1


def _append(run: RunDir, job: HarvestJob, fresh: list[dict[str, Any]], bar: tqdm) -> None:
    append_records(run.records, fresh)
    job.added += len(fresh)
    bar.update(len(fresh))
    log.info("harvest: %d records so far (window %s, page %d)", job.added,
             job.pending[0].query(job.params["field"]) if job.pending else "-", job.page)


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm hide the bar when not on a terminal (CI, SLURM logs)."""
    return None if progress is None else not progress


def format_summary(result: HarvestResult) -> str:
    state = "complete" if result.complete else "incomplete (run again to continue)"
    return (f"harvest: {result.total} records in {result.path} (+{result.added} new, {result.excluded} excluded, "
            f"{result.duplicates} duplicates skipped), {result.requests} requests"
            f"{f', {result.throttled} throttled' if result.throttled else ''} in {result.seconds:.1f} s; {state}")

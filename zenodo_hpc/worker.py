"""The shard worker: for each record not yet complete, fetch -> extract -> walk -> rasterize -> write.

A record's failure is recorded (reason, attempt count) and the worker goes on to the next one; a record
that has been tried ``executor.max_attempts`` times is quarantined instead of being tried forever.
Downloads and extraction use node-local temporary space (``$SLURM_TMPDIR``, else ``$TMPDIR``), always
cleaned; only finished record folders and markers reach the shared run directory.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import HttpClient, read_token
from .config import Config
from .errors import UserError
from .fetch import FetchFailed, fetch_record
from .process import process_sources
from .state import (
    RunDir,
    attempts_of,
    is_done,
    mark_done,
    mark_failed,
    mark_started,
)
from .store import check_record_id

log = logging.getLogger(__name__)


@dataclass
class RecordOutcome:
    record_id: str
    status: str  # "done", "skipped" (already done), "failed", "quarantined"
    reason: str | None = None
    message: str | None = None
    seconds: float = 0.0


def node_tmp() -> Path:
    """Node-local scratch for downloads and extraction: ``$SLURM_TMPDIR``, else ``$TMPDIR``, else /tmp."""
    return Path(os.environ.get("SLURM_TMPDIR") or tempfile.gettempdir())


def make_client(cfg: Config, concurrent: int = 1) -> HttpClient | None:
    """This worker's client, with its share of the run's request budget (None when offline)."""
    if cfg.fetch.offline:
        return None
    per_minute = cfg.zenodo.rate_limit_per_min / max(1, concurrent)
    return HttpClient(per_minute=per_minute, token=read_token(cfg.zenodo.token_env),
                      timeout_s=cfg.fetch.timeout_s, retries=cfg.zenodo.retries)


def failure_reason(exc: BaseException) -> str:
    """The short reason recorded for a failed record."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    if isinstance(exc, UserError):
        return "error"
    return f"error: {type(exc).__name__}"


def process_record(
    hit: dict[str, Any],
    run: RunDir,
    cfg: Config,
    client: HttpClient | None,
    *,
    task: str = "local",
    tmp_root: Path | None = None,
) -> RecordOutcome:
    """Make one record complete, or record why it is not. Never raises for the record's own faults."""
    record_id = check_record_id(str(hit.get("id")))
    if is_done(run, record_id):
        return RecordOutcome(record_id, "skipped")
    if attempts_of(run, record_id) >= cfg.executor.max_attempts:
        return _quarantine(run, record_id, task, cfg.executor.max_attempts)
    attempt = mark_started(run, record_id, task)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix=f"zenodo-hpc-{record_id}-", dir=tmp_root or node_tmp()) as tmp:
            keep = cfg.fetch.cache or cfg.fetch.offline
            download_folder = run.cache / record_id if keep else Path(tmp) / "download"
            fetched = fetch_record(hit, download_folder, cfg, client)
            result = process_sources(record_id, fetched.key_prefixes(), run.data, cfg, hit=hit,
                                     source_info=fetched.source_info(), tmp_dir=Path(tmp))
    except (FetchFailed, UserError, OSError, ValueError, MemoryError) as exc:
        return _fail(run, record_id, exc, attempt, task, cfg, time.monotonic() - started)
    except Exception as exc:  # a bug or a poison input: record it with its traceback, go on
        log.error("record %s: unexpected error\n%s", record_id, traceback.format_exc())
        return _fail(run, record_id, exc, attempt, task, cfg, time.monotonic() - started)
    seconds = time.monotonic() - started
    mark_done(run, record_id, {"attempts": attempt, "task": task, "seconds": round(seconds, 3),
                               "source": fetched.kind, "bytes_written": result.written.bytes,
                               **result.stats.to_dict()})
    log.info("record %s: done, %d segments in %.1f s", record_id, result.stats.segments, seconds)
    return RecordOutcome(record_id, "done", seconds=seconds)


def _fail(run: RunDir, record_id: str, exc: BaseException, attempt: int, task: str, cfg: Config,
          seconds: float) -> RecordOutcome:
    reason = failure_reason(exc)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    quarantined = attempt >= cfg.executor.max_attempts
    mark_failed(run, record_id, reason=reason, message=message, attempt=attempt, task=task,
                quarantined=quarantined)
    log.warning("record %s: failed (%s): %s%s", record_id, reason, message,
                " - quarantined" if quarantined else "")
    return RecordOutcome(record_id, "quarantined" if quarantined else "failed", reason, message, seconds)


def _quarantine(run: RunDir, record_id: str, task: str, max_attempts: int) -> RecordOutcome:
    """A record tried ``max_attempts`` times (possibly crashing its worker each time) is set aside."""
    from .state import read_failure

    failure = read_failure(run, record_id) or {}
    if not failure.get("quarantined"):
        reason = failure.get("reason") or "worker_died"
        message = failure.get("message") or f"the worker stopped during all {max_attempts} attempts"
        mark_failed(run, record_id, reason=reason, message=message, attempt=attempts_of(run, record_id),
                    task=task, quarantined=True)
        failure = {"reason": reason, "message": message}
    return RecordOutcome(record_id, "quarantined", failure.get("reason"), failure.get("message"))


def process_records(hits: Iterable[dict[str, Any]], run: RunDir, cfg: Config, *, task: str = "local",
                    concurrent: int = 1, tmp_root: Path | None = None) -> list[RecordOutcome]:
    """Process records one after the other with one client (a shard's worth)."""
    client = make_client(cfg, concurrent)
    try:
        return [process_record(hit, run, cfg, client, task=task, tmp_root=tmp_root) for hit in hits]
    finally:
        if client is not None:
            client.close()

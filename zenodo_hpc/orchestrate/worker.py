"""The shard worker: for each record not yet complete, fetch -> extract -> walk -> rasterize -> write.

A record's failure is recorded (reason, attempt count) and the worker goes on to the next one; a record
that has been tried ``executor.max_attempts`` times is quarantined instead of being tried forever.
Downloads and extraction use node-local temporary space (``$SLURM_TMPDIR``, else ``$TMPDIR``), archives
that fit ``extract.memory_budget_mb`` a RAM-backed folder (a tmpfs), always cleaned; only finished record
folders and markers reach the shared run directory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from ..core.config import Config
from ..core.errors import UserError
from ..core.markers import FailureMarker
from ..core.records import BadRecord, check_hit
from ..core.state import (
    ATTEMPTS,
    RunDir,
    attempts_of,
    is_done,
    load_run,
    mark_done,
    mark_failed,
    mark_started,
    read_failure,
    unmark_started,
)
from ..dataset.verify import taken_back
from ..record.extract import SHARED_FILESYSTEMS, filesystem_type
from ..record.leftovers import clean_leftovers, record_tmp
from ..record.process import process_sources
from ..zenodo.client import HttpClient
from ..zenodo.fetch import FetchFailed, download_client, fetch_record
from .chain import RATE_LIMITED, budget_gone_until, note_budget_gone, utc_text
from .plan import load_plan, read_records_at

log = logging.getLogger(__name__)


@dataclass
class RecordOutcome:
    record_id: str
    status: str  # "done", "skipped" (already done), "failed", "quarantined"
    reason: str | None = None
    message: str | None = None
    seconds: float = 0.0
    retry_at: float | None = None  # rate_limited: when Zenodo's budget returns (epoch), if the server said


def node_tmp() -> Path:
    """Node-local scratch for downloads and extraction: ``$SLURM_TMPDIR``, else ``$TMPDIR``, else /tmp.

    Archives are extracted in a RAM-backed folder instead when they fit ``extract.memory_budget_mb``
    (zenodo_hpc/record/process.py); what does not fit, and every download, stays here.
    """
    return Path(os.environ.get("SLURM_TMPDIR") or tempfile.gettempdir())


def warn_if_shared(folder: Path) -> None:
    """Say so when the node-local space is in fact a file system shared between nodes (``$TMPDIR`` set to scratch,
    say): every download and extracted file would then load it, and slowly."""
    kind = filesystem_type(folder)
    if kind in SHARED_FILESYSTEMS:
        log.warning("the temporary folder %s is on a shared file system (%s), not node-local: set $TMPDIR (or "
                    "$SLURM_TMPDIR) to node-local disk, see docs/cluster-guide.md", folder, kind)


def make_client(cfg: Config, concurrent: int = 1) -> HttpClient | None:
    """This worker's client, with its share of the run's request budget (None when offline)."""
    return None if cfg.fetch.offline else download_client(cfg, concurrent)


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Not the record's fault: the attempt is not counted (our disk, a server that asks us to come back later).
NOT_THE_RECORDS_FAULT = {"disk_full", RATE_LIMITED}
# What no retry can change: quarantined at the first failure, never tried again (docs/operations.md).
# Transient trouble (5xx, time-outs, cut bodies, a wrong md5) is retried inside the task first, per request
# and per download with backoff (docs/fetch.md), then by later rounds up to executor.max_attempts.
QUARANTINE_AT_ONCE = frozenset({
    "restricted",  # the author did not share the files
    "no_archive",  # nothing to rasterize among the record's files, and no release to fall back on
    "http_404", "http_410",  # the file is not there, or gone for good
    "bad_archive", "unsafe_archive",  # not an archive (an HTML page, say), or one that escapes its folder
    "too_large",  # over fetch.max_bytes or extract.max_bytes: the same next time
    "bad_link",  # no file of the record has an http(s) link
    "bad_name",  # no file of the record has a name that can be a path in its tree (../x, /abs, a control character)
})


def failure_reason(exc: BaseException) -> str:
    """The short reason recorded for a failed record."""
    for err in (exc, exc.__cause__):
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return "disk_full"  # our own disk (scratch or node-local), not the record: resume retries it
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
    """Make one record complete, or record why it is not. Never raises for the record's own faults.

    A hit whose id is not a Zenodo id (``../../x``, ``abc$``) cannot name a marker or a folder: it is
    logged and skipped, and nothing is written for it.
    """
    try:
        record_id = check_hit(hit)
    except BadRecord as exc:
        log.warning("skipped a hit that is not a record: %s", exc)
        return RecordOutcome(str(hit.get("id") if isinstance(hit, dict) else None)[:40], "invalid", exc.reason,
                             str(exc))
    if is_done(run, record_id) or taken_back(run, cfg, record_id, hit):  # a purged marker: its folder checked
        return RecordOutcome(record_id, "skipped")
    if attempts_of(run, record_id) >= cfg.executor.max_attempts or _is_quarantined(run, record_id):
        return _quarantine(run, record_id, task, cfg.executor.max_attempts)
    try:
        attempt = mark_started(run, record_id, task)
    except OSError as exc:
        return _not_started(run, record_id, exc, task)
    started = time.monotonic()
    try:
        with record_tmp(record_id, tmp_root or node_tmp()) as tmp:
            keep = cfg.fetch.cache or cfg.fetch.offline
            download_folder = run.cached(record_id) if keep else Path(tmp) / "download"
            fetched = fetch_record(hit, download_folder, cfg, client)
            result = process_sources(record_id, fetched.key_prefixes(), run.data, cfg, hit=hit,
                                     source_info=fetched.source_info(), tmp_dir=Path(tmp),
                                     loose=fetched.loose_files(), left_out=fetched.not_fetched)
    except (FetchFailed, UserError, OSError, ValueError, MemoryError) as exc:
        return _fail(run, record_id, exc, attempt, task, cfg, time.monotonic() - started,
                     retry_at=client.refused_until if client is not None else None)
    except UncompletedJobError:  # submitit ending the task (timed out too often): not the record's fault
        unmark_started(run, record_id)
        raise
    except Exception as exc:  # a bug or a poison input: record it with its traceback, go on
        log.error("record %s: unexpected error\n%s", record_id, traceback.format_exc())
        return _fail(run, record_id, exc, attempt, task, cfg, time.monotonic() - started)
    except BaseException:  # preempted, timed out, Ctrl-C: the record is redone later, attempt not counted
        unmark_started(run, record_id)
        log.warning("record %s: interrupted, it will be redone", record_id)
        raise
    seconds = time.monotonic() - started
    mark_done(run, record_id, {"attempts": attempt, "task": task, "seconds": round(seconds, 3),
                               "source": fetched.kind, "bytes_written": result.written.bytes,
                               **result.stats.to_dict()})
    log.info("record %s: done, %d segments in %.1f s", record_id, result.stats.segments, seconds)
    return RecordOutcome(record_id, "done", seconds=seconds)


def _is_quarantined(run: RunDir, record_id: str) -> bool:
    """A record quarantined earlier (at once, or after its attempts) is never tried again."""
    try:
        failure = read_failure(run, record_id)
    except UserError:  # an unreadable marker: try the record again, its new failure replaces the marker
        return False
    return bool(failure and failure.quarantined)


def _fail(run: RunDir, record_id: str, exc: BaseException, attempt: int, task: str, cfg: Config,
          seconds: float, *, retry_at: float | None = None) -> RecordOutcome:
    """Record the failure. One that is not the record's fault (a full disk, Zenodo's budget) is not counted
    as an attempt and never quarantines the record; a ``rate_limited`` one keeps when the budget returns."""
    reason = failure_reason(exc)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    not_its_fault = reason in NOT_THE_RECORDS_FAULT
    if not_its_fault:
        unmark_started(run, record_id)
        attempt -= 1
    retry_at = retry_at if reason == RATE_LIMITED else None
    quarantined = not not_its_fault and (attempt >= cfg.executor.max_attempts or reason in QUARANTINE_AT_ONCE)
    mark_failed(run, record_id, reason=reason, message=message, attempt=attempt, task=task,
                quarantined=quarantined, retry_at=utc_text(retry_at) if retry_at else None)
    log.warning("record %s: failed (%s): %s%s", record_id, reason, message,
                " - quarantined" if quarantined else "")
    return RecordOutcome(record_id, "quarantined" if quarantined else "failed", reason, message, seconds, retry_at)


def _not_started(run: RunDir, record_id: str, exc: OSError, task: str) -> RecordOutcome:
    """The attempt could not even be counted (the run directory's disk is full, say): the record fails with the
    reason (``disk_full``: not its fault, so nothing counts against it), without a traceback; the failure marker
    is written if the disk still takes it."""
    reason = failure_reason(exc)
    message = f"cannot count the attempt in {run.markers(ATTEMPTS)}: {exc.strerror or exc}"
    with contextlib.suppress(OSError):
        mark_failed(run, record_id, reason=reason, message=message, attempt=attempts_of(run, record_id), task=task,
                    quarantined=False)
    log.warning("record %s: failed (%s): %s", record_id, reason, message)
    return RecordOutcome(record_id, "failed", reason, message)


def _quarantine(run: RunDir, record_id: str, task: str, max_attempts: int) -> RecordOutcome:
    """A record tried ``max_attempts`` times (possibly crashing its worker each time) is set aside."""
    failure = read_failure(run, record_id) or FailureMarker(record_id)
    if not failure.quarantined:
        failure = mark_failed(run, record_id, reason=failure.reason or "worker_died",
                              message=failure.message or f"the worker stopped during all {max_attempts} attempts",
                              attempt=attempts_of(run, record_id), task=task, quarantined=True)
    return RecordOutcome(record_id, "quarantined", failure.reason, failure.message)


def process_records(hits: Iterable[dict[str, Any]], run: RunDir, cfg: Config, *, task: str = "local",
                    concurrent: int = 1, tmp_root: Path | None = None) -> list[RecordOutcome]:
    """Process records one after the other with one client (a shard's worth).

    Once Zenodo refuses a request for its budget (``rate_limited``), the records after it are not tried:
    each would only earn another refusal. They stay pending, with no attempt and no marker, for the round
    that starts when the budget returns (docs/operations.md, "Zenodo's request budget"). A worker that starts
    while another one's refusal still holds (``state/budget.json``) is refused at its first record without
    asking the server.
    """
    client = make_client(cfg, concurrent)
    gone_until = budget_gone_until(run)
    if client is not None and gone_until is not None and gone_until > time.time():
        client.hold_until_epoch(gone_until)
    outcomes: list[RecordOutcome] = []
    try:
        for hit in hits:
            outcomes.append(process_record(hit, run, cfg, client, task=task, tmp_root=tmp_root))
            if outcomes[-1].reason == RATE_LIMITED:
                if outcomes[-1].retry_at is not None:
                    note_budget_gone(run, outcomes[-1].retry_at)
                break
        return outcomes
    finally:
        if client is not None:
            client.close()


def stopped_for_the_budget(outcomes: list[RecordOutcome], planned: int, name: str) -> int:
    """How many records a shard left untried because Zenodo's budget ran out (0: none); logged."""
    if not outcomes or outcomes[-1].reason != RATE_LIMITED:
        return 0
    left = planned - len(outcomes)
    until = outcomes[-1].retry_at
    log.warning("%s: stopped early: Zenodo's request budget is used up%s; %d record(s) left pending for the next "
                "round, their attempts not counted", name, f" until {utc_text(until)}" if until else "", left)
    return left


# --- one array task: a shard of a plan ------------------------------------------------------------


def task_name(generation: int, shard: int) -> str:
    """``g0002-s00017`` plus the SLURM job id when there is one (for logs and failure histories)."""
    name = f"g{generation:04d}-s{shard:05d}"
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        name += f" (job {job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')})"
    elif os.environ.get("SLURM_JOB_ID"):
        name += f" (job {os.environ['SLURM_JOB_ID']})"
    return name


def run_shard(run_dir: str, generation: int, shard: int, concurrent: int = 1) -> dict[str, int]:
    """Process every record of one shard that is not complete; return counts by outcome.

    Called in an array task (through submitit), a local worker process, or in-process (debug).
    """
    run, cfg = load_run(run_dir)
    plan = load_plan(run, generation)
    if not 0 <= shard < len(plan.shards):
        raise UserError(f"plan {generation} of {run.root} has no shard {shard}")
    records = plan.shards[shard]
    name = task_name(generation, shard)
    handler = _task_log_handler(run.task_log(generation, shard))
    counts: dict[str, int] = {}
    try:
        log.info("%s: %d records", name, len(records.ids))
        clean_leftovers(run, node_tmp())  # what killed workers left behind, if they are gone
        warn_if_shared(node_tmp())
        hits = read_records_at(run.records, records.offsets)
        outcomes = process_records(hits, run, cfg, task=name, concurrent=concurrent)
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        left = stopped_for_the_budget(outcomes, len(records.ids), name)
        if left:
            counts["left_for_the_budget"] = left
        log.info("%s: finished %s", name, counts)
    finally:
        logging.getLogger("zenodo_hpc").removeHandler(handler)
        handler.close()
    return counts


def _task_log_handler(path: Path) -> logging.Handler:
    """Per-task log under ``<run>/logs/`` (appended: a requeued task continues the same file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("zenodo_hpc")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


class ShardTask(submitit.helpers.Checkpointable):
    """An array task that submitit requeues on timeout or preemption: done records are not redone.

    On SLURM's signal submitit calls :meth:`checkpoint` (inherited: resubmit the same call) and requeues
    the task; the record in progress is abandoned cleanly (temporary files removed, its attempt not
    counted) and the requeued task skips every record that has its completion marker.
    """

    def __call__(self, run_dir: str, generation: int, shard: int, concurrent: int = 1) -> dict[str, int]:
        return run_shard(run_dir, generation, shard, concurrent)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (Ctrl-C of the driver, a cancelled run) unwinds cleanly: temp files go, the attempt is not counted."""
    raise SystemExit(128 + signum)


def worker_process(run_dir: str, generation: int, shard: int, concurrent: int = 1) -> int:
    """A local executor's worker process (``zenodo-hpc worker``, the command line's internal command): one shard,
    its counts printed; a SIGTERM unwinds cleanly; a bad run directory or shard is one line and status 1."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        counts = run_shard(run_dir, generation, shard, concurrent)
    except UserError as exc:
        print(f"zenodo-hpc worker: error: {exc}", file=sys.stderr)
        return 1
    print(counts)
    return 0


if __name__ == "__main__":  # the local executor's command (orchestrate/local.py) runs the CLI's `worker`
    import runpy

    sys.argv[1:1] = ["worker"]
    runpy.run_module("zenodo_hpc", run_name="__main__", alter_sys=True)

"""What the report shows, read from the run directory alone (and from SLURM accounting when it answers).

Everything here is plain Python: no plotting. One pass over the markers and the record folders:

- ``records.jsonl``: every harvested record's year and license (by its status now);
- ``state/done/<id>.json``: when each record finished, its task, its own seconds;
- ``data/<id>/metadata_<id>.json``: its tree (files and code images per extension, images per file), its
  stats (files skipped by reason), its source (downloads made), its hit (license, title);
- ``state/failed/<id>.json`` and ``state/attempts/<id>``: failures by reason, when each task started;
- ``plans/<gen>.json`` and ``state/submissions/<gen>.json``: the rounds, what each asked for, escalations;
- ``releases/<version>/manifest.jsonl``: records per release.

A file that cannot be read is counted and named in the page (``Facts.notes``), never fatal: a report is
most wanted when a run is in trouble.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import UserError
from ..core.licenses import record_license
from ..core.markers import DoneMarker, FailureMarker
from ..core.state import (
    ATTEMPTS,
    DONE,
    FAILED,
    RunDir,
    ids_in,
    iter_records,
    read_done,
    read_failure,
    read_json_object,
)
from ..dataset.organize import NO_EXTENSION, file_extension, record_order
from ..orchestrate.executor import Submission, load_submissions
from ..orchestrate.plan import Plan, generations, load_plan
from ..orchestrate.status import RunStatus, gather_status
from ..record.store import metadata_json_name

log = logging.getLogger(__name__)

SAMPLES_PER_LANGUAGE = 4
LARGEST = 15
_TASK = re.compile(r"g(\d+)-s(\d+)")
_YEAR = re.compile(r"(\d{4})-")
FAILED_TASK_STATES = ("FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "PREEMPTED", "BOOT_FAIL",
                      "DEADLINE", "KILLED", "LOST")


@dataclass
class TaskFacts:
    """One array task (a shard of a plan): what it held, asked for, and used."""

    generation: int
    shard: int
    records: int
    done: int = 0
    seconds: float = 0.0  # the done records' own processing time, summed
    first_start: float | None = None  # the first attempt line naming this task (epoch seconds)
    last_end: float | None = None  # the last record it finished or failed
    kind: str = ""
    time_asked_min: float | None = None
    mem_asked_gb: float | None = None
    escalated: str = ""  # "memory", "time", "memory and time": its plan gave it more than the run's default
    state: str | None = None
    max_rss_gb: float | None = None  # from SLURM accounting
    elapsed_s: float | None = None  # from SLURM accounting

    @property
    def used_s(self) -> float | None:
        """Accounting's Elapsed when known, else from the run directory: first record started to last ended (time
        stamps to the second), or the done records' own seconds added up when that is longer."""
        if self.elapsed_s is not None:
            return self.elapsed_s
        if self.first_start is not None and self.last_end is not None:
            return max(0.0, self.last_end - self.first_start, self.seconds)
        return self.seconds or None


@dataclass
class RoundFacts:
    """One plan (generation): its shards and records, what became of them, why they were planned again."""

    generation: int
    kind: str
    submitted_at: str
    shards: int
    records: int
    outcome: Counter[str] = field(default_factory=Counter)  # done, failed, quarantined, pending (now)
    escalations: Counter[str] = field(default_factory=Counter)  # "memory 8 GB" -> shards
    escalated_records: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # why its records were in an earlier round and here again
    error: str = ""


@dataclass
class Facts:
    """Everything the report draws."""

    run: RunDir
    cfg: Config
    status: RunStatus
    generated_at: float
    # records.jsonl, by the status of each record now
    years: dict[str, Counter[str]] = field(default_factory=dict)
    # the done records
    done_read: int = 0
    finished: list[float] = field(default_factory=list)  # epoch seconds
    downloads: list[tuple[float, int]] = field(default_factory=list)  # (finished, downloads of the record)
    files_by_ext: Counter[str] = field(default_factory=Counter)
    images_by_ext: Counter[str] = field(default_factory=Counter)
    records_by_ext: Counter[str] = field(default_factory=Counter)
    images_per_file: Counter[int] = field(default_factory=Counter)  # images -> files
    images_per_record: list[int] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    licenses: Counter[str] = field(default_factory=Counter)
    largest: list[tuple[int, str, str]] = field(default_factory=list)  # (images, id, title)
    samples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # ext -> [(record id, its largest file)]
    total_images: int = 0
    total_files: int = 0
    # rounds and tasks
    rounds: list[RoundFacts] = field(default_factory=list)
    tasks: list[TaskFacts] = field(default_factory=list)
    accounting: str = ""  # "sacct" when SLURM accounting answered; else why there is none (a sentence)
    # the harvest
    harvest: dict[str, Any] = field(default_factory=dict)
    # releases: (version, records, added, removed)
    releases: list[tuple[str, int, int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be read, for the page

    @property
    def name(self) -> str:
        """The run directory's name with its parent's (``zenodo-hpc/zenodo-ml``, ``zenodo-hpc-demo/run``): the name
        alone may be a word like ``run``, and the scratch folder tells runs of one name apart."""
        root = Path(os.path.abspath(self.run.root))
        return f"{root.parent.name}/{root.name}" if root.parent.name else root.name


def collect(run: RunDir, cfg: Config, *, accounting: bool = True, now: float | None = None) -> Facts:
    """Read the run directory (and SLURM accounting, when ``accounting`` and SLURM's commands are here)."""
    status = gather_status(run, cfg)
    facts = Facts(run, cfg, status, time.time() if now is None else now)
    done_ids = ids_in(run, DONE)
    failures = _failures(run, done_ids)
    by_status = {i: ("quarantined" if f.quarantined else "failed") for i, f in failures.items()}
    by_status.update(dict.fromkeys(done_ids, "done"))
    _read_records(run, facts, by_status)
    task_times: dict[tuple[int, int], list[float]] = {}  # task -> [first start, last end]
    task_done: dict[tuple[int, int], list[float]] = {}  # task -> [done records, their seconds]
    _read_done(run, facts, done_ids, task_times, task_done)
    _read_attempts(run, facts, task_times)
    for failure in failures.values():
        for entry in failure.history:
            if isinstance(entry, dict):
                _note_time(task_times, entry.get("task"), _epoch(entry.get("at")), end=True)
    _rounds_and_tasks(run, cfg, facts, by_status, failures, task_times, task_done, accounting)
    facts.harvest = _harvest(run)
    facts.releases = read_releases(run)
    return facts


# --- records and their markers ------------------------------------------------------------------------------


def _failures(run: RunDir, done_ids: set[str]) -> dict[str, FailureMarker]:
    """Every failure marker of a record that is not done (an unreadable one counts as failed, as in status)."""
    return {record_id: read_failure(run, record_id) or FailureMarker(record_id)
            for record_id in ids_in(run, FAILED) - done_ids}


def _read_records(run: RunDir, facts: Facts, by_status: dict[str, str]) -> None:
    """Records by the year they were created on Zenodo, and by their status now."""
    try:
        for hit in iter_records(run.records):
            created = hit.get("created") or (hit.get("metadata") or {}).get("publication_date") or ""
            match = _YEAR.match(str(created))
            year = match.group(1) if match else "unknown"
            facts.years.setdefault(year, Counter())[by_status.get(str(hit["id"]), "pending")] += 1
    except UserError as exc:
        facts.notes.append(f"records.jsonl could not be read to its end: {exc}")


def _read_done(run: RunDir, facts: Facts, done_ids: set[str], task_times: dict[tuple[int, int], list[float]],
               task_done: dict[tuple[int, int], list[float]]) -> None:
    """The done markers (when, which task, how long) and the record folders' metadata (what is in the data)."""
    largest: list[tuple[int, str, str]] = []
    unreadable: list[str] = []
    for record_id in sorted(done_ids, key=record_order):
        marker_path = run.marker(DONE, record_id)
        try:
            done = read_done(run, record_id) or DoneMarker(record_id)
        except UserError:
            done = DoneMarker(record_id)
        finished = _epoch(done.finished)
        if finished is None:
            try:
                finished = marker_path.stat().st_mtime
            except OSError:
                finished = None
        task = _parse_task(done.task)
        if task is not None:
            counts = task_done.setdefault(task, [0, 0.0])
            counts[0] += 1
            counts[1] += float(done.seconds or 0.0)
            if finished is not None:
                _note_time(task_times, done.task, finished, end=True)
        if finished is not None:
            facts.finished.append(finished)
        try:
            meta = json.loads((run.record_folder(record_id) / metadata_json_name(record_id)).read_bytes())
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            unreadable.append(record_id)
            continue
        facts.done_read += 1
        images = _read_metadata(facts, record_id, meta, finished)
        hit = _object_at(meta, "hit")
        title = str(hit.get("title") or (hit.get("metadata") or {}).get("title") or "")
        item = (images, record_id, title)
        if len(largest) < LARGEST:
            heapq.heappush(largest, item)
        elif item > largest[0]:
            heapq.heapreplace(largest, item)
    facts.largest = sorted(largest, key=lambda t: (-t[0], record_order(t[1])))
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        facts.notes.append(f"{len(unreadable)} done record(s) have no readable metadata JSON in data/ ({shown}): "
                           "left out of the dataset figures")


def _read_metadata(facts: Facts, record_id: str, meta: dict[str, Any], finished: float | None) -> int:
    """One record's metadata into the counts; its number of code images."""
    images = files = 0
    largest_file: dict[str, tuple[int, str]] = {}  # extension -> its file with the most images (first by path)
    for extension, path, segments in _rasterized_files(meta.get("tree")):
        facts.files_by_ext[extension] += 1
        facts.images_by_ext[extension] += segments
        facts.images_per_file[segments] += 1
        images += segments
        files += 1
        best = largest_file.get(extension)
        if segments and (best is None or (-segments, path) < (-best[0], best[1])):
            largest_file[extension] = (segments, path)
    facts.records_by_ext.update(largest_file.keys())
    for extension, (_, path) in sorted(largest_file.items()):
        picked = facts.samples.setdefault(extension, [])
        if extension != NO_EXTENSION and len(picked) < SAMPLES_PER_LANGUAGE:
            picked.append((record_id, path))
    facts.total_files += files
    facts.total_images += images
    facts.images_per_record.append(images)
    stats = _object_at(meta, "stats")
    for reason, count in (stats.get("skipped") or {}).items():
        if isinstance(count, int):
            facts.skipped[str(reason)] += count
    source = _object_at(meta, "source")
    for item in source.get("not_fetched") or []:
        if isinstance(item, dict):
            reason = str(item.get("reason") or "unknown")
            facts.skipped[f"not downloaded: {'error' if reason.startswith('error') else reason}"] += 1
    downloads = len(source.get("archives") or []) + len(source.get("loose") or [])
    if finished is not None and downloads:
        facts.downloads.append((finished, downloads))
    hit = _object_at(meta, "hit")
    facts.licenses[license_name(hit)] += 1
    return images


def _object_at(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` when it is an object, else an empty one: a metadata file written by hand, or by an older
    version, may hold anything there."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _rasterized_files(tree: Any) -> Iterator[tuple[str, str, int]]:
    """``(extension, path, images)`` of every rasterized file of a record's tree (paths as in its images file;
    the extension as :func:`zenodo_hpc.dataset.organize.file_extension` gives it, or ``(none)``)."""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        children = node.get("children") if isinstance(node, dict) else None
        if not isinstance(children, dict):
            continue
        for name, child in children.items():
            if not isinstance(child, dict):
                continue
            if child.get("type") == "dir":
                stack.append((f"{prefix}{name}/", child))
                continue
            segments = child.get("segments")
            if type(segments) is int and not child.get("skipped"):  # not a bool
                yield file_extension(name) or NO_EXTENSION, prefix + name, segments


def license_name(hit: dict[str, Any]) -> str:
    """A record's license id as the exports name it (core/licenses.py: ``metadata.license`` or ``metadata.rights``,
    lower case), ``(none given)`` when it has none."""
    return record_license(hit) or "(none given)"


def _read_attempts(run: RunDir, facts: Facts, task_times: dict[tuple[int, int], list[float]]) -> None:
    """When each task started a record: the attempt lines ``<time>\\t<task>\\t<owner>``."""
    for record_id in ids_in(run, ATTEMPTS):
        try:
            data = run.marker(ATTEMPTS, record_id).read_bytes()
        except OSError:
            continue
        for line in data.split(b"\n"):
            fields = line.split(b"\t")
            if len(fields) >= 2:
                _note_time(task_times, fields[1].decode("utf-8", "replace"),
                           _epoch(fields[0].decode("ascii", "replace")), end=False)


def _note_time(task_times: dict[tuple[int, int], list[float]], task: Any, when: float | None, *, end: bool) -> None:
    """Keep a task's first start and last end: ``[first start, last end]`` (inf / -inf until known)."""
    key = _parse_task(task)
    if key is None or when is None:
        return
    span = task_times.setdefault(key, [float("inf"), float("-inf")])
    if end:
        span[1] = max(span[1], when)
    else:
        span[0] = min(span[0], when)


def _parse_task(task: Any) -> tuple[int, int] | None:
    """``g0002-s00017 (job 12_17)`` -> (2, 17)."""
    match = _TASK.match(str(task or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _epoch(text: Any) -> float | None:
    """``2026-11-29T19:59:20+0000`` (the markers' time stamps) -> epoch seconds."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None


# --- rounds and tasks -----------------------------------------------------------------------------------------


def _rounds_and_tasks(run: RunDir, cfg: Config, facts: Facts, by_status: dict[str, str],
                      failures: dict[str, FailureMarker], task_times: dict[tuple[int, int], list[float]],
                      task_done: dict[tuple[int, int], list[float]], accounting: bool) -> None:
    submissions = {s.generation: s for s in load_submissions(run)}
    states, usage = _task_states(run, list(submissions.values()), facts, accounting)
    previous: dict[str, tuple[int, int]] = {}  # record -> (generation, shard) of the last plan that held it
    counts = {g.generation: g for g in facts.status.generations}
    for generation in generations(run):
        sub = submissions.get(generation)
        kind = sub.kind if sub else (counts[generation].kind if generation in counts else "not submitted")
        try:
            plan = load_plan(run, generation)
        except UserError as exc:
            facts.rounds.append(RoundFacts(generation, kind, sub.submitted_at if sub else "", 0, 0, error=str(exc)))
            continue
        facts.rounds.append(_round(plan, sub, kind, by_status, failures, previous, states))
        for shard in plan.shards:
            key = (generation, shard.index)
            task = TaskFacts(generation, shard.index, len(shard.ids), kind=kind, state=states.get(key))
            done, seconds = task_done.get(key, (0, 0.0))
            task.done, task.seconds = int(done), float(seconds)
            span = task_times.get(key)
            if span and span[0] != float("inf"):
                task.first_start = span[0]
            if span and span[1] != float("-inf"):
                task.last_end = span[1]
            task.mem_asked_gb, task.time_asked_min = _asked(cfg, sub, shard.index, shard.mem_gb, shard.time_min)
            task.escalated = " and ".join(w for w, v in (("memory", shard.mem_gb), ("time", shard.time_min))
                                          if v is not None)
            used = usage.get(key) or {}
            task.max_rss_gb, task.elapsed_s = used.get("max_rss_gb"), used.get("elapsed_s")
            facts.tasks.append(task)
            for record_id in shard.ids:
                previous[record_id] = key


def _round(plan: Plan, sub: Submission | None, kind: str, by_status: dict[str, str],
           failures: dict[str, FailureMarker], previous: dict[str, tuple[int, int]],
           states: dict[tuple[int, int], str]) -> RoundFacts:
    facts = RoundFacts(plan.generation, kind, sub.submitted_at if sub else "", len(plan.shards), plan.records)
    for shard in plan.shards:
        if shard.mem_gb is not None:
            facts.escalations[f"memory {shard.mem_gb:g} GB"] += 1
        if shard.time_min is not None:
            facts.escalations[f"time {shard.time_min} min"] += 1
        if shard.mem_gb is not None or shard.time_min is not None:
            facts.escalated_records += len(shard.ids)
        for record_id in shard.ids:
            facts.outcome[by_status.get(record_id, "pending")] += 1
            if record_id in previous:
                facts.reasons[_why_again(record_id, plan.generation, previous[record_id], by_status, failures,
                                         states)] += 1
    return facts


def _why_again(record_id: str, generation: int, before: tuple[int, int], by_status: dict[str, str],
               failures: dict[str, FailureMarker], states: dict[tuple[int, int], str]) -> str:
    """Why a record of an earlier round is in this one: its failure then, or how its task ended."""
    failure = failures.get(record_id)
    for entry in reversed(failure.history if failure else []):
        task = _parse_task(entry.get("task")) if isinstance(entry, dict) else None
        if task is not None and task[0] < generation:
            return str(entry.get("reason") or "unknown")
    state = states.get(before)
    if state in FAILED_TASK_STATES:
        return f"task ended {state}"
    if by_status.get(record_id) == "done":
        return "failed before (its reason is not kept once done)"
    return "not reached"


def _asked(cfg: Config, sub: Submission | None, shard: int, mem_gb: float | None,
           time_min: int | None) -> tuple[float | None, float | None]:
    """What a task asked for: its own (escalated) resources, its array's, or the run's. Local tasks ask nothing."""
    if sub is None or sub.kind != "slurm":
        return mem_gb, time_min
    for array in sub.arrays:
        if shard in (array.get("shards") or []):
            resources = array.get("resources") or {}
            return (resources.get("mem_gb") if mem_gb is None else mem_gb,
                    resources.get("time_min") if time_min is None else time_min)
    return (cfg.executor.slurm.mem_gb if mem_gb is None else mem_gb,
            cfg.executor.slurm.time_min if time_min is None else time_min)


def _task_states(run: RunDir, submissions: list[Submission], facts: Facts,
                 accounting: bool) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], dict[str, Any]]]:
    """Each task's state and, from SLURM accounting, its MaxRSS and Elapsed; ``facts.accounting`` says which."""
    from ..orchestrate.submit import slurm_shard_states

    local = [s for s in submissions if s.kind != "slurm"]
    on_slurm = [s for s in submissions if s.kind == "slurm"]
    states = slurm_shard_states(run, local) if local else {}
    usage: dict[tuple[int, int], dict[str, Any]] = {}
    if not on_slurm:
        facts.accounting = ("this run's tasks ran as local processes, which record no memory use; times are the "
                            "run directory's (first record started to last record ended)" if local else
                            "nothing was submitted yet")
        return states, usage
    if not accounting:
        facts.accounting = "SLURM accounting was not asked (report without accounting)"
        return states, usage
    if shutil.which("sacct") is None:
        facts.accounting = ("SLURM accounting cannot be reached from here (no sacct on this machine): memory per task "
                            "is not shown, times are the run directory's; run `zenodo-hpc report` on the cluster for "
                            "them")
        return states, usage
    try:
        states.update(slurm_shard_states(run, on_slurm, usage=usage))
    except Exception as exc:  # a report goes on without accounting, saying why
        facts.accounting = f"SLURM accounting did not answer ({type(exc).__name__}: {exc})"
        return states, usage
    if any(u.get("max_rss_gb") or u.get("elapsed_s") for u in usage.values()):
        facts.accounting = "sacct"
    else:
        facts.accounting = ("SLURM accounting has no memory or time for these tasks (accounting storage disabled, "
                            "or none has ended yet): times are the run directory's")
    return states, usage


# --- the harvest, releases ----------------------------------------------------------------------------------


def _harvest(run: RunDir) -> dict[str, Any]:
    """The harvest jobs' counts, added up (``state/harvest/<job>.json``)."""
    out: dict[str, Any] = {"jobs": 0, "added": 0, "excluded": 0, "duplicates": 0, "skipped": 0, "done": True,
                           "requests": None}
    for path in sorted(run.harvest.glob("*.json")):
        try:
            data = read_json_object(path) or {}
        except UserError:
            continue
        out["jobs"] += 1
        for key in ("added", "excluded", "duplicates"):
            out[key] += int(data.get(key) or 0)
        out["skipped"] += sum(v for v in (data.get("skipped") or {}).values() if isinstance(v, int))
        out["done"] = out["done"] and bool(data.get("done"))
        if isinstance(data.get("requests"), int):  # not recorded by every version
            out["requests"] = (out["requests"] or 0) + data["requests"]
    return out


def version_key(name: str) -> tuple[Any, ...]:
    """``v2`` before ``v10``; ``2024-01`` before ``2024-06``: numbers as numbers, the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def read_releases(run: RunDir) -> list[tuple[str, int, int, int]]:
    """``(version, records, added, removed)`` per release folder holding a ``manifest.jsonl``, oldest first.

    A manifest line is a JSON object with an ``id``; one with a ``status`` other than ``done`` is not in the
    release (the image's own manifest lists every harvested record, with why it is not there).
    """
    try:
        versions = sorted((p.name for p in run.releases.iterdir()
                           if p.is_dir() and run.release_manifest(p.name).is_file()), key=version_key)
    except OSError:
        return []
    out = []
    before: set[str] = set()
    for version in versions:
        ids: set[str] = set()
        try:
            with open(run.release_manifest(version), encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and "id" in entry and entry.get("status", "done") == "done":
                        ids.add(str(entry["id"]))
        except OSError:
            continue
        out.append((version, len(ids), len(ids - before), len(before - ids)))
        before = ids
    return out


def overall_rate_per_min(facts: Facts) -> float | None:
    """Records per minute over the whole run, from the first to the last done record (None under two)."""
    if len(facts.finished) < 2:
        return None
    span = max(facts.finished) - min(facts.finished)
    return (len(facts.finished) - 1) / span * 60 if span > 0 else None

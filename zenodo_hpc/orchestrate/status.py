"""``status``: what a run has done, from the run directory alone (and SLURM's view of its tasks).

No driver needs to be alive. Record counts come from directory listings of the markers (no file is read
for a done record), failures from the few failure markers, task states from one ``sacct`` call
(``squeue`` when accounting is off), the time left from the completion times of recent records.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.config import Config
from ..core.errors import UserError
from ..core.liveness import LOST, UNCHECKABLE
from ..core.state import DONE, RunDir, ids_named, record_outcomes
from ..dataset.check_summary import check_for_status, format_check
from ..dataset.removals import excluded
from .chain import load_chain, utc_epoch
from .executor import load_submissions
from .plan import Plan, generations, load_plan
from .submit import slurm_shard_states

RATE_WINDOW_S = 15 * 60


@dataclass
class ShardCounts:
    generation: int = 0
    kind: str = ""
    total: int = 0
    done: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    unknown: int = 0
    unqueued: int = 0  # not yet queued: the finishing job queues them as room in the queue frees
    failed_states: dict[str, int] = field(default_factory=dict)  # OUT_OF_MEMORY, TIMEOUT, CANCELLED, ...
    job_ids: list[str] = field(default_factory=list)
    efficiency: list[dict[str, Any]] = field(default_factory=list)  # per resource class: asked vs used
    elsewhere: dict[str, int] = field(default_factory=dict)  # local tasks running on another host: host -> shards
    error: str = ""  # the plan is unreadable: what to do (no shard counted)


@dataclass
class RunStatus:
    run_dir: str
    records: int
    done: int
    failed: int
    quarantined: int
    pending: int
    failed_reasons: dict[str, int]
    quarantined_reasons: dict[str, int]
    generations: list[ShardCounts]
    rate_per_min: float | None
    eta_seconds: float | None
    state_source: str
    chain: dict[str, Any] | None = None  # the chain of rounds on SLURM: round, what is queued next
    last_check: dict[str, Any] | None = None  # what the check before the last release found (purged, damaged)
    excluded: int = 0  # harvested records dataset.exclude leaves out of every release (done ones stay here)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), **self.budget_wait()}

    def budget_wait(self) -> dict[str, Any]:
        """``{"resumes_at": UTC, "resumes_in_s": seconds}`` while the chain waits for Zenodo's request budget
        (from chain.json); ``{"resumes_at": None, ...}`` otherwise."""
        chain = self.chain or {}
        when = utc_epoch(chain.get("resumes_at")) if chain.get("state") == "running" else None
        if when is None or when <= time.time():
            return {"resumes_at": None, "resumes_in_s": None}
        return {"resumes_at": chain["resumes_at"], "resumes_in_s": round(when - time.time(), 1)}

    @property
    def complete(self) -> bool:
        return self.done + self.quarantined >= self.records


def completion_rate(run: RunDir, now: float | None = None) -> float | None:
    """Records completed per minute over the last 15 minutes, from the done markers' times.

    Each marker's time is read once per process (a ``stat`` each: 300,000 of them took seconds, on a cluster's
    scratch far more, and a waiting ``run`` asks every few seconds): a marker is written once to a new file (a
    temporary name, then a rename) and never touched again, so its name and inode stand for its time
    (:class:`_MarkerTimes`).
    """
    return done_and_rate(run, now)[1]


def done_and_rate(run: RunDir, now: float | None = None) -> tuple[set[str], float | None]:
    """One listing of ``state/done`` for both what ``status`` needs of it: the ids of the records done (those of
    :func:`~zenodo_hpc.core.state.ids_in`) and the :func:`completion_rate`."""
    now = time.time() if now is None else now
    times = _MARKER_TIMES.setdefault(str(run.markers(DONE)), _MarkerTimes())
    times.forget_old_before(now)
    names: list[str] = []
    recent = 0
    oldest = now
    try:
        with os.scandir(run.markers(DONE)) as entries:
            for entry in entries:
                names.append(entry.name)
                mtime = times.recent_mtime(entry, now)
                if mtime is not None:
                    recent += 1
                    oldest = min(oldest, mtime)
    except FileNotFoundError:
        return set(), None
    if recent < 2:
        return ids_named(names), None
    span = max(now - oldest, 60.0)
    return ids_named(names), recent / span * 60


@dataclass
class _MarkerTimes:
    """The times of one folder's done markers, kept between calls of :func:`completion_rate`.

    A marker is known by its name's hash and its inode (the listing gives both, no ``stat``). One seen older than the
    window is only remembered as such (``old``, about 60 bytes a marker; ``seen_at``: the latest moment one was
    found so): it stays so for any later moment (a call about an earlier one starts again). The others keep
    their time (``recent``: a window's worth). A marker deleted and written again under its inode number (a
    redone record, on a file system that reuses numbers) would keep its old time: the rate, an estimate, would
    miss that one record.
    """

    old: set[int] = field(default_factory=set)
    seen_at: float = float("-inf")
    recent: dict[int, float] = field(default_factory=dict)

    def forget_old_before(self, now: float) -> None:
        """A call about an earlier moment than the last: what was old then may not be old now."""
        if now < self.seen_at:
            self.old.clear()
            self.seen_at = float("-inf")

    def recent_mtime(self, entry: os.DirEntry[str], now: float) -> float | None:
        """The marker's time; None when it is older than the window before ``now`` (or gone since the listing)."""
        key = hash(entry.name) ^ entry.inode()  # no tuple: 300,000 of them would wake the garbage collector
        if key in self.old:
            return None
        mtime = self.recent.get(key)
        if mtime is None:
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:  # redone (pack found it damaged) since the listing
                return None
        if now - mtime > RATE_WINDOW_S:
            self.recent.pop(key, None)
            self.old.add(key)
            self.seen_at = max(self.seen_at, now)
            return None
        self.recent[key] = mtime
        return mtime


_MARKER_TIMES: dict[str, _MarkerTimes] = {}


def gather_status(run: RunDir, cfg: Config | None = None) -> RunStatus:
    """The run's counts, shards and chain; with ``cfg``, also the records its ``dataset.exclude`` leaves out."""
    done, rate = done_and_rate(run)  # one listing of state/done (300,000 markers in a full run) for both
    outcomes = record_outcomes(run, done=done)
    records, done_ids, failed, quarantined = outcomes.records, outcomes.done_ids, outcomes.failed, outcomes.quarantined
    submissions = load_submissions(run)
    usage: dict[tuple[int, int], dict[str, Any]] = {}
    states = slurm_shard_states(run, submissions, usage=usage) if submissions else {}
    per_generation = []
    by_generation = {s.generation: s for s in submissions}
    for generation in generations(run):
        sub = by_generation.get(generation)
        try:
            counts = _shard_counts(run, generation, sub, states, done_ids)
        except UserError as exc:  # an unreadable plan: the rest of the run is still worth showing
            counts = ShardCounts(generation, sub.kind if sub else "not submitted", error=str(exc))
        counts.efficiency = efficiency(sub, usage) if sub is not None and sub.kind == "slurm" else []
        per_generation.append(counts)
    n_failed, n_quarantined, pending = sum(failed.values()), sum(quarantined.values()), outcomes.pending
    left = pending + n_failed
    eta = left / rate * 60 if rate and left else (0.0 if not left else None)
    source = "sacct/squeue" if any(s.kind == "slurm" for s in submissions) else "run directory"
    chain = load_chain(run)
    return RunStatus(str(run.root), records, len(done_ids), n_failed, n_quarantined, pending, dict(failed),
                     dict(quarantined), per_generation, rate, eta, source, chain.to_json() if chain else None,
                     check_for_status(run, done_ids), count_excluded(run, cfg))


def count_excluded(run: RunDir, cfg: Config | None) -> int:
    """How many harvested records ``dataset.exclude`` leaves out (0 without a list: records.jsonl is not read)."""
    if cfg is None or not cfg.dataset.exclude:
        return 0
    return len(excluded(run, cfg))


def efficiency(sub: Any, usage: dict[tuple[int, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory and time asked against the most any task of the array used (``seff``'s question), per array.

    Tasks shorter than SLURM's sampling interval report no memory; an array none of whose tasks ended yet
    has nothing to say.
    """
    out = []
    for array in sub.arrays:
        asked = array.get("resources") or {}
        used = [usage[(sub.generation, shard)] for shard in array["shards"] if (sub.generation, shard) in usage]
        mem = [u["max_rss_gb"] for u in used if u.get("max_rss_gb")]
        secs = [u["elapsed_s"] for u in used if u.get("elapsed_s")]
        if not (mem or secs):
            continue
        out.append({"job_id": array["job_id"], "tasks": len(used), "mem_asked_gb": asked.get("mem_gb"),
                    "mem_used_gb": round(max(mem), 3) if mem else None, "time_asked_min": asked.get("time_min"),
                    "time_used_min": round(max(secs) / 60, 2) if secs else None})
    return out


def _shard_counts(run: RunDir, generation: int, sub: Any, states: dict[tuple[int, int], str],
                  done_ids: set[str]) -> ShardCounts:
    from .accounting import ACTIVE_STATES, GONE

    plan = _plan(run, generation)
    counts = ShardCounts(generation, sub.kind if sub else _not_submitted(run, generation), len(plan.shards))
    if sub is not None and sub.kind == "slurm":
        counts.job_ids = [a["job_id"] for a in sub.arrays]
    failed_states: Counter[str] = Counter()
    unqueued = set(sub.unqueued) if sub is not None and sub.kind == "slurm" else set()
    for shard in plan.shards:
        state = states.get((generation, shard.index))
        if shard.index in unqueued:
            counts.unqueued += 1
        elif state in ("RUNNING", UNCHECKABLE):
            counts.running += 1
            if state == UNCHECKABLE:
                host = str(sub.tasks[str(shard.index)].get("host"))
                counts.elsewhere[host] = counts.elsewhere.get(host, 0) + 1
        elif state == "COMPLETED" or (state in (None, GONE, LOST) and all(i in done_ids for i in shard.ids)):
            counts.done += 1  # records that failed inside a completed task are counted as records
        elif state in ACTIVE_STATES or sub is None or state is None and sub.kind != "slurm":
            counts.pending += 1  # local: never started (its driver ended first)
        elif state is None:  # SLURM forgot it: finished, and without accounting nobody can say how
            counts.unknown += 1
        else:  # FAILED, OUT_OF_MEMORY, TIMEOUT, CANCELLED, NODE_FAIL, KILLED: shown even when a later round
            counts.failed += 1  # finished the task's records, so that what happened stays in view
            failed_states[state] += 1
    counts.failed_states = dict(failed_states)
    return counts


def _plan(run: RunDir, generation: int) -> Plan:
    """:func:`load_plan`, kept between calls while the file stays as it is (same size, time and inode: a plan is
    written to a new file and renamed into place): a plan of 300,000 records takes half a second to read, and a
    waiting ``run`` asks every few seconds."""
    path = run.plan(generation)
    try:
        info = path.stat()
        key = (info.st_size, info.st_mtime_ns, info.st_ino)
    except OSError:
        key = None  # load_plan says what is wrong
    kept = _PLANS.get(str(path))
    if key is not None and kept is not None and kept[0] == key:
        return kept[1]
    plan = load_plan(run, generation)
    if key is not None:
        _PLANS[str(path)] = (key, plan)
    return plan


_PLANS: dict[str, tuple[tuple[int, int, int], Plan]] = {}


def _not_submitted(run: RunDir, generation: int) -> str:
    """The kind shown for a plan without a submission: none, or one that is unreadable (warned about)."""
    return "submission unreadable" if run.submission(generation).exists() else "not submitted"


def _reasons(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def utc_clock(when: float) -> str:
    """``2026-12-07 14:05:12 UTC``: a time for a reader anywhere (rounded up: never before it)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(math.ceil(when)))


def resumes_text(when: float, now: float | None = None) -> str:
    """``2026-12-07 14:05:12 UTC (in 42 min)``: when the chain resumes, and how long from ``now``."""
    left = max(0.0, when - (time.time() if now is None else now))
    return f"{utc_clock(when)} (in {_duration(left)})"


def format_status(status: RunStatus) -> str:
    lines = [f"run {status.run_dir}: {status.records} records"]
    lines.append(f"  done         {status.done:7d}")
    lines.append(f"  failed       {status.failed:7d}" + (f"  ({_reasons(status.failed_reasons)})"
                                                         if status.failed else ""))
    lines.append(f"  quarantined  {status.quarantined:7d}" + (f"  ({_reasons(status.quarantined_reasons)})"
                                                              if status.quarantined else ""))
    lines.append(f"  pending      {status.pending:7d}")
    if status.excluded:
        lines.append(f"  excluded     {status.excluded:7d}  (by dataset.exclude: left out of every release)")
    if status.generations:
        lines.append(f"shards (states from {status.state_source}):")
        for g in status.generations:
            if g.error:
                lines.append(f"  plan {g.generation} [{g.kind}]: {g.error}")
                continue
            elsewhere = "".join(f" ({n} on {host}: cannot be checked from here)" for host, n in g.elsewhere.items())
            extra = f"  ({_reasons(g.failed_states)})" if g.failed_states else ""
            jobs = f"  jobs {', '.join(g.job_ids)}" if g.job_ids else ""
            lines.append(f"  plan {g.generation} [{g.kind}]: {g.total} shards: {g.done} done, {g.running} running"
                         f"{elsewhere}, {g.pending} pending, {g.failed} failed{extra}"
                         f"{_unqueued_text(g, status.chain)}"
                         f"{f', {g.unknown} ended (no accounting to say how)' if g.unknown else ''}{jobs}")
            lines += [f"    {_efficiency_line(e)}" for e in g.efficiency]
    if status.chain:
        lines.append(_chain_line(status.chain))
    resumes = utc_epoch(status.budget_wait()["resumes_at"])
    if resumes is not None:
        lines.append(f"waiting for Zenodo's request budget: the next round starts at {resumes_text(resumes)}; its "
                     "records keep their attempts and their place")
    if status.last_check:
        lines.append(format_check(status.last_check))
    if status.complete:
        lines.append("complete: every record is done or quarantined")
    elif status.rate_per_min:
        eta = _duration(status.eta_seconds) if status.eta_seconds is not None else "unknown"
        lines.append(f"rate {status.rate_per_min:.1f} records/min over the last 15 min; time left about {eta}")
    else:
        lines.append("time left: unknown (no record finished in the last 15 min)")
    if status.failed and not status.complete:
        lines.append(f"to retry the failed records: zenodo-hpc resume {status.run_dir}")
    return "\n".join(lines)


def efficiency_parts(e: dict[str, Any]) -> list[str]:
    """``memory up to 1.2 of 4 GB asked (30%)`` and ``time up to 3.1 of 60 min (5%)``, each when known:
    what ``status`` and the report say of one array's usage."""
    parts = []
    if e.get("mem_used_gb") is not None and e.get("mem_asked_gb"):
        parts.append(f"memory up to {e['mem_used_gb']:.2f} of {e['mem_asked_gb']:g} GB asked "
                     f"({100 * e['mem_used_gb'] / e['mem_asked_gb']:.0f}%)")
    if e.get("time_used_min") is not None and e.get("time_asked_min"):
        parts.append(f"time up to {e['time_used_min']:.1f} of {e['time_asked_min']} min "
                     f"({100 * e['time_used_min'] / e['time_asked_min']:.0f}%)")
    return parts


def _efficiency_line(e: dict[str, Any]) -> str:
    """``job 12 (3 tasks ended): memory up to 1.2 of 4 GB asked (30%), time up to 3.1 of 60 min (5%)``."""
    return f"job {e['job_id']} ({e['tasks']} tasks ended): " + ", ".join(efficiency_parts(e))


def _unqueued_text(counts: ShardCounts, chain: dict[str, Any] | None) -> str:
    """``, 18 not yet queued (...)``: tasks of a round fed in batches, which its chain's finishing jobs queue; once
    that chain has stopped or another has taken over, nobody will."""
    if not counts.unqueued:
        return ""
    if chain and chain.get("state") == "running" and counts.generation in (chain.get("generations") or []):
        return f", {counts.unqueued} not yet queued (queued in batches as room frees)"
    return f", {counts.unqueued} never queued (their chain ended first: resume plans what is not done)"


def _chain_line(chain: dict[str, Any]) -> str:
    """Where the chain of rounds stands: which round, what is queued next, or how it ended."""
    pack_job = chain.get("pack_job")
    if chain.get("state") == "running" and pack_job and pack_job == chain.get("finishing_job"):
        return f"rounds: {chain.get('message')}"  # the pack job is queued: it packs (or releases)
    if chain.get("state") == "running" and chain.get("finishing_job"):
        return (f"rounds: {chain.get('rounds')} of at most {chain.get('max_rounds')}; finishing job "
                f"{chain['finishing_job']} decides when they end (another round, or the image)")
    return f"rounds: {chain.get('message') or chain.get('state')}"


def status_json(status: RunStatus) -> str:
    return json.dumps(status.to_json(), indent=1, sort_keys=True)

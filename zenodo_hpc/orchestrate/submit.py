"""``submit`` and ``resume``: plan what is not complete and hand it to an executor, once.

Both are the same operation — datatrove's lesson: resume is just running again. The records to plan are
the harvested ones minus those complete (a marker in ``state/done``), quarantined (failed
``executor.max_attempts`` times), or still queued or running in SLURM. A shard that died of
``OUT_OF_MEMORY`` or ``TIMEOUT`` has its records planned again with twice the memory or time (up to
``executor.slurm.max_mem_gb``/``max_time_min``). A lock in the run directory keeps two drivers from
submitting the same records twice.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.commands import program
from ..core.config import Config
from ..core.errors import UserError
from ..core.liveness import LOCAL_ACTIVE, UNCHECKABLE, local_task_state
from ..core.markers import FailureMarker
from ..core.state import (
    DONE,
    FAILED,
    RunDir,
    attempts_of,
    driver_lock,
    ids_in,
    mark_failed,
    read_failure,
)
from .executor import (
    Executor,
    Resources,
    Submission,
    TaskGroup,
    load_submissions,
    resolve_kind,
)
from .local import DebugExecutor, LocalExecutor
from .plan import (
    Plan,
    RecordRef,
    Shard,
    generations,
    load_plan,
    make_shards,
    next_generation,
    scan_records,
    write_plan,
)

if TYPE_CHECKING:
    from .slurm import JobPython

log = logging.getLogger(__name__)

ESCALATING_STATES = {"OUT_OF_MEMORY": "mem", "TIMEOUT": "time"}


@dataclass
class RunSnapshot:
    """What the run directory (and SLURM) says right now, for planning."""

    records: list[RecordRef]
    done: set[str]
    quarantined: set[str]
    active: set[str]  # in shards that SLURM still has queued or running
    active_jobs: set[str] = field(default_factory=set)  # array jobs with tasks queued or running
    escalated: dict[str, Resources] = field(default_factory=dict)
    newly_quarantined: list[str] = field(default_factory=list)

    def pending(self) -> list[RecordRef]:
        skip = self.done | self.quarantined | self.active
        return [r for r in self.records if r.id not in skip]


@dataclass
class SubmitResult:
    plan: Plan | None
    submission: Submission | None
    snapshot: RunSnapshot
    description: str = ""
    kind: str = ""
    follow_up_error: str | None = None  # the arrays were queued, their finishing job was not
    stated: bool = False  # a dry run of a stated number of records (--records), not of the harvest

    @property
    def submitted(self) -> bool:
        return self.submission is not None


def quarantined_ids(run: RunDir) -> set[str]:
    """Records set aside after ``max_attempts`` failures (their failure marker says so)."""
    out = set()
    for record_id in ids_in(run, FAILED):
        failure = read_failure(run, record_id)
        if failure and failure.quarantined:
            out.add(record_id)
    return out


def shard_records(run: RunDir) -> dict[tuple[int, int], Shard]:
    """Every shard of every plan, by (generation, shard index)."""
    return {(g, s.index): s for g in generations(run) for s in load_plan(run, g).shards}


def slurm_shard_states(run: RunDir, submissions: list[Submission], active_jobs: set[str] | None = None,
                       usage: dict[tuple[int, int], dict[str, Any]] | None = None) -> dict[tuple[int, int], str]:
    """(generation, shard) -> the state SLURM (or the local executor) last gave that task.

    ``active_jobs``, when given, receives the ids of array jobs with a task still queued or running;
    ``usage`` receives each SLURM task's memory and time used (MaxRSS, Elapsed).
    """
    states: dict[tuple[int, int], str] = {}
    slurm_subs = [s for s in submissions if s.kind == "slurm"]
    if slurm_subs:
        from .accounting import ACTIVE_STATES, job_ids, shard_states, task_states

        tasks = task_states(job_ids(slurm_subs))
        for sub in slurm_subs:
            for shard, state in shard_states(sub, tasks).items():
                states[(sub.generation, shard)] = state.state
                if usage is not None:
                    usage[(sub.generation, shard)] = state.usage()
        if active_jobs is not None:
            active_jobs.update(t.split("_")[0] for t, st in tasks.items() if st.state in ACTIVE_STATES)
    for sub in submissions:
        if sub.kind != "slurm":
            for shard_key, task in sub.tasks.items():  # the keys of a submission's JSON: strings
                states[(sub.generation, int(shard_key))] = local_task_state(task)  # LOST once its process is gone
    return states


def records_to_be_queued(submissions: list[Submission], shards: dict[tuple[int, int], Shard],
                         done: set[str]) -> set[str]:
    """Records of shards that a live finishing job is still to queue (a round fed in batches). Once that job is
    gone (cancelled, failed), nobody will queue them: they are pending again, for the next resume."""
    from .accounting import job_active

    out: set[str] = set()
    for sub in submissions:
        if sub.kind == "slurm" and sub.unqueued and job_active(sub.finishing_job):
            for index in sub.unqueued:
                shard = shards.get((sub.generation, index))
                out.update(i for i in (shard.ids if shard else []) if i not in done)
    return out


def take_snapshot(run: RunDir, cfg: Config) -> RunSnapshot:
    from .accounting import ACTIVE_STATES

    records = list(scan_records(run.records))
    if not records:
        raise UserError(f"{run.records} holds no records: run `zenodo-hpc harvest -c CONFIG` first")
    ids = {record.id for record in records}  # markers of ids that are no record of the run count for nothing
    snapshot = RunSnapshot(records, ids_in(run, DONE) & ids, quarantined_ids(run) & ids, set())
    submissions = load_submissions(run, strict=True)
    if not submissions:
        return snapshot
    usage: dict[tuple[int, int], dict[str, Any]] = {}
    states = slurm_shard_states(run, submissions, snapshot.active_jobs, usage)
    shards = shard_records(run)
    snapshot.active.update(records_to_be_queued(submissions, shards, snapshot.done))
    base = Resources.from_config(cfg)
    escalated: dict[str, Resources] = {}
    node_mem_gb = largest_node_mem_gb(cfg) if "OUT_OF_MEMORY" in states.values() else None
    for (generation, index), state in sorted(states.items()):
        shard = shards.get((generation, index))
        if shard is None:
            continue
        unfinished = [i for i in shard.ids if i not in snapshot.done]
        kind = sub_kind(submissions, generation)
        if state in ACTIVE_STATES and kind == "slurm" or kind == "local" and state in LOCAL_ACTIVE:
            snapshot.active.update(unfinished)
        elif kind == "local" and state == UNCHECKABLE and unfinished:
            log.warning("plan %d, shard %d: its worker ran on another host and cannot be checked from here; its %d "
                        "unfinished records are planned again (stop that worker first if it still runs)", generation,
                        index, len(unfinished))
        elif state in ESCALATING_STATES:
            before = Resources(base.partition, shard.time_min or base.time_min, shard.mem_gb or base.mem_gb,
                               base.cpus_per_task, base.setup, base.additional)
            used = usage.get((generation, index), {})
            after = escalate(before, ESCALATING_STATES[state], cfg, used_gb=used.get("max_rss_gb"),
                             node_mem_gb=node_mem_gb)
            for record_id in unfinished:  # a record in two dead shards gets the larger of the two
                escalated[record_id] = _larger(escalated.get(record_id), after)
    snapshot.escalated = escalated
    return snapshot


def largest_node_mem_gb(cfg: Config) -> float | None:
    """The memory of the largest node of the arrays' partition (``sinfo``), GB; None when sinfo cannot say."""
    from .feasibility import read_node_sizes

    sizes = read_node_sizes(cfg.executor.slurm.partition)
    return sizes.mem_mb / 1024 if sizes else None


def sub_kind(submissions: list[Submission], generation: int) -> str:
    return next((s.kind for s in submissions if s.generation == generation), "")


def escalate(resources: Resources, what: str, cfg: Config, *, used_gb: float | None = None,
             node_mem_gb: float | None = None) -> Resources:
    """More memory (after OUT_OF_MEMORY) or time (after TIMEOUT), capped by the config.

    Memory: what the task was seen to use (MaxRSS) with a quarter to spare, and at least twice what it
    had, since a task killed at its limit used at least all of it; at most ``executor.slurm.max_mem_gb`` and
    ``node_mem_gb``, the largest node of the partition (sbatch would refuse more, and the round with it).
    Time: twice.
    """
    caps = cfg.executor.slurm
    mem, time_min = resources.mem_gb, resources.time_min
    if what == "mem":
        needed = max(mem * 2, (used_gb or 0.0) * 1.25)
        mem = min(caps.max_mem_gb, node_mem_gb or caps.max_mem_gb, round(needed, 3))
    else:
        time_min = min(caps.max_time_min, time_min * 2)
    return Resources(resources.partition, time_min, mem, resources.cpus_per_task, resources.setup,
                     resources.additional)


def _larger(one: Resources | None, other: Resources) -> Resources:
    if one is None:
        return other
    return Resources(other.partition, max(one.time_min, other.time_min), max(one.mem_gb, other.mem_gb),
                     other.cpus_per_task, other.setup, other.additional)


def quarantine_exhausted(run: RunDir, cfg: Config, snapshot: RunSnapshot) -> None:
    """Records tried ``max_attempts`` times are set aside now, with their last reason (the worker's or
    ``worker_died`` when the task was killed mid-record every time)."""
    limit = cfg.executor.max_attempts
    for ref in snapshot.pending():
        attempts = attempts_of(run, ref.id)
        if attempts < limit:
            continue
        failure = read_failure(run, ref.id) or FailureMarker(ref.id)
        mark_failed(run, ref.id, reason=failure.reason or "worker_died",
                    message=failure.message or f"the worker stopped during all {attempts} attempts",
                    attempt=attempts, task="resume", quarantined=True)
        snapshot.quarantined.add(ref.id)
        snapshot.newly_quarantined.append(ref.id)


def plan_groups(pending: list[RecordRef], snapshot: RunSnapshot, cfg: Config,
                generation: int) -> tuple[Plan, list[TaskGroup]]:
    """Shards by resources: escalated records get their own shards with more memory or time."""
    base = Resources.from_config(cfg)
    by_resources: dict[tuple[float, int], list[RecordRef]] = defaultdict(list)
    for ref in pending:
        r = snapshot.escalated.get(ref.id, base)
        by_resources[(r.mem_gb, r.time_min)].append(ref)
    shards: list[Shard] = []
    groups: list[TaskGroup] = []
    for (mem, time_min), refs in sorted(by_resources.items()):
        resources = Resources(base.partition, time_min, mem, base.cpus_per_task, base.setup, base.additional)
        group_shards = make_shards(refs, cfg.executor.records_per_shard)
        first = len(shards)
        for offset, shard in enumerate(group_shards):
            shard.index = first + offset
            if (mem, time_min) != (base.mem_gb, base.time_min):
                shard.mem_gb, shard.time_min = mem, time_min
        shards += group_shards
        groups.append(TaskGroup([s.index for s in group_shards], resources))
    return Plan(generation, shards), groups


def start_after(groups: list[TaskGroup], when: float) -> None:
    """No task of ``groups`` starts before ``when`` (epoch): sbatch's ``--begin``, in the local time sbatch reads."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(math.ceil(when)))
    for group in groups:
        group.resources.additional = {**group.resources.additional, "begin": stamp}


def make_executor(kind: str, cfg: Config) -> Executor:
    """The executor of ``kind`` (``auto`` resolved): the plugin chosen here, so the executor module knows none."""
    kind = resolve_kind(kind)
    if kind == "slurm":
        from .slurm import SlurmExecutor
        from .worker import ShardTask

        return SlurmExecutor(cfg, task=ShardTask(), python=job_python(cfg))
    if kind == "local":
        return LocalExecutor(cfg)
    if kind == "debug":
        from .worker import run_shard

        return DebugExecutor(run_shard)
    raise UserError(f"unknown executor {kind!r}: use auto, slurm, local or debug")


def job_python(cfg: Config) -> JobPython:
    """The interpreter the SLURM jobs run, and why.

    With ``executor.slurm.setup`` lines, ``python3`` of the environment they make on the node: a path of this
    machine may mean nothing there. Without, this interpreter (the jobs inherit this environment), provided
    the nodes can see it: else a real submit refuses, saying what to do (``JobPython.problem``).
    """
    from .slurm import JobPython, this_python

    if cfg.executor.slurm.setup:
        return JobPython("python3", "python3 of the environment that executor.slurm.setup makes on the node")
    why = f"{sys.executable}, this interpreter (executor.slurm.setup is empty: the jobs inherit this environment)"
    return JobPython(this_python().command, *judge_visibility(cfg, why))


def judge_visibility(cfg: Config, why: str) -> tuple[str, str | None]:
    """``why`` with what is known of whether the compute nodes see this interpreter and this package, and the
    reason to refuse it (None: none). Refused when either lies on this machine's own disk and ``sinfo`` names
    the nodes, other machines; when sinfo cannot tell (no SLURM here, no such partition), a caution only."""
    from ..record.extract import SHARED_FILESYSTEMS, filesystem_type
    from .accounting import node_hosts, this_host

    paths = (sys.prefix, str(Path(__file__).resolve().parents[1]))  # the environment, and the package in it
    local = [(path, kind) for path in paths if (kind := filesystem_type(path)) and kind not in SHARED_FILESYSTEMS]
    if not local:
        return why, None
    path, kind = local[0]
    hosts = node_hosts(cfg.executor.slurm.partition)
    if hosts is None:
        return f"{why}; {path} is on this machine's own disk ({kind}), which the nodes must see (sinfo cannot " \
               "tell where they are)", None
    if hosts == {this_host()}:  # a cluster of one machine: its nodes see its disk
        return why, None
    return why, (f"the jobs would run {sys.executable}, but {path} is on this machine's own disk ({kind}), which the "
                 "compute nodes do not see: install zenodo-hpc on a file system they share and put the lines that "
                 "make its environment (module load ..., source .../bin/activate) in executor.slurm.setup; the jobs "
                 "then run that environment's python3 (docs/cluster-guide.md)")


def stated_snapshot(records: int) -> RunSnapshot:
    """A fresh run of ``records`` records of equal size, for a dry run before any harvest (``--records``)."""
    if records < 1:
        raise UserError(f"--records must be 1 or more, got {records}")
    return RunSnapshot([RecordRef(str(i), i, 0) for i in range(1, records + 1)], set(), set(), set())


def submit_pending(run: RunDir, cfg: Config, *, kind: str | None = None, dry_run: bool = False,
                   what: str = "submit", follow_up: Callable[[str], Any] | None = None,
                   stated_records: int | None = None, begin: float | None = None) -> SubmitResult:
    """Plan and submit every record that is not complete; nothing when there is nothing to do.

    On SLURM, ``follow_up`` (a callable taking the run directory) is queued as one more job that starts
    when every array of the run has ended, whatever their outcome: the finishing job (zenodo_hpc/drivers/finish.py).
    ``stated_records`` (a dry run only) plans that many records of a fresh run instead of the harvest.
    ``begin`` (epoch): on SLURM no task starts before then (``sbatch --begin``: Zenodo's budget returns then).
    """
    kind = resolve_kind(kind or cfg.executor.kind)
    if stated_records is not None and not dry_run:
        raise UserError("a stated number of records (--records) is for a dry run only (--dry-run)")
    if dry_run:
        return _plan_and_submit(run, cfg, kind, dry_run=True, follow_up=follow_up, stated_records=stated_records)
    with driver_lock(run, what):
        return _plan_and_submit(run, cfg, kind, dry_run=False, follow_up=follow_up, begin=begin)


def _plan_and_submit(run: RunDir, cfg: Config, kind: str, *, dry_run: bool,
                     follow_up: Callable[[str], Any] | None, stated_records: int | None = None,
                     begin: float | None = None) -> SubmitResult:
    from .slurm import SlurmExecutor

    try:
        snapshot = take_snapshot(run, cfg) if stated_records is None else stated_snapshot(stated_records)
    except UserError as exc:
        if dry_run and stated_records is None and not any(scan_records(run.records)):  # a preview needs none
            raise UserError(f"{exc}; or preview the plan of N records without one: --dry-run --records N") from None
        raise
    if not dry_run:
        quarantine_exhausted(run, cfg, snapshot)
    pending = snapshot.pending()
    if not pending:
        return SubmitResult(None, None, snapshot, kind=kind)
    generation = next_generation(run) if stated_records is None else 1
    plan, groups = plan_groups(pending, snapshot, cfg, generation)
    if begin is not None:
        start_after(groups, begin)
    executor = make_executor(kind, cfg)
    slurm = executor if isinstance(executor, SlurmExecutor) else None
    if slurm is not None and follow_up is not None:
        slurm.reserve = 1  # the finishing job: it queues whatever does not fit in the queue now, as room frees
    description = executor.describe(run, plan, groups)
    if dry_run:
        if slurm is not None and follow_up is not None:
            first_batch = slurm.split_batch(groups, slurm.queue_room())[0]
            description += "\n\n" + slurm.describe_follow_up(run, sorted(snapshot.active_jobs),
                                                             len(slurm.arrays(first_batch)), name="finish")
        if slurm is not None:
            from .feasibility import describe_feasibility

            description = f"{describe_feasibility(slurm, run, finishing=follow_up is not None)}\n{description}"
        return SubmitResult(plan, None, snapshot, description, kind, stated=stated_records is not None)
    if slurm is not None:
        slurm.check_ready(groups)  # before the plan is written: nothing is left behind by a refusal
        from .feasibility import check_feasible

        check_feasible(slurm, run, finishing=follow_up is not None)  # every job of the round fits a node
    write_plan(run, plan)
    submission = executor.submit(run, plan, groups)
    if slurm is not None and follow_up is not None:
        from .executor import save_submission

        depends = sorted(snapshot.active_jobs | {a["job_id"] for a in submission.arrays})
        try:
            submission.finishing_job = slurm.submit_follow_up(run, follow_up, (str(run.root.resolve()),), depends,
                                                              name="finish")
        except UserError as exc:  # the arrays are queued all the same: say so, and how to go on later
            log.warning("%s", exc)
            return SubmitResult(plan, submission, snapshot, description, kind, follow_up_error=str(exc))
        save_submission(run, submission)
    return SubmitResult(plan, submission, snapshot, description, kind)


def shard_groups(plan: Plan, indices: list[int], cfg: Config) -> list[TaskGroup]:
    """Shards of a written plan as groups by their resources (an escalated shard keeps its memory or time)."""
    base = Resources.from_config(cfg)
    wanted, by_resources = set(indices), defaultdict(list)
    for shard in plan.shards:
        if shard.index in wanted:
            by_resources[(shard.mem_gb or base.mem_gb, shard.time_min or base.time_min)].append(shard.index)
    return [TaskGroup(shards, Resources(base.partition, time_min, mem, base.cpus_per_task, base.setup,
                                        base.additional))
            for (mem, time_min), shards in sorted(by_resources.items())]


def queue_next_batch(run: RunDir, cfg: Config, follow_up: Callable[[str], Any]) -> Submission | None:
    """The finishing job's first duty when its round did not fit in the queue at once: queue the next batch of the
    round's shards (what fits now, its own successor reserved) and ``follow_up`` after it; the submission, or None
    when no shard waits. A batch is part of its round: no new plan, no attempt counted."""
    from .executor import save_submission
    from .slurm import SlurmExecutor

    with driver_lock(run, "finish"):
        sub = next((s for s in reversed(load_submissions(run, strict=True)) if s.kind == "slurm" and s.unqueued),
                   None)
        if sub is None:
            return None
        executor = make_executor("slurm", cfg)
        assert isinstance(executor, SlurmExecutor)
        executor.reserve = 1
        groups = shard_groups(load_plan(run, sub.generation), sub.unqueued, cfg)
        executor.check_ready(groups)
        queued = executor.queue_next_batch(run, groups, sub)
        sub.finishing_job = executor.submit_follow_up(run, follow_up, (str(run.root.resolve()),), queued,
                                                      name="finish")
        save_submission(run, sub)
        return sub


def format_result(result: SubmitResult, run: RunDir, *, dry_run: bool = False) -> str:
    snap = result.snapshot
    counts = (f"{len(snap.done)} done, {len(snap.quarantined)} quarantined"
              f"{f', {len(snap.active)} queued or running' if snap.active else ''}")
    if result.plan is None:
        return f"nothing to submit for {run.root}: all {len(snap.records)} records are accounted for ({counts})"
    plan = result.plan
    head = (f"plan {plan.generation}: {plan.records} records in {len(plan.shards)} shards "
            f"({counts} of {len(snap.records)})")
    if result.stated:
        head = (f"plan {plan.generation}: {plan.records} records in {len(plan.shards)} shards (a number stated with "
                "--records, of equal size: no harvest read)")
    if dry_run:
        return f"{head}; dry run, nothing submitted\n{result.description}"
    sub = result.submission
    assert sub is not None
    if sub.kind == "slurm":
        ids = ", ".join(a["job_id"] for a in sub.arrays)
        follow = (f" and finishing job {sub.finishing_job} (when they have all ended: another round for what "
                  "can still succeed, or the image)") if sub.finishing_job else ""
        if sub.unqueued and sub.finishing_job:
            follow = (f" ({len(plan.shards) - len(sub.unqueued)} of {len(plan.shards)} tasks: what the queue's "
                      f"limits leave room for) and finishing job {sub.finishing_job} (it queues the other "
                      f"{len(sub.unqueued)} in batches as room frees; then another round for what can still "
                      "succeed, or the image)")
        if result.follow_up_error:
            follow = f" (but {result.follow_up_error}: run `{program()} resume {run.root}` when they end)"
        return (f"{head}; queued {len(sub.arrays)} array job(s): {ids}{follow}. Nothing else to do: follow with "
                f"`{program()} status {run.root}`")
    failed = sum(1 for t in sub.tasks.values() if t.get("state") != "COMPLETED")
    tail = f"; {failed} task(s) did not complete" if failed else ""
    return f"{head}; ran {len(sub.tasks)} {sub.kind} task(s){tail}. See `{program()} status {run.root}`"

"""SLURM through submitit: job arrays of shard tasks, split at the cluster's MaxArraySize, and the jobs after them.

submitit writes the sbatch script, pickles the call, requeues on timeout/preemption (the tasks are
``Checkpointable``) and collects results. What it does not do, done here: split a plan larger than
``MaxArraySize`` into several arrays, feed a plan larger than the room in the queue in batches, and retry
``sbatch`` when the scheduler is busy or a QOS limit is hit. Every job is described once (``JobDescription``:
an array, the finishing job, the pack job) and reaches sbatch one way (``SlurmExecutor._queue``), through
submitit_adapter.py. What the cluster says (its limits, the room in its queue, the tasks' states from ``sacct``
and ``squeue``) is read in accounting.py.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import RunDir
from . import submitit_adapter  # submitit itself is imported where a job is queued: status needs none of it
from .accounting import (
    DEFAULT_MAX_ARRAY_SIZE,
    ClusterLimit,
    QueueRoom,
    read_max_array_size,
    read_queue_room,
    run_command,
)
from .executor import Resources, Submission, TaskGroup, _now, save_submission
from .plan import Plan

log = logging.getLogger(__name__)

# The finishing job only decides (the pack job packs): memory (GB, at most the arrays') and minutes it asks.
DECIDING_MEM_GB = 1.0
DECIDING_TIME_MIN = 30
SUBMIT_ATTEMPTS = 8
# sbatch errors that go away when one waits: a busy controller, a per-user submit limit.
TRANSIENT_SBATCH_ERRORS = (
    "QOSMaxSubmitJobPerUserLimit", "AssocMaxSubmitJobLimit", "MaxSubmitJobLimit", "Socket timed out",
    "Unable to contact slurm controller", "Resource temporarily unavailable", "temporarily unavailable",
    "Slurm temporarily unable", "Connection refused", "Transport endpoint",
)


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def format_mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def signal_delay_s(time_min: int) -> int:
    """How long before the time limit SLURM warns the task (USR2) so it can requeue: a tenth, 30-120 s."""
    return int(min(120, max(30, time_min * 60 // 10)))


def first_tasks(groups: list[TaskGroup], count: int) -> list[TaskGroup]:
    """The first ``count`` shards of ``groups``, in order, as groups with their resources."""
    out = []
    for group in groups:
        if count <= 0:
            break
        out.append(TaskGroup(group.shards[:count], group.resources))
        count -= len(out[-1].shards)
    return out


def describe_feeding(tasks: int, later: int, room: QueueRoom, reserve: int) -> str:
    """How the plan's tasks reach the queue: ``# 21 tasks, 4 queued now, the other 17 in batches by the finishing
    job as room frees (...)``, or all at once."""
    free = room.free
    if not later:
        why = f"{free} jobs free in the queue" if free is not None else (
            f"{room.note}: no submit limit read, none assumed" if room.note else "no submit limit applies")
        return f"# {tasks} tasks, all queued now ({why})"
    full = " (the queue is full now: the submit waits for room first)" if free is not None and free <= reserve else ""
    return (f"# {tasks} tasks, {tasks - later} queued now, the other {later} in batches by the finishing job as room "
            f"frees ({free} jobs free in the queue, {reserve} kept for the finishing job){full}")


def is_transient(message: str) -> bool:
    return any(marker.lower() in message.lower() for marker in TRANSIENT_SBATCH_ERRORS)


def sbatch_error(exc: BaseException) -> str:
    """The one telling line of an sbatch failure (``sbatch: error: Invalid partition name specified``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else type(exc).__name__


@dataclass
class ArraySpec:
    """One sbatch array: shards of one group, at most MaxArraySize of them."""

    shards: list[int]
    resources: Resources


@dataclass(frozen=True)
class JobPython:
    """The interpreter the jobs run (a shell word), why that one, and why a real submit must refuse it (None: no
    reason). Chosen by ``submit.job_python``, which looks at file systems; this plugin writes it into the scripts."""

    command: str
    why: str
    problem: str | None = None


def this_python() -> JobPython:
    """The interpreter running now, as submitit would use it by default."""
    return JobPython(shlex.quote(sys.executable), f"{sys.executable}, the interpreter of this command")


def slurm_commands_missing() -> list[str]:
    """The SLURM commands that queueing needs and this machine lacks: ``sbatch``, and ``srun``, which submitit
    insists on finding where it runs."""
    return [name for name in ("sbatch", "srun") if shutil.which(name) is None]


def sbatch_options(additional: dict[str, Any]) -> dict[str, Any]:
    """``executor.slurm.additional`` as sbatch options (``mail_type`` -> ``--mail-type``)."""
    return {k.replace("_", "-"): v for k, v in additional.items()}


def logs_folder(run: RunDir) -> Path:
    """Where submitit writes each job's script, pickles and logs (``%j``: the job id)."""
    return run.submitit_logs / "%j"


@dataclass(frozen=True)
class JobDescription:
    """One sbatch job of a run as submitit is asked for it: an array of shard tasks, or a job that follows the
    arrays (the finishing job, the pack job). The one place that turns a job into submitit's parameters: its name,
    time, memory, CPUs, setup lines, partition, the sbatch options of ``executor.slurm.additional`` (qos, account;
    ``begin`` when the round waits for Zenodo's budget), an array's ``%`` limit and warning signal, its dependency."""

    run: RunDir
    name: str  # g<generation>, finish, pack: the job is called zenodo-hpc-<run>-<name>
    resources: Resources
    tasks: int = 1  # more than one: an array
    array_parallelism: int | None = None  # an array's: at most that many tasks at once, USR2 before the time limit
    depends_on: tuple[str, ...] = ()  # starts once every one of these jobs has ended, however (afterany)

    def parameters(self) -> dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters for this job."""
        r = self.resources
        params: dict[str, Any] = {"job_name": f"zenodo-hpc-{self.run.root.name}-{self.name}", "time": r.time_min,
                                  "mem": format_mem(r.mem_gb), "cpus_per_task": r.cpus_per_task,
                                  "setup": list(r.setup)}
        if r.partition:
            params["partition"] = r.partition
        if r.additional:
            params["additional_parameters"] = sbatch_options(r.additional)
        if self.array_parallelism is not None:
            params["array_parallelism"] = self.array_parallelism
            params["signal_delay_s"] = signal_delay_s(r.time_min)
        if self.depends_on:
            params["dependency"] = "afterany:" + ":".join(self.depends_on)
        return params

    def script(self, python: str) -> str:
        """The sbatch script submitit queues for this job, made without SLURM (``--dry-run``, ``--test-only``)."""
        return submitit_adapter.sbatch_script(logs_folder(self.run), python, self.parameters(), self.tasks)


class SlurmExecutor:
    """Queues job arrays with submitit and returns; the run proceeds without a driver."""

    kind = "slurm"
    blocking = False

    def __init__(self, cfg: Config, *, task: Callable[..., Any] | None = None, sleep: Any = time.sleep,
                 max_array: int | None = None, python: JobPython | None = None, room: QueueRoom | None = None) -> None:
        """``task`` is what each array task calls, ``task(run_dir, generation, shard, concurrent)``: handed in
        (``submit.make_executor`` gives the worker's ``ShardTask``), so this plugin knows no pipeline stage.
        ``python`` is the interpreter the jobs run (default: this one); ``max_array`` a MaxArraySize, ``room`` the
        room in the queue, to use instead of asking the cluster."""
        self.cfg = cfg
        self.task = task
        self.python = python or this_python()
        self.array_parallelism = cfg.executor.array_parallelism
        self._max_array = None if max_array is None else ClusterLimit("MaxArraySize", max_array, "given")
        self._room, self._room_given = room, room is not None
        self._sleep = sleep
        # Jobs queued after each batch of arrays (the finishing job, which queues the next batch): kept free in
        # the queue. 0 (nothing follows to queue the rest): every task is queued at once.
        self.reserve = 0

    @property
    def max_array_limit(self) -> ClusterLimit:
        if self._max_array is None:
            self._max_array = read_max_array_size()
        return self._max_array

    @property
    def max_array_size(self) -> int:
        return self.max_array_limit.value or DEFAULT_MAX_ARRAY_SIZE

    def queue_room(self, *, fresh: bool = False) -> QueueRoom:
        """The submit limits and what is queued under them: asked once, or again when ``fresh``."""
        if self._room is None or fresh and not self._room_given:
            self._room = read_queue_room(self.cfg)
        return self._room

    def split_batch(self, groups: list[TaskGroup], room: QueueRoom) -> tuple[list[TaskGroup], list[int]]:
        """The tasks to queue now (those that fit beside the reserved finishing job, at least one) and the shards
        left for the finishing job to queue later; all of them now when no finishing job follows."""
        shards = [s for g in groups for s in g.shards]
        if not self.reserve:
            return groups, []
        count = max(1, room.tasks_now(len(shards), self.reserve))
        return first_tasks(groups, count), shards[count:]

    def wait_for_room(self) -> QueueRoom:
        """The room in the queue once one task fits in it beside the reserve, waited for with the backoff of a busy
        scheduler; then what there is (sbatch's own retries take over)."""
        from ..zenodo.client import backoff_delay

        for attempt in range(SUBMIT_ATTEMPTS):
            room = self.queue_room(fresh=True)
            if not self.reserve or room.tasks_now(1, self.reserve) or attempt == SUBMIT_ATTEMPTS - 1:
                return room
            delay = backoff_delay(attempt, base=5.0, cap=300.0)
            log.warning("the queue is full (%s jobs free, %d to keep for the finishing job): waiting %.0f s for room",
                        room.free, self.reserve, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def per_array_parallelism(self, arrays: int) -> int:
        """Each array's ``%`` limit: the arrays of a plan share ``array_parallelism`` between them."""
        return max(1, self.array_parallelism // max(1, arrays))

    def arrays(self, groups: list[TaskGroup]) -> list[ArraySpec]:
        """Each group split into arrays of at most MaxArraySize tasks (submitit would send one)."""
        return [ArraySpec(part, g.resources) for g in groups for part in chunks(g.shards, self.max_array_size)]

    def array_job(self, run: RunDir, generation: int, spec: ArraySpec, parallelism: int) -> JobDescription:
        """The job of one array of generation ``generation``."""
        return JobDescription(run, f"g{generation}", spec.resources, len(spec.shards), parallelism)

    def deciding_resources(self) -> Resources:
        """The finishing job's: it only decides (reads the run directory, asks sacct, queues the next jobs), so it
        asks little, and fits wherever the arrays fit; the arrays' partition, setup and options."""
        arrays = Resources.from_config(self.cfg)
        return Resources(arrays.partition, DECIDING_TIME_MIN, min(DECIDING_MEM_GB, arrays.mem_gb), 1, arrays.setup,
                         arrays.additional)

    def pack_resources(self) -> Resources:
        """The pack job's: ``pack.time_min``, ``mem_gb``, ``cpus_per_task``; the arrays' partition, setup, options."""
        arrays, pack = Resources.from_config(self.cfg), self.cfg.pack
        return Resources(arrays.partition, pack.time_min, pack.mem_gb, pack.cpus_per_task, arrays.setup,
                         arrays.additional)

    def follow_up_job(self, run: RunDir, name: str, depends_on: list[str],
                      resources: Resources | None = None) -> JobDescription:
        """A job that follows the arrays: ``resources`` (default: the small finishing job's), and ``afterany`` on
        ``depends_on``."""
        return JobDescription(run, name, resources or self.deciding_resources(), depends_on=tuple(depends_on))

    def describe(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> str:
        """The plan's arrays, the cluster limits read or assumed, the interpreter the tasks run, and the sbatch
        script of every array, as submitit would write them (made here without SLURM). A plan larger than the room in
        the queue shows the arrays of its first batch, and how the rest is fed."""
        room = self.queue_room()
        now, later = self.split_batch(groups, room)
        specs = self.arrays(now)
        parallelism = self.per_array_parallelism(len(specs))
        lines = [f"# {len(specs)} sbatch array(s) for {sum(len(s.shards) for s in specs)} shards, at most "
                 f"{parallelism} tasks of each array at once ({self.array_parallelism} in all)"]
        for i, spec in enumerate(specs):
            r = spec.resources
            lines.append(f"#   array {i + 1}: {len(spec.shards)} tasks (shards {spec.shards[0]}-{spec.shards[-1]}), "
                         f"{format_mem(r.mem_gb)}, {r.time_min} min, {r.cpus_per_task} cpu, "
                         f"partition {r.partition or '(the cluster default)'}")
        lines += self.describe_setting(room)
        lines.append(describe_feeding(sum(len(g.shards) for g in groups), len(later), room, self.reserve))
        for i, spec in enumerate(specs):
            lines += ["", f"# the sbatch script of array {i + 1}:",
                      self.array_job(run, plan.generation, spec, parallelism).script(self.python.command)]
        return "\n".join(lines)

    def describe_setting(self, room: QueueRoom) -> list[str]:
        """The cluster limits a plan depends on, each read or assumed, and the interpreter the jobs run."""
        lines = [f"# cluster limits: {self.max_array_limit.describe()}"]
        lines += [f"#   {limit.describe()}" for limit in room.limits]
        lines.append(f"# the jobs run {self.python.why}")
        if self.python.problem:
            lines.append(f"# a real submit refuses this: {self.python.problem}")
        return lines

    def describe_follow_up(self, run: RunDir, depends_on: list[str], arrays: int, *, name: str) -> str:
        """The finishing job's sbatch script; the arrays' job ids, unknown before they are queued, are shown as
        ``ARRAY1_ID``, ``ARRAY2_ID``, ...."""
        placeholders = [f"ARRAY{i + 1}_ID" for i in range(arrays)]
        job = self.follow_up_job(run, name, sorted(depends_on) + placeholders)
        pack = self.pack_resources()
        return "\n".join(["# the sbatch script of the finishing job, queued with the arrays (ARRAY1_ID...: their job "
                          "ids, known once queued):",
                          f"# (it decides; when there is something to pack it queues the pack job: "
                          f"{format_mem(pack.mem_gb)}, {pack.cpus_per_task} cpu, {pack.time_min} min, from "
                          "pack.mem_gb, cpus_per_task, time_min)",
                          job.script(self.python.command)])

    def check_ready(self, groups: list[TaskGroup]) -> None:
        """Refuse, before anything is written or queued, what would fail: no SLURM commands here, an interpreter
        the nodes cannot run. (A plan larger than the room in the queue is never refused: it is fed in batches.)"""
        missing = slurm_commands_missing()
        if missing:
            raise UserError(f"executor slurm: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on "
                            "PATH: load your site's SLURM module (e.g. module load slurm), or use --executor local")
        if self.python.problem:
            raise UserError(self.python.problem)

    def submit(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> Submission:
        """Queue the plan's first batch (all of it when it fits, or when no finishing job follows); the shards left
        are recorded in the submission (``unqueued``) for the finishing job (``queue_next_batch``)."""
        self.check_ready(groups)
        submission = Submission(plan.generation, self.kind, 0, submitted_at=_now())
        self.queue_next_batch(run, groups, submission)
        return submission

    def queue_next_batch(self, run: RunDir, groups: list[TaskGroup], submission: Submission) -> list[str]:
        """Queue what fits of ``groups`` (shards of the submission's plan) as arrays added to ``submission``; the
        rest stays in ``submission.unqueued``. The new arrays' job ids. Each array is on record once queued."""
        now, later = self.split_batch(groups, self.wait_for_room())
        specs = self.arrays(now)
        parallelism = self.per_array_parallelism(len(specs))
        submission.concurrent = max(1, min(sum(len(spec.shards) for spec in specs), parallelism * len(specs)))
        submission.unqueued = [s for g in now for s in g.shards] + later
        queued = []
        for spec in specs:
            task_ids = self._submit_array(run, submission.generation, spec, submission.concurrent, parallelism)
            queued.append(task_ids[0].split("_")[0])
            submission.arrays.append({"job_id": queued[-1], "task_ids": task_ids, "shards": spec.shards,
                                      "resources": {"mem_gb": spec.resources.mem_gb,
                                                    "time_min": spec.resources.time_min}})
            submission.unqueued = [s for s in submission.unqueued if s not in set(spec.shards)]
            save_submission(run, submission)  # each queued array is on record at once
            log.info("queued array %s: %d tasks", queued[-1], len(spec.shards))
        return queued

    def _submit_array(self, run: RunDir, generation: int, spec: ArraySpec, concurrent: int,
                      parallelism: int) -> list[str]:
        """One array through submitit (a plain job for a single task); its task ids, ``<array>_<i>`` (a plain id
        for a single task)."""
        if self.task is None:
            raise RuntimeError("SlurmExecutor was made without the task its arrays run: a bug, please report it")
        calls = [(self.task, (str(run.root.resolve()), generation, shard, concurrent)) for shard in spec.shards]
        return self._queue(self.array_job(run, generation, spec, parallelism), calls,
                           f"the array ({len(spec.shards)} tasks)")

    def submit_follow_up(self, run: RunDir, fn: Callable[..., Any], args: tuple[Any, ...], depends_on: list[str],
                         *, name: str, resources: Resources | None = None) -> str:
        """Queue ``fn(*args)`` as one job that starts when every job of ``depends_on`` has ended, however; its id.

        ``afterany``: the job runs whatever the arrays' outcome (tasks that failed, ran out of memory or were
        cancelled included), so it can decide what comes next. It asks little (``deciding_resources``) unless
        given ``resources`` (the pack job: ``pack_resources``). The callable is handed in by the caller: this
        module knows no pipeline stage.
        """
        return self._queue(self.follow_up_job(run, name, depends_on, resources), [(fn, args)], f"the {name} job")[0]

    def _queue(self, job: JobDescription, calls: list[submitit_adapter.Call], what: str) -> list[str]:
        """The one way a job reaches sbatch: ``calls`` queued as ``job`` (an array; one job for one call), retried
        with backoff while the scheduler is busy or a submit limit is reached; any other refusal is one line naming
        ``what``. The job ids."""
        from ..zenodo.client import backoff_delay

        refused = submitit_adapter.submission_errors()
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                return submitit_adapter.queue(logs_folder(job.run), self.python.command, job.parameters(), calls)
            except refused as exc:
                message = sbatch_error(exc)
                if not is_transient(message) or attempt == SUBMIT_ATTEMPTS - 1:
                    raise UserError(f"sbatch refused {what}: {message}") from None
                delay = backoff_delay(attempt, base=5.0, cap=300.0)
                log.warning("sbatch: %s; retrying in %.0f s (%d of %d)", message, delay, attempt + 1,
                            SUBMIT_ATTEMPTS - 1)
                self._sleep(delay)
        raise AssertionError("unreachable")


def cancel(job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if ids:
        run_command(["scancel", *ids], timeout=60)

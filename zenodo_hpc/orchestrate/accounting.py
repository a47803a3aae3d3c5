"""What the cluster says: its limits, its nodes, the room in its queue, and the states of the tasks queued.

Read from SLURM's commands and parsed here, apart from the plugin that queues (slurm.py): ``scontrol show
config`` (MaxArraySize, the cluster's name), ``sacctmgr`` (QOS and association submit limits), ``sinfo`` (the
nodes' host names), ``squeue`` (what is queued or running now) and ``sacct`` (how each task ended, every step).
``status``, ``resume`` and the finishing job read task states through this module without submitit.
"""

from __future__ import annotations

import getpass
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.config import Config
from .executor import Submission

log = logging.getLogger(__name__)

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own default
# A task's final states and what they mean for resume.
FAILED_STATES = ("FAILED", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "CANCELLED", "PREEMPTED", "BOOT_FAIL",
                 "DEADLINE", "KILLED")
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                 "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED")


def run_command(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class ClusterLimit:
    """A limit of the cluster and where its value comes from: a dry run says which it read and which it assumed."""

    name: str
    value: int | None  # None: no limit
    source: str  # "read from scontrol", "assumed: SLURM's default, scontrol not on PATH", ...

    def describe(self) -> str:
        return f"{self.name} {self.value if self.value is not None else 'none'} ({self.source})"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")


def read_scontrol_config() -> dict[str, str] | str:
    """``scontrol show config`` as ``{"MaxArraySize": "1001", "ClusterName": ...}``, or why it cannot be read."""
    if shutil.which("scontrol") is None:
        return "scontrol not on PATH"
    try:
        out = run_command(["scontrol", "show", "config"], timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scontrol failed: {exc}"
    if out.returncode != 0:
        return f"scontrol show config did not say: {_first_line(out.stderr)}"
    return parse_scontrol_config(out.stdout)


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``Key = value`` lines (``scontrol show config``) as a dict."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def read_max_array_size() -> ClusterLimit:
    """The cluster's ``MaxArraySize`` from ``scontrol show config`` (an array holds indices 0..size-1), or SLURM's
    default, saying why, when scontrol cannot tell."""
    return max_array_size_of(read_scontrol_config())


def max_array_size_of(config: dict[str, str] | str) -> ClusterLimit:
    """``MaxArraySize`` of a read ``scontrol show config`` (or of the reason it could not be read)."""
    assumed = "assumed: SLURM's default, "
    if isinstance(config, str):
        return ClusterLimit("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE, assumed + config)
    value = config.get("MaxArraySize", "")
    if not value.isdigit():
        return ClusterLimit("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE,
                            assumed + "scontrol show config did not say: no MaxArraySize")
    return ClusterLimit("MaxArraySize", int(value), "read from scontrol")


def max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (SLURM's default when scontrol cannot tell)."""
    return read_max_array_size().value or DEFAULT_MAX_ARRAY_SIZE


def configured_qos(cfg: Config) -> str | None:
    qos = cfg.executor.slurm.additional.get("qos")
    return qos if isinstance(qos, str) and qos else None


def read_qos_submit_limit(qos: str) -> ClusterLimit:
    """``MaxSubmitJobsPerUser`` of a QOS from ``sacctmgr`` (None: it has none), or no limit assumed, saying why."""
    name = f"QOS {qos} MaxSubmitJobsPerUser"
    if shutil.which("sacctmgr") is None:
        return ClusterLimit(name, None, "assumed: no limit, sacctmgr not on PATH")
    try:
        out = run_command(["sacctmgr", "-n", "-P", "show", "qos", qos, "format=MaxSubmitPU"], timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ClusterLimit(name, None, f"assumed: no limit, sacctmgr failed: {exc}")
    if out.returncode != 0:
        return ClusterLimit(name, None, f"assumed: no limit, sacctmgr failed: {_first_line(out.stderr)}")
    lines = out.stdout.strip().splitlines()
    if not lines:
        return ClusterLimit(name, None, f"assumed: no limit, sacctmgr knows no QOS named {qos}")
    value = lines[0].strip()
    return ClusterLimit(name, int(value) if value.isdigit() else None, "read from sacctmgr")


def qos_submit_limit(qos: str) -> int | None:
    """``MaxSubmitJobsPerUser`` of a QOS (``sacctmgr``), or None when it has none or cannot be read."""
    return read_qos_submit_limit(qos).value


def node_hosts(partition: str | None) -> set[str] | None:
    """The host names of the nodes the jobs may run on (the partition's, or all), short and lower-case, from
    ``sinfo``; None when sinfo cannot say (not on PATH, no controller, no such partition)."""
    args = ["sinfo", "-h", "-N", "-o", "%n", *(["-p", partition] if partition else [])]
    try:
        out = run_command(args, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    hosts = {short_host(name) for name in out.stdout.split()}
    return hosts if out.returncode == 0 and hosts else None


def short_host(name: str) -> str:
    return name.split(".")[0].lower()


def this_host() -> str:
    return short_host(socket.gethostname())


# --- the room in the queue ----------------------------------------------------------------------------------
#
# A shared cluster limits the jobs one user may have queued (pending or running), each array task counting as
# one: ``MaxSubmitJobsPerUser`` of the QOS the jobs run under, ``MaxSubmitJobs`` of the user's association.
# A plan with more tasks than the room left is queued in batches: what fits now, with its finishing job (one
# job more, reserved), which queues the next batch of the same round when the batch has ended.


@dataclass(frozen=True)
class Association:
    """One association of the user (``sacctmgr show assoc``): its account, partition (empty: any), submit limit."""

    account: str
    partition: str
    max_submit: int | None
    default_qos: str


@dataclass(frozen=True)
class SubmitLimit:
    """A limit on the jobs the user may have queued, and how many of theirs count against it now."""

    limit: ClusterLimit
    queued: int | None  # the user's jobs (array tasks one by one) under this limit, pending or running; None: unknown

    @property
    def free(self) -> int | None:
        return None if self.limit.value is None else max(0, self.limit.value - (self.queued or 0))

    def describe(self) -> str:
        if self.limit.value is None:
            return self.limit.describe()
        if self.queued is None:
            return f"{self.limit.describe()}; how many of your jobs are queued under it: squeue could not say"
        return f"{self.limit.describe()}; {self.queued} of your jobs queued under it now"


@dataclass(frozen=True)
class QueueRoom:
    """The submit limits that apply to the run's jobs; the tightest one decides how many tasks fit now."""

    limits: tuple[SubmitLimit, ...] = ()
    note: str = ""  # why the limits could not be read

    @property
    def free(self) -> int | None:
        """Jobs the user may still queue (None: no limit applies)."""
        frees = [limit.free for limit in self.limits if limit.free is not None]
        return min(frees) if frees else None

    def tasks_now(self, tasks: int, reserve: int) -> int:
        """How many of ``tasks`` to queue now, ``reserve`` jobs kept free (the finishing job): all of them without
        a limit; none when not even one fits beside the reserve."""
        free = self.free
        return tasks if free is None else max(0, min(tasks, free - reserve))


def parse_associations(text: str) -> list[Association]:
    """``sacctmgr -n -P show assoc ... format=account,partition,maxsubmit,defaultqos`` lines."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4 and parts[0]:
            account, partition, max_submit, default_qos = (p.strip() for p in parts[:4])
            out.append(Association(account, partition, int(max_submit) if max_submit.isdigit() else None,
                                   default_qos))
    return out


def count_queued(text: str) -> list[tuple[str, str]]:
    """``squeue -h -r -u USER -o %i|%q|%a`` lines (one per array task): (QOS, account) of each queued job."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            out.append((parts[1], parts[2]))
    return out


def applying_associations(associations: list[Association], account: str | None,
                          partition: str | None) -> list[Association]:
    """The associations the jobs run under: the account's (the user's default when the config names none), for
    any partition or the jobs' one (every partition's when the jobs name none: the tightest then decides)."""
    return [a for a in associations if (account is None or a.account == account)
            and (not a.partition or partition is None or a.partition == partition)]


def room_from(associations: list[Association], account: str | None, partition: str | None, qos: str | None,
              qos_limit: ClusterLimit | None, queued: list[tuple[str, str]] | None) -> QueueRoom:
    """The room in the queue from what sacctmgr and squeue said (the arithmetic of ``read_queue_room``)."""
    limits = []
    for assoc in applying_associations(associations, account, partition):
        if assoc.max_submit is not None:
            where = f"{assoc.account}{f' partition {assoc.partition}' if assoc.partition else ''}"
            limits.append(SubmitLimit(ClusterLimit(f"association {where} MaxSubmitJobs", assoc.max_submit,
                                                   "read from sacctmgr"),
                                      None if queued is None else sum(1 for _, a in queued if a == assoc.account)))
    if qos_limit is not None and qos is not None:
        limits.append(SubmitLimit(qos_limit, None if queued is None else sum(1 for q, _ in queued if q == qos)))
    return QueueRoom(tuple(limits))


def read_queue_room(cfg: Config, *, user: str | None = None) -> QueueRoom:
    """The submit limits that apply to the run's jobs (QOS and association), and what the user has queued under
    each: ``scontrol show config`` (the cluster's name), ``sacctmgr show user/assoc/qos``, ``squeue -r``."""
    user = user or getpass.getuser()
    unread = "sacctmgr not on PATH" if shutil.which("sacctmgr") is None else None
    config = read_scontrol_config() if unread is None else "not asked"
    cluster = config.get("ClusterName") if isinstance(config, dict) else None
    where = [f"user={user}", *([f"cluster={cluster}"] if cluster else [])]
    found = None if unread else _sacctmgr(["show", "assoc", "where", *where,
                                            "format=account,partition,maxsubmit,defaultqos"])
    if found is None:  # no accounting to ask: the configured QOS's limit is said to be unknown
        qos = configured_qos(cfg)
        return QueueRoom((SubmitLimit(read_qos_submit_limit(qos), None),) if qos else (),
                         unread or "sacctmgr show assoc failed")
    associations = parse_associations(found)
    account = _sbatch_option(cfg, "account") or _sacctmgr(["show", "user", user, "format=defaultaccount"])
    partition = cfg.executor.slurm.partition
    mine = applying_associations(associations, account or None, partition)
    qos = configured_qos(cfg) or next((a.default_qos for a in mine if a.default_qos), None) or "normal"
    queued = None
    if shutil.which("squeue") is not None:
        try:
            out = run_command(["squeue", "-h", "-r", "-u", user, "-o", "%i|%q|%a"], timeout=60)
            queued = count_queued(out.stdout) if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            queued = None
    return room_from(associations, account or None, partition, qos, read_qos_submit_limit(qos), queued)


def _sbatch_option(cfg: Config, name: str) -> str | None:
    value = cfg.executor.slurm.additional.get(name)
    return value if isinstance(value, str) and value else None


def _sacctmgr(args: list[str]) -> str | None:
    """``sacctmgr -n -P ARGS``'s output, or None when it fails."""
    try:
        out = run_command(["sacctmgr", "-n", "-P", *args], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- task states --------------------------------------------------------------------------------------
#
# Two sources, each right about one thing. ``squeue`` (the controller's memory) is right about what is
# queued or running *now*: accounting lags behind it, and keeps saying PENDING for a while about array
# tasks cancelled before they started, or NODE_FAIL about a task already requeued. ``sacct`` is right
# about how a task *ended*, provided every step is read: a task killed by the cgroup for its memory
# ends ``FAILED 1:0`` at the job level, and only its step (``.0``, ``.batch``) says OUT_OF_MEMORY.


@dataclass
class TaskState:
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, OUT_OF_MEMORY, TIMEOUT, CANCELLED, NODE_FAIL, GONE, ...
    exit_code: str = ""
    elapsed: str = ""
    source: str = "sacct"
    max_rss_gb: float | None = None  # the largest MaxRSS of the task's steps
    elapsed_s: float | None = None
    node: str = ""

    def usage(self) -> dict[str, Any]:
        return {"state": self.state, "max_rss_gb": self.max_rss_gb, "elapsed_s": self.elapsed_s}


GONE = "GONE"  # accounting still says queued, but the controller no longer has it: it never ran (cancelled)
_ARRAY = re.compile(r"^(\d+)_(\d+)$")
_ARRAY_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")
_SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,MaxRSS,NodeList"
# A step's state that says more than its job's: the memory kill shows only there.
_TELLING_STEP_STATES = ("OUT_OF_MEMORY",)


def expand_array_ids(job_id: str) -> list[str]:
    """``123_[1-3,7%2]`` -> ``123_1 123_2 123_3 123_7``; a plain id is returned as it is."""
    match = _ARRAY_RANGE.match(job_id)
    if not match:
        return [job_id]
    base, spec = match.group(1), match.group(2).split("%")[0]
    ids = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        for index in range(int(low), int(high or low) + 1):
            ids.append(f"{base}_{index}")
    return ids


def normalise_state(state: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``OUT_OF_ME+`` (truncated) -> ``OUT_OF_MEMORY``."""
    word = state.split()[0] if state.split() else "UNKNOWN"
    word = word.rstrip("+")
    for full in FAILED_STATES + ACTIVE_STATES + ("COMPLETED",):
        if full.startswith(word):
            return full
    return word


def parse_memory_gb(text: str) -> float | None:
    """sacct's ``MaxRSS`` (``123456K``, ``1.5G``, ``0``) in GB (1024-based units, as SLURM counts)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGTP]?)\w*\s*", text or "")
    if not match:
        return None
    scale = {"": 1 / 1024**3, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "P": 1024.0**2}
    return float(match.group(1)) * scale[match.group(2)]


def parse_elapsed_s(text: str) -> float | None:
    """``[D-]HH:MM:SS`` or ``MM:SS(.mmm)`` in seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", (text or "").strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


class TaskStates(dict[str, TaskState]):
    """Task id -> state; ``controller_answered`` False when squeue could not be asked (then a task missing
    from accounting may just be too new for it)."""

    controller_answered: bool = True


def task_states(job_ids: Iterable[str]) -> TaskStates:
    """``{"<job>_<index>": TaskState}`` for every task of these jobs, from sacct's steps and squeue together."""
    ids = sorted(set(job_ids))
    if not ids:
        return TaskStates()
    queued = _squeue_states(ids)
    accounted = _sacct_states(ids)
    out = TaskStates(queued or {}) if accounted is None else TaskStates(reconcile(accounted, queued))
    out.controller_answered = queued is not None
    return out


def reconcile(accounted: dict[str, TaskState], queued: dict[str, TaskState] | None) -> dict[str, TaskState]:
    """One state per task: squeue for what is queued or running now, sacct for how the rest ended.

    ``queued`` None means squeue could not be asked; then accounting is all there is.
    """
    out = dict(accounted)
    if queued is None:
        return out
    for task, state in accounted.items():
        if state.state in ACTIVE_STATES and task not in queued:
            out[task] = TaskState(GONE, state.exit_code, state.elapsed, "sacct+squeue", state.max_rss_gb,
                                  state.elapsed_s, state.node)
    for task, state in queued.items():
        earlier = accounted.get(task)
        out[task] = TaskState(state.state, "", "", "squeue",
                              earlier.max_rss_gb if earlier else None, earlier.elapsed_s if earlier else None,
                              state.node)
    return out


def _sacct_states(ids: list[str]) -> dict[str, TaskState] | None:
    """Every step of every task (no ``-X``), folded into one state per task; None without accounting."""
    try:
        out = run_command(["sacct", "-n", "-P", f"--format={_SACCT_FIELDS}", "-j", ",".join(ids)], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:  # "Slurm accounting storage is disabled", no sacct
        log.info("sacct unavailable (%s): using squeue", out.stderr.strip()[:200])
        return None
    return fold_sacct_lines(out.stdout.splitlines())


def fold_sacct_lines(lines: Iterable[str]) -> dict[str, TaskState]:
    """sacct lines (job and steps: ``12_3``, ``12_3.batch``, ``12_3.0``) -> one state per task.

    The task's state is its job line's, unless a step ended OUT_OF_MEMORY (then that); its memory use is
    the largest MaxRSS of its steps, its time the job line's Elapsed.
    """
    jobs: dict[str, TaskState] = {}
    steps: dict[str, list[tuple[str, float | None]]] = {}
    for line in lines:
        parts = line.split("|")
        if len(parts) < 6:
            continue
        job_id, state, exit_code, elapsed, max_rss, node = parts[:6]
        base, dot, _ = job_id.partition(".")
        if dot:
            steps.setdefault(base, []).append((normalise_state(state), parse_memory_gb(max_rss)))
            continue
        for task in expand_array_ids(base):
            jobs[task] = TaskState(normalise_state(state), exit_code, elapsed, "sacct", parse_memory_gb(max_rss),
                                   parse_elapsed_s(elapsed), node)
    for base, found in steps.items():
        job = jobs.get(base)
        if job is None:
            continue
        rss = [r for _, r in found if r is not None] + ([job.max_rss_gb] if job.max_rss_gb else [])
        job.max_rss_gb = max(rss) if rss else job.max_rss_gb
        telling = [st for st, _ in found if st in _TELLING_STEP_STATES]
        if telling and job.state not in ACTIVE_STATES:
            job.state = telling[0]
    return jobs


def _squeue_states(ids: list[str], *, tries: int = 3, sleep: Any = time.sleep) -> dict[str, TaskState] | None:
    """What the controller has queued or running now; None when squeue cannot be asked (a busy controller
    is asked again a few times first: without it, tasks just queued would look gone)."""
    for attempt in range(tries):
        try:
            out = run_command(["squeue", "-h", "-r", "-o", "%i|%T|%N", "-j", ",".join(ids)], timeout=60)
        except FileNotFoundError:  # no SLURM on this machine (status on a laptop): nothing to ask again
            return None
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and (out.returncode == 0 or "Invalid job id" in out.stderr):
            break
        log.info("squeue failed (%s)", out.stderr.strip()[:200] if out is not None else "no answer")
        if attempt == tries - 1:
            return None
        sleep(2.0)
    assert out is not None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 2:
            for task in expand_array_ids(parts[0]):
                states[task] = TaskState(normalise_state(parts[1]), "", "", "squeue",
                                         node=parts[2] if len(parts) > 2 else "")
    return states


# Without an answer from the controller, a task accounting does not know yet may just have been queued.
JUST_SUBMITTED_S = 300


def shard_states(submission: Submission, states: dict[str, TaskState]) -> dict[int, TaskState]:
    """The state of each shard of a SLURM submission (array task index -> plan shard).

    A task neither the controller nor accounting knows is left out (finished long ago, no accounting),
    unless the controller could not be asked and the submission is recent: then it counts as pending.
    """
    out: dict[int, TaskState] = {}
    unsure = not getattr(states, "controller_answered", True) and submission.age_s() < JUST_SUBMITTED_S
    for array in submission.arrays:
        task_ids = array.get("task_ids") or [f"{array['job_id']}_{i}" for i in range(len(array["shards"]))]
        for task_id, shard in zip(task_ids, array["shards"], strict=True):
            state = states.get(task_id)
            if state is not None:
                out[shard] = state
            elif unsure:
                out[shard] = TaskState("PENDING", source="just submitted, controller not answering")
    return out


def unfinished_tasks(submissions: Iterable[Submission], extra_jobs: Iterable[str] = ()) -> int:
    """Tasks of these SLURM submissions (and ``extra_jobs``, a finishing job) still queued or running."""
    subs = [s for s in submissions if s.kind == "slurm"]
    extra = list(extra_jobs)
    states = task_states(job_ids(subs) + extra)
    active = sum(1 for sub in subs for st in shard_states(sub, states).values() if st.state in ACTIVE_STATES)
    return active + sum(1 for job in extra if states.get(job, TaskState(GONE)).state in ACTIVE_STATES)


def job_active(job_id: str | None) -> bool:
    """The job (a finishing job) is queued or running now."""
    if not job_id:
        return False
    state = task_states([job_id]).get(job_id)
    return state is not None and state.state in ACTIVE_STATES


def settle_accounting(job_ids: Iterable[str], *, timeout_s: float = 60.0, sleep: Any = time.sleep) -> None:
    """Wait (bounded) until accounting has the end of every task the controller no longer holds.

    The finishing job starts the moment the last task ends, often before ``slurmdbd`` has written how
    it ended; deciding on a task still called RUNNING there (``GONE``) would miss an OUT_OF_MEMORY.
    """
    ids = list(job_ids)
    deadline = time.monotonic() + timeout_s
    while ids and time.monotonic() < deadline:
        if not any(st.state == GONE for st in task_states(ids).values()):
            return
        sleep(2.0)


def job_ids(submissions: Iterable[Submission]) -> list[str]:
    return [a["job_id"] for s in submissions if s.kind == "slurm" for a in s.arrays]

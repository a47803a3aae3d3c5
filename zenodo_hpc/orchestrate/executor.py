"""Where shard workers run: one interface, three plugins (SLURM, local processes, in-process debug).

Like submitit's own design: the driver hands an executor a plan and groups of shards with their
resources; the executor runs them and records what it did in ``<run>/state/submissions/<gen>.json``.
``slurm`` (zenodo_hpc/orchestrate/slurm.py) queues job arrays and returns; ``local`` and ``debug`` run the shards
to the end before returning, so ``submit`` with them is the whole run.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.config import Config
from ..core.errors import UserError
from ..core.liveness import identity
from ..core.state import RunDir, atomic_write_json, read_json_object, warn_once
from .plan import Plan

log = logging.getLogger(__name__)

SUBMISSIONS = "submissions"


@dataclass
class Resources:
    """What one array task asks for; resume doubles ``mem_gb`` or ``time_min`` after OOM or TIMEOUT."""

    partition: str | None
    time_min: int
    mem_gb: float
    cpus_per_task: int
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Config) -> Resources:
        s = cfg.executor.slurm
        return cls(s.partition, s.time_min, s.mem_gb, s.cpus_per_task, list(s.setup), dict(s.additional))


@dataclass
class TaskGroup:
    """Shards of one plan that share their resources (one or more job arrays)."""

    shards: list[int]
    resources: Resources


@dataclass
class Submission:
    """What was queued or run for one generation: arrays with job ids (SLURM) or task exit states."""

    generation: int
    kind: str
    concurrent: int
    arrays: list[dict[str, Any]] = field(default_factory=list)  # {"job_id", "shards", "resources"}
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # local/debug: shard -> {"state", "exit"}
    submitted_at: str = ""
    finishing_job: str | None = None  # SLURM: the job queued to decide after this submission's arrays
    unqueued: list[int] = field(default_factory=list)  # SLURM: shards the finishing job queues as room frees

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def age_s(self) -> float:
        """Seconds since submission (large when unknown)."""
        try:
            return time.time() - time.mktime(time.strptime(self.submitted_at, "%Y-%m-%dT%H:%M:%S%z"))
        except ValueError:
            return float("inf")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Submission:
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in data.items() if k in known}
        fields.setdefault("finishing_job", data.get("pack_job"))  # what older runs called their pack job
        return cls(**fields)


def submission_path(run: RunDir, generation: int) -> Path:
    return run.state / SUBMISSIONS / f"{generation:04d}.json"


def save_submission(run: RunDir, submission: Submission) -> None:
    atomic_write_json(submission_path(run, submission.generation), submission.to_json())


def load_submissions(run: RunDir, *, strict: bool = False) -> list[Submission]:
    """Every generation's submission, in order. An unreadable one is left out with a warning naming it (status
    goes on without that generation's task states) or, when ``strict`` (resume), refused: without it nobody can
    say which of that generation's records are still queued or running."""
    out = []
    for path in sorted((run.state / SUBMISSIONS).glob("[0-9]*.json")):
        if not path.stem.isdigit():
            continue
        generation = int(path.stem)
        try:
            out.append(_read_submission(path, generation))
        except UserError as exc:
            if strict:
                raise UserError(f"{exc}: the tasks of generation {generation} cannot be checked, so which of its "
                                "records are still queued or running is unknown. Once none is (squeue), move it away "
                                f"(e.g. to {path.name}.bad) and resume plans them again") from None
            warn_once(f"{exc}: generation {generation} is shown without its task states; move it away (e.g. to "
                      f"{path.name}.bad) once its tasks have ended")
    return out


def _read_submission(path: Path, generation: int) -> Submission:
    """One submission file, its shape checked: what status and resume read from it must be there."""
    try:
        sub = Submission.from_json(read_json_object(path))  # type: ignore[arg-type]
        ok = (sub.generation == generation and isinstance(sub.tasks, dict) and isinstance(sub.arrays, list)
              and all(str(k).isdigit() and isinstance(t, dict) for k, t in sub.tasks.items())
              and all(isinstance(a, dict) and "job_id" in a and "shards" in a for a in sub.arrays))
    except (AttributeError, TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{path}: unreadable (not the submission of generation {generation})")
    return sub


class Executor(Protocol):
    kind: str
    blocking: bool  # True: submit() returns when the work is done

    def describe(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> str:
        """What submit() would do, for --dry-run (the sbatch script, the commands)."""

    def submit(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> Submission:
        """Run or queue every shard of ``groups``; record and return the submission."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class LocalExecutor:
    """``local.workers`` worker processes on this machine (default: the CPU count), same markers and logs.

    Each shard is its own ``python -m zenodo_hpc.orchestrate.worker`` process, so a crash (a poison record, the OOM
    killer, ``kill -9``) takes down one shard, not the pool; its exit status is recorded like a SLURM state.
    """

    kind = "local"
    blocking = True

    def __init__(self, cfg: Config) -> None:
        self.workers = cfg.executor.local.workers or os.cpu_count() or 1

    def concurrency(self, plan: Plan) -> int:
        return max(1, min(self.workers, len(plan.shards)))

    def command(self, run: RunDir, generation: int, shard: int, concurrent: int) -> list[str]:
        return [sys.executable, "-m", "zenodo_hpc.orchestrate.worker", str(run.root.resolve()), str(generation),
                str(shard), "--concurrent", str(concurrent)]

    def describe(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> str:
        concurrent = self.concurrency(plan)
        shards = [s for g in groups for s in g.shards]
        lines = [f"# {len(shards)} worker processes, {concurrent} at a time, on this machine:"]
        lines += [" ".join(self.command(run, plan.generation, s, concurrent)) for s in shards[:3]]
        if len(shards) > 3:
            lines.append(f"# ... and {len(shards) - 3} more")
        return "\n".join(lines)

    def submit(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> Submission:
        concurrent = self.concurrency(plan)
        submission = Submission(plan.generation, self.kind, concurrent, submitted_at=_now())
        pending = [s for g in groups for s in g.shards]
        running: dict[int, tuple[subprocess.Popen[bytes], Any]] = {}
        save_submission(run, submission)
        try:
            while pending or running:
                started = False
                while pending and len(running) < concurrent:
                    shard = pending.pop(0)
                    running[shard] = self._start(run, plan.generation, shard, concurrent)
                    # who runs it, so that readers can tell a live worker from one that died with its driver
                    submission.tasks[str(shard)] = {"state": "RUNNING", **identity(running[shard][0].pid)}
                    started = True
                if started:
                    save_submission(run, submission)
                finished = [s for s, (proc, _) in running.items() if proc.poll() is not None]
                for shard in finished:
                    proc, stream = running.pop(shard)
                    stream.close()
                    submission.tasks[str(shard)] = {"state": exit_state(proc.returncode), "exit": proc.returncode}
                if finished:
                    save_submission(run, submission)
                else:
                    time.sleep(0.2)
        finally:
            for shard, (proc, stream) in running.items():  # Ctrl-C: stop the workers, say so
                proc.terminate()
                proc.wait()
                stream.close()
                submission.tasks[str(shard)] = {"state": "CANCELLED", "exit": proc.returncode}
            save_submission(run, submission)
        return submission

    def _start(self, run: RunDir, generation: int, shard: int, concurrent: int) -> tuple[Any, Any]:
        out = run.logs / f"g{generation:04d}" / f"shard-{shard:05d}.out"
        out.parent.mkdir(parents=True, exist_ok=True)
        stream = open(out, "ab")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(self.command(run, generation, shard, concurrent), stdout=stream,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return proc, stream


def exit_state(code: int | None) -> str:
    """A local exit status in SLURM's words: 0 COMPLETED, killed by a signal KILLED, else FAILED."""
    if code == 0:
        return "COMPLETED"
    if code is not None and code < 0:
        return "KILLED"
    return "FAILED"


class DebugExecutor:
    """Every shard in this process, one after the other: breakpoints and pdb work."""

    kind = "debug"
    blocking = True

    def __init__(self, task: Callable[[str, int, int, int], Any]) -> None:
        """``task(run_dir, generation, shard, concurrent)`` runs one shard (``submit.make_executor`` hands in the
        worker's ``run_shard``): executors run the stages, they do not import them."""
        self.task = task

    def describe(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> str:
        shards = [s for g in groups for s in g.shards]
        return f"# {len(shards)} shards run one after the other in this process (debug)"

    def submit(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> Submission:
        submission = Submission(plan.generation, self.kind, 1, submitted_at=_now())
        for group in groups:
            for shard in group.shards:
                self.task(str(run.root), plan.generation, shard, 1)
                submission.tasks[str(shard)] = {"state": "COMPLETED", "exit": 0}
                save_submission(run, submission)
        save_submission(run, submission)
        return submission


def resolve_kind(kind: str) -> str:
    """``auto`` is SLURM when ``sbatch`` is on PATH, else local."""
    if kind == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return kind

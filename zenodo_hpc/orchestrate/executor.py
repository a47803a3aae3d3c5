"""Where shard workers run: one interface, three plugins (SLURM, local processes, in-process debug).

Like submitit's own design: the driver hands an executor a plan and groups of shards with their
resources; the executor runs them and records what it did in ``<run>/state/submissions/<gen>.json``.
``slurm`` (zenodo_hpc/orchestrate/slurm.py) queues job arrays and returns; ``local`` and ``debug``
(zenodo_hpc/orchestrate/local.py) run the shards to the end before returning, so ``submit`` with them is the whole
run. This module knows none of them: ``submit.make_executor`` chooses one.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import RunDir, atomic_write_json, read_json_object, warn_once
from .plan import Plan

log = logging.getLogger(__name__)



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


def save_submission(run: RunDir, submission: Submission) -> None:
    atomic_write_json(run.submission(submission.generation), submission.to_json())


def load_submissions(run: RunDir, *, strict: bool = False) -> list[Submission]:
    """Every generation's submission, in order. An unreadable one is left out with a warning naming it (status
    goes on without that generation's task states) or, when ``strict`` (resume), refused: without it nobody can
    say which of that generation's records are still queued or running."""
    out = []
    for path in sorted(run.submissions.glob("[0-9]*.json")):
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


def resolve_kind(kind: str) -> str:
    """``auto`` is SLURM when ``sbatch`` is on PATH, else local."""
    if kind == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return kind

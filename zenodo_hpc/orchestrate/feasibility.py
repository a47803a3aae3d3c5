"""Can the jobs of a round be queued at all? Asked before anything is queued, with ``sbatch --test-only``.

A job that asks for more than any node of its partition has (memory, CPUs) or more time than the partition
allows is refused by sbatch (``Memory specification can not be satisfied``). Found out only when the finishing
job is queued, after the arrays, that leaves arrays that run and nothing that ever packs. So ``submit``,
``resume`` and ``run`` first hand each kind of job of the round to ``sbatch --test-only`` with the exact script
submitit would queue (an array task's, the finishing job's and the pack job's, without their dependency), and
refuse with one line naming the job, what it asks, what the partition's nodes offer and which key to change.
A busy queue or a submit limit is not a refusal (those pass with time); an sbatch that cannot be asked is not
either (the real submit then says what is wrong).
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass

from ..core.errors import UserError
from ..core.state import RunDir
from .accounting import run_command
from .executor import Resources
from .slurm import (
    JobDescription,
    SlurmExecutor,
    format_mem,
    is_transient,
    sbatch_error,
    slurm_commands_missing,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobShape:
    """One kind of job of a round: what it is called, what it asks, and the config keys that set what it asks
    (``""``: fixed by zenodo-hpc)."""

    what: str
    name: str  # the job's name suffix (zenodo-hpc-<run>-<name>)
    resources: Resources
    keys: str  # "executor.slurm", "pack" or ""


@dataclass(frozen=True)
class NodeSizes:
    """What the largest nodes of a partition offer, from ``sinfo``."""

    partition: str
    mem_mb: int
    cpus: int
    time_limit: str  # sinfo's: "infinite", "2-00:00:00", ...

    def describe(self) -> str:
        limit = "" if self.time_limit in ("infinite", "") else f", for at most {self.time_limit}"
        return f"at most {self.mem_mb} MB ({self.mem_mb / 1024:.1f} GB) and {self.cpus} CPUs{limit}"


def job_shapes(executor: SlurmExecutor, *, finishing: bool) -> list[JobShape]:
    """The jobs of a round: an array task (as configured; escalated shards ask more, up to
    ``executor.slurm.max_mem_gb``), and with ``finishing`` the finishing job and the pack job it may queue."""
    shapes = [JobShape("an array task", "g1", Resources.from_config(executor.cfg), "executor.slurm")]
    if finishing:
        shapes += [JobShape("the finishing job", "finish", executor.deciding_resources(), ""),
                   JobShape("the pack job", "pack", executor.pack_resources(), "pack")]
    return shapes


def sbatch_test_only(script: str) -> str | None:
    """``sbatch --test-only`` of a job script: None when the scheduler would take it (or cannot be asked, or is
    only busy), else its reason in one line."""
    try:
        out = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=30,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("sbatch --test-only could not be asked: %s", exc)
        return None
    if out.returncode == 0:
        return None
    reason = sbatch_error(RuntimeError(out.stderr or out.stdout))
    reason = reason.removeprefix("allocation failure: ").removeprefix("sbatch: error: ")
    return None if is_transient(reason) else reason


def sinfo_nodes() -> list[list[str]]:
    """``sinfo``'s nodes, one row per node and partition: name, memory (MB), CPUs, partition (``*``: the
    default), time limit; empty when sinfo cannot say."""
    try:
        out = run_command(["sinfo", "-h", "-N", "-o", "%N|%m|%c|%P|%l"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split("|") for line in out.stdout.splitlines() if line.count("|") == 4] if out.returncode == 0 else []


def read_node_sizes(partition: str | None, rows: list[list[str]] | None = None) -> NodeSizes | None:
    """The largest memory and CPU count among a partition's nodes (the default partition's when None) and its
    time limit, from ``sinfo``'s ``rows``; None when sinfo cannot say."""
    rows = sinfo_nodes() if rows is None else rows
    mine = [r for r in rows if (r[3].rstrip("*") == partition if partition else r[3].endswith("*"))]
    numbers = [(int(m.group()), int(c.group())) for r in mine
               if (m := re.match(r"\d+", r[1])) and (c := re.match(r"\d+", r[2]))]
    if not numbers:
        return None
    return NodeSizes(mine[0][3].rstrip("*"), max(m for m, _ in numbers), max(c for _, c in numbers), mine[0][4])


def asks(resources: Resources) -> str:
    return f"{format_mem(resources.mem_gb)}, {resources.cpus_per_task} CPU(s), {resources.time_min} min"


def what_to_change(shape: JobShape, sizes: NodeSizes | None) -> str:
    """The config key(s) to change so that ``shape`` fits the nodes ``sizes`` describes."""
    other = "choose a partition whose nodes are larger (executor.slurm.partition)"
    if not shape.keys:
        return other
    r = shape.resources
    fixes = []
    if sizes is not None and r.mem_gb * 1024 > sizes.mem_mb:
        fixes.append(f"lower {shape.keys}.mem_gb to {sizes.mem_mb / 1024:.1f} or less")
    if sizes is not None and r.cpus_per_task > sizes.cpus:
        fixes.append(f"lower {shape.keys}.cpus_per_task to {sizes.cpus} or less")
    if not fixes:
        fixes.append(f"change {shape.keys}.mem_gb, cpus_per_task or time_min")
    return f"{' and '.join(fixes)}, or {other}"


def refusal(shape: JobShape, reason: str) -> str:
    """The one line that says which job cannot be queued, what it asks, what the nodes offer, what to change."""
    rows = sinfo_nodes()
    sizes = read_node_sizes(shape.resources.partition, rows)
    partition = shape.resources.partition or (sizes.partition if sizes else "") or "(the default)"
    names = sorted({r[3].rstrip("*") for r in rows})
    if sizes is not None:
        offer, fix = f"the nodes of partition {partition} offer {sizes.describe()}", what_to_change(shape, sizes)
    elif names and shape.resources.partition and shape.resources.partition not in names:
        offer = f"sinfo lists no partition {partition}, only {', '.join(names)}"
        fix = "set executor.slurm.partition to one of those"
    else:
        offer, fix = f"sinfo does not say what the nodes of partition {partition} offer", what_to_change(shape, None)
    return (f"{shape.what} cannot be queued: it asks {asks(shape.resources)} on partition {partition}, and sbatch "
            f"--test-only answers '{reason}' ({offer}): {fix}; nothing was queued")


def feasibility_problem(executor: SlurmExecutor, run: RunDir, *, finishing: bool) -> str | None:
    """Why a job of the round could never be queued (one line), or None: each job shape through
    ``sbatch --test-only`` with the script submitit would queue."""
    for shape in job_shapes(executor, finishing=finishing):
        script = JobDescription(run, shape.name, shape.resources).script(executor.python.command)
        reason = sbatch_test_only(script)
        if reason is not None:
            return refusal(shape, reason)
    return None


def check_feasible(executor: SlurmExecutor, run: RunDir, *, finishing: bool) -> None:
    """Refuse, before anything is queued, a round one of whose jobs the cluster could never run."""
    problem = feasibility_problem(executor, run, finishing=finishing)
    if problem:
        raise UserError(problem)


def describe_feasibility(executor: SlurmExecutor, run: RunDir, *, finishing: bool) -> str:
    """A dry run's line on whether the round's jobs could be queued here."""
    missing = slurm_commands_missing()
    if "sbatch" in missing:
        return "# can the jobs be queued: not checked here (sbatch not on PATH)"
    problem = feasibility_problem(executor, run, finishing=finishing)
    if problem:
        return f"# a real submit refuses this: {problem}"
    whats = [shape.what for shape in job_shapes(executor, finishing=finishing)]
    names = " and ".join([", ".join(whats[:-1]), whats[-1]] if len(whats) > 1 else whats)
    sizes = read_node_sizes(executor.cfg.executor.slurm.partition)
    nodes = f" (the nodes of partition {sizes.partition} offer {sizes.describe()})" if sizes else ""
    return f"# sbatch --test-only: {names} can be queued{nodes}"

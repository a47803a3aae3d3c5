"""Can a round's jobs be queued at all (zenodo_hpc/orchestrate/feasibility.py): the jobs of a round, what a machine
without SLURM says, and on the dev cluster (marked ``slurm``) sbatch --test-only's answers and the one-line refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import slurm_dev
from helpers import SLURM_PARTITION, queued_from, slurm_config

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, open_run
from zenodo_hpc.orchestrate.executor import Resources, load_submissions
from zenodo_hpc.orchestrate.feasibility import (
    JobShape,
    check_feasible,
    describe_feasibility,
    feasibility_problem,
    job_shapes,
    read_node_sizes,
    sbatch_test_only,
    sinfo_nodes,
    what_to_change,
)
from zenodo_hpc.orchestrate.slurm import JobDescription, SlurmExecutor, this_python
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

SLURM_PROBLEM = slurm_dev.cluster_problem()
on_the_dev_cluster = pytest.mark.skipif(SLURM_PROBLEM is not None, reason=SLURM_PROBLEM or "")


def slurm_settings(tmp_path: Path, *, mem_gb: float = 0.5, cpus: int = 1, pack_mem_gb: float = 1) -> Config:
    """A SLURM run's config on ``SLURM_PARTITION`` (no Zenodo needed: nothing is harvested)."""
    return config_from_dict({
        "run": {"scratch": str(tmp_path), "name": "run"},
        "executor": {"kind": "slurm", "slurm": {"partition": SLURM_PARTITION, "time_min": 5, "mem_gb": mem_gb,
                                                 "cpus_per_task": cpus}},
        "pack": {"mem_gb": pack_mem_gb, "cpus_per_task": 1, "time_min": 10},
    })


def test_a_round_is_its_array_task_and_with_finishing_the_finishing_and_pack_jobs(tmp_path: Path) -> None:
    executor = SlurmExecutor(slurm_settings(tmp_path, mem_gb=3, cpus=2, pack_mem_gb=7))
    array, finishing, pack = job_shapes(executor, finishing=True)
    assert (array.name, array.keys, array.resources.mem_gb, array.resources.cpus_per_task) == (
        "g1", "executor.slurm", 3, 2)
    assert (finishing.name, finishing.keys) == ("finish", "")  # fixed by zenodo-hpc: no key to change
    assert (pack.name, pack.keys, pack.resources.mem_gb, pack.resources.time_min) == ("pack", "pack", 7, 10)
    assert {s.resources.partition for s in (array, finishing, pack)} == {SLURM_PARTITION}
    assert [s.name for s in job_shapes(executor, finishing=False)] == ["g1"]


def test_a_job_whose_size_is_fixed_names_a_larger_partition_as_the_only_fix() -> None:
    shape = JobShape("the finishing job", "finish", Resources(None, 10, 1, 1), "")
    assert what_to_change(shape, None) == "choose a partition whose nodes are larger (executor.slurm.partition)"


def test_without_slurm_nothing_is_refused_and_the_dry_run_says_it_did_not_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sbatch or sinfo on PATH (a laptop): the real submit says what is missing, so feasibility refuses
    nothing and knows no node."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    cfg = slurm_settings(tmp_path)
    executor = SlurmExecutor(cfg)
    assert sbatch_test_only(JobDescription(RunDir(cfg.run_dir), "g1", Resources.from_config(cfg)).script("python3")) \
        is None
    assert sinfo_nodes() == [] and read_node_sizes(SLURM_PARTITION) is None
    assert describe_feasibility(executor, RunDir(cfg.run_dir), finishing=True) == \
        "# can the jobs be queued: not checked here (sbatch not on PATH)"


# --- on the dev cluster ---------------------------------------------------------------------------------------


def largest_node() -> tuple[int, int]:
    """The largest RealMemory (MB) and CPUTot among the dev cluster's nodes, as scontrol declares them."""
    out = slurm_dev.run(["scontrol", "-o", "show", "node"]).stdout.splitlines()
    fields = [dict(part.split("=", 1) for part in line.split() if "=" in part) for line in out if line.strip()]
    return max(int(f["RealMemory"]) for f in fields), max(int(f["CPUTot"]) for f in fields)


@pytest.mark.slurm
@on_the_dev_cluster
def test_node_sizes_are_the_largest_nodes_of_the_partition(tmp_path: Path) -> None:
    mem_mb, cpus = largest_node()  # every partition of the dev cluster holds every node
    sizes = read_node_sizes(SLURM_PARTITION)
    assert sizes is not None and (sizes.partition, sizes.mem_mb, sizes.cpus) == (SLURM_PARTITION, mem_mb, cpus)
    default = read_node_sizes(None)
    assert default is not None and default.partition == "debug"  # the dev cluster's Default=YES
    assert read_node_sizes("no_such_partition") is None


@pytest.mark.slurm
@on_the_dev_cluster
def test_a_round_that_fits_passes_and_the_dry_run_says_so(tmp_path: Path) -> None:
    cfg = slurm_settings(tmp_path)
    executor, run = SlurmExecutor(cfg), RunDir(cfg.run_dir)
    assert feasibility_problem(executor, run, finishing=True) is None
    check_feasible(executor, run, finishing=True)  # raises nothing
    line = describe_feasibility(executor, run, finishing=True)
    assert line.startswith("# sbatch --test-only: an array task, the finishing job and the pack job can be queued "
                           f"(the nodes of partition {SLURM_PARTITION} offer at most ")


@pytest.mark.slurm
@on_the_dev_cluster
def test_an_array_task_larger_than_every_node_is_refused_with_the_keys_to_lower(tmp_path: Path) -> None:
    mem_mb, cpus = largest_node()
    cfg = slurm_settings(tmp_path, mem_gb=mem_mb // 1024 + 4, cpus=cpus + 1)
    executor, run = SlurmExecutor(cfg), RunDir(cfg.run_dir)
    script = JobDescription(run, "g1", Resources.from_config(cfg)).script(this_python().command)
    assert sbatch_test_only(script) is not None  # sbatch's own reason, whatever its words
    problem = feasibility_problem(executor, run, finishing=False)
    assert problem is not None and problem.startswith("an array task cannot be queued: it asks ")
    assert f"the nodes of partition {SLURM_PARTITION} offer at most {mem_mb} MB" in problem
    assert f"lower executor.slurm.mem_gb to {mem_mb / 1024:.1f} or less and lower executor.slurm.cpus_per_task " \
        f"to {cpus} or less, or choose a partition whose nodes are larger" in problem
    assert problem.endswith("; nothing was queued")
    with pytest.raises(UserError) as refused:
        check_feasible(executor, run, finishing=False)
    assert str(refused.value) == problem
    assert describe_feasibility(executor, run, finishing=False) == f"# a real submit refuses this: {problem}"


@pytest.mark.slurm
@on_the_dev_cluster
def test_partition_that_does_not_exist_is_refused_and_nothing_is_queued(tmp_path: Path,
                                                                         zenodo_with_records) -> None:
    cfg = slurm_config(tmp_path, zenodo_with_records)
    data = cfg.to_dict()
    data["executor"]["slurm"]["partition"] = "no_such_partition"
    cfg = config_from_dict(data)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    with pytest.raises(UserError, match=r"^an array task cannot be queued: .* answers 'invalid partition specified: "
                                        r"no_such_partition' \(sinfo lists no partition no_such_partition, only "
                                        r".*debug.*\): set executor.slurm.partition to one of those; nothing was "
                                        r"queued$"):
        submit_pending(run, cfg)
    assert load_submissions(run) == [] or all(not s.arrays for s in load_submissions(run))
    assert queued_from(tmp_path) == []

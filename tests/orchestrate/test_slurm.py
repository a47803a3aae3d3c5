"""The SLURM plugin: the generated sbatch script (golden file), array splitting, batches that fit the room in the
queue. What the cluster says is parsed in tests/orchestrate/test_accounting.py; submit/status/resume against the
real dev cluster (slurm/dev-cluster/up.sh) in tests/orchestrate/test_slurm_cluster.py."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
import slurm_dev
from slurm_dev import limited_config

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import RunDir
from zenodo_hpc.orchestrate.accounting import ClusterLimit, QueueRoom, SubmitLimit
from zenodo_hpc.orchestrate.executor import Resources, TaskGroup
from zenodo_hpc.orchestrate.plan import Plan, Shard
from zenodo_hpc.orchestrate.slurm import (
    ArraySpec,
    JobPython,
    SlurmExecutor,
    describe_feeding,
    format_mem,
    is_transient,
    sbatch_error,
    signal_delay_s,
)
from zenodo_hpc.orchestrate.submit import job_python, shard_groups

GOLDEN = Path(__file__).parents[1] / "data" / "sbatch_golden.sh"
SHERLOCK_LIKE = {"executor": {"array_parallelism": 64, "slurm": {
    "partition": "normal", "time_min": 120, "mem_gb": 8, "cpus_per_task": 2,
    "setup": ["module load python/3.11", "source $SCRATCH/venv/bin/activate"],
    "additional": {"qos": "normal", "mail_type": "FAIL"}}}}


def plan_of(n: int) -> tuple[Plan, list[TaskGroup], SlurmExecutor]:
    cfg = config_from_dict(SHERLOCK_LIKE)
    plan = Plan(1, [Shard(i, [str(i)], [i]) for i in range(n)])
    executor = SlurmExecutor(cfg, max_array=1001, python=job_python(cfg))
    return plan, [TaskGroup(list(range(n)), Resources.from_config(cfg))], executor


def normalised_script(text: str) -> str:
    return text.replace(sys.executable, "PYTHON")


def test_generated_sbatch_script_matches_the_golden_file() -> None:
    plan, groups, executor = plan_of(40)
    text = executor.describe(RunDir(Path("/scratch/users/me/zenodo-hpc/zenodo-ml")), plan, groups)
    script = normalised_script(text[text.index("#!/bin/bash"):])
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text(), "sbatch script changed: review, then rerun with UPDATE_GOLDEN=1"


def test_plans_larger_than_max_array_size_become_several_arrays() -> None:
    plan, groups, _ = plan_of(2500)
    executor = SlurmExecutor(config_from_dict(SHERLOCK_LIKE), max_array=1001)
    arrays = executor.arrays(groups)
    assert [len(a.shards) for a in arrays] == [1001, 1001, 498]
    assert [s for a in arrays for s in a.shards] == list(range(2500))
    assert executor.per_array_parallelism(len(arrays)) == 21  # 64 shared by 3 arrays
    text = executor.describe(RunDir(Path("/r")), plan, groups)
    assert "# 3 sbatch array(s) for 2500 shards" in text and "MaxArraySize 1001 (given)" in text
    scripts = text.split("# the sbatch script of array ")[1:]  # every array's script, not the first one's only
    assert [script.split(":")[0] for script in scripts] == ["1", "2", "3"]
    assert ["#SBATCH --array=0-1000%21" in s for s in scripts] == [True, True, False]
    assert "#SBATCH --array=0-497%21" in scripts[2]


def test_every_job_is_described_one_way_the_arrays_and_the_jobs_that_follow_them() -> None:
    cfg = config_from_dict(SHERLOCK_LIKE)
    executor = SlurmExecutor(cfg, max_array=1001, python=JobPython("python3", "python3"))
    run = RunDir(Path("/scratch/zenodo-ml"))
    waiting = Resources.from_config(cfg)
    waiting.additional = {**waiting.additional, "begin": "2026-12-08T00:00:00"}  # what submit's start_after sets
    array = executor.array_job(run, 3, ArraySpec([0, 1, 2], waiting), 4)
    finish = executor.follow_up_job(run, "finish", ["11", "12"])
    pack = executor.follow_up_job(run, "pack", [], executor.pack_resources())
    params = [job.parameters() for job in (array, finish, pack)]
    assert [p["job_name"] for p in params] == ["zenodo-hpc-zenodo-ml-g3", "zenodo-hpc-zenodo-ml-finish",
                                               "zenodo-hpc-zenodo-ml-pack"]
    assert params[0]["additional_parameters"] == {"qos": "normal", "mail-type": "FAIL", "begin": "2026-12-08T00:00:00"}
    assert params[1]["additional_parameters"] == params[2]["additional_parameters"] == {"qos": "normal",
                                                                                        "mail-type": "FAIL"}
    assert all(p["partition"] == "normal" and p["setup"] == SHERLOCK_LIKE["executor"]["slurm"]["setup"]
               for p in params)
    assert (params[0]["array_parallelism"], params[0]["signal_delay_s"], params[0]["mem"]) == (4, 120, "8GB")
    assert params[1]["dependency"] == "afterany:11:12" and (params[1]["mem"], params[1]["time"]) == ("1GB", 30)
    assert not {"array_parallelism", "signal_delay_s"} & (set(params[1]) | set(params[2]))
    assert "dependency" not in params[0] and "dependency" not in params[2]
    assert "#SBATCH --array=0-2%3" in array.script("python3") and "--array" not in finish.script("python3")


def test_the_jobs_run_python3_of_the_setup_environment_else_this_interpreter() -> None:
    with_setup = job_python(config_from_dict(SHERLOCK_LIKE))
    assert with_setup.command == "python3" and "executor.slurm.setup" in with_setup.why
    without = job_python(config_from_dict({"executor": {"slurm": {"setup": []}}}))
    assert without.command == shlex.quote(sys.executable) and sys.executable in without.why


def test_without_slurm_commands_the_limits_are_said_to_be_assumed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol, sacctmgr, sinfo, sbatch, srun
    plan, groups, _ = plan_of(3)
    cfg = config_from_dict(SHERLOCK_LIKE)
    text = SlurmExecutor(cfg, python=job_python(cfg)).describe(RunDir(tmp_path / "run"), plan, groups)
    assert "# cluster limits: MaxArraySize 1001 (assumed: SLURM's default, scontrol not on PATH)" in text
    assert "QOS normal MaxSubmitJobsPerUser none (assumed: no limit, sacctmgr not on PATH)" in text
    assert not (tmp_path / "run").exists()


def test_small_helpers() -> None:
    assert format_mem(4) == "4GB" and format_mem(1.5) == "1536MB"
    assert signal_delay_s(1) == 30 and signal_delay_s(60) == 120 and signal_delay_s(10) == 60
    assert is_transient("sbatch: error: QOSMaxSubmitJobPerUserLimit") and is_transient("Socket timed out on send")
    assert not is_transient("sbatch: error: Batch job submission failed: Invalid partition name specified")
    err = RuntimeError("\nsbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert sbatch_error(err) == "sbatch: error: Batch job submission failed: Invalid partition name specified"


# --- the room in the queue, from what the dev cluster answered (tests/orchestrate/test_accounting.py reads it) ---

@pytest.fixture
def dev_cluster_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return slurm_dev.replay_recorded_answers(monkeypatch)


def test_a_plan_larger_than_the_room_queues_what_fits_and_says_how_the_rest_is_fed(
        dev_cluster_answers: list[str]) -> None:
    cfg = limited_config(qos="limited")
    plan = Plan(1, [Shard(i, [str(i)], [i]) for i in range(22)])
    base = Resources.from_config(cfg)
    more = Resources(base.partition, base.time_min, base.mem_gb * 2, base.cpus_per_task)
    groups = [TaskGroup([0, 1], more), TaskGroup(list(range(2, 22)), base)]  # escalated shards first
    executor = SlurmExecutor(cfg, python=JobPython("python3", "python3 of the setup lines"))
    assert executor.split_batch(groups, executor.queue_room()) == (groups, [])  # nothing follows: all at once
    executor.reserve = 1  # the finishing job
    now, later = executor.split_batch(groups, executor.queue_room())
    assert [(g.shards, g.resources) for g in now] == [([0, 1], more)] and later == list(range(2, 22))
    text = executor.describe(RunDir(Path("/r")), plan, groups)
    assert "# 22 tasks, 2 queued now, the other 20 in batches by the finishing job as room frees (3 jobs free in " \
           "the queue, 1 kept for the finishing job)" in text
    assert "QOS limited MaxSubmitJobsPerUser 5 (read from sacctmgr); 2 of your jobs queued under it now" in text
    assert "# cluster limits: MaxArraySize 5 (read from scontrol)" in text
    assert text.count("# the sbatch script of array ") == 1 and "#SBATCH --array=0-1%" in text  # the first batch


def test_a_full_queue_still_queues_one_task_once_the_wait_for_room_is_over() -> None:
    full = QueueRoom((SubmitLimit(ClusterLimit("QOS limited MaxSubmitJobsPerUser", 5, "read"), 5),))
    assert full.free == 0 and full.tasks_now(22, reserve=1) == 0
    cfg = limited_config(qos="limited")
    slept: list[float] = []
    executor = SlurmExecutor(cfg, python=JobPython("python3", "python3"), room=full, sleep=slept.append)
    executor.reserve = 1
    assert executor.wait_for_room() is full and len(slept) == 7  # the backoff of a busy scheduler, then go on
    groups = [TaskGroup(list(range(22)), Resources.from_config(cfg))]
    now, later = executor.split_batch(groups, full)
    assert [g.shards for g in now] == [[0]] and later == list(range(1, 22))  # sbatch's own retries take over
    assert "the queue is full now" in describe_feeding(22, 21, full, 1)
    unknown = SubmitLimit(ClusterLimit("QOS limited MaxSubmitJobsPerUser", 5, "read"), None)  # squeue failed
    assert unknown.free == 5 and unknown.describe().endswith("how many of your jobs are queued under it: squeue "
                                                            "could not say")


def test_the_finishing_job_regroups_the_waiting_shards_by_their_resources() -> None:
    cfg = config_from_dict(SHERLOCK_LIKE)
    plan = Plan(2, [Shard(0, ["a"], [0]), Shard(1, ["b"], [1], mem_gb=16.0), Shard(2, ["c"], [2]),
                    Shard(3, ["d"], [3], mem_gb=16.0)])
    groups = shard_groups(plan, [1, 2, 3], cfg)
    assert [(g.shards, g.resources.mem_gb) for g in groups] == [([2], 8), ([1, 3], 16.0)]
    assert all(g.resources.partition == "normal" and g.resources.time_min == 120 for g in groups)


def test_status_says_who_queues_the_tasks_a_batched_round_has_not_queued_yet() -> None:
    from zenodo_hpc.orchestrate.status import RunStatus, ShardCounts, format_status

    plan = ShardCounts(1, "slurm", 22, done=4, unqueued=18)
    status = RunStatus("/r", 22, 4, 0, 0, 18, {}, {}, [plan], None, None, "sacct/squeue",
                       chain={"state": "running", "generations": [1], "rounds": 1, "max_rounds": 3,
                              "finishing_job": "77"})
    assert "22 shards: 4 done, 0 running, 0 pending, 0 failed, 18 not yet queued (queued in batches as room " \
           "frees)" in format_status(status)
    status.chain = {"state": "stopped", "generations": [1], "message": "stopped: sbatch refused the finish job"}
    assert "18 never queued (their chain ended first: resume plans what is not done)" in format_status(status)

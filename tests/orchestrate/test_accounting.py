"""What the cluster says, parsed (zenodo_hpc/orchestrate/accounting.py): task states from real sacct and squeue
output, and the room in the queue from what the dev cluster's sacctmgr and squeue answered (recorded in
tests/data); and, on the live dev cluster (marked ``slurm``), the array size limit and the fallback to squeue."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import slurm_dev
from helpers import slow_record, slurm_config
from slurm_dev import limited_config

from zenodo_hpc.core.state import attempts_of, ids_in, open_run
from zenodo_hpc.orchestrate.accounting import (
    GONE,
    TaskState,
    expand_array_ids,
    fold_sacct_lines,
    max_array_size,
    normalise_state,
    parse_elapsed_s,
    parse_memory_gb,
    read_queue_room,
    reconcile,
    shard_states,
    unfinished_tasks,
)
from zenodo_hpc.orchestrate.executor import Submission, load_submissions
from zenodo_hpc.orchestrate.status import gather_status
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest


def test_array_ids_and_states_read_as_slurm_writes_them() -> None:
    assert expand_array_ids("123_[1-3,7%2]") == ["123_1", "123_2", "123_3", "123_7"]
    assert expand_array_ids("123_4") == ["123_4"] and expand_array_ids("9") == ["9"]
    assert normalise_state("CANCELLED by 0") == "CANCELLED" and normalise_state("OUT_OF_ME+") == "OUT_OF_MEMORY"


def test_shard_states_map_array_tasks_to_plan_shards() -> None:
    sub = Submission(2, "slurm", 4, arrays=[{"job_id": "50", "shards": [0, 1]}, {"job_id": "51", "shards": [2]}])
    states = {"50_0": TaskState("COMPLETED"), "50_1": TaskState("OUT_OF_MEMORY"), "51_0": TaskState("RUNNING")}
    assert {k: v.state for k, v in shard_states(sub, states).items()} == {0: "COMPLETED", 1: "OUT_OF_MEMORY",
                                                                        2: "RUNNING"}


def test_a_memory_kill_is_read_from_its_step_and_maxrss_from_the_largest_step() -> None:
    """Real sacct output (tests/data/sacct_oom_22.05.txt): the job says FAILED 1:0, only its step says OOM."""
    lines = [line for line in (Path(__file__).parents[1] / "data" / "sacct_oom_22.05.txt").read_text().splitlines()
             if not line.startswith("#")]
    tasks = fold_sacct_lines(lines)
    assert tasks["87_10"].state == "OUT_OF_MEMORY" and tasks["87_0"].state == "COMPLETED"
    assert tasks["87_10"].max_rss_gb == pytest.approx(293456 / 1024**2)
    assert tasks["87_10"].elapsed_s == 6 and tasks["87_10"].node == "node3"


def test_the_controller_knows_what_is_queued_accounting_how_the_rest_ended() -> None:
    accounted = {"9_0": TaskState("PENDING"), "9_1": TaskState("NODE_FAIL"), "9_2": TaskState("COMPLETED")}
    queued = {"9_1": TaskState("PENDING", source="squeue")}  # requeued after its node failed
    merged = reconcile(accounted, queued)
    assert merged["9_0"].state == GONE  # cancelled before it started: accounting still says PENDING
    assert merged["9_1"].state == "PENDING" and merged["9_2"].state == "COMPLETED"
    assert reconcile(accounted, None)["9_0"].state == "PENDING"  # no squeue: accounting is all there is
    assert parse_elapsed_s("1-02:03:04") == 93784 and parse_memory_gb("1.5G") == 1.5


# --- the room in the queue, from what the dev cluster answered ------------------------------------------------


@pytest.fixture
def dev_cluster_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return slurm_dev.replay_recorded_answers(monkeypatch)


def test_the_qos_limit_and_what_is_queued_under_it_leave_room_for_two_tasks_and_the_finishing_job(
        dev_cluster_answers: list[str]) -> None:
    room = read_queue_room(limited_config(qos="limited"), user="root")
    # QOS limited: 5 jobs, 2 of root's queued under it (2041_0, 2041_1); root's default account zhpc has no limit
    assert [(limit.limit.name, limit.limit.value, limit.queued) for limit in room.limits] == [
        ("QOS limited MaxSubmitJobsPerUser", 5, 2)]
    assert room.free == 3 and room.tasks_now(22, reserve=1) == 2 and room.tasks_now(2, reserve=1) == 2
    assert "sacctmgr -n -P show user root format=defaultaccount" in dev_cluster_answers


def test_the_associations_limit_counts_the_jobs_of_its_account(dev_cluster_answers: list[str]) -> None:
    room = read_queue_room(limited_config(account="zhpcq"), user="root")  # QOS normal (the default): no limit
    assert [(limit.limit.name, limit.limit.value, limit.queued) for limit in room.limits if limit.free is not None] \
        == [("association zhpcq MaxSubmitJobs", 4, 1)]
    assert room.free == 3
    both = read_queue_room(limited_config(account="zhpcq", qos="limited"), user="root")
    assert sorted(limit.free for limit in both.limits) == [3, 3] and both.tasks_now(22, reserve=1) == 2
    free = read_queue_room(limited_config(), user="root")  # account zhpc, QOS normal: nothing limits
    assert free.free is None and free.tasks_now(22, reserve=1) == 22


# --- on the dev cluster ---------------------------------------------------------------------------------------

SLURM_PROBLEM = slurm_dev.cluster_problem()


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_PROBLEM is not None, reason=SLURM_PROBLEM or "")
def test_cluster_reports_its_max_array_size() -> None:
    assert max_array_size() == int(os.environ.get("ZHPC_SLURM_MAX_ARRAY_SIZE", "1001"))


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_PROBLEM is not None, reason=SLURM_PROBLEM or "")
def test_status_falls_back_to_squeue_when_sacct_fails(tmp_path: Path, zenodo_with_records,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slow_record(zenodo_with_records, 101, 20.0)
    cfg = slurm_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg)
    slurm_dev.wait_for(lambda: attempts_of(run, "101") >= 1, 120, "record 101 to start")
    # sacct answering "accounting storage is disabled" is played by a sacct that fails: the one thing
    # here that is not real, because the dev cluster does have accounting.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    status = gather_status(run)
    assert status.generations[0].running >= 1
    monkeypatch.undo()
    slurm_dev.wait_for(lambda: unfinished_tasks(load_submissions(run)) == 0, 240, f"the tasks of {run.root} to end")
    assert ids_in(run, "done") == {str(100 + i) for i in range(1, 13)}

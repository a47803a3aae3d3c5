"""The executors that run shards on this machine (zenodo_hpc/orchestrate/local.py): ``local`` (a real worker process
a shard, its exit status recorded as SLURM words it) and ``debug`` (in this process), called directly on a planned
run. Whole local runs and the faults they survive are in tests/orchestrate/test_submit.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_config

from zenodo_hpc.core.config import Config
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, ids_in, open_run
from zenodo_hpc.orchestrate.executor import Submission, TaskGroup, load_submissions
from zenodo_hpc.orchestrate.local import DebugExecutor, LocalExecutor, exit_state
from zenodo_hpc.orchestrate.plan import Plan, write_plan
from zenodo_hpc.orchestrate.submit import plan_groups, take_snapshot
from zenodo_hpc.orchestrate.worker import run_shard
from zenodo_hpc.zenodo.harvest import harvest

ALL = {str(100 + i) for i in range(1, 13)}


def planned(tmp_path: Path, double, **executor) -> tuple[RunDir, Config, Plan, list[TaskGroup]]:
    """A harvested run of the 12 records and its first plan, written as submit writes it (4 shards of 3)."""
    cfg = run_config(tmp_path, double, **executor)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    snapshot = take_snapshot(run, cfg)
    plan, groups = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    write_plan(run, plan)
    return run, cfg, plan, groups


def saved(run: RunDir, generation: int = 1) -> dict:
    return json.loads(run.submission(generation).read_text())


def test_local_workers_run_every_shard_and_record_each_exit(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg, plan, groups = planned(tmp_path, zenodo_with_records, local={"workers": 2})
    submission = LocalExecutor(cfg).submit(run, plan, groups)
    assert (submission.generation, submission.kind, submission.concurrent) == (1, "local", 2)
    assert submission.tasks == {str(s.index): {"state": "COMPLETED", "exit": 0} for s in plan.shards}
    assert saved(run) == submission.to_json()  # what status reads is what was returned
    assert ids_in(run, "done") == ALL
    for shard in plan.shards:  # each worker's output (its counts) went to its shard's file
        assert run.task_output(1, shard.index).read_text() == "{'done': 3}\n"


def test_a_worker_that_fails_is_recorded_failed_with_its_exit_status(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg, plan, groups = planned(tmp_path, zenodo_with_records)
    no_such = TaskGroup([0, 99], groups[0].resources)  # the plan has 4 shards: the worker of 99 refuses it
    submission = LocalExecutor(cfg).submit(run, plan, [no_such])
    assert submission.tasks["0"] == {"state": "COMPLETED", "exit": 0}
    assert submission.tasks["99"]["state"] == "FAILED" and submission.tasks["99"]["exit"] > 0
    assert "has no shard 99" in run.task_output(1, 99).read_text()
    assert load_submissions(run, strict=True)[0].tasks == submission.tasks


@pytest.mark.parametrize(("code", "state"), [(0, "COMPLETED"), (1, "FAILED"), (2, "FAILED"), (None, "FAILED"),
                                             (-signal.SIGKILL, "KILLED"), (-signal.SIGTERM, "KILLED")])
def test_an_exit_status_in_slurms_words(code: int | None, state: str) -> None:
    assert exit_state(code) == state


def test_a_process_killed_by_a_signal_is_killed() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                          check=False)
    assert exit_state(proc.returncode) == "KILLED"


def test_workers_never_outnumber_the_shards_or_the_setting(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg, plan, groups = planned(tmp_path, zenodo_with_records, local={"workers": 8})
    assert LocalExecutor(cfg).concurrency(plan) == 4  # 4 shards
    two = run_config(tmp_path / "other", zenodo_with_records, local={"workers": 2})
    assert LocalExecutor(two).concurrency(plan) == 2
    assert LocalExecutor(two).concurrency(Plan(1, [])) == 1


def test_the_dry_run_shows_the_worker_commands(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg, plan, groups = planned(tmp_path, zenodo_with_records, local={"workers": 2})
    executor = LocalExecutor(cfg)
    command = [sys.executable, "-m", "zenodo_hpc.orchestrate.worker", str(run.root.resolve()), "1", "3",
               "--concurrent", "2"]
    assert executor.command(run, 1, 3, 2) == command
    lines = executor.describe(run, plan, groups).splitlines()
    assert lines[0] == "# 4 worker processes, 2 at a time, on this machine:"
    assert lines[1:4] == [" ".join(executor.command(run, 1, s, 2)) for s in (0, 1, 2)]
    assert lines[4:] == ["# ... and 1 more"]
    assert not run.submission(1).exists()  # describing runs nothing


def test_debug_runs_every_shard_in_this_process(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg, plan, groups = planned(tmp_path, zenodo_with_records)
    executor = DebugExecutor(run_shard)
    assert executor.describe(run, plan, groups) == "# 4 shards run one after the other in this process (debug)"
    submission = executor.submit(run, plan, groups)
    assert (submission.kind, submission.concurrent) == ("debug", 1)
    assert submission.tasks == {str(s.index): {"state": "COMPLETED", "exit": 0} for s in plan.shards}
    assert saved(run) == submission.to_json() and ids_in(run, "done") == ALL
    assert not run.task_output(1, 0).exists()  # no worker process, no process output


def test_debug_stops_at_the_shard_that_raises_and_keeps_what_it_finished(tmp_path: Path,
                                                                         zenodo_with_records) -> None:
    """In debug, the error is the user's to see (pdb): raised, not recorded; the shards before it are kept."""
    run, cfg, plan, groups = planned(tmp_path, zenodo_with_records)
    with pytest.raises(UserError, match="has no shard 99"):
        DebugExecutor(run_shard).submit(run, plan, [TaskGroup([1, 99, 2], groups[0].resources)])
    assert Submission.from_json(saved(run)).tasks == {"1": {"state": "COMPLETED", "exit": 0}}
    assert ids_in(run, "done") == set(plan.shards[1].ids)

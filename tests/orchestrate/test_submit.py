"""submit / status / resume with the local and debug executors, and the faults they must survive.

The worker processes are real (``python -m zenodo_hpc.orchestrate.worker``), the Zenodo double is a real server,
and a crash is a real ``SIGKILL`` of a real worker process. SLURM itself is in tests/orchestrate/test_slurm.py.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import run_config, tree_bytes

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, attempts_of, driver_lock, ids_in, open_run, read_failure, read_json
from zenodo_hpc.orchestrate.executor import load_submissions
from zenodo_hpc.orchestrate.local import LocalExecutor
from zenodo_hpc.orchestrate.plan import generations, load_plan, write_plan
from zenodo_hpc.orchestrate.status import gather_status
from zenodo_hpc.orchestrate.submit import plan_groups, submit_pending, take_snapshot
from zenodo_hpc.zenodo.harvest import harvest

ALL = {str(100 + i) for i in range(1, 13)}
ROOT = Path(__file__).resolve().parents[2]


def harvested(tmp_path: Path, double, **executor) -> tuple[RunDir, Config]:
    cfg = run_config(tmp_path, double, **executor)
    harvest(cfg, progress=False)
    return open_run(cfg), cfg


def clean_outputs(tmp_path: Path, double) -> dict[str, bytes]:
    """The outputs of an uninterrupted run (debug executor) from the same double, to compare against."""
    run, cfg = harvested(tmp_path / "clean", double)
    submit_pending(run, cfg, kind="debug")
    assert ids_in(run, "done") == ALL
    return tree_bytes(run.data)


def test_local_run_completes_with_the_same_outputs_as_debug(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg = harvested(tmp_path, zenodo_with_records)
    result = submit_pending(run, cfg)
    assert result.submission is not None and result.submission.kind == "local"
    assert {t["state"] for t in result.submission.tasks.values()} == {"COMPLETED"}
    assert ids_in(run, "done") == ALL
    assert tree_bytes(run.data) == clean_outputs(tmp_path, zenodo_with_records)
    assert len(result.plan.shards) == 4
    logs = sorted(p.name for p in (run.logs / "g0001").iterdir())
    assert "shard-00000.log" in logs and "shard-00000.out" in logs
    status = gather_status(run)
    assert (status.done, status.pending, status.failed) == (12, 0, 0) and status.complete
    again = submit_pending(run, cfg)
    assert again.plan is None and generations(run) == [1]  # a complete run submits nothing


def test_failed_records_are_counted_by_reason_and_retried_by_resume(tmp_path: Path, zenodo_with_records) -> None:
    double = zenodo_with_records
    hit = next(h for h in _hits(double) if h["id"] == 103)
    url_path = "/api/records/103/files/" + hit["files"][0]["key"] + "/content"
    double.fail(url_path, "503", times=2)  # one more than the client's retries: the record fails, for now
    run, cfg = harvested(tmp_path, double)
    submit_pending(run, cfg)
    status = gather_status(run)
    assert (status.done, status.failed, status.failed_reasons) == (11, 1, {"http_503": 1})
    assert read_failure(run, "103").attempts == 1
    code = main(["resume", str(run.root)])  # the 503s were passing: resume finishes the run
    assert code == 0
    assert ids_in(run, "done") == ALL and generations(run) == [1, 2]
    assert len(load_plan(run, 2).shards) == 1 and load_plan(run, 2).shards[0].ids == ["103"]
    assert gather_status(run).failed == 0


def _hits(double) -> list[dict]:
    import requests

    return requests.get(f"{double.api_url}/records", params={"size": 25}).json()["hits"]["hits"]


def _kill_when_attempted(run: RunDir, record_id: str, times: int, stop: threading.Event) -> list[int]:
    """A real crash: SIGKILL the worker process that holds ``record_id``, each time it starts it."""
    killed: list[int] = []
    seen = 0

    def watch() -> None:
        nonlocal seen
        while not stop.is_set() and len(killed) < times:
            attempts = attempts_of(run, record_id)
            if attempts > seen:
                pid = _worker_pid_for(run, record_id)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    seen = attempts
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def _worker_pid_for(run: RunDir, record_id: str) -> int | None:
    generation = generations(run)[-1]
    shard = next(s.index for s in load_plan(run, generation).shards if record_id in s.ids)
    tasks = (read_json(run.submission(generation)) or {}).get("tasks", {})
    return tasks.get(str(shard), {}).get("pid")


def _slow(double, record_id: int, seconds: float, times: int) -> None:
    hit = next(h for h in _hits(double) if h["id"] == record_id)
    double.fail(f"/api/records/{record_id}/files/{hit['files'][0]['key']}/content", "slow", times=times,
                seconds=seconds)


def test_worker_killed_mid_record_then_resume_gives_identical_outputs(tmp_path: Path, zenodo_with_records) -> None:
    _slow(zenodo_with_records, 105, 3.0, times=1)
    run, cfg = harvested(tmp_path, zenodo_with_records)
    stop = threading.Event()
    killed = _kill_when_attempted(run, "105", 1, stop)
    result = submit_pending(run, cfg)
    stop.set()
    assert len(killed) == 1
    states = sorted(t["state"] for t in result.submission.tasks.values())
    assert states == ["COMPLETED", "COMPLETED", "COMPLETED", "KILLED"]
    status = gather_status(run)
    assert "105" not in ids_in(run, "done") and status.done < 12
    assert status.generations[0].failed_states == {"KILLED": 1}
    assert not (run.data / "105").exists()
    assert not [p for p in run.data.iterdir() if p.name.startswith(".")]  # no half-written record visible...
    resumed = submit_pending(run, cfg, what="resume")
    assert resumed.plan is not None and "105" in resumed.plan.shards[0].ids
    assert ids_in(run, "done") == ALL
    assert tree_bytes(run.data) == clean_outputs(tmp_path, zenodo_with_records)


def test_a_record_that_kills_its_worker_every_time_is_quarantined(tmp_path: Path, zenodo_with_records) -> None:
    _slow(zenodo_with_records, 107, 3.0, times=5)
    run, cfg = harvested(tmp_path, zenodo_with_records, max_attempts=2)
    stop = threading.Event()
    killed = _kill_when_attempted(run, "107", 2, stop)
    submit_pending(run, cfg)
    submit_pending(run, cfg, what="resume")
    stop.set()
    assert len(killed) == 2
    third = submit_pending(run, cfg, what="resume")  # what the kills took down with 107, without 107
    assert third.plan is None or "107" not in {i for s in third.plan.shards for i in s.ids}
    assert submit_pending(run, cfg, what="resume").plan is None  # 107 quarantined, not tried forever
    failure = read_failure(run, "107")
    assert failure.quarantined and failure.reason == "worker_died"
    assert ids_in(run, "done") == ALL - {"107"}
    status = gather_status(run)
    assert status.quarantined_reasons == {"worker_died": 1} and status.complete


def _debug_submit_with_file_size_limit(run: RunDir, cfg: Config, limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    submit_pending(run, cfg, kind="debug")


def test_full_disk_while_writing_fails_records_cleanly_and_resume_finishes(tmp_path: Path,
                                                                          zenodo_with_records) -> None:
    run, cfg = harvested(tmp_path, zenodo_with_records)
    pid = os.fork()
    if pid == 0:  # a child whose writes fail past 30 kB, as on a full disk
        try:
            _debug_submit_with_file_size_limit(run, cfg, 4_000)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    failures = {i: read_failure(run, i) for i in ids_in(run, "failed")}
    assert len(failures) == 12 and {f.reason for f in failures.values()} == {"disk_full"}
    assert any("cannot write record" in f.message for f in failures.values())
    assert all(attempts_of(run, i) == 0 for i in failures)  # a full disk is not the records' fault
    for record_id in failures:
        assert not (run.data / record_id).exists()
    assert not [p for p in run.data.iterdir() if p.name.startswith(".")]
    submit_pending(run, cfg, what="resume")
    assert ids_in(run, "done") == ALL
    assert tree_bytes(run.data) == clean_outputs(tmp_path, zenodo_with_records)


def test_two_drivers_do_not_both_submit(tmp_path: Path, zenodo_with_records) -> None:
    run, cfg = harvested(tmp_path, zenodo_with_records)
    busy = r"another zenodo-hpc driver \(submit, pid \d+ on .*remove .*driver.lock"
    with driver_lock(run, "submit"), pytest.raises(UserError, match=busy):  # another driver is submitting
        submit_pending(run, cfg, what="resume")
    assert generations(run) == [] and load_submissions(run) == []


def test_stale_lock_of_a_dead_driver_is_taken_over(tmp_path: Path, zenodo_with_records) -> None:
    import json
    import socket

    run, cfg = harvested(tmp_path, zenodo_with_records)
    (run.state / "driver.lock").write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))
    submit_pending(run, cfg, kind="debug")
    assert ids_in(run, "done") == ALL and not (run.state / "driver.lock").exists()


def test_run_directory_from_a_different_config_is_refused(tmp_path: Path, zenodo_with_records,
                                                          capsys: pytest.CaptureFixture) -> None:
    run, cfg = harvested(tmp_path, zenodo_with_records)
    data = cfg.to_dict()
    data["raster"]["width"] = 40
    config = tmp_path / "other.yaml"
    import yaml

    config.write_text(yaml.safe_dump(data))
    assert main(["submit", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert "was made with a different config: raster.width is 80 in the run, 40 in this config" in err
    assert generations(run) == []
    data["raster"]["width"] = 80
    data["executor"]["slurm"]["mem_gb"] = 16  # resources may change between submissions
    config.write_text(yaml.safe_dump(data))
    assert main(["submit", "-c", str(config), "--executor", "debug"]) == 0


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, zenodo_with_records,
                                                    capsys: pytest.CaptureFixture) -> None:
    run, cfg = harvested(tmp_path, zenodo_with_records)
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["submit", "-c", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan 1: 12 records in 4 shards") and "dry run, nothing submitted" in out
    assert "-m zenodo_hpc.orchestrate.worker" in out
    assert generations(run) == [] and load_submissions(run) == [] and ids_in(run, "done") == set()


def test_dry_run_of_the_sherlock_config_needs_neither_slurm_nor_a_harvest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A laptop (or a login node before `module load slurm`): no SLURM command on PATH, nothing harvested."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, srun, scontrol, sacctmgr, sinfo
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = str(ROOT / "configs" / "sherlock.yaml")
    assert main(["submit", "-c", config, "--dry-run", "--records", "10000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan 1: 10000 records in 200 shards (a number stated with --records")
    assert "# cluster limits: MaxArraySize 1001 (assumed: SLURM's default, scontrol not on PATH)" in out
    assert "# the jobs run python3 of the environment that executor.slurm.setup makes on the node" in out
    assert out.count("#!/bin/bash") == 2  # the array's script and the finishing job's
    array, finishing = out.split("# the sbatch script of array 1:")[1].split("# the sbatch script of the finishing job")
    assert "#SBATCH --array=0-199%32" in array and "-finish" not in array
    assert "#SBATCH --dependency=afterany:ARRAY1_ID" in finishing and "#SBATCH --job-name=zenodo-hpc-zenodo-ml-finish" \
        in finishing
    for script in (array, finishing):
        assert f"source {tmp_path}/home/zenodo-hpc/venv/bin/activate" in script
        assert "python3 -u -m submitit.core._submit" in script and sys.executable not in script
    assert not (tmp_path / "scratch").exists()  # nothing written
    assert main(["submit", "-c", config, "--dry-run"]) == 1  # no harvest, no stated number: say how to preview
    assert "holds no records: run `zenodo-hpc harvest -c CONFIG` first; or preview the plan of N records without " \
        "one: --dry-run --records N" in capsys.readouterr().err

    monkeypatch.delenv("SCRATCH")
    assert main(["submit", "-c", config, "--dry-run", "--records", "10000"]) == 1
    assert "run.scratch: environment variable SCRATCH is not set" in capsys.readouterr().err


def test_records_is_for_a_dry_run_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"run: {{scratch: {tmp_path}, name: r}}\n")
    assert main(["submit", "-c", str(config), "--records", "10"]) == 1
    assert "--records N is for a preview only: use it with --dry-run" in capsys.readouterr().err
    assert main(["submit", "-c", str(config), "--dry-run", "--records", "0", "--executor", "local"]) == 1
    assert "--records must be 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_real_submit_without_slurm_says_what_is_missing_and_writes_no_plan(
        tmp_path: Path, zenodo_with_records, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run, cfg = harvested(tmp_path, zenodo_with_records)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    capsys.readouterr()
    assert main(["submit", "-c", str(config), "--executor", "slurm"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["zenodo-hpc submit: error: executor slurm: sbatch and srun are not on PATH: load your site's SLURM "
                   "module (e.g. module load slurm), or use --executor local"]
    assert generations(run) == [] and load_submissions(run) == []


def test_submit_without_harvest_is_a_clear_error(tmp_path: Path, zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    run = open_run(cfg)
    with pytest.raises(UserError, match="holds no records: run `zenodo-hpc harvest -c CONFIG` first"):
        submit_pending(run, cfg)


def test_status_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", str(tmp_path)]) == 1
    assert "is not a run directory (no run.yaml)" in capsys.readouterr().err


def test_status_json(tmp_path: Path, zenodo_with_records, capsys: pytest.CaptureFixture) -> None:
    import json

    run, cfg = harvested(tmp_path, zenodo_with_records)
    submit_pending(run, cfg, kind="debug")
    assert main(["status", str(run.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["records"] == 12 and data["done"] == 12 and data["generations"][0]["kind"] == "debug"


def test_config_executor_kind_local_and_debug_are_accepted() -> None:
    assert config_from_dict({"executor": {"kind": "debug"}}).executor.kind == "debug"


def test_sigterm_to_a_local_worker_does_not_count_an_attempt(tmp_path: Path, zenodo_with_records) -> None:
    """Ctrl-C of a local run (or a cancelled job) unwinds the record in progress: no attempt counted."""
    _slow(zenodo_with_records, 102, 20.0, times=1)
    run, cfg = harvested(tmp_path, zenodo_with_records)
    snapshot = take_snapshot(run, cfg)
    plan, groups = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    write_plan(run, plan)
    shard = next(s.index for s in plan.shards if "102" in s.ids)
    executor = LocalExecutor(cfg)
    node_tmp = tmp_path / "node-tmp"  # the worker's own node-local space: other runs on this machine stay out
    node_tmp.mkdir()
    proc = subprocess.Popen(executor.command(run, 1, shard, 1), env={**os.environ, "TMPDIR": str(node_tmp)})
    deadline = time.monotonic() + 60
    while attempts_of(run, "102") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert attempts_of(run, "102") == 0 and "102" not in ids_in(run, "done")
    assert list(node_tmp.iterdir()) == []  # the record's temporary folder went with it
    assert generations(run) == [1]


def test_shards_that_died_of_oom_or_timeout_get_more_memory_or_time(tmp_path: Path, zenodo_with_records) -> None:
    """SLURM's verdicts are fed through the run directory (a submission's task states): the dev cluster
    has no cgroups, so a real OUT_OF_MEMORY cannot be produced there."""
    from zenodo_hpc.orchestrate.executor import Submission, save_submission

    run, cfg = harvested(tmp_path, zenodo_with_records)
    data = cfg.to_dict()
    data["executor"]["slurm"].update({"mem_gb": 4, "time_min": 60, "max_mem_gb": 6})
    cfg = config_from_dict(data)
    snapshot = take_snapshot(run, cfg)
    plan, _ = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    write_plan(run, plan)
    states = {"0": "OUT_OF_MEMORY", "1": "TIMEOUT", "2": "COMPLETED", "3": "COMPLETED"}
    save_submission(run, Submission(1, "local", 2, tasks={k: {"state": v} for k, v in states.items()}))
    result = submit_pending(run, cfg, kind="slurm", dry_run=True)
    by_record = {i: s for s in result.plan.shards for i in s.ids}
    for record in plan.shards[0].ids:
        assert (by_record[record].mem_gb, by_record[record].time_min) == (6, 60)  # 4 x 2, capped at 6
    for record in plan.shards[1].ids:
        assert (by_record[record].mem_gb, by_record[record].time_min) == (4, 120)
    for record in plan.shards[2].ids + plan.shards[3].ids:
        assert by_record[record].mem_gb is None  # the config's own resources
    assert "6GB, 60 min" in result.description and "4GB, 120 min" in result.description


# --- a local run whose driver is killed; what killed workers leave behind --------------------------


def _wait_until(condition, what: str, limit_s: float = 90) -> None:
    """Poll ``condition`` (a safety limit only: nothing here asserts how long anything takes)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.05)


def _first_records_slow(double, run: RunDir, cfg: Config, shards: list[int], seconds: float) -> list[str]:
    """The plan the driver will make (planning is deterministic): slow down the first record of these shards."""
    snapshot = take_snapshot(run, cfg)
    plan, _ = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    firsts = [plan.shards[i].ids[0] for i in shards]
    for record_id in firsts:
        _slow(double, int(record_id), seconds, times=1)
    return firsts


def _running_tasks(run: RunDir) -> dict[str, dict]:
    tasks = (read_json(run.submission(1)) or {}).get("tasks", {})
    return {k: t for k, t in tasks.items() if t.get("state") == "RUNNING"}


def test_a_killed_local_driver_shows_its_workers_running_while_they_live_then_lost(
        tmp_path: Path, zenodo_with_records, capsys: pytest.CaptureFixture) -> None:
    import sys

    import yaml

    from zenodo_hpc.core.liveness import GONE, process_state, this_host

    run, cfg = harvested(tmp_path, zenodo_with_records)
    slow = _first_records_slow(zenodo_with_records, run, cfg, [0, 1], 60.0)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(node_tmp)}
    driver = subprocess.Popen([sys.executable, "-m", "zenodo_hpc", "submit", "-c", str(config)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until(lambda: len(_running_tasks(run)) == 2 and all(attempts_of(run, r) for r in slow),
                "two workers inside their slow records")
    workers = _running_tasks(run)
    assert {t["host"] for t in workers.values()} == {this_host()}
    driver.kill()  # SIGKILL: nothing of the driver runs again; its workers go on, orphaned
    driver.wait()

    assert main(["status", str(run.root)]) == 0
    assert "plan 1 [local]: 4 shards: 0 done, 2 running, 2 pending, 0 failed" in capsys.readouterr().out
    assert main(["resume", "--dry-run", str(run.root)]) == 0  # their records are left to them
    assert capsys.readouterr().out.startswith("plan 2: 6 records in 2 shards (0 done, 0 quarantined, 6 queued or "
                                              "running of 12)")

    for task in workers.values():
        os.kill(task["pid"], signal.SIGKILL)
    _wait_until(lambda: all(process_state(t) == GONE for t in workers.values()), "the workers to be gone")
    assert len(list(node_tmp.iterdir())) == 2  # what the killed workers left behind
    assert main(["status", str(run.root)]) == 0
    out = capsys.readouterr().out
    assert "plan 1 [local]: 4 shards: 0 done, 0 running, 2 pending, 2 failed  (LOST 2)" in out
    assert main(["resume", "--dry-run", str(run.root)]) == 0
    assert capsys.readouterr().out.startswith("plan 2: 12 records in 4 shards (0 done, 0 quarantined of 12)")
    assert gather_status(run).generations[0].failed_states == {"LOST": 2}

    resumed = subprocess.run([sys.executable, "-m", "zenodo_hpc", "resume", str(run.root)], env=env,
                             capture_output=True, text=True, check=False)  # takes over the dead driver's lock
    assert resumed.returncode == 0, resumed.stderr
    assert ids_in(run, "done") == ALL
    assert list(node_tmp.iterdir()) == []  # the new workers removed the dead ones' folders


def test_a_worker_removes_what_dead_workers_left_and_nothing_of_a_live_one(tmp_path: Path,
                                                                          zenodo_with_records) -> None:
    from zenodo_hpc.record.leftovers import OWNER_FILE

    run, cfg = harvested(tmp_path, zenodo_with_records)
    dead_record, live_record = _first_records_slow(zenodo_with_records, run, cfg, [0, 1], 60.0)
    snapshot = take_snapshot(run, cfg)
    plan, _ = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    write_plan(run, plan)
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(node_tmp)}
    executor = LocalExecutor(cfg)

    def start(shard: int, record_id: str) -> subprocess.Popen:
        proc = subprocess.Popen(executor.command(run, 1, shard, 1), env=env)
        _wait_until(lambda: list(node_tmp.glob(f"zenodo-hpc-{record_id}-*/{OWNER_FILE}")), f"{record_id}'s folder")
        return proc

    dead, live = start(0, dead_record), start(1, live_record)
    try:
        dead_tmp, live_tmp = (next(node_tmp.glob(f"zenodo-hpc-{r}-*")) for r in (dead_record, live_record))
        staging = {}  # half-written records, as a kill in the middle of writing leaves them
        for record_id in (dead_record, live_record, plan.shards[2].ids[0]):
            staging[record_id] = run.data / f".{record_id}.partial-x1y2"
            staging[record_id].mkdir()
            (staging[record_id] / f"images_{record_id}.h5").write_bytes(b"half")
        older = node_tmp / "zenodo-hpc-999-abcd1234"  # an older version's folder: no owner file, owner unknown
        older.mkdir()
        dead.kill()
        dead.wait()

        def shard_2() -> None:
            done = subprocess.run(executor.command(run, 1, 2, 1), env=env, capture_output=True, check=False)
            assert done.returncode == 0, done.stderr

        shard_2()
        assert not dead_tmp.exists() and not staging[dead_record].exists()  # a dead worker's: removed
        assert live_tmp.exists() and staging[live_record].exists()  # a live one's: kept
        assert older.exists() and staging[plan.shards[2].ids[0]].exists()  # started by nobody yet: kept
        shard_2()  # its records are done now: a staging folder of a done record is nobody's
        assert not staging[plan.shards[2].ids[0]].exists() and live_tmp.exists()
    finally:
        live.terminate()
        live.wait()

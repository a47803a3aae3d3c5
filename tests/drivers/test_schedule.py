"""``schedule``: update installed as a recurring job and removed again — on the dev cluster (a job that
queues itself for the next date: Debian's SLURM has no scrontab), and as a crontab line without SLURM."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import slurm_dev
import yaml

from zenodo_hpc.cli import main
from zenodo_hpc.drivers.schedule import CRON_SPEC, next_time


def config(tmp_path: Path) -> Path:
    path = tmp_path / "monthly.yaml"
    path.write_text(yaml.safe_dump({"run": {"scratch": str(tmp_path / "scratch"), "name": "monthly"},
                                    "pack": {"time_min": 30, "mem_gb": 1}}))
    return path


def test_next_time_is_the_next_quiet_hour() -> None:
    now = datetime(2026, 11, 29, 18, 0)  # a Sunday
    assert next_time("day", now) == datetime(2026, 11, 30, 3, 0)
    assert next_time("week", now) == datetime(2026, 11, 30, 3, 0)  # Monday
    assert next_time("month", now) == datetime(2026, 12, 1, 3, 0)
    assert next_time("month", datetime(2026, 12, 5)) == datetime(2027, 1, 1, 3, 0)
    assert next_time("day", datetime(2026, 11, 29, 1, 0)) == datetime(2026, 11, 29, 3, 0)


def test_without_slurm_the_crontab_line_is_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))  # a laptop: no scrontab, no sbatch
    path = config(tmp_path)
    assert main(["schedule", "-c", str(path), "--every", "week"]) == 0
    out = capsys.readouterr().out
    assert "add this line to your crontab" in out
    assert f"{CRON_SPEC['week']} cd " in out and f"-m zenodo_hpc update -c {path.resolve()}" in out


@pytest.mark.slurm
@pytest.mark.skipif(slurm_dev.cluster_problem() is not None, reason=slurm_dev.cluster_problem() or "")
def test_on_the_dev_cluster_the_update_is_queued_for_the_next_date_and_removed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if shutil.which("scrontab"):
        pytest.skip("this SLURM has scrontab: the schedule goes there (not this test's case)")
    path = config(tmp_path)
    assert main(["schedule", "-c", str(path), "--every", "day"]) == 0
    out = capsys.readouterr().out
    assert "scheduled: job" in out and "queues itself again every day" in out
    job = out.split("scheduled: job ")[1].split()[0]
    try:
        queued = slurm_dev.run(["squeue", "-h", "-j", job, "-o", "%j|%T|%r|%S"]).stdout.strip()
        name, state, reason, start = queued.split("|")
        assert (name, state, reason) == ("zenodo-hpc-update-monthly", "PENDING", "BeginTime")
        assert start.startswith(next_time("day").strftime("%Y-%m-%dT03:00"))
        assert main(["schedule", "-c", str(path), "--every", "day"]) == 0  # again: not twice
        assert f"already scheduled: job {job}" in capsys.readouterr().out
    finally:
        assert main(["schedule", "-c", str(path), "--remove"]) == 0
    assert f"cancelled the scheduled update: job {job}" in capsys.readouterr().out
    state = slurm_dev.wait_for(lambda: slurm_dev.job_state(job) if slurm_dev.job_state(job) != "PENDING" else None,
                               60, f"job {job} to be cancelled")
    assert state == "CANCELLED"
    assert os.path.isdir(tmp_path / "scratch" / "monthly" / "logs")


@pytest.mark.slurm
@pytest.mark.skipif(slurm_dev.cluster_problem() is not None, reason=slurm_dev.cluster_problem() or "")
def test_the_scheduled_job_runs_python3_of_the_environment_its_setup_makes(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """As the array tasks: a path of this machine may mean nothing on a node, so the job runs the setup lines and
    their environment's python3. The job is made to start now (scontrol) instead of at 03:00."""
    if shutil.which("scrontab"):
        pytest.skip("this SLURM has scrontab: the schedule goes there (not this test's case)")
    other, probe = slurm_dev.probing_venv(tmp_path)
    path = config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["zenodo"] = {"api_url": "http://127.0.0.1:9/api", "retries": 0}  # the update itself fails at once
    data["executor"] = {"slurm": {"setup": [f"source {other}/bin/activate"]}}
    path.write_text(yaml.safe_dump(data))
    assert main(["schedule", "-c", str(path), "--every", "day"]) == 0
    job = capsys.readouterr().out.split("scheduled: job ")[1].split()[0]
    try:
        slurm_dev.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])
        slurm_dev.wait_for(lambda: slurm_dev.job_state(job) in slurm_dev.FINISHED, 120, f"job {job} to end")
    finally:
        main(["schedule", "-c", str(path), "--remove"])  # the next one, which the job queued
    ran = set(probe.read_text().split())
    assert ran == {f"{other}/bin/python3"}  # not sys.executable by path
    log = (tmp_path / "scratch" / "monthly" / "logs" / f"schedule-{job}.out").read_text()
    assert "zenodo-hpc update: error:" in log and "Traceback" not in log


@pytest.mark.slurm
@pytest.mark.skipif(slurm_dev.cluster_problem() is not None, reason=slurm_dev.cluster_problem() or "")
def test_two_runs_of_one_name_have_each_their_own_scheduled_update(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Two scratch folders, one run name (both `monthly`): neither is taken for the other's, and removing one
    leaves the other queued."""
    if shutil.which("scrontab"):
        pytest.skip("this SLURM has scrontab: the schedule goes there (not this test's case)")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = config(tmp_path / "a"), config(tmp_path / "b")
    jobs = []
    try:
        for path in (first, second):
            assert main(["schedule", "-c", str(path), "--every", "month"]) == 0
            out = capsys.readouterr().out
            assert out.startswith("scheduled: job"), out  # not "already scheduled" with the other run's job
            jobs.append(out.split("scheduled: job ")[1].split()[0])
        assert jobs[0] != jobs[1]
        assert main(["schedule", "-c", str(first), "--remove"]) == 0
        assert f"cancelled the scheduled update: job {jobs[0]}" in capsys.readouterr().out
        assert slurm_dev.run(["squeue", "-h", "-j", jobs[1], "-o", "%T"]).stdout.strip() == "PENDING"
    finally:
        main(["schedule", "-c", str(first), "--remove"])
        main(["schedule", "-c", str(second), "--remove"])

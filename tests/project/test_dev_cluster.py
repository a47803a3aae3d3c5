"""The dev SLURM cluster fails like a real one: plain ``sbatch`` jobs, no zenodo_hpc code.

A job over its ``--mem`` is killed by the cgroup and ends OUT_OF_MEMORY; a node that dies mid-job takes
its jobs down as NODE_FAIL and a requeueable one runs again elsewhere; a job of the ``low`` partition gets
USR2 and is requeued when a ``high`` job needs its node; an array over the ``limited`` QOS is refused at
submission. Each is skipped, with the reason, when no cluster answers or it lacks what the test needs.
Job output goes under the test's tmp folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import slurm_dev as dev

PROBLEM = dev.cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]
MB = 1024 * 1024


def finished(job_id: str) -> str:
    """The job's state once its latest run is over, else ``""`` (for ``wait_for``)."""
    state = dev.job_state(job_id)
    return state if state in dev.FINISHED else ""


def running(job_id: str) -> bool:
    return dev.job_state(job_id) == "RUNNING" and dev.node_of(job_id) != ""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_job_over_its_memory_ends_out_of_memory_and_its_max_rss_is_recorded(tmp_path: Path) -> None:
    problem = dev.enforcement_problem()
    if problem:
        pytest.skip(problem)
    # 100 MB held for 2.5 s (long enough for the 1 s accounting samples), then 300 MB more against 200 MB.
    grow = "import time; a = bytearray(100 << 20); time.sleep(2.5); b = bytearray(300 << 20); time.sleep(30)"
    job = dev.sbatch("-p", "debug", "-t", "2", "--mem=200M", "-o", str(tmp_path / "oom-%j.out"),
                     "--wrap", f"{sys.executable} -c '{grow}'", cwd=tmp_path)
    assert dev.wait_for(lambda: finished(job), 60, f"job {job} to end") == "OUT_OF_MEMORY"
    batch = next(row for row in dev.sacct_steps(job) if row["JobID"] == f"{job}.batch")
    assert batch["State"] == "OUT_OF_MEMORY"
    assert 90 * MB <= dev.parse_size(batch["MaxRSS"]) <= 200 * MB  # the 100 MB it held, sampled before the kill
    assert "oom-kill" in (tmp_path / f"oom-{job}.out").read_text()


def test_a_crashed_node_fails_its_jobs_and_a_requeueable_one_runs_again_on_another_node(tmp_path: Path) -> None:
    problem = dev.crash_problem()
    if problem:
        pytest.skip(problem)
    log = tmp_path / "requeueable.log"
    keep = dev.sbatch("-p", "debug", "--requeue", "-o", str(tmp_path / "%j.out"), "--wrap",
                      f'echo "$SLURMD_NODENAME ${{SLURM_RESTART_COUNT:-0}}" >> {log}; sleep 600', cwd=tmp_path)
    jobs = [keep]
    node = ""
    try:
        dev.wait_for(lambda: running(keep) and lines(log), 60, f"job {keep} to start")
        node = dev.node_of(keep)
        lost = dev.sbatch("-p", "debug", "--no-requeue", "-w", node, "-o", str(tmp_path / "%j.out"),
                          "--wrap", "sleep 600", cwd=tmp_path)
        jobs.append(lost)
        dev.wait_for(lambda: running(lost), 60, f"job {lost} to start on {node}")

        assert sorted(dev.crash_node(node)) == sorted(jobs)
        # Slurm notices after SlurmdTimeout (26-29 s measured): both jobs end NODE_FAIL with the node.
        assert dev.wait_for(lambda: finished(lost), 120, f"job {lost} to end with {node}") == "NODE_FAIL"
        dev.wait_for(lambda: dev.node_state(node).startswith("down"), 30, f"{node} to be DOWN")
        assert dev.job_runs(keep)[0]["State"] == "NODE_FAIL"
        # ... and the requeueable one runs again, on another node, as its second run.
        dev.wait_for(lambda: len(lines(log)) >= 2, 90, f"job {keep} to run again")
        again_on, restarts = lines(log)[1].split()
        assert again_on != node and again_on in dev.nodes()
        assert restarts == "1"
        assert [run["State"] for run in dev.job_runs(keep)][0] == "NODE_FAIL"
    finally:
        dev.scancel(*jobs)
        if node:
            dev.revive_node(node)
    assert dev.node_state(node) in ("idle", "mixed", "allocated")


def _low_job(tmp_path: Path, node: str, on_usr2: str) -> tuple[str, Path]:
    """A job of the low partition taking all of ``node``; it logs its starts and USR2, then runs ``on_usr2``."""
    log = tmp_path / "low.log"
    script = tmp_path / "low.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"trap 'echo usr2 >> {log}; {on_usr2}' USR2\n"
        f'echo "start ${{SLURM_RESTART_COUNT:-0}}" >> {log}\n'
        "for i in $(seq 1 600); do sleep 1; done\n")  # short sleeps: bash runs the trap between them
    cpus = str(dev.node_cpus(node))
    job = dev.sbatch("-p", "low", "-w", node, "-c", cpus, "--signal=B:USR2@10", "-o", str(tmp_path / "%j.out"),
                     str(script), cwd=tmp_path)
    return job, log


def _high_job(tmp_path: Path, node: str) -> str:
    return dev.sbatch("-p", "high", "-w", node, "-c", str(dev.node_cpus(node)), "-o", str(tmp_path / "%j.out"),
                      "--wrap", "sleep 2", cwd=tmp_path)


def test_a_low_job_gets_usr2_and_requeues_itself_when_a_high_job_needs_its_node(tmp_path: Path) -> None:
    """What submitit does on preemption: USR2 at once, it checkpoints and requeues itself (REQUEUED)."""
    node = dev.nodes()[-1]
    low, log = _low_job(tmp_path, node, "scontrol requeue $SLURM_JOB_ID; exit 0")
    try:
        dev.wait_for(lambda: running(low) and lines(log), 60, f"low job {low} to start")
        high = _high_job(tmp_path, node)
        assert dev.wait_for(lambda: finished(high), 60, f"high job {high} to run") == "COMPLETED"
        dev.wait_for(lambda: "start 1" in lines(log), 60, f"low job {low} to run again")
        assert lines(log)[:3] == ["start 0", "usr2", "start 1"]
        first, *_ = dev.job_runs(low)
        assert first["State"] == "REQUEUED"
        high_run = dev.job_runs(high)[-1]
        assert high_run["NodeList"] == node and high_run["Start"] >= first["End"]  # it ran in the room made
    finally:
        dev.scancel(low)


def test_a_low_job_that_ignores_usr2_is_preempted_and_requeued_by_slurm_after_the_grace_time(tmp_path: Path) -> None:
    """A victim that does not go by itself is killed when the low partition's GraceTime (30 s) is over,
    then requeued by Slurm: sacct says PREEMPTED for that run."""
    node = dev.nodes()[-1]
    low, log = _low_job(tmp_path, node, "true")
    try:
        dev.wait_for(lambda: running(low) and lines(log), 60, f"low job {low} to start")
        high = _high_job(tmp_path, node)
        dev.wait_for(lambda: "usr2" in lines(log), 30, f"low job {low} to get USR2")
        # the high job waits while the victim has its grace time
        assert dev.run(["squeue", "-h", "-j", high, "-o", "%T"]).stdout.strip() == "PENDING"
        assert dev.wait_for(lambda: finished(high), 120, f"high job {high} to run") == "COMPLETED"
        dev.wait_for(lambda: "start 1" in lines(log), 60, f"low job {low} to run again")
        first, *_ = dev.job_runs(low)
        assert first["State"] == "PREEMPTED"
        assert dev.job_runs(high)[-1]["Start"] >= first["End"]
    finally:
        dev.scancel(low)


def test_an_array_over_the_qos_submit_limit_is_refused(tmp_path: Path) -> None:
    """QOS ``limited`` lets a user have 5 jobs queued, each array task counting as one. (Arrays of 3: the
    test also runs where MaxArraySize is 5, as in ``make test``.)"""
    out = str(tmp_path / "%A_%a.out")
    held = dev.sbatch("--qos=limited", "--hold", "--array=0-2", "-o", out, "--wrap", "true", cwd=tmp_path)
    jobs = [held]
    try:
        over = dev.run(["sbatch", "--parsable", f"--chdir={tmp_path}", "--qos=limited", "--hold", "--array=0-2",
                        "-o", out, "--wrap", "true"], check=False)  # 3 + 3 > 5
        if over.returncode == 0:
            jobs.append(over.stdout.strip().split(";")[0])
        assert over.returncode != 0
        assert "QOSMaxSubmitJobPerUserLimit" in over.stderr
        jobs.append(dev.sbatch("--qos=limited", "--hold", "--array=0-1", "-o", out, "--wrap", "true",
                               cwd=tmp_path))  # 3 + 2 = 5: at the limit, accepted
    finally:
        dev.scancel(*jobs)

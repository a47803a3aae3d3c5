"""Submit and walk away, on the real dev cluster: the finishing job's rounds through real failures.

Every failure here is a real event of the dev cluster (slurm/dev-cluster/): a task killed by its cgroup
for its memory, a node whose slurmd and job processes are killed mid-task, a low-priority array preempted
by a high-priority job, a QOS that refuses submissions, ``scancel``. After ``submit`` no command is given:
the finishing jobs decide, and the test only watches the run directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import slurm_dev
import yaml
from doubles import ZenodoDouble, make_zip
from helpers import run_config

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import RunDir, attempts_of, ids_in, read_failure
from zenodo_hpc.orchestrate.accounting import task_states, unfinished_tasks
from zenodo_hpc.orchestrate.chain import load_chain
from zenodo_hpc.orchestrate.executor import load_submissions
from zenodo_hpc.orchestrate.plan import load_plan
from zenodo_hpc.orchestrate.status import format_status, gather_status
from zenodo_hpc.zenodo.harvest import harvest

PROBLEM = slurm_dev.cluster_problem() or (None if shutil.which("mksquashfs") else "mksquashfs not on PATH")
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]
ALL = {str(100 + i) for i in range(1, 13)}


def slurm_cfg(tmp_path: Path, double: ZenodoDouble, *, slurm: dict[str, Any] | None = None,
              **executor: Any) -> Config:
    settings = {"kind": "slurm", "records_per_shard": 2, "array_parallelism": 12, **executor}
    data = run_config(tmp_path, double, **settings).to_dict()
    data["executor"]["slurm"].update({"partition": "debug", "time_min": 5, "mem_gb": 0.5, **(slurm or {})})
    data["pack"].update({"mem_gb": 1, "cpus_per_task": 1, "time_min": 10})
    data["output"]["formats"] = ["h5"]
    return config_from_dict(data)


def submitted(tmp_path: Path, cfg: Config, *argv: str) -> RunDir:
    """Harvest, then ``zenodo-hpc submit`` (or ``resume``) as a user types it; the run directory."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    harvest(cfg, progress=False)
    assert main(["submit", "-c", str(config), *argv]) == 0
    return RunDir(cfg.run_dir)


def chain_ended(run: RunDir) -> bool:
    chain = load_chain(run)
    return chain is not None and chain.state != "running"


def wait_for_the_image(run: RunDir, timeout: float = 420) -> None:
    """Until the chain of finishing jobs has ended (a safety net of minutes, not a measurement)."""
    slurm_dev.wait_for(lambda: chain_ended(run), timeout, f"the finishing jobs of {run.root} to end")
    chain = load_chain(run)
    assert chain is not None and chain.state == "packed", chain


def image_is_verified(run: RunDir) -> None:
    image = run.root / "zenodo-ml.sqsh"
    md5 = (run.root / "zenodo-ml.sqsh.md5").read_text().split()[0]
    out = subprocess.run(["md5sum", str(image)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == md5


def fail_file(double: ZenodoDouble, record_id: int, mode: str, **opts: Any) -> None:
    import requests

    hits = requests.get(f"{double.api_url}/records", params={"size": 25}, timeout=30).json()["hits"]["hits"]
    key = next(h for h in hits if h["id"] == record_id)["files"][0]["key"]
    double.fail(f"/api/records/{record_id}/files/{key}/content", mode, **opts)


def test_submit_with_failing_records_ends_in_a_verified_image_with_no_further_command(
        tmp_path: Path, zenodo_with_records: ZenodoDouble, capsys: pytest.CaptureFixture) -> None:
    double = zenodo_with_records
    fail_file(double, 101, "404", times=50)  # gone for good: quarantined at once
    fail_file(double, 102, "503", times=2)  # one more than the retries: fails round 1, succeeds in round 2
    run = submitted(tmp_path, slurm_cfg(tmp_path, double))
    assert "finishing job" in capsys.readouterr().out
    wait_for_the_image(run)
    image_is_verified(run)
    chain = load_chain(run)
    assert chain.rounds == 2 and "packed after 2 round(s)" in chain.message
    assert ids_in(run, "done") == ALL - {"101"}
    assert read_failure(run, "101").quarantined and read_failure(run, "101").reason == "http_404"
    assert attempts_of(run, "102") == 2 and attempts_of(run, "101") == 1
    assert load_plan(run, 2).shards[0].ids == ["102"]  # round 2 held only what could still succeed
    text = format_status(gather_status(run))
    assert "rounds: packed after 2 round(s)" in text and "complete: every record is done or quarantined" in text


@pytest.mark.skipif(slurm_dev.enforcement_problem() is not None, reason=slurm_dev.enforcement_problem() or "")
def test_a_task_killed_by_its_cgroup_gets_the_memory_it_needs_and_finishes(
        tmp_path: Path, zenodo_with_records: ZenodoDouble) -> None:
    double = zenodo_with_records
    # 600,000 lines with a character above U+FFFF, so the file's images are uint32 (ASCII alone would be
    # uint8, a quarter of it): some 190 MB of code images in memory at once, and more while they are stored
    lines = "x = '\U0001F600'\n".encode() * 600_000
    double.add_record(ZenodoDouble.make_hit(200, created="2016-03-20", title="big"),
                      {"big.zip": make_zip({"big/lines.py": lines})})
    cfg = slurm_cfg(tmp_path, double, records_per_shard=1, slurm={"mem_gb": 0.3})
    data = cfg.to_dict()
    data["raster"]["max_file_bytes"] = 10_000_000
    run = submitted(tmp_path, config_from_dict(data))
    wait_for_the_image(run, timeout=600)
    assert "200" in ids_in(run, "done") and ids_in(run, "done") >= ALL
    first = load_submissions(run)[0]
    shard = next(s.index for s in load_plan(run, 1).shards if s.ids == ["200"])
    array = next(a for a in first.arrays if shard in a["shards"])
    task = f"{array['job_id']}_{array['shards'].index(shard)}"
    assert task_states([array["job_id"]])[task].state == "OUT_OF_MEMORY"  # job FAILED, its step OOM: read
    again = next(s for s in load_plan(run, 2).shards if s.ids == ["200"])
    assert again.mem_gb is not None and again.mem_gb >= 0.6  # at least twice, from what it was seen to use
    status = gather_status(run)
    assert status.generations[0].failed_states.get("OUT_OF_MEMORY") == 1
    used = [e for g in status.generations for e in g.efficiency if e["mem_used_gb"]]
    assert used and all(e["mem_asked_gb"] for e in used)


@pytest.mark.skipif(slurm_dev.crash_problem() is not None, reason=slurm_dev.crash_problem() or "")
def test_a_node_crashed_mid_task_loses_nothing(tmp_path: Path, zenodo_with_records: ZenodoDouble) -> None:
    double = zenodo_with_records
    fail_file(double, 105, "slow", seconds=40.0)
    run = submitted(tmp_path, slurm_cfg(tmp_path, double, records_per_shard=1))
    slurm_dev.wait_for(lambda: attempts_of(run, "105") >= 1, 180, "record 105 to start")
    shard = next(s.index for s in load_plan(run, 1).shards if s.ids == ["105"])
    array = next(a for a in load_submissions(run)[0].arrays if shard in a["shards"])
    task = f"{array['job_id']}_{array['shards'].index(shard)}"
    node = slurm_dev.wait_for(lambda: slurm_dev.node_of(task), 60, f"task {task} to have a node")
    try:
        slurm_dev.crash_node(node)
        slurm_dev.wait_for(lambda: "NODE_FAIL" in {r["State"].split()[0] for r in slurm_dev.job_runs(task)}, 180,
                           f"SLURM to see {node} fail under {task}")
        wait_for_the_image(run, timeout=600)
    finally:
        slurm_dev.revive_node(node)
    assert ids_in(run, "done") == ALL  # redone elsewhere (requeued, or in a later round)
    runs = slurm_dev.job_runs(task)
    assert len({r["NodeList"] for r in runs if not r["NodeList"].startswith("None")}) >= 1


def test_a_preempted_array_does_not_redo_what_it_finished(tmp_path: Path,
                                                          zenodo_with_records: ZenodoDouble) -> None:
    double = zenodo_with_records
    for record_id in range(101, 113):
        fail_file(double, record_id, "slow", seconds=3.0)
    cfg = slurm_cfg(tmp_path, double, records_per_shard=6, slurm={"partition": "low", "time_min": 10})
    run = submitted(tmp_path, cfg)
    slurm_dev.wait_for(lambda: len(ids_in(run, "done")) >= 2, 180, "two records to be done")
    cpus = sum(slurm_dev.node_cpus(n) for n in slurm_dev.nodes())
    hog = slurm_dev.sbatch("-p", "high", "-n", str(cpus), "-t", "1", "-o", str(tmp_path / "hog-%j.out"),
                           "--wrap", "sleep 15", cwd=tmp_path)
    try:
        slurm_dev.wait_for(lambda: slurm_dev.job_state(hog) in ("RUNNING", "COMPLETED"), 180,
                           "the high-priority job to preempt the array and run")
        wait_for_the_image(run, timeout=600)
    finally:
        slurm_dev.scancel(hog)
    assert ids_in(run, "done") == ALL
    states = {r["State"].split()[0] for a in load_submissions(run)[0].arrays
              for r in slurm_dev.sacct_steps(a["job_id"])}
    assert states & {"PREEMPTED", "REQUEUED"}, states
    assert all(attempts_of(run, i) == 1 for i in ALL)  # the one cut off was not counted; no done one redone


def test_a_submission_over_the_qos_limit_waits_for_room(tmp_path: Path, zenodo_with_records: ZenodoDouble) -> None:
    sleepers = [slurm_dev.sbatch("--qos=limited", "-t", "1", "-o", str(tmp_path / "sleep-%j.out"),
                                 "--wrap", "sleep 8", cwd=tmp_path) for _ in range(4)]
    cfg = slurm_cfg(tmp_path, zenodo_with_records, records_per_shard=6, slurm={"additional": {"qos": "limited"}})
    # 4 sleepers + an array of 2 tasks is 6 jobs: over MaxSubmitJobsPerUser=5 until a sleeper ends, so
    # sbatch refuses at first (QOSMaxSubmitJobPerUserLimit) and the submit waits for room
    run = submitted(tmp_path, cfg)
    first_array = load_submissions(run)[0].arrays[0]["job_id"]
    assert int(first_array) > max(int(s) for s in sleepers)
    ended = slurm_dev.wait_for(lambda: [r[-1]["End"] for s in sleepers if (r := slurm_dev.job_runs(s))
                                        and r[-1]["End"][:1].isdigit()] or None, 120, "a sleeper to end")
    submit_time = slurm_dev.wait_for(lambda: _submit_time(first_array), 120, f"accounting to have {first_array}")
    assert submit_time >= min(ended)  # queued only once a sleeper had made room
    wait_for_the_image(run)
    assert ids_in(run, "done") == ALL


def _submit_time(job_id: str) -> str | None:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "Submit"], capture_output=True, text=True,
                         check=False).stdout.split()
    return out[0] if out else None


def test_resume_right_after_cancelling_everything_resubmits_what_is_not_done(
        tmp_path: Path, zenodo_with_records: ZenodoDouble, capsys: pytest.CaptureFixture) -> None:
    double = zenodo_with_records
    for record_id in range(101, 113):
        fail_file(double, record_id, "slow", seconds=5.0)
    cfg = slurm_cfg(tmp_path, double, records_per_shard=1, array_parallelism=2)
    run = submitted(tmp_path, cfg)
    jobs = [a["job_id"] for a in load_submissions(run)[0].arrays] + [load_chain(run).finishing_job]
    slurm_dev.scancel(*jobs)
    slurm_dev.wait_for(lambda: unfinished_tasks(load_submissions(run), [load_chain(run).finishing_job]) == 0, 120,
                       "squeue to hold none of the run's jobs")
    capsys.readouterr()
    assert main(["resume", str(run.root)]) == 0  # at once: accounting may still call the tasks PENDING
    out = capsys.readouterr().out
    assert "nothing to submit" not in out and "plan 2:" in out
    resubmitted = {i for s in load_plan(run, 2).shards for i in s.ids}
    assert resubmitted == ALL - ids_in(run, "done") and resubmitted
    wait_for_the_image(run)
    assert ids_in(run, "done") == ALL


# --- the finishing job must be able to run: checked up front, small, and run decides when it cannot ----------


def requested(job_id: str) -> tuple[int, int]:
    """The memory (bytes) and CPUs SLURM gave a job, from sacct."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "ReqMem,AllocCPUS"], capture_output=True,
                         text=True, check=True).stdout.split()
    mem, cpus = out[0].split("|")
    return slurm_dev.parse_size(mem.rstrip("n").rstrip("c")), int(cpus)


def test_a_pack_job_no_node_can_hold_is_refused_before_anything_is_queued(
        tmp_path: Path, zenodo_with_records: ZenodoDouble, capsys: pytest.CaptureFixture) -> None:
    node_mb = max(int(mb.rstrip("+")) for mb in slurm_dev.run(["sinfo", "-h", "-N", "-o", "%m"]).stdout.split())
    data = slurm_cfg(tmp_path, zenodo_with_records).to_dict()
    data["pack"]["mem_gb"] = node_mb // 1024 + 4  # more than any node of the partition declares
    cfg = config_from_dict(data)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    harvest(cfg, progress=False)
    assert main(["submit", "-c", str(config), "--dry-run"]) == 0
    assert "# a real submit refuses this: the pack job cannot be queued" in capsys.readouterr().out
    assert main(["submit", "-c", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line: which job, what it asks, what the nodes offer, which key to change
    assert f"the pack job cannot be queued: it asks {data['pack']['mem_gb']}GB" in err[0]
    assert f"at most {node_mb} MB" in err[0] and "lower pack.mem_gb to" in err[0] and "nothing was queued" in err[0]
    run = RunDir(cfg.run_dir)
    assert load_submissions(run) == [] and not list(run.root.glob("plans/*.json"))
    assert not (run.logs / "submitit").exists() or not any((run.logs / "submitit").iterdir())  # no job's folder
    queued = subprocess.run(["squeue", "-h", "-o", "%A %o"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in queued


def test_the_finishing_job_decides_small_and_a_pack_job_packs_with_the_packs_resources(
        tmp_path: Path, zenodo_with_records: ZenodoDouble) -> None:
    data = slurm_cfg(tmp_path, zenodo_with_records).to_dict()
    data["pack"].update({"mem_gb": 2, "cpus_per_task": 2})
    run = submitted(tmp_path, config_from_dict(data))
    wait_for_the_image(run)
    image_is_verified(run)
    assert ids_in(run, "done") == ALL
    chain = load_chain(run)
    finishing = load_submissions(run)[0].finishing_job
    assert finishing and chain.pack_job and chain.pack_job != finishing
    assert requested(finishing) == (2**29, 1)  # it only decides: 1 CPU, at most 1 GB and the arrays' 0.5 GB
    assert requested(chain.pack_job) == (2 * 2**30, 2)  # pack.mem_gb, pack.cpus_per_task
    ended = slurm_dev.wait_for(lambda: (state := slurm_dev.job_state(chain.pack_job)) in slurm_dev.FINISHED and state,
                               60, f"the pack job {chain.pack_job} to end")
    assert (slurm_dev.job_state(finishing), ended) == ("COMPLETED", "COMPLETED")
    assert gather_status(run).chain["pack_job"] == chain.pack_job  # status --json names it too


def test_run_packs_itself_when_the_finishing_job_is_cancelled(tmp_path: Path,
                                                                zenodo_with_records: ZenodoDouble) -> None:
    import threading

    from zenodo_hpc.drivers.pipeline import run_pipeline

    fail_file(zenodo_with_records, 105, "slow", seconds=10.0)  # the arrays still run when it is cancelled
    cfg = slurm_cfg(tmp_path, zenodo_with_records)
    run = RunDir(cfg.run_dir)
    ended: dict[str, Any] = {}

    def follow() -> None:
        try:
            ended["outcome"] = run_pipeline(cfg, poll_s=1, progress=False)
        except BaseException as exc:  # shown by the assertion below
            ended["error"] = exc

    driver = threading.Thread(target=follow)
    driver.start()
    job = slurm_dev.wait_for(lambda: (chain := load_chain(run)) is not None and chain.finishing_job, 120,
                             "run to queue the finishing job")
    assert slurm_dev.job_state(job) in ("PENDING", "UNKNOWN")  # its arrays still run
    slurm_dev.scancel(job)
    driver.join(timeout=420)
    assert not driver.is_alive() and "error" not in ended, ended
    outcome = ended["outcome"]
    assert outcome.packed is not None and outcome.packed.records == 12  # packed by run itself
    image_is_verified(run)
    assert slurm_dev.job_state(job) == "CANCELLED" and load_chain(run).state == "packed"


@pytest.fixture(autouse=True)
def _no_jobs_left_behind(tmp_path: Path) -> Any:
    """Whatever a test left queued (a failed assertion mid-way) is cancelled, so the next test starts clean."""
    yield
    out = subprocess.run(["squeue", "-h", "-o", "%A %o %Z"], capture_output=True, text=True, check=False).stdout
    slurm_dev.scancel(*[line.split()[0] for line in out.splitlines() if str(tmp_path) in line])

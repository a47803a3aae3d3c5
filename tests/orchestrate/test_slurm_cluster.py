"""submit / status / resume against a real SLURM cluster (slurm/dev-cluster/up.sh brings one up in CI).

The cluster is real: slurmctld, slurmd, slurmdbd with accounting, munge; jobs are real job arrays
submitted through submitit; a killed task is a real ``scancel`` or ``kill -9``. Skipped, with the reason
shown, when no cluster answers (``sbatch`` not on PATH or ``sinfo`` failing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import slurm_dev
import yaml
from helpers import SLURM_PARTITION, queued_from, run_config, slow_record, slurm_config, tree_bytes

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import RunDir, attempts_of, ids_in, open_run, read_failure
from zenodo_hpc.orchestrate.accounting import ACTIVE_STATES, GONE, max_array_size, task_states, unfinished_tasks
from zenodo_hpc.orchestrate.executor import load_submissions
from zenodo_hpc.orchestrate.plan import generations, load_plan
from zenodo_hpc.orchestrate.status import gather_status
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not on PATH (bring a cluster up with slurm/dev-cluster/up.sh and source its env.sh)"
    try:
        out = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"no SLURM controller answers: {out.stderr.strip()[:200]}"
    return None


PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]
ALL = {str(100 + i) for i in range(1, 13)}


def harvested(cfg: Config) -> RunDir:
    harvest(cfg, progress=False)
    return open_run(cfg)


def active_tasks(run: RunDir) -> int:
    return unfinished_tasks(load_submissions(run))


def wait_until(check: Callable[[], bool], timeout: float = 240, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_tasks(run: RunDir, timeout: float = 240) -> None:
    """Until SLURM has no queued or running task of this run left."""
    wait_until(lambda: active_tasks(run) == 0, timeout, f"the tasks of {run.root} to end")


def clean_outputs(tmp_path: Path, double) -> dict[str, bytes]:
    cfg = run_config(tmp_path / "clean", double)
    run = harvested(cfg)
    submit_pending(run, cfg, kind="debug")
    return tree_bytes(run.data)


def test_submit_as_arrays_cancel_a_task_status_resume_identical_outputs(tmp_path: Path,
                                                                         zenodo_with_records) -> None:
    double = zenodo_with_records
    slow_record(double, 106, 25.0)
    cfg = slurm_config(tmp_path, double)
    run = harvested(cfg)
    result = submit_pending(run, cfg)
    sub = result.submission
    assert sub is not None and sub.kind == "slurm"
    expected_arrays = -(-12 // max_array_size())
    assert len(sub.arrays) == expected_arrays  # split at MaxArraySize: submitit alone would send one
    assert sorted(s for a in sub.arrays for s in a["shards"]) == list(range(12))

    # cancel the task holding the slow record while it works on it
    shard = next(s.index for s in load_plan(run, 1).shards if "106" in s.ids)
    array = next(a for a in sub.arrays if shard in a["shards"])
    task = f"{array['job_id']}_{array['shards'].index(shard)}"
    wait_until(lambda: attempts_of(run, "106") >= 1, 120, "record 106 to start")
    subprocess.run(["scancel", task], check=True)
    wait_for_tasks(run)

    status = gather_status(run)
    assert status.done == 11 and "106" not in ids_in(run, "done")
    assert status.generations[0].failed_states == {"CANCELLED": 1}
    code = main(["status", str(run.root)])
    assert code == 0

    resumed = submit_pending(run, cfg, what="resume")
    assert resumed.plan is not None and [s.ids for s in resumed.plan.shards] == [["106"]]
    wait_for_tasks(run)
    assert ids_in(run, "done") == ALL
    assert submit_pending(run, cfg, what="resume").plan is None  # complete: nothing more
    assert tree_bytes(run.data) == clean_outputs(tmp_path, double)
    logs = list((run.logs / "g0001").glob("shard-*.log"))
    assert len(logs) == 12


def test_timeout_signal_requeues_and_done_records_are_not_redone(tmp_path: Path,
                                                                 zenodo_with_records) -> None:
    double = zenodo_with_records
    cfg = slurm_config(tmp_path, double, records_per_shard=12)
    data = cfg.to_dict()
    data["executor"]["slurm"]["time_min"] = 1  # USR2 comes 30 s before the limit
    cfg = config_from_dict(data)
    for record_id in range(101, 113):
        slow_record(double, record_id, 4.0)
    run = harvested(cfg)
    submit_pending(run, cfg)
    wait_for_tasks(run, timeout=300)
    assert ids_in(run, "done") == ALL
    first_ones = sorted(ids_in(run, "done"))
    assert all(attempts_of(run, i) == 1 for i in first_ones)  # nothing done before the requeue was redone
    log = (run.logs / "g0001" / "shard-00000.log").read_text()
    assert log.count(": 12 records") >= 2, "the task was not requeued by its timeout signal"


def test_worker_killed_every_time_on_one_record_is_quarantined(tmp_path: Path,
                                                               zenodo_with_records) -> None:
    double = zenodo_with_records
    slow_record(double, 104, 30.0, times=5)
    cfg = slurm_config(tmp_path, double, max_attempts=2)
    run = harvested(cfg)

    def kill_worker_on_104(stop: threading.Event) -> None:
        seen = 0
        while not stop.is_set():
            attempts = attempts_of(run, "104")
            if attempts > seen and _kill_worker_of(run, "104"):
                seen = attempts  # the real thing an OOM kill does: SIGKILL the task's Python process
            time.sleep(0.2)

    stop = threading.Event()
    threading.Thread(target=kill_worker_on_104, args=(stop,), daemon=True).start()
    try:
        submit_pending(run, cfg)
        wait_for_tasks(run)
        submit_pending(run, cfg, what="resume")
        wait_for_tasks(run)
    finally:
        stop.set()
    status = gather_status(run)
    assert any(state in ("FAILED", "CANCELLED", "KILLED") for g in status.generations for state in g.failed_states)
    last = submit_pending(run, cfg, what="resume")
    assert last.plan is None or "104" not in {i for s in last.plan.shards for i in s.ids}
    wait_for_tasks(run)
    failure = read_failure(run, "104")
    assert failure.quarantined and failure.reason == "worker_died"
    assert ids_in(run, "done") == ALL - {"104"}


def _kill_worker_of(run: RunDir, record_id: str) -> bool:
    """SIGKILL the Python process of the array task that holds ``record_id`` in the latest plan (only that one)."""
    submission = load_submissions(run)[-1]
    shard = next(s.index for s in load_plan(run, submission.generation).shards if record_id in s.ids)
    array = next(a for a in submission.arrays if shard in a["shards"])
    task = array["task_ids"][array["shards"].index(shard)]
    job, _, index = task.partition("_")
    killed = False
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        mine = (env.get(b"SLURM_ARRAY_JOB_ID") == job.encode() and env.get(b"SLURM_ARRAY_TASK_ID") == index.encode()
                if index else env.get(b"SLURM_JOB_ID") == job.encode())
        if mine and b"submitit.core._submit" in command:
            os.kill(int(proc.name), 9)
            killed = True
    return killed


def test_memory_escalated_past_every_node_is_held_at_the_largest_node(tmp_path: Path,
                                                                     zenodo_with_records) -> None:
    """A task killed for its memory again and again gets twice as much each round, up to max_mem_gb (64 GB
    here, more than any node of the dev cluster declares): past the largest node sbatch would refuse the next
    round's array, in the finishing job, and nothing would ever pack. The escalation stops at that node."""
    from zenodo_hpc.orchestrate.executor import Resources
    from zenodo_hpc.orchestrate.feasibility import sbatch_test_only
    from zenodo_hpc.orchestrate.slurm import JobDescription, this_python
    from zenodo_hpc.orchestrate.submit import escalate, largest_node_mem_gb

    cfg = slurm_config(tmp_path, zenodo_with_records)
    node_gb = largest_node_mem_gb(cfg)
    assert node_gb is not None and node_gb < cfg.executor.slurm.max_mem_gb
    run = RunDir(cfg.run_dir)

    def queueable(resources: Resources) -> bool:
        script = JobDescription(run, "g9", resources).script(this_python().command)
        return sbatch_test_only(script) is None

    capped = uncapped = Resources.from_config(cfg)
    for _ in range(10):  # each round's task used all it had
        capped = escalate(capped, "mem", cfg, used_gb=capped.mem_gb, node_mem_gb=node_gb)
        uncapped = escalate(uncapped, "mem", cfg, used_gb=uncapped.mem_gb)
    assert capped.mem_gb == node_gb and queueable(capped)
    assert uncapped.mem_gb == cfg.executor.slurm.max_mem_gb and not queueable(uncapped)  # what sbatch would refuse


def queued_script(run: RunDir, job_id: str) -> str:
    """The sbatch script submitit queued for a job or an array (its plain id)."""
    return next((run.logs / "submitit").glob(f"{job_id}/*_submission.sh")).read_text()


def _image_matches_data(run: RunDir) -> None:
    import numpy as np

    from zenodo_hpc.dataset.image import iter_image_records
    from zenodo_hpc.dataset.load import load_images

    ids = []
    for record_id, images, _ in iter_image_records(run.root / "zenodo-ml.sqsh", verify=True):
        on_disk = load_images(run.data / record_id)
        assert images.keys() == on_disk.keys()
        for key in images:
            np.testing.assert_array_equal(images[key], on_disk[key])
        ids.append(record_id)
    assert sorted(ids) == sorted(ids_in(run, "done"))


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH")
def test_run_on_slurm_gives_a_verified_reproducible_image(tmp_path: Path, zenodo_with_records) -> None:
    pytest.importorskip("PySquashfsImage", reason="the [image] extra is not installed")
    from zenodo_hpc.dataset.pack import pack
    from zenodo_hpc.drivers.pipeline import run_pipeline
    from zenodo_hpc.report import card_figures

    cfg = slurm_config(tmp_path, zenodo_with_records, records_per_shard=2)
    outcome = run_pipeline(cfg, poll_s=1, progress=False)
    assert outcome.packed is None and "packed after 1 round(s)" in outcome.message  # by the finishing job
    assert "holds 12 records" in outcome.message
    run = RunDir(cfg.run_dir)
    assert all(s.kind == "slurm" for s in load_submissions(run))
    md5 = (run.root / "zenodo-ml.sqsh.md5").read_text().split()[0]
    # packing the same run again as the finishing job does (with the card's figures): the same bytes
    assert pack(run, cfg, progress=False, figures=card_figures).md5 == md5
    _image_matches_data(run)


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH")
def test_submit_queues_a_finishing_job_after_every_array(tmp_path: Path, zenodo_with_records) -> None:
    pytest.importorskip("PySquashfsImage", reason="the [image] extra is not installed")
    from zenodo_hpc.drivers.finish import submit_round

    cfg = slurm_config(tmp_path, zenodo_with_records)
    run = harvested(cfg)
    preview = submit_round(run, cfg, dry_run=True).description
    result = submit_round(run, cfg)
    sub = result.submission
    assert sub is not None and sub.finishing_job and len(sub.arrays) >= 2
    script = queued_script(run, sub.finishing_job)
    arrays = ":".join(sorted(a["job_id"] for a in sub.arrays))
    assert f"#SBATCH --dependency=afterany:{arrays}" in script  # every array, whatever its outcome
    # the dry run showed, made without SLURM, every script that submitit then queued (the job ids aside)
    shown = preview.split("#!/bin/bash")[1:]
    queued = [queued_script(run, a["job_id"]) for a in sub.arrays] + [script]
    shown[-1] = shown[-1].replace(":".join(f"ARRAY{i + 1}_ID" for i in range(len(sub.arrays))), arrays)
    assert ["#!/bin/bash" + text.split("\n\n# the sbatch script of")[0].rstrip("\n") for text in shown] == \
        [text.rstrip("\n") for text in queued]
    wait_until(lambda: (run.root / "zenodo-ml.sqsh.sha256").exists(), 300, "the finishing job to write the image")
    assert ids_in(run, "done") == ALL

    def finish_state() -> str:
        state = task_states([sub.finishing_job]).get(sub.finishing_job)
        return state.state if state else "UNKNOWN"

    wait_until(lambda: finish_state() == "COMPLETED", 60, "the finishing job to complete")
    _image_matches_data(run)


# --- a plan larger than the room in the queue ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH")
def test_a_plan_larger_than_the_qos_submit_limit_is_fed_in_batches_of_one_round(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """22 tasks under the dev cluster's QOS ``limited`` (5 jobs per user queued, each array task one): one submit,
    then the test only watches. The finishing jobs queue the rest batch by batch, within one round."""
    pytest.importorskip("PySquashfsImage", reason="the [image] extra is not installed")
    from doubles import ZenodoDouble, make_zip
    from helpers import stdlib_records

    from zenodo_hpc.orchestrate.chain import load_chain
    from zenodo_hpc.orchestrate.status import format_status

    with ZenodoDouble() as double:
        for i, (top, files) in enumerate(stdlib_records(21, files_per_record=2), 1):
            double.add_record(ZenodoDouble.make_hit(200 + i, created=f"2016-04-{i:02d}", title=top),
                              {f"{top}.zip": make_zip(files)})
        double.add_record(ZenodoDouble.make_hit(299, created="2016-04-28", title="slides"), {"slides.pdf": b"%PDF-1.4"})
        cfg = slurm_config(tmp_path, double, max_attempts=2)
        data = cfg.to_dict()
        data["executor"]["slurm"]["additional"] = {"qos": "limited"}
        cfg = config_from_dict(data)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        run = harvested(cfg)
        capsys.readouterr()
        assert main(["submit", "-c", str(config), "--dry-run"]) == 0
        preview = capsys.readouterr().out
        assert "QOS limited MaxSubmitJobsPerUser 5 (read from sacctmgr)" in preview
        assert "# 22 tasks, " in preview and " in batches by the finishing job as room frees" in preview
        assert main(["submit", "-c", str(config)]) == 0  # today's code refused: "allows 5 jobs per user"
        assert "it queues the other" in capsys.readouterr().out
        waiting = load_submissions(run)[0].unqueued
        status = gather_status(run)
        assert waiting and status.generations[0].unqueued == len(waiting)
        assert f"{len(waiting)} not yet queued" in format_status(status)
        wait_until(lambda: (load_chain(run) or SimpleNamespace(state="running")).state != "running", 900,
                   "the chain of finishing jobs to end")
    chain = load_chain(run)
    assert chain is not None and chain.state == "packed", chain
    assert chain.rounds == 1 and generations(run) == [1]  # the batches were one round: no attempt spent on them
    good = {str(200 + i) for i in range(1, 22)}
    assert ids_in(run, "done") == good
    assert read_failure(run, "299").quarantined
    sub = load_submissions(run)[0]
    assert sub.unqueued == [] and sorted(s for a in sub.arrays for s in a["shards"]) == list(range(22))
    assert len(sub.arrays) >= 6 and all(len(a["shards"]) <= 4 for a in sub.arrays)  # 5 jobs, one the finishing job
    _image_matches_data(run)


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH")
def test_run_queues_the_next_batch_itself_when_the_finishing_job_is_lost(tmp_path: Path,
                                                                         zenodo_with_records) -> None:
    """12 tasks under the QOS limited: the first batch's finishing job is cancelled; ``run``, which waits anyway,
    queues the next batch of the same round itself (not a new round), and the finishing jobs go on from there."""
    pytest.importorskip("PySquashfsImage", reason="the [image] extra is not installed")
    from zenodo_hpc.drivers.pipeline import run_pipeline
    from zenodo_hpc.orchestrate.chain import load_chain

    data = slurm_config(tmp_path, zenodo_with_records, max_attempts=2).to_dict()
    data["executor"]["slurm"]["additional"] = {"qos": "limited"}
    cfg = config_from_dict(data)
    run, cancelled = RunDir(cfg.run_dir), []

    def cancel_the_first_finishing_job() -> None:
        deadline = time.monotonic() + 300
        while not cancelled and time.monotonic() < deadline:
            chain = load_chain(run) if (run.state / "chain.json").exists() else None
            if chain is not None and chain.finishing_job:
                subprocess.run(["scancel", chain.finishing_job], check=True)
                cancelled.append(chain.finishing_job)
            time.sleep(0.2)

    threading.Thread(target=cancel_the_first_finishing_job, daemon=True).start()
    outcome = run_pipeline(cfg, poll_s=1, progress=False)
    assert cancelled and "holds 12 records" in outcome.message
    chain = load_chain(run)
    assert chain is not None and chain.rounds == 1 and generations(run) == [1]  # fed, not planned again
    assert ids_in(run, "done") == ALL
    sub = load_submissions(run)[0]
    assert sub.unqueued == [] and sorted(s for a in sub.arrays for s in a["shards"]) == list(range(12))
    assert len(sub.arrays) >= 3


# --- the interpreter the jobs run, and the driver as a job --------------------------------------------------

VENV_BIN = Path(sys.prefix) / "bin"  # the environment this test suite runs in, with zenodo-hpc installed
DRIVER = Path(__file__).resolve().parents[2] / "slurm" / "driver.sbatch"


def test_a_job_whose_setup_activates_a_venv_runs_that_venvs_python(tmp_path: Path,
                                                                    zenodo_with_records) -> None:
    other, probe = slurm_dev.probing_venv(tmp_path)
    cfg = slurm_config(tmp_path, zenodo_with_records, records_per_shard=6)
    data = cfg.to_dict()
    data["executor"]["slurm"]["setup"] = [f"source {other}/bin/activate"]
    cfg = config_from_dict(data)
    run = harvested(cfg)
    submit_pending(run, cfg)
    wait_for_tasks(run)
    assert ids_in(run, "done") == ALL
    ran = set(probe.read_text().split())
    assert ran == {f"{other}/bin/python3"}  # the setup's environment's python3, not this one
    assert sys.executable not in ran


def test_an_interpreter_the_nodes_cannot_see_is_refused_before_anything_is_queued(
        tmp_path: Path, zenodo_with_records, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The dev cluster's nodes all run on this machine, so they see its disk: sinfo says so (their host
    names are this host's). Seen from another host (a login node), the same interpreter on the same local
    disk is refused, and nothing is planned or queued."""
    from zenodo_hpc.orchestrate import accounting
    from zenodo_hpc.record.extract import SHARED_FILESYSTEMS, filesystem_type

    kind = filesystem_type(sys.prefix)
    if kind is None or kind in SHARED_FILESYSTEMS:
        pytest.skip(f"this interpreter's environment is on a shared file system ({kind}): nothing to refuse")
    assert accounting.node_hosts(SLURM_PARTITION) == {accounting.this_host()}
    cfg = slurm_config(tmp_path, zenodo_with_records)
    assert cfg.executor.slurm.setup == []
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    run = harvested(cfg)
    monkeypatch.setattr(accounting, "socket", SimpleNamespace(gethostname=lambda: "login-elsewhere"))
    assert accounting.this_host() == "login-elsewhere"
    capsys.readouterr()
    assert main(["submit", "-c", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the jobs would run {sys.executable}, but {sys.prefix} is on this machine's own " \
        f"disk ({kind})" in err[0] and "executor.slurm.setup" in err[0]
    assert generations(run) == [] and load_submissions(run) == []
    assert queued_from(tmp_path) == []


def sbatch_driver(tmp_path: Path, cfg: Config) -> tuple[str, Path]:
    """``sbatch --export=ALL,CONFIG=... slurm/driver.sbatch`` as the README shows it, from a shell where
    zenodo-hpc is not on PATH (no venv active); the output and resources are given on the command line, as a
    user overrides the script's. The job id and its output file."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p) != VENV_BIN)
    assert shutil.which("zenodo-hpc", path=path) is None
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": path}
    output = tmp_path / "driver.out"
    out = subprocess.run(["sbatch", "--parsable", f"--chdir={tmp_path}", f"--output={output}", "--mem=1G",
                          "--cpus-per-task=1", f"--export=ALL,CONFIG={config}", str(DRIVER)],
                         capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip().split(";")[0], output


def job_ended(job_id: str) -> str | None:
    """How the job ended (COMPLETED, FAILED, ...); None while it is queued or running, or accounting lags."""
    state = task_states([job_id]).get(job_id)
    return state.state if state and state.state not in (*ACTIVE_STATES, GONE) else None


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH")
def test_the_driver_job_finds_zenodo_hpc_through_the_setup_lines_and_runs_the_pipeline(
        tmp_path: Path, zenodo_with_records) -> None:
    cfg = slurm_config(tmp_path, zenodo_with_records, records_per_shard=4)
    data = cfg.to_dict()
    data["executor"]["slurm"]["setup"] = [f"source {VENV_BIN}/activate"]
    cfg = config_from_dict(data)
    job, output = sbatch_driver(tmp_path, cfg)
    try:
        state = None
        wait_until(lambda: bool(job_ended(job)), 400, f"the driver job {job} to end")
        state = job_ended(job)
    finally:
        subprocess.run(["scancel", job], check=False)
    log = output.read_text()
    assert state == "COMPLETED", log[-2000:]
    run = RunDir(cfg.run_dir)
    assert "harvest: 12 records" in log and "packed after 1 round(s)" in log
    assert ids_in(run, "done") == ALL and (run.root / "zenodo-ml.sqsh.md5").exists()


def test_the_driver_job_that_cannot_find_zenodo_hpc_says_how_to_fix_it(tmp_path: Path,
                                                                      zenodo_with_records) -> None:
    cfg = slurm_config(tmp_path, zenodo_with_records)
    assert cfg.executor.slurm.setup == []
    job, output = sbatch_driver(tmp_path, cfg)
    wait_until(lambda: bool(job_ended(job)), 120, f"the driver job {job} to end")
    assert job_ended(job) == "FAILED"
    log = output.read_text()
    assert "zenodo-hpc driver: error: zenodo-hpc is not on PATH in this job" in log
    assert "executor.slurm.setup" in log and "ZENODO_HPC_VENV=/path/to/venv" in log
    assert not RunDir(cfg.run_dir).records.exists()  # nothing ran

"""The executor interface (zenodo_hpc/orchestrate/executor.py): a task's resources, the submission record of a
generation as written and read back (strictly for resume, leniently for status), and what ``auto`` resolves to."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir
from zenodo_hpc.orchestrate.executor import (
    Resources,
    Submission,
    _now,
    load_submissions,
    resolve_kind,
    save_submission,
)


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.submissions.mkdir(parents=True)
    return run


def test_resources_are_the_configs_and_a_copy_of_its_lists() -> None:
    cfg = config_from_dict({"executor": {"slurm": {"partition": "gpu", "time_min": 30, "mem_gb": 6, "cpus_per_task": 3,
                                                   "setup": ["module load python"], "additional": {"qos": "low"}}}})
    resources = Resources.from_config(cfg)
    assert resources == Resources("gpu", 30, 6, 3, ["module load python"], {"qos": "low"})
    resources.setup.append("echo escalated")  # resume changes a task's resources, never the run's config
    resources.additional["begin"] = "now+1hour"
    assert cfg.executor.slurm.setup == ["module load python"] and dict(cfg.executor.slurm.additional) == {"qos": "low"}


def test_submissions_are_saved_and_loaded_in_generation_order(run: RunDir) -> None:
    second = Submission(2, "slurm", 4, arrays=[{"job_id": "51", "shards": [0, 1]}], submitted_at=_now(),
                        finishing_job="52", unqueued=[2])
    first = Submission(1, "local", 2, tasks={"0": {"state": "COMPLETED", "exit": 0}}, submitted_at=_now())
    for sub in (second, first, Submission(10, "debug", 1)):
        save_submission(run, sub)
    assert json.loads(run.submission(2).read_text()) == second.to_json()
    assert [s.generation for s in load_submissions(run)] == [1, 2, 10]
    assert load_submissions(run)[:2] == [first, second]


def test_files_that_are_no_generations_submission_are_left_alone(run: RunDir) -> None:
    save_submission(run, Submission(1, "local", 1))
    (run.submissions / "0001-copy.json").write_text("{}")  # a person's copy
    (run.submissions / "0002.json.bad").write_text("{}")  # moved away as the warning says
    (run.submissions / "notes.json").write_text("{}")
    assert [s.generation for s in load_submissions(run, strict=True)] == [1]


def test_a_submission_of_an_older_version_reads_its_pack_job_as_its_finishing_job(run: RunDir) -> None:
    run.submission(1).write_text(json.dumps({"generation": 1, "kind": "slurm", "concurrent": 8, "pack_job": "40",
                                             "arrays": [{"job_id": "39", "shards": [0]}], "a_later_key": True}))
    (sub,) = load_submissions(run, strict=True)
    assert sub.finishing_job == "40" and sub.arrays == [{"job_id": "39", "shards": [0]}] and sub.unqueued == []


@pytest.mark.parametrize("content", [
    '{"generation": 3, "kind": "slurm", "conc',  # cut short by a full disk
    "[]",  # JSON, not an object
    json.dumps({"generation": 3, "kind": "slurm", "concurrent": 1, "bad_key_only": 1, "arrays": "51"}),
    json.dumps({"generation": 4, "kind": "local", "concurrent": 1}),  # another generation's, in 0003.json
    json.dumps({"generation": 3, "kind": "local", "concurrent": 1, "tasks": {"first": {"state": "COMPLETED"}}}),
    json.dumps({"generation": 3, "kind": "slurm", "concurrent": 1, "arrays": [{"shards": [0]}]}),  # no job id
    json.dumps({"generation": 3, "kind": "slurm"}),  # what status reads is missing
])
def test_an_unreadable_submission_is_refused_by_resume_and_left_out_by_status(
        run: RunDir, content: str, caplog: pytest.LogCaptureFixture) -> None:
    save_submission(run, Submission(1, "slurm", 1))
    run.submission(3).write_text(content)
    with pytest.raises(UserError) as refused:
        load_submissions(run, strict=True)
    message = str(refused.value)
    assert message.startswith(f"{run.submission(3)}: unreadable")
    assert "the tasks of generation 3 cannot be checked" in message and "(e.g. to 0003.json.bad)" in message
    with caplog.at_level(logging.WARNING, logger="zenodo_hpc.core.state"):
        assert [s.generation for s in load_submissions(run)] == [1]
    assert "generation 3 is shown without its task states" in caplog.text


def test_age_is_the_time_since_submission_and_unknown_ages_are_old() -> None:
    assert 0 <= Submission(1, "local", 1, submitted_at=_now()).age_s() < 600
    assert Submission(1, "local", 1, submitted_at="2020-01-01T00:00:00+0000").age_s() > 86_400 * 365
    assert Submission(1, "local", 1).age_s() == float("inf")
    assert Submission(1, "local", 1, submitted_at="yesterday").age_s() == float("inf")


def test_auto_is_slurm_where_sbatch_is_on_path_and_local_elsewhere(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    empty, with_sbatch = tmp_path / "empty", tmp_path / "bin"
    empty.mkdir()
    with_sbatch.mkdir()
    sbatch = with_sbatch / "sbatch"  # only found on PATH, never run
    sbatch.write_text("#!/bin/sh\nexit 1\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", str(empty))
    assert resolve_kind("auto") == "local"
    monkeypatch.setenv("PATH", str(with_sbatch))
    assert resolve_kind("auto") == "slurm"
    assert [resolve_kind(kind) for kind in ("slurm", "local", "debug")] == ["slurm", "local", "debug"]

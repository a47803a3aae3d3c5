"""``submit`` and ``resume`` as the CLI calls them (zenodo_hpc/drivers/submit.py): a preview of stated records, a dry
run that creates nothing, a run directory opened and frozen, and resume with what the run is missing. (Not named
test_submit.py: tests/orchestrate/test_submit.py, orchestrate/submit.py's, has that basename, and pytest's default
import mode needs basenames unique.) The planning and executors behind them are tested in tests/orchestrate/."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_config

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, ids_in, open_run, read_failure
from zenodo_hpc.drivers.submit import check_preview, resume, submit
from zenodo_hpc.orchestrate.executor import load_submissions
from zenodo_hpc.orchestrate.plan import generations
from zenodo_hpc.zenodo.harvest import harvest

ALL = {str(100 + i) for i in range(1, 13)}


def test_stated_records_are_for_a_preview_only() -> None:
    check_preview(None, dry_run=False)
    check_preview(None, dry_run=True)
    check_preview(10, dry_run=True)
    with pytest.raises(UserError, match=r"^--records N is for a preview only: use it with --dry-run$"):
        check_preview(10, dry_run=False)


def test_a_real_submit_of_stated_records_is_refused_before_the_run_directory_is_made(tmp_path: Path,
                                                                                      zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    with pytest.raises(UserError, match="for a preview only"):
        submit(cfg, kind="debug", records=10)
    assert not Path(cfg.run_dir).exists()


def test_a_preview_of_stated_records_creates_no_run_directory(tmp_path: Path, zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    run, result = submit(cfg, kind="local", dry_run=True, records=7)
    assert run.root == Path(cfg.run_dir) and not run.root.exists()
    assert result.stated and result.plan is not None and result.plan.records == 7 and result.submission is None
    assert "-m zenodo_hpc.orchestrate.worker" in result.description


def test_a_dry_run_against_a_run_of_another_config_is_refused(tmp_path: Path, zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    open_run(cfg)  # the run exists, frozen with raster.width 80
    data = cfg.to_dict()
    data["raster"]["width"] = 40
    with pytest.raises(UserError, match="was made with a different config: raster.width is 80 in the run, 40 in "
                                        "this config"):
        submit(config_from_dict(data), kind="local", dry_run=True, records=5)


def test_submit_opens_the_run_and_runs_its_first_round(tmp_path: Path, zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run, result = submit(cfg, kind="debug")
    assert run.run_yaml.exists()  # frozen: a later submit of another config is refused
    assert result.submission is not None and result.submission.kind == "debug" and generations(run) == [1]
    assert ids_in(run, "done") == ALL


def test_resume_plans_only_what_is_not_done_with_the_runs_executor(tmp_path: Path, zenodo_with_records) -> None:
    import requests

    hits = requests.get(f"{zenodo_with_records.api_url}/records", params={"size": 25}, timeout=30).json()
    key = next(h for h in hits["hits"]["hits"] if h["id"] == 103)["files"][0]["key"]
    zenodo_with_records.fail(f"/api/records/103/files/{key}/content", "503", times=2)  # past the client's retry
    cfg = run_config(tmp_path, zenodo_with_records, kind="debug")
    harvest(cfg, progress=False)
    run, _ = submit(cfg)
    assert ids_in(run, "done") == ALL - {"103"} and read_failure(run, "103") is not None
    result = resume(RunDir(run.root), cfg)
    assert result.plan is not None and [i for s in result.plan.shards for i in s.ids] == ["103"]
    assert result.submission is not None and result.submission.kind == "debug"
    assert ids_in(run, "done") == ALL and read_failure(run, "103") is None
    assert resume(run, cfg).plan is None  # complete: nothing more
    assert [s.generation for s in load_submissions(run)] == [1, 2]

"""`zenodo-hpc run`: harvest, submit, wait, retry, pack — with the local executor (SLURM: test_slurm_cluster)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import run_config

from zenodo_hpc.cli import main
from zenodo_hpc.core.state import ids_in, read_failure
from zenodo_hpc.drivers.pipeline import interrupted_message, run_pipeline

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                reason="mksquashfs not on PATH (apt-get install squashfs-tools)")


def test_run_goes_from_zenodo_to_a_verified_image(tmp_path: Path, zenodo_with_records,
                                                  capsys: pytest.CaptureFixture) -> None:
    import requests

    hits = requests.get(f"{zenodo_with_records.api_url}/records", params={"size": 25}).json()["hits"]["hits"]
    gone = next(h for h in hits if h["id"] == 110)
    zenodo_with_records.fail(f"/api/records/110/files/{gone['files'][0]['key']}/content", "404", times=50)
    cfg = run_config(tmp_path, zenodo_with_records, max_attempts=2)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["run", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("harvest: 12 records")
    assert lines[-1].startswith(f"pack: {cfg.run_dir / 'zenodo-ml.sqsh'}") and lines[-1].endswith("verified")
    assert "holds 11 records" in lines[-1]
    failure = read_failure(_run(cfg), "110")
    assert failure.quarantined and failure.reason == "http_404" and failure.attempts == 1  # at once
    assert len(ids_in(_run(cfg), "done")) == 11
    md5 = (cfg.run_dir / "zenodo-ml.sqsh.md5").read_text()
    assert main(["run", "-c", str(config)]) == 0  # again: nothing to do but pack, to the same bytes
    assert (cfg.run_dir / "zenodo-ml.sqsh.md5").read_text() == md5
    assert "nothing to submit" in capsys.readouterr().out


def _run(cfg):
    from zenodo_hpc.core.state import RunDir

    return RunDir(cfg.run_dir)


def test_interrupt_message_says_how_to_continue(tmp_path: Path, zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    message = interrupted_message(cfg, "my.yaml")
    assert "zenodo-hpc run -c my.yaml" in message and f"zenodo-hpc resume {cfg.run_dir}" in message
    assert "SLURM" not in message and "the local workers stopped with it" in message  # a local run queued nothing
    message = interrupted_message(cfg, "my.yaml", "slurm")  # run --executor slurm
    assert "queued SLURM jobs keep running" in message and "local workers" not in message


def test_run_with_debug_executor_and_a_limit(tmp_path: Path, zenodo_with_records) -> None:
    cfg = run_config(tmp_path, zenodo_with_records)
    outcome = run_pipeline(cfg, limit=5, kind="debug", progress=False)
    assert outcome.packed is not None and outcome.packed.records == 5
    assert outcome.status.done == 5 and outcome.status.records == 5


def test_local_run_takes_the_same_decisions_round_after_round(tmp_path: Path, zenodo_with_records,
                                                              capsys: pytest.CaptureFixture) -> None:
    import requests

    from zenodo_hpc.core.state import attempts_of
    from zenodo_hpc.orchestrate.chain import load_chain

    hits = {h["id"]: h for h in requests.get(f"{zenodo_with_records.api_url}/records", params={"size": 25}).json()
            ["hits"]["hits"]}
    for record_id, times in ((103, 2), (104, 100)):  # 103: a passing 503; 104: 503 for ever
        key = hits[record_id]["files"][0]["key"]
        zenodo_with_records.fail(f"/api/records/{record_id}/files/{key}/content", "503", times=times)
    cfg = run_config(tmp_path, zenodo_with_records, max_attempts=3)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["run", "-c", str(config)]) == 0
    run = _run(cfg)
    assert attempts_of(run, "103") == 2 and "103" in ids_in(run, "done")
    failure = read_failure(run, "104")
    assert failure.quarantined and failure.reason == "http_503" and attempts_of(run, "104") == 3
    chain = load_chain(run)
    assert chain.rounds == 3 and chain.state == "packed"
    assert "holds 11 records" in capsys.readouterr().out.strip().splitlines()[-1]

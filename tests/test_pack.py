"""pack: a reproducible, verified squashfs image of a finished run, built with the real mksquashfs."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
from conftest import run_config

from zenodo_hpc.cli import main
from zenodo_hpc.errors import UserError
from zenodo_hpc.harvest import harvest
from zenodo_hpc.pack import EXTRAS, image_listing, pack
from zenodo_hpc.state import open_run, read_failure
from zenodo_hpc.submit import submit_pending

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                reason="mksquashfs not on PATH (apt-get install squashfs-tools)")


@pytest.fixture
def finished_run(tmp_path: Path, zenodo_with_records):  # noqa: ANN001, ANN201
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    return run, cfg


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_pack_twice_gives_byte_identical_verified_images(finished_run) -> None:  # noqa: ANN001
    run, cfg = finished_run
    first = pack(run, cfg, progress=False)
    image = run.root / "zenodo-ml.sqsh"
    assert first.image == image and first.records == 12
    digest = md5(image)
    assert (run.root / "zenodo-ml.sqsh.md5").read_text() == f"{digest}  zenodo-ml.sqsh\n"
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    assert (run.root / "zenodo-ml.sqsh.sha256").read_text() == f"{sha}  zenodo-ml.sqsh\n"
    os.utime(run.data / "101" / "images_101.h5", (1, 1))  # timestamps must not matter
    second = pack(run, cfg, progress=False)
    assert md5(image) == digest == second.md5
    assert not [p for p in run.root.iterdir() if p.name.startswith(".zenodo-ml.sqsh")]  # no temp left


def test_image_holds_records_and_the_root_files(finished_run) -> None:  # noqa: ANN001
    run, cfg = finished_run
    pack(run, cfg, progress=False)
    listing = image_listing(run.root / "zenodo-ml.sqsh")
    assert set(EXTRAS) <= listing
    assert {"101/images_101.h5", "101/images_101.pkl", "101/metadata_101.json", "101/metadata_101.pkl"} <= listing
    assert not [p for p in listing if p.startswith(".")]
    manifest = [json.loads(line) for line in (run.data / "manifest.jsonl").read_text().splitlines()]
    assert [m["id"] for m in manifest] == [str(100 + i) for i in range(1, 13)]
    entry = manifest[0]
    assert entry["status"] == "done" and entry["doi"] == "10.5281/zenodo.101" and entry["segments"] > 0
    h5 = next(f for f in entry["files"] if f["name"].endswith(".h5"))
    assert h5["sha256"] == hashlib.sha256((run.data / h5["name"]).read_bytes()).hexdigest()
    card = (run.data / "README.md").read_text()
    assert "| records in this image | 12 |" in card and "squashfuse zenodo-ml.sqsh" in card


def test_incomplete_run_is_refused_with_counts_unless_partial(tmp_path: Path, zenodo_with_records,  # noqa: ANN001
                                                              capsys: pytest.CaptureFixture) -> None:
    import requests

    hits = requests.get(f"{zenodo_with_records.api_url}/records", params={"size": 25}).json()["hits"]["hits"]
    hit = next(h for h in hits if h["id"] == 104)
    zenodo_with_records.fail(f"/api/records/104/files/{hit['files'][0]['key']}/content", "500", times=10)
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    assert read_failure(run, "104")["reason"] == "http_500"  # a reason a later round may change: not quarantined
    assert main(["pack", str(run.root)]) == 1
    err = capsys.readouterr().err
    assert "is not complete: 11 done, 1 failed, 0 pending, 0 quarantined of 12" in err
    assert "--allow-partial" in err and not (run.root / "zenodo-ml.sqsh").exists()
    assert main(["pack", str(run.root), "--allow-partial"]) == 0
    out = capsys.readouterr().out
    assert "holds 11 records (partial: --allow-partial)" in out
    manifest = [json.loads(line) for line in (run.data / "manifest.jsonl").read_text().splitlines()]
    failed = next(m for m in manifest if m["id"] == "104")
    assert failed["status"] == "failed" and failed["reason"] == "http_500" and failed["files"] == []
    assert not any(p.startswith("104/") for p in image_listing(run.root / "zenodo-ml.sqsh"))


def test_missing_mksquashfs_says_how_to_install(finished_run, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    run, cfg = finished_run
    monkeypatch.setenv("PATH", "/nonexistent")  # a real absence: nothing on PATH at all
    with pytest.raises(UserError, match="mksquashfs not found: install squashfs-tools"):
        pack(run, cfg, progress=False)


def test_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pack", str(tmp_path / "nope")]) == 1
    assert "is not a run directory" in capsys.readouterr().err


def _pack_with_file_size_limit(run, cfg, limit: int) -> None:  # noqa: ANN001
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    pack(run, cfg, progress=False)


def test_full_disk_during_packing_leaves_no_image(finished_run) -> None:  # noqa: ANN001
    run, cfg = finished_run
    pid = os.fork()
    if pid == 0:  # mksquashfs (a child of this child) inherits a file size limit: writes past it fail
        code = 0
        try:
            _pack_with_file_size_limit(run, cfg, 200_000)
        except UserError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert not (run.root / "zenodo-ml.sqsh").exists()
    assert not [p for p in run.root.iterdir() if p.name.startswith(".zenodo-ml.sqsh")]
    pack(run, cfg, progress=False)  # with room, the same run packs fine
    assert (run.root / "zenodo-ml.sqsh").exists()


def test_every_record_reads_back_equal_through_the_no_mount_reader(finished_run) -> None:  # noqa: ANN001
    pytest.importorskip("PySquashfsImage", reason="the [image] extra (PySquashfsImage) is not installed")
    import numpy as np

    from zenodo_hpc.image import iter_image_records
    from zenodo_hpc.load import load_images, load_metadata

    run, cfg = finished_run
    pack(run, cfg, progress=False)
    image = run.root / "zenodo-ml.sqsh"
    seen = []
    for record_id, images, meta in iter_image_records(image, verify=True):
        on_disk = load_images(run.data / record_id)
        assert images.keys() == on_disk.keys()
        for key in images:
            np.testing.assert_array_equal(images[key], on_disk[key])
        assert meta == load_metadata(run.data / record_id)
        seen.append(record_id)
    assert sorted(seen) == sorted(str(100 + i) for i in range(1, 13))
    via_path = load_images(f"{image}:101/images_101.h5")
    np.testing.assert_array_equal(next(iter(via_path.values())), next(iter(load_images(run.data / "101").values())))
    assert load_metadata(f"{image}:101")["hit"]["id"] == 101
    with pytest.raises(UserError, match="is not in"):
        load_images(f"{image}:999/images_999.h5")

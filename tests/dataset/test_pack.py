"""pack: a reproducible, verified squashfs image of a finished run, built with the real mksquashfs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
from pathlib import Path

import pytest
from helpers import run_config

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import PACK_LEVEL, Config, config_from_dict
from zenodo_hpc.core.errors import ConfigError, UserError
from zenodo_hpc.core.state import open_run, read_failure
from zenodo_hpc.dataset.pack import EXTRAS, image_listing, mksquashfs_command, pack
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                reason="mksquashfs not on PATH (apt-get install squashfs-tools)")


@pytest.fixture
def finished_run(tmp_path: Path, zenodo_with_records):
    cfg = run_config(tmp_path, zenodo_with_records)
    cfg.output.formats = ["h5", "pkl"]  # every kind of record file, packed and checked
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    return run, cfg


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_pack_twice_gives_byte_identical_verified_images(finished_run) -> None:
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


def test_image_holds_records_and_the_root_files(finished_run) -> None:
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


def test_incomplete_run_is_refused_with_counts_unless_partial(tmp_path: Path, zenodo_with_records,
                                                              capsys: pytest.CaptureFixture) -> None:
    import requests

    hits = requests.get(f"{zenodo_with_records.api_url}/records", params={"size": 25}).json()["hits"]["hits"]
    hit = next(h for h in hits if h["id"] == 104)
    zenodo_with_records.fail(f"/api/records/104/files/{hit['files'][0]['key']}/content", "500", times=10)
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    assert read_failure(run, "104").reason == "http_500"  # a reason a later round may change: not quarantined
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


def test_missing_mksquashfs_says_how_to_install(finished_run, monkeypatch: pytest.MonkeyPatch) -> None:
    run, cfg = finished_run
    monkeypatch.setenv("PATH", "/nonexistent")  # a real absence: nothing on PATH at all
    with pytest.raises(UserError, match="mksquashfs not found: install squashfs-tools"):
        pack(run, cfg, progress=False)


def test_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pack", str(tmp_path / "nope")]) == 1
    assert "is not a run directory" in capsys.readouterr().err


def _pack_with_file_size_limit(run, cfg, limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    pack(run, cfg, progress=False)


def test_full_disk_during_packing_leaves_no_image(finished_run) -> None:
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


def test_every_record_reads_back_equal_through_the_no_mount_reader(finished_run) -> None:
    pytest.importorskip("PySquashfsImage", reason="the [image] extra (PySquashfsImage) is not installed")
    import numpy as np

    from zenodo_hpc.dataset.image import iter_image_records
    from zenodo_hpc.dataset.load import load_images, load_metadata

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


# --- every record checked before packing, every file of the new image verified before it replaces anything ---


def _checksum_files(run) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.root.iterdir() if p.name.startswith("zenodo-ml.sqsh")}


def _corrupting(original, how):
    """build_image, then damage the new image the way storage does: it must be caught before it replaces anything."""
    def build(*args, **kwargs):
        tmp = original(*args, **kwargs)
        how(tmp)
        return tmp
    return build


def _flip_bytes(path: Path, at: int = 5000, count: int = 64) -> None:
    with open(path, "r+b") as handle:  # inside the data blocks (the tables are at the end)
        handle.seek(at)
        block = handle.read(count)
        handle.seek(at)
        handle.write(bytes(b ^ 0xFF for b in block))


# The ways pack reads a new image back, with what its log says of each.
READ_BACK_WAYS = {"unsquashfs -pf": "in one pass (unsquashfs -pf)",  # squashfs-tools 4.5 and later
                  "unsquashfs -cat": "by name, 1000 at a time (unsquashfs -cat",
                  "extracting (squashfs-tools < 4.5)": "by name, 1000 at a time (extracting them"}


@pytest.mark.parametrize("damage", ["flipped bytes", "cut short", "a file changed while packing"])
@pytest.mark.parametrize("way", list(READ_BACK_WAYS))
def test_a_new_image_that_fails_verification_leaves_the_previous_one_and_its_checksums(
        finished_run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, damage: str,
        way: str) -> None:
    import zenodo_hpc.dataset.pack as pack_module

    run, cfg = finished_run
    first = pack(run, cfg, progress=False)
    assert first.verify_seconds > 0
    before = _checksum_files(run)
    assert set(before) == {"zenodo-ml.sqsh", "zenodo-ml.sqsh.md5", "zenodo-ml.sqsh.sha256"}
    _read_back_by(monkeypatch, way)
    original = pack_module.build_image
    if damage == "flipped bytes":
        monkeypatch.setattr(pack_module, "build_image", _corrupting(original, _flip_bytes))
    elif damage == "cut short":
        monkeypatch.setattr(pack_module, "build_image", _corrupting(original, lambda p: os.truncate(p, 8192)))
    else:  # a record's file rewritten between the manifest and mksquashfs
        def build(run_, cfg_, done, **kwargs):
            (run_.data / "107" / "metadata_107.json").write_text("{}\n")
            return original(run_, cfg_, done, **kwargs)
        monkeypatch.setattr(pack_module, "build_image", build)
    assert main(["pack", str(run.root)]) == 1
    err = capsys.readouterr().err
    assert "pack: error: the new image failed verification: " in err
    assert "zenodo-ml.sqsh and its checksum files are left as they were" in err and "internal error" not in err
    assert _checksum_files(run) == before  # the previous image, its .md5 and .sha256, byte for byte
    assert not [p for p in run.root.iterdir() if p.name.startswith(".zenodo-ml.sqsh")]  # no temporary left
    if damage != "a file changed while packing":
        monkeypatch.setattr(pack_module, "build_image", original)
        assert pack(run, cfg, progress=False).md5 == first.md5  # nothing was wrong with the run itself


@pytest.mark.parametrize("way", list(READ_BACK_WAYS))
def test_each_read_back_verifies_a_good_image_and_the_log_says_which(
        finished_run, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, way: str) -> None:
    run, cfg = finished_run
    _read_back_by(monkeypatch, way)
    with caplog.at_level("INFO", logger="zenodo_hpc.dataset.pack"):
        result = pack(run, cfg, progress=False)
    assert result.records == 12 and result.md5 == md5(run.root / "zenodo-ml.sqsh")
    assert READ_BACK_WAYS[way] in caplog.text


@pytest.mark.parametrize("way", list(READ_BACK_WAYS))
def test_each_read_back_names_a_file_that_reads_back_different_a_missing_and_an_unexpected_one(
        finished_run, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    from zenodo_hpc.dataset.pack import verify_image

    run, cfg = finished_run
    image = pack(run, cfg, progress=False).image
    _read_back_by(monkeypatch, way)
    expected = {name: (size, sha) for name, size, sha in _files_of(run.data, image_listing(image))}
    verify_image(image, expected)
    name = "107/metadata_107.json"
    size, sha = expected[name]
    with pytest.raises(UserError, match=rf"^{name} reads back different from the file packed \(sha256 {sha[:16]}"
                                        r"\.\.\., the manifest says 0000000000000000\.\.\.\)$"):
        verify_image(image, {**expected, name: (size, "0" * 64)})
    with pytest.raises(UserError, match=rf"^{name} is {size} bytes in it, {size + 1} in the manifest$"):
        verify_image(image, {**expected, name: (size + 1, sha)})
    with pytest.raises(UserError, match=r"missing \['999/metadata_999.json'\], unexpected \[\]$"):
        verify_image(image, {**expected, "999/metadata_999.json": (size, sha)})
    with pytest.raises(UserError, match=rf"missing \[\], unexpected \['{name}'\]$"):
        verify_image(image, {n: v for n, v in expected.items() if n != name})


def _read_back_by(monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    """Make pack read the image back the given way, as an unsquashfs offering only it would."""
    import zenodo_hpc.dataset.pack as pack_module

    offers = {"unsquashfs -pf": "-pf -cat", "unsquashfs -cat": "-cat", "extracting (squashfs-tools < 4.5)": ""}
    if way == "unsquashfs -pf" and "-pf" not in pack_module._unsquashfs_help():
        pytest.skip("this unsquashfs has no -pf (squashfs-tools < 4.5)")
    monkeypatch.setattr(pack_module, "_unsquashfs_help", lambda: offers[way])


def _files_of(folder: Path, names: set[str]) -> list[tuple[str, int, str]]:
    return [(n, (folder / n).stat().st_size, hashlib.sha256((folder / n).read_bytes()).hexdigest()) for n in names]


def _damaged_then_made_again(run, cfg, capsys, record: str = "105") -> None:
    """pack refuses naming the record, which is failed as damaged_output; resume makes it again; pack works."""
    assert main(["pack", str(run.root)]) == 1
    err = capsys.readouterr().err
    assert f"1 done record(s) in {run.data} are damaged (record {record}: " in err
    assert f"`zenodo-hpc resume {run.root}` makes them again; then pack" in err and "internal error" not in err
    assert not (run.state / "done" / f"{record}.json").exists()
    assert not (run.state / "attempts" / record).exists()  # not the record's fault: its attempts start again
    failure = read_failure(run, record)
    assert failure.reason == "damaged_output" and not failure.quarantined
    assert main(["status", str(run.root)]) == 0
    assert "failed             1  (damaged_output 1)" in capsys.readouterr().out
    submit_pending(run, cfg, kind="debug", what="resume")
    assert pack(run, cfg, progress=False).records == 12


def test_a_truncated_h5_is_not_packed_and_resume_makes_it_again(finished_run, capsys: pytest.CaptureFixture) -> None:
    run, cfg = finished_run
    h5 = run.data / "105" / "images_105.h5"
    good = h5.read_bytes()
    assert json.loads((run.state / "done" / "105.json").read_text())["outputs"]["images_105.h5"] == {
        "size": len(good), "sha256": hashlib.sha256(good).hexdigest()}
    h5.write_bytes(good[: len(good) // 2])
    _damaged_then_made_again(run, cfg, capsys)
    assert h5.read_bytes() == good  # made again, byte for byte


def test_a_missing_file_or_a_changed_one_is_damage_too(finished_run, capsys: pytest.CaptureFixture) -> None:
    run, cfg = finished_run
    (run.data / "105" / "images_105.pkl").unlink()
    _damaged_then_made_again(run, cfg, capsys)
    path = run.data / "106" / "metadata_106.json"
    path.write_bytes(path.read_bytes().replace(b'"', b"'", 1))  # same size, other bytes
    _damaged_then_made_again(run, cfg, capsys, "106")


def test_an_older_done_marker_without_checksums_still_catches_a_truncated_h5(finished_run,
                                                                             capsys: pytest.CaptureFixture) -> None:
    run, cfg = finished_run
    for record in ("105", "106"):  # markers as older versions wrote them: no "outputs"
        path = run.state / "done" / f"{record}.json"
        old = json.loads(path.read_text())
        del old["outputs"]
        path.write_text(json.dumps(old))
    assert pack(run, cfg, progress=False).records == 12  # whole folders pass
    h5 = run.data / "105" / "images_105.h5"
    h5.write_bytes(h5.read_bytes()[:4096])
    _damaged_then_made_again(run, cfg, capsys)


def test_a_garbled_done_marker_is_written_anew_when_the_folder_reads_whole(finished_run,
                                                                           capsys: pytest.CaptureFixture) -> None:
    run, cfg = finished_run
    path = run.state / "done" / "105.json"
    path.write_bytes(b"\x00\xff garbage")
    assert main(["pack", str(run.root)]) == 0
    err = capsys.readouterr().err
    assert f"{path}: unreadable" in err and "record 105 reads whole, so its done marker was written anew" in err
    marker = json.loads(path.read_text())
    assert marker["repaired_by"] == "pack" and set(marker["outputs"]) == {
        "images_105.h5", "images_105.pkl", "metadata_105.json", "metadata_105.pkl"}
    assert (run.state / "done" / ".105.json.corrupt").read_bytes() == b"\x00\xff garbage"


def test_a_garbled_done_marker_of_a_damaged_folder_sends_the_record_back(finished_run,
                                                                         capsys: pytest.CaptureFixture) -> None:
    run, cfg = finished_run
    (run.state / "done" / "105.json").write_text('{"id": "105", "fini')
    h5 = run.data / "105" / "images_105.h5"
    h5.write_bytes(h5.read_bytes()[:4096])
    _damaged_then_made_again(run, cfg, capsys)


def test_damaged_records_are_left_out_with_allow_partial(finished_run) -> None:
    run, cfg = finished_run
    h5 = run.data / "105" / "images_105.h5"
    h5.write_bytes(h5.read_bytes()[:100])
    result = pack(run, cfg, allow_partial=True, progress=False)
    assert result.records == 11 and result.partial
    manifest = {e["id"]: e for e in map(json.loads, (run.data / "manifest.jsonl").read_text().splitlines())}
    assert manifest["105"]["status"] == "failed" and manifest["105"]["reason"] == "damaged_output"
    assert not any(p.startswith("105/") for p in image_listing(run.root / "zenodo-ml.sqsh"))


# --- the cost of packing: pack.level, and every CPU the pack has -------------------------------------------------


def _command(cfg, monkeypatch: pytest.MonkeyPatch, cpus: str | None = None) -> list[str]:
    if cpus is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", cpus)
    return mksquashfs_command("mksquashfs", Path("data"), Path("img"), cfg, Path("exclude"), False)


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_mksquashfs_gets_the_level_and_the_cpus_the_pack_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = len(os.sched_getaffinity(0))
    command = _command(Config(), monkeypatch)
    assert _option(command, "-comp") == "zstd" and _option(command, "-Xcompression-level") == str(PACK_LEVEL)
    assert _option(command, "-processors") == str(mine)  # not every CPU of the node: those this process may use
    assert _option(_command(Config(), monkeypatch, "1"), "-processors") == "1"  # a SLURM job's share
    assert _option(_command(Config(), monkeypatch, str(mine + 8)), "-processors") == str(mine)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # a cpuset of 3 CPUs
    assert _option(_command(Config(), monkeypatch), "-processors") == "3"
    gzip = config_from_dict({"pack": {"compression": "gzip", "level": 9}})
    assert _option(_command(gzip, monkeypatch), "-Xcompression-level") == "9"
    for compressor in ("xz", "lz4"):  # no levels: mksquashfs would refuse the option
        assert "-Xcompression-level" not in _command(config_from_dict({"pack": {"compression": compressor}}),
                                                     monkeypatch)


@pytest.mark.parametrize(("pack_config", "message"), [
    ({"compression": "gzip", "level": 12}, "pack.level: gzip levels go from 1 to 9, got 12"),
    ({"compression": "lzo", "level": 10}, "pack.level: lzo levels go from 1 to 9, got 10"),
    ({"level": 23}, "pack.level: must be at most 22"),
    ({"level": 0}, "pack.level: must be at least 1"),
])
def test_a_level_the_compressor_does_not_have_is_refused(pack_config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"pack": pack_config})


def test_the_image_is_the_same_on_any_number_of_cpus_and_the_level_is_applied(
        finished_run, monkeypatch: pytest.MonkeyPatch) -> None:
    run, cfg = finished_run
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    one = pack(run, cfg, progress=False).md5
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    every = pack(run, cfg, progress=False).md5
    assert one == every
    cfg.pack.level = 19
    smallest = pack(run, cfg, progress=False)
    assert smallest.md5 != every  # another level, other bytes (and verified like any image)
    assert "-Xcompression-level 19" in (run.data / "README.md").read_text()

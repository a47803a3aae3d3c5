"""The check before a release (zenodo_hpc/dataset/verify.py): on a scratch file system that purges, ``update``
finds the records whose files or done markers are gone or damaged, takes back the ones whose files are whole
without a download, makes the others again, and the release holds every record; ``status`` says what it found.

A purge here is what Lustre's purge policy does: every file not modified for N days is deleted (folders stay).
Loopback Zenodo double, local executor.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles import ZenodoDouble, make_zip
from helpers import living_settings, stdlib_records

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import (
    RunDir,
    attempts_of,
    ids_in,
    mark_failed,
    marker,
    open_run,
    read_done,
    read_failure,
)
from zenodo_hpc.dataset.check_summary import last_check
from zenodo_hpc.dataset.release import list_releases
from zenodo_hpc.dataset.verify import verify_run
from zenodo_hpc.drivers.releasing import release_now
from zenodo_hpc.drivers.update import update
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

pytestmark = pytest.mark.skipif(__import__("shutil").which("mksquashfs") is None, reason="mksquashfs not on PATH")
DAY = 86400
IDS = [str(300 + i) for i in range(1, 7)]


def purge(root: Path, days: float) -> list[Path]:
    """Delete every file under ``root`` not modified for ``days`` days, as a scratch purge does (Sherlock: 90 days
    on $SCRATCH); folders stay. The files deleted."""
    cutoff = time.time() - days * DAY
    gone = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_mtime < cutoff]
    for path in gone:
        path.unlink()
    return gone


def age(paths: list[Path], days: float) -> None:
    """Make files look ``days`` days old (their last modification and access)."""
    then = time.time() - days * DAY
    for path in paths:
        os.utime(path, (then, then))


@pytest.fixture
def zenodo() -> Iterator[ZenodoDouble]:
    with ZenodoDouble() as double:
        for i, (top, files) in enumerate(stdlib_records(6, files_per_record=4), 1):
            double.add_record(ZenodoDouble.make_hit(300 + i, created=f"2017-05-{i:02d}", title=top),
                              {f"{top}.zip": make_zip(files)})
        yield double


def downloaded(zenodo: ZenodoDouble) -> set[str]:
    """The records whose files the double was asked for."""
    return {m[1] for r in zenodo.requests if (m := re.match(r"/api/records/(\d+)/files/", r.path))}


def status_of(run: RunDir, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    assert main(["status", str(run.root), *extra]) == 0
    return capsys.readouterr().out


def test_update_after_a_purge_remakes_what_is_gone_takes_back_what_is_whole_and_releases_every_record(
        tmp_path: Path, zenodo: ZenodoDouble, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_from_dict(living_settings(tmp_path, zenodo))
    first = update(cfg, kind="local").release
    assert first is not None and first.records == IDS
    run = RunDir(cfg.run_dir)

    # between two releases: 301 loses its images, 302 its done marker, 303 gets a byte changed, and 304 is a
    # record nobody touched for 100 days, which the purge deletes, marker, attempts and files (its folder stays)
    (run.data / "301" / "images_301.h5").unlink()
    marker(run, "done", "302").unlink()
    h5 = run.data / "303" / "images_303.h5"
    payload = bytearray(h5.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    h5.write_bytes(bytes(payload))
    age([p for p in run.root.rglob("*304*") if p.is_file()] + list((run.data / "304").iterdir()), 100)
    purged = purge(run.root, 90)
    assert {p.name for p in purged} == {"304.json", "304", "images_304.h5", "metadata_304.json", "metadata_304.pkl"}
    new = stdlib_records(7, files_per_record=3)[6]
    zenodo.add_record(ZenodoDouble.make_hit(410, created=time.strftime("%Y-%m-%dT%H:%M:%S"), title=new[0]),
                      {f"{new[0]}.zip": make_zip(new[1])})
    zenodo.reset_log()

    second = update(cfg, kind="local").release

    assert downloaded(zenodo) == {"301", "303", "304", "410"}  # 302's files were whole: taken back, no download
    assert second is not None and sorted(second.records) == sorted([*IDS, "410"])  # every record, none lost
    assert second.added == ["410"] and second.newly_quarantined == []
    assert ids_in(run, "done") == {*IDS, "410"}
    assert read_done(run, "302").extra.get("repaired_by") == "verify"
    assert attempts_of(run, "302") == 1  # taken back, not made again
    for record_id, problem in (("301", "images_301.h5 is missing"), ("303", "images_303.h5 has changed"),
                               ("304", "its done marker is gone and images_304.h5 is missing")):
        kept = json.loads(marker(run, "purged", record_id).read_text())
        assert kept["problem"].startswith(problem), kept
        assert (kept["done_marker"] is None) == (record_id == "304")
        assert attempts_of(run, record_id) == 1  # the attempt of this update only: a purge is not the record's fault
    manifest = [json.loads(line)["id"] for line in
                (run.root / "releases" / second.version / "manifest.jsonl").read_text().splitlines()]
    assert sorted(manifest) == sorted([*IDS, "410"])

    check = last_check(run)
    assert check is not None and check["reverified"] == ["302"] and sorted(check["damaged"]) == ["301", "303", "304"]
    text = status_of(run, capsys)
    assert re.search(r"^check before the release \(.*\): 4 done records checked in [\d.]+ s; 3 purged or damaged, "
                     r"made again \(301: images_301\.h5 is missing; 303: .*; 304: .*\); 1 re-verified, not made again "
                     r"\(done marker gone, files whole: 302\); all 3 done again$", text, re.M), text
    shown = json.loads(status_of(run, capsys, "--json"))["last_check"]
    assert shown["reverified"] == ["302"] and sorted(shown["damaged"]) == ["301", "303", "304"]
    assert shown["not_done_again"] == []


@pytest.fixture
def released(tmp_path: Path, zenodo_with_records: ZenodoDouble) -> tuple[RunDir, Config]:
    """A run of 12 records (101..112), done and released, in-process."""
    from helpers import run_config

    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    assert release_now(run, cfg) is not None
    return run, cfg


def test_an_older_marker_without_checksums_is_checked_for_its_files_not_rejected(
        released: tuple[RunDir, Config], capsys: pytest.CaptureFixture[str]) -> None:
    run, cfg = released
    for record_id in ("101", "102"):
        path = marker(run, "done", record_id)
        old = json.loads(path.read_text())
        del old["outputs"]  # as markers were written before they kept each file's checksum
        path.write_text(json.dumps(old))
    (run.data / "102" / "metadata_102.json").unlink()

    check = verify_run(run, cfg)

    assert check.checked == 12 and check.reverified == []
    assert list(check.damaged) == ["102"] and "metadata_102.json is missing" in check.damaged["102"]
    assert "101" in ids_in(run, "done") and "102" not in ids_in(run, "done")
    assert read_failure(run, "102").reason == "damaged_output"
    text = status_of(run, capsys)  # before a round made it again
    assert "1 purged or damaged, made again (102: metadata_102.json is missing); 1 not done again yet (102)" in text
    assert "damaged_output 1" in text


def test_a_folder_without_marker_is_taken_back_only_when_it_holds_its_record(released: tuple[RunDir, Config]) -> None:
    run, cfg = released
    for record_id in ("101", "102", "103"):
        marker(run, "done", record_id).unlink()
    # 102's folder holds 103's files under 102's names: whole, readable, but another record
    for name in ("images_{}.h5", "metadata_{}.json", "metadata_{}.pkl"):
        (run.data / "102" / name.format("102")).write_bytes((run.data / "103" / name.format("103")).read_bytes())
    (run.data / "103" / "metadata_103.pkl").write_bytes(b"\x80\x04junk")  # cut short
    # 104 is set aside on purpose (quarantined: withdrawn from Zenodo, its folder kept): not taken back either
    mark_failed(run, "104", reason="withdrawn", message="410 Gone", attempt=0, task="update", quarantined=True)
    marker(run, "done", "104").unlink()

    check = verify_run(run, cfg)

    assert check.reverified == ["101"] and sorted(check.damaged) == ["102", "103"]
    assert "holds another record than records.jsonl's 102" in check.damaged["102"]
    assert check.damaged["103"].startswith("its done marker is gone and metadata_103.pkl")
    assert ids_in(run, "done") == {str(i) for i in range(101, 113)} - {"102", "103", "104"}
    assert read_failure(run, "104").reason == "withdrawn"
    assert verify_run(run, cfg).damaged == {}  # sent back once: not taken back by a later check, made again


def test_resume_takes_back_a_whole_folder_whose_marker_is_gone_without_a_download(
        released: tuple[RunDir, Config], zenodo_with_records: ZenodoDouble) -> None:
    """Not only ``update``: a worker of ``resume`` or ``run`` takes a record back instead of downloading it again,
    and makes again only the record whose files are gone too."""
    run, cfg = released
    marker(run, "done", "101").unlink()  # purged: the marker alone
    marker(run, "done", "103").unlink()  # purged: the marker and the images
    (run.data / "103" / "images_103.h5").unlink()
    zenodo_with_records.reset_log()

    submit_pending(run, cfg, kind="debug")

    assert downloaded(zenodo_with_records) == {"103"}
    assert ids_in(run, "done") == {str(i) for i in range(101, 113)}
    assert read_done(run, "101").extra.get("repaired_by") == "verify" and attempts_of(run, "101") == 1
    assert attempts_of(run, "103") == 2  # made again


def test_a_purged_record_that_cannot_be_made_again_is_named_in_the_release(
        tmp_path: Path, zenodo: ZenodoDouble) -> None:
    """Its files are gone from the run directory and Zenodo no longer serves them: the release goes out without it,
    and says so (newly quarantined, in release.json and the changelog), instead of stopping or keeping silent."""
    cfg = config_from_dict(living_settings(tmp_path, zenodo))
    assert update(cfg, kind="local").release is not None
    run = RunDir(cfg.run_dir)
    (run.data / "305" / "images_305.h5").unlink()
    zenodo.fail("/api/records/305/files/*", "404", times=100)
    new = stdlib_records(7, files_per_record=3)[6]
    zenodo.add_record(ZenodoDouble.make_hit(410, created=time.strftime("%Y-%m-%dT%H:%M:%S"), title=new[0]),
                      {f"{new[0]}.zip": make_zip(new[1])})

    second = update(cfg, kind="local").release

    assert second is not None and "305" not in second.records and second.newly_quarantined == ["305"]
    assert sorted(second.records) == sorted([*(i for i in IDS if i != "305"), "410"])
    changelog = (run.root / "releases" / second.version / "CHANGELOG.md").read_text()
    assert "## Newly quarantined (1)\n\n- 305 [10.5281/zenodo.305]" in changelog
    assert read_failure(run, "305").reason == "http_404"
    assert "images_305.h5 is missing" in json.loads(marker(run, "purged", "305").read_text())["problem"]


def test_a_record_left_out_of_the_dataset_is_not_made_again_after_a_purge(
        released: tuple[RunDir, Config], tmp_path: Path) -> None:
    """A record an author asked to leave out (dataset.exclude) after it was released, then purged whole: the check
    does not send it back to be downloaded again, nor does it count it against the release."""
    from dataclasses import replace

    run, cfg = released
    (tmp_path / "exclude.txt").write_text("105  # its author asked\n")
    cfg = replace(cfg, dataset=replace(cfg.dataset, exclude=str(tmp_path / "exclude.txt")))
    for path in [marker(run, "done", "105"), marker(run, "attempts", "105"), *(run.data / "105").iterdir()]:
        path.unlink()
    (run.data / "104" / "images_104.h5").unlink()

    check = verify_run(run, cfg)

    assert list(check.damaged) == ["104"] and check.checked == 11
    assert read_failure(run, "105") is None and not marker(run, "purged", "105").exists()


def test_update_stops_when_a_purge_took_records_jsonl_and_goes_on_once_its_copy_is_appended(
        tmp_path: Path, zenodo: ZenodoDouble) -> None:
    """records.jsonl is purged whole when no update appended to it for 90 days: the next update must not make a
    release of only what it harvests anew; it says what to do, and the copy operations.md keeps puts it right."""
    cfg = config_from_dict(living_settings(tmp_path, zenodo))
    assert update(cfg, kind="local").release is not None
    run = RunDir(cfg.run_dir)
    kept = tmp_path / "kept-records.jsonl"
    kept.write_bytes(run.records.read_bytes())
    age([run.records], 100)
    assert purge(run.root, 90) == [run.records]
    new = stdlib_records(7, files_per_record=3)[6]
    zenodo.add_record(ZenodoDouble.make_hit(410, created=time.strftime("%Y-%m-%dT%H:%M:%S"), title=new[0]),
                      {f"{new[0]}.zip": make_zip(new[1])})

    with pytest.raises(UserError, match=r"records\.jsonl no longer holds 6 record\(s\) of release [\d.]+ \(e\.g\. "
                                        r"301, 302, 303\): a purge deleted it.*cat <your copy>/records\.jsonl >> "):
        update(cfg, kind="local")
    assert len(list_releases(run)) == 1

    with open(run.records, "ab") as records:  # as the message says
        records.write(kept.read_bytes())
    second = update(cfg, kind="local").release
    assert second is not None and sorted(second.records) == sorted([*IDS, "410"]) and second.added == ["410"]

"""Records leave the dataset: withdrawn from Zenodo (deleted: 410 Gone with its tombstone; restricted), or named by
``dataset.exclude``; and the first ``update`` of a run made by ``run``/``submit`` takes what Zenodo gained since that
run's harvest began. ``update`` runs in-process on the debug executor against the loopback Zenodo double (no
publishing: test_update.py covers Kaggle, Zenodo deposits and the webhook)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from doubles import ZenodoDouble, make_zip
from doubles.webhook import Webhook
from helpers import run_config, stdlib_records
from pytest_httpserver import HTTPServer

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, ids_in, open_run, read_failure
from zenodo_hpc.dataset.organize import organize
from zenodo_hpc.dataset.release import latest_release, list_releases, summary_line
from zenodo_hpc.drivers.releasing import release_now
from zenodo_hpc.drivers.update import update
from zenodo_hpc.orchestrate.status import format_status, gather_status
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.report.collect import collect
from zenodo_hpc.report.page import reasons_text
from zenodo_hpc.zenodo.harvest import harvest

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH (squashfs-tools)")

IDS = [str(301 + i) for i in range(6)]


@pytest.fixture
def zenodo() -> Any:
    """Six records of real code (301..306); 305 and 306 are two versions of one software (concept 905)."""
    with ZenodoDouble() as double:
        for i, (top, files) in enumerate(stdlib_records(6, files_per_record=3)):
            concept = "905" if i >= 4 else str(901 + i)
            double.add_record(ZenodoDouble.make_hit(301 + i, created=f"2017-05-{i + 1:02d}", title=top,
                                                    conceptrecid=concept), {f"{top}.zip": make_zip(files)})
        yield double


def config(tmp_path: Path, zenodo: ZenodoDouble, webhook: str | None = None, **dataset: Any) -> Config:
    cfg = run_config(tmp_path, zenodo).to_dict()
    cfg["notify"]["webhook_url"] = webhook
    cfg["zenodo"]["all_versions"] = True  # every version is a record of its own: 305 and 306 are both released
    if dataset:
        cfg["dataset"].update(dataset)
    else:
        cfg.pop("dataset", None)
    return config_from_dict(cfg)


def add_new_record(zenodo: ZenodoDouble, record_id: int) -> None:
    top, files = stdlib_records(8, files_per_record=3)[7]
    zenodo.add_record(ZenodoDouble.make_hit(record_id, created=datetime.now(timezone.utc).isoformat(), title=top),
                      {f"{top}.zip": make_zip(files)})


def image_members(image: Path) -> set[str]:
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(image)], capture_output=True, text=True, check=True)
    return {line.strip().lstrip("/").split("/", 1)[0] for line in listing.stdout.splitlines() if line.strip()}


def image_file(image: Path, name: str) -> str:
    return subprocess.run(["unsquashfs", "-cat", str(image), name], capture_output=True, text=True,
                          check=True).stdout


def manifest_ids(image: Path) -> set[str]:
    return {json.loads(line)["id"] for line in image_file(image, "manifest.jsonl").splitlines()}


def records_ids(image: Path) -> set[str]:
    return {str(json.loads(line)["id"]) for line in image_file(image, "records.jsonl").splitlines()}


def export_ids(folder: Path) -> set[str]:
    lines = (folder / "index.csv").read_text().splitlines()
    column = lines[0].split(",").index("record_id")
    return {line.split(",")[column] for line in lines[1:]}


# --- withdrawn from Zenodo --------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [False, True], ids=["outputs-removed", "outputs-kept"])
def test_records_zenodo_deleted_or_restricted_leave_the_next_release(tmp_path: Path, zenodo: ZenodoDouble,
                                                                     keep: bool, httpserver: HTTPServer) -> None:
    webhook = Webhook(httpserver)
    cfg = config(tmp_path, zenodo, webhook.url, **({"keep_withdrawn": True} if keep else {}))
    run = RunDir(cfg.run_dir)
    first = update(cfg, kind="debug").release
    assert first is not None and first.records == IDS

    zenodo.delete_record(302, reason="spam")  # 410 Gone with its tombstone
    zenodo.restrict_record(303)  # its files turned restricted: still in the search, shown restricted
    zenodo.delete_record(304, visible=False)  # a hidden tombstone: 404
    add_new_record(zenodo, 320)
    zenodo.reset_log()
    outcome = update(cfg, kind="debug")
    second = outcome.release
    assert second is not None and second.version != first.version

    assert second.records == ["301", "305", "306", "320"] and second.added == ["320"]
    reasons = {r["id"]: r["reason"] for r in second.removed}
    assert reasons == {"302": "deleted from Zenodo (410 Gone; removal reason: spam)",
                       "303": "restricted on Zenodo (access_right is 'restricted')",
                       "304": "deleted from Zenodo (404 Not Found)"}
    looked_up = sorted(r.path for r in zenodo.requests if re.fullmatch(r"/api/records/\d+", r.path))
    assert looked_up == ["/api/records/302", "/api/records/304"]  # only what left the search is looked up
    changelog = (run.root / "releases" / second.version / "CHANGELOG.md").read_text()
    assert "## Removed (3)" in changelog
    assert "- 302 [10.5281/zenodo.302](https://doi.org/10.5281/zenodo.302)" in changelog
    assert "removed, deleted from Zenodo (410 Gone; removal reason: spam)" in changelog
    assert "removed, restricted on Zenodo" in changelog
    manifest = [json.loads(line)["id"] for line in
                (run.root / "releases" / second.version / "manifest.jsonl").read_text().splitlines()]
    assert manifest == second.records

    image = run.root / second.image
    assert not {"302", "303", "304"} & (image_members(image) | manifest_ids(image) | records_ids(image))
    assert {"301", "320"} <= image_members(image) & manifest_ids(image)
    export = organize(image, tmp_path / "export")
    assert export_ids(export.out) == {"301", "305", "306", "320"}
    assert export_ids(organize(run.root, tmp_path / "export-run").out) == {"301", "305", "306", "320"}

    for record_id in ("302", "303", "304"):
        assert (run.data / record_id).is_dir() is keep
        failure = read_failure(run, record_id)
        assert failure is not None and failure.reason == "withdrawn" and failure.quarantined
    assert not {"302", "303", "304"} & ids_in(run, "done")
    assert summary_line(second).endswith("newly quarantined, 3 removed)") and summary_line(second) in outcome.message
    assert webhook.bodies[-1]["text"] == summary_line(second) and webhook.bodies[-1]["release"]["removed"] == 3

    zenodo.reset_log()
    again = update(cfg, kind="debug")  # nothing new: the withdrawn records are not looked up again
    assert again.release is None and "4 records of the previous release checked with Zenodo, 0 removed" in again.message
    assert not [r for r in zenodo.requests if re.fullmatch(r"/api/records/\d+", r.path)]
    assert len(list_releases(run)) == 2


def test_a_lookup_zenodo_does_not_answer_keeps_the_record(tmp_path: Path, zenodo: ZenodoDouble) -> None:
    """A 503 (or a timeout) decides nothing: the record stays, in the release and in data/, and the next update asks
    again."""
    cfg = config(tmp_path, zenodo)
    run = RunDir(cfg.run_dir)
    assert update(cfg, kind="debug").release is not None
    zenodo.delete_record(302)
    zenodo.fail("/api/records/302", "503", times=2)  # the client's two tries (zenodo.retries: 1)

    outcome = update(cfg, kind="debug")
    assert [r.status for r in zenodo.requests if r.path == "/api/records/302"] == [503, 503]
    assert outcome.release is None  # nothing changed: no release, and 302 is still in the latest one
    assert "302" in ids_in(run, "done") and (run.data / "302").is_dir() and read_failure(run, "302") is None
    assert "0 removed, 1 kept because Zenodo did not answer" in outcome.message

    second = update(cfg, kind="debug").release  # Zenodo answers again: 410
    assert second is not None and [r["id"] for r in second.removed] == ["302"]
    assert not (run.data / "302").exists()


# --- dataset.exclude ----------------------------------------------------------------------------------------------


def test_dataset_exclude_leaves_records_out_of_release_image_manifest_and_export(tmp_path: Path,
                                                                                 zenodo: ZenodoDouble) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# authors who asked to be left out\n"
                       "301\n"
                       "\n"
                       "https://doi.org/10.5281/ZENODO.302   # a DOI, as a link\n"
                       "10.5281/zenodo.905  # a concept DOI: every version of it\n")
    cfg = config(tmp_path, zenodo, exclude=str(exclude))
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    release = release_now(run, cfg)
    assert release is not None and release.records == ["303", "304"]

    image = run.root / release.image
    left_out = {"301", "302", "305", "306"}
    assert not left_out & (image_members(image) | manifest_ids(image) | records_ids(image))
    assert not left_out & export_ids(organize(image, tmp_path / "export").out)
    assert not left_out & export_ids(organize(run.root, tmp_path / "export-run").out)
    assert all((run.data / i).is_dir() for i in left_out)  # excluded, not deleted: the list may change
    status = gather_status(run, cfg)  # status and the report name them, as the changelog does
    assert (status.done, status.excluded) == (6, 4)
    assert "  excluded           4  (by dataset.exclude: left out of every release)" in format_status(status)
    assert "by <code>dataset.exclude</code>: 4." in reasons_text(collect(run, cfg, accounting=False))

    exclude.write_text("301\n")  # 302 and the concept are back; 301 stays out
    assert release_now(run, cfg) is not None
    assert latest_release(run).records == ["302", "303", "304", "305", "306"]


def test_an_excluded_record_of_an_earlier_release_is_named_removed(tmp_path: Path, zenodo: ZenodoDouble) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("")
    cfg = config(tmp_path, zenodo, exclude=str(exclude))
    run = RunDir(cfg.run_dir)
    assert update(cfg, kind="debug").release is not None
    exclude.write_text("10.5281/zenodo.303\n")
    second = update(cfg, kind="debug").release
    assert second is not None and second.removed == [
        {"id": "303", "reason": "excluded by dataset.exclude (exclude.txt, line 1: its DOI)"}]
    assert "303" not in second.records and (run.data / "303").is_dir()


def test_a_bad_exclude_file_stops_pack_and_release_before_anything_is_written(tmp_path: Path,
                                                                             zenodo: ZenodoDouble) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_bytes(b"301\n\xff\xfe\n")
    cfg = config(tmp_path, zenodo, exclude=str(exclude))
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    with pytest.raises(UserError, match=rf"^{exclude}:2: not UTF-8 text"):
        release_now(run, cfg)
    assert not (run.root / "releases").exists() and not list(run.root.glob("*.sqsh"))
    missing = config(tmp_path, zenodo, exclude=str(tmp_path / "nowhere.txt"))
    with pytest.raises(UserError, match="dataset.exclude: cannot read .*nowhere.txt"):
        release_now(run, missing)


# --- the first update of a run made by run or submit --------------------------------------------------------------


def test_the_first_update_after_a_run_harvests_what_zenodo_gained_since(tmp_path: Path, zenodo: ZenodoDouble) -> None:
    cfg = config(tmp_path, zenodo)
    harvest(cfg, progress=False)  # the run's own harvest, as run and submit make it
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    add_new_record(zenodo, 320)

    outcome = update(cfg, kind="debug")
    assert outcome.release is not None and outcome.release.records == [*IDS, "320"]
    searches = [r for r in zenodo.requests if r.path == "/api/records"]
    assert any("updated:[" in r.query.get("q", "") for r in searches)  # only what changed since that harvest began


def test_the_double_answers_a_deleted_record_as_zenodo_does(zenodo: ZenodoDouble) -> None:
    """The recorded shape (tests/fixtures/zenodo/error_deleted_record_410.json, from invenio-rdm-records' code): the
    record, its files and the search; a hidden tombstone is a 404; a restricted record stays in the search."""
    import requests

    recorded = Path(__file__).parents[1] / "fixtures" / "zenodo" / "error_deleted_record_410.json"
    fixture = json.loads(recorded.read_text())
    zenodo.delete_record(302, reason="spam")
    zenodo.delete_record(304, visible=False)
    zenodo.restrict_record(303)
    zenodo.restrict_record(305, whole_record=True)
    gone = requests.get(f"{zenodo.api_url}/records/302", timeout=10)
    assert gone.status_code == 410 and list(gone.json()) == list(fixture)
    assert list(gone.json()["tombstone"]) == list(fixture["tombstone"])
    assert gone.json()["tombstone"]["removal_reason"] == {"id": "spam"}
    content = requests.get(f"{zenodo.api_url}/records/302/files/x.zip/content", timeout=10)
    assert content.status_code == 410 and content.json()["message"] == "Record deleted"
    assert requests.get(f"{zenodo.api_url}/records/304", timeout=10).json() == {"status": 404,
                                                                               "message": "Record not found"}
    assert requests.get(f"{zenodo.api_url}/records/305", timeout=10).status_code == 403
    found = requests.get(f"{zenodo.api_url}/records", params={"q": "recid:(301 OR 302 OR 303 OR 304 OR 305)",
                                                               "all_versions": "true"}, timeout=10).json()
    hits = {h["id"]: h for h in found["hits"]["hits"]}
    assert sorted(hits) == [301, 303] and hits[303]["metadata"]["access_right"] == "restricted"
    assert hits[303]["files"] == []


def test_a_tombstone_whose_reason_holds_a_lone_surrogate_still_removes_its_record(tmp_path: Path,
                                                                                  zenodo: ZenodoDouble) -> None:
    """The reason goes into the changelog and the feed: ``"\\ud800"`` (valid JSON, no UTF-8 can hold it) would stop
    the release; it reads as U+FFFD, like every other text from Zenodo."""
    from zenodo_hpc.zenodo.withdrawn import look_up

    zenodo.delete_record(302, reason="sp\ud800am")
    lookup = look_up(config(tmp_path, zenodo), ["301", "302"])
    assert lookup.kept == {"301"}
    assert lookup.removed == {"302": "deleted from Zenodo (410 Gone; removal reason: sp\ufffdam)"}


def test_the_first_update_after_a_run_stopped_at_its_limit_harvests_what_is_new(tmp_path: Path,
                                                                                zenodo: ZenodoDouble) -> None:
    """A run whose harvest stopped at zenodo.limit is complete too: the first update takes what is new since."""
    cfg = config(tmp_path, zenodo)
    cfg.zenodo.limit = 4
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    add_new_record(zenodo, 320)

    outcome = update(cfg, kind="debug")
    assert outcome.release is not None and "320" in outcome.release.records

"""``update``: new records on Zenodo become the next release — only they are processed, the release's image is
verified, its changelog names them, Kaggle and Zenodo get new versions, the webhook one notice, the feed an
entry. Loopback doubles only (Zenodo with its deposit API, Kaggle, a webhook); the local executor.

``update`` runs in a child process, as a user runs it: the official kaggle client reads its endpoint and
credentials when it is imported, and that must not leak into the other tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles import KaggleDouble, ZenodoDouble, make_zip
from doubles.webhook import Webhook
from helpers import living_settings, run_config, stdlib_records
from pytest_httpserver import HTTPServer

from zenodo_hpc.core.state import RunDir, attempts_of, ids_in, open_run
from zenodo_hpc.dataset.release import Release, list_releases
from zenodo_hpc.drivers.releasing import release_now
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

HERE = Path(__file__).parents[1]
USER, KEY = "alice", "k4ggle-key-0123456789"
DEPOSIT_TOKEN = "d3posit-t0ken-abcdef"
pytestmark = [
    pytest.mark.skipif(__import__("shutil").which("mksquashfs") is None, reason="mksquashfs not on PATH"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("kaggle") is None,
                       reason="the kaggle extra is not installed (pip install 'zenodo-hpc[kaggle]')"),
]

CHILD = """
import sys
from kagglesdk import kaggle_env
kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.LOCAL] = sys.argv[1]
from zenodo_hpc.dataset import publish
publish.POLL_SECONDS = (0, 0)
from zenodo_hpc.cli import main
sys.exit(main(["update", "-c", sys.argv[2], "--executor", "local"]))
"""


@dataclass
class LivingRun:
    """A living run, its doubles, and what each ``update`` left: the doubles stay up for the tests to ask."""

    tmp_path: Path
    zenodo: ZenodoDouble
    kaggle: KaggleDouble
    webhook: Webhook
    config: Path
    run: RunDir
    first: subprocess.CompletedProcess[str] | None = None  # the first update: the first release
    first_releases: list[Release] = field(default_factory=list)
    first_bodies: list[dict[str, Any]] = field(default_factory=list)
    first_mtimes: dict[str, int] = field(default_factory=dict)  # the record files after the first release
    second_mtimes: dict[str, int] = field(default_factory=dict)  # ... and after the second
    second_bodies: list[dict[str, Any]] = field(default_factory=list)
    kaggle_calls: list[Any] = field(default_factory=list)  # the Kaggle requests of both releases


@pytest.fixture(scope="module")
def living(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivingRun]:
    """Two updates, as a month apart: the first releases six records; then Zenodo gains two records and a new
    version of record 301's software, and the second releases them. Run once for the tests below, each of
    which checks one outcome."""
    tmp_path = tmp_path_factory.mktemp("living")
    server = HTTPServer()  # the webhook's own server: pytest-httpserver's shared one is cleared after each test
    server.start()
    try:
        with ZenodoDouble(tokens=[DEPOSIT_TOKEN]) as zenodo, KaggleDouble(users={USER: KEY}) as kaggle:
            for i, (top, files) in enumerate(stdlib_records(6, files_per_record=4), 1):
                hit = ZenodoDouble.make_hit(300 + i, created=f"2017-05-{i:02d}", title=top, conceptrecid=str(900 + i))
                if i == 6:  # the run exports permissive licenses only (config_file): 306 stays out of Kaggle's
                    hit["metadata"]["license"] = {"id": "gpl-3.0-only"}
                zenodo.add_record(hit, {f"{top}.zip": make_zip(files)})
            webhook = Webhook(server)
            config = config_file(tmp_path, zenodo, webhook)
            living = LivingRun(tmp_path, zenodo, kaggle, webhook, config, RunDir(tmp_path / "scratch" / "living"))
            living.first = run_update(tmp_path, kaggle, config)
            living.first_releases = list_releases(living.run)
            living.first_bodies = webhook.bodies
            living.first_mtimes = mtimes(living.run)
            add_new_records(zenodo)
            run_update(tmp_path, kaggle, config)
            living.second_mtimes = mtimes(living.run)
            living.second_bodies = webhook.bodies
            living.kaggle_calls = list(kaggle.requests)
            yield living
    finally:
        server.clear()
        server.stop()


@pytest.fixture(scope="module")
def nothing_new(living: LivingRun) -> subprocess.CompletedProcess[str]:
    """A third update, with nothing new on Zenodo. The tests that use it come last in this file, after those
    that read the second release's files as the second update left them."""
    return run_update(living.tmp_path, living.kaggle, living.config)


def config_file(tmp_path: Path, zenodo: ZenodoDouble, webhook: Webhook) -> Path:
    config = {
        **living_settings(tmp_path, zenodo),
        "publish": {"kaggle": {"username": USER, "title": "Zenodo ML code images by language"},
                    "zenodo": {"api_url": zenodo.api_url, "token_env": "TEST_DEPOSIT_TOKEN",
                               "creators": [{"name": "Doe, Jane", "affiliation": "Example University"}]}},
        "releases": {"keep": 1},
        "notify": {"webhook_url": webhook.url},
        "export": {"license_categories": ["permissive"]},
    }
    path = tmp_path / "living.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_update(tmp_path: Path, kaggle: KaggleDouble, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "VERBOSE"))}
    for sub in ("home", "kaggle", "tmp"):
        (tmp_path / sub).mkdir(exist_ok=True)
    env.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY,
               KAGGLE_CONFIG_DIR=str(tmp_path / "kaggle"), HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"),
               TEST_DEPOSIT_TOKEN=DEPOSIT_TOKEN, NO_PROXY="127.0.0.1,localhost")
    done = subprocess.run([sys.executable, "-c", CHILD, kaggle.url, str(config)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for secret in (KEY, DEPOSIT_TOKEN):
        assert secret not in done.stdout + done.stderr
    return done


def add_new_records(zenodo: ZenodoDouble) -> None:
    """Zenodo gains two records, and a new version of record 301's software supersedes it."""
    now = datetime.now(timezone.utc).isoformat()
    for new_id in (410, 411):
        top, files = stdlib_records(8, files_per_record=3)[new_id - 404]
        zenodo.add_record(ZenodoDouble.make_hit(new_id, created=now, title=top), {f"{top}.zip": make_zip(files)})
    top, files = stdlib_records(1, files_per_record=3)[0]
    zenodo.add_record(ZenodoDouble.make_hit(412, created=now, title="301, version 2", conceptrecid="901"),
                      {f"{top}-v2.zip": make_zip(files)})


def mtimes(run: RunDir) -> dict[str, int]:
    return {p.relative_to(run.data).as_posix(): p.stat().st_mtime_ns for p in run.data.glob("[0-9]*/*")}


def two_releases(living: LivingRun) -> tuple[Release, Release]:
    one, two = list_releases(living.run)
    return one, two


# --- the first update: the first release ---------------------------------------------------------------------


def test_the_first_update_releases_every_record(living: LivingRun) -> None:
    (one,) = living.first_releases
    assert one.records == [str(300 + i) for i in range(1, 7)] and one.added == one.records


def test_the_first_update_says_so_and_notifies_once(living: LivingRun) -> None:
    (one,) = living.first_releases
    assert living.first is not None and "Zenodo-ML release" in living.first.stdout
    assert one.notified and len(living.first_bodies) == 1


def test_the_first_release_is_published_on_zenodo_and_kaggle(living: LivingRun) -> None:
    (one,) = living.first_releases
    assert one.published["zenodo"]["ok"] and one.published["zenodo"]["doi"]
    assert one.published["kaggle"]["ok"] and one.published["kaggle"]["created"]


# --- the second update: new records only ---------------------------------------------------------------------


def test_the_next_release_adds_the_new_records(living: LivingRun) -> None:
    assert sorted(two_releases(living)[1].added) == ["410", "411", "412"]


def test_a_new_version_supersedes_its_record_whose_folder_stays(living: LivingRun) -> None:
    two = two_releases(living)[1]
    assert two.superseded == [{"id": "301", "by": "412"}] and "301" not in two.records
    assert (living.run.data / "301").is_dir()  # its folder stays in the run directory, outside the release


def test_records_done_before_are_not_redone(living: LivingRun) -> None:
    before = living.first_mtimes
    assert {k: v for k, v in living.second_mtimes.items() if k in before} == before
    assert all(attempts_of(living.run, str(300 + i)) == 1 for i in range(1, 7))


def test_the_new_records_are_done(living: LivingRun) -> None:
    assert ids_in(living.run, "done") >= {"410", "411", "412"}


def test_the_released_image_is_the_one_pack_verified(living: LivingRun) -> None:
    image = living.run.root / two_releases(living)[1].image
    assert hashlib.md5(image.read_bytes()).hexdigest() == two_releases(living)[1].md5


def test_releases_keep_1_prunes_the_earlier_image_everywhere(living: LivingRun) -> None:
    one, _ = two_releases(living)
    root = living.run.root
    assert not (root / one.image).exists()  # releases.keep: 1
    assert not (root / "releases" / one.version / one.image).exists()  # pruned from its folder too
    assert "No such file" in checksum(root / "releases" / one.version, f"{one.image}.md5").stderr  # says so


def test_the_release_checks_in_its_folder_as_the_docs_say(living: LivingRun) -> None:
    two = two_releases(living)[1]
    assert_checksums_check_where_the_docs_say(living.run.root / "releases" / two.version, two.image)


def test_the_release_checks_as_downloaded_from_zenodo(living: LivingRun) -> None:
    two = two_releases(living)[1]
    folder = downloaded_from_zenodo(living.zenodo, two, living.tmp_path / "from-zenodo")
    assert_checksums_check_where_the_docs_say(folder, two.image)


def test_the_card_in_the_image_names_it_as_published(living: LivingRun) -> None:
    image = two_releases(living)[1].image
    card = (living.run.data / "README.md").read_text()
    assert f"md5sum -c {image}.md5" in card and f"squashfuse {image} zenodo-ml" in card


def test_the_changelog_names_the_new_and_the_superseded_records(living: LivingRun) -> None:
    two = two_releases(living)[1]
    changelog = (living.run.root / "releases" / two.version / "CHANGELOG.md").read_text()
    assert all(f"- {i} [10.5281/zenodo.{i}]" in changelog for i in ("410", "411", "412"))
    assert "- 301 by 412" in changelog


def test_the_release_manifest_lists_its_records(living: LivingRun) -> None:
    two = two_releases(living)[1]
    manifest = [json.loads(line)["id"] for line in
                (living.run.root / "releases" / two.version / "manifest.jsonl").read_text().splitlines()]
    assert manifest == two.records


def test_the_webhook_gets_one_notice_per_release(living: LivingRun) -> None:
    two = two_releases(living)[1]
    bodies = living.second_bodies
    assert len(bodies) == 2 and bodies[1]["release"]["version"] == two.version
    assert bodies[1]["text"].startswith(f"Zenodo-ML release {two.version}: 8 records (+3 added")


def test_the_feed_has_an_entry_per_release(living: LivingRun) -> None:
    feed = ET.parse(living.run.root / "releases" / "feed.xml").getroot()
    assert len(feed.findall("{http://www.w3.org/2005/Atom}entry")) == 2


def test_kaggle_gets_a_dataset_then_a_version_noted_as_the_webhook(living: LivingRun) -> None:
    calls = living.kaggle_calls
    creates = [r.call for r in calls if r.call in ("CreateDataset", "CreateDatasetVersion")]
    assert creates == ["CreateDataset", "CreateDatasetVersion"]
    notes = [r.json["body"]["versionNotes"] for r in calls if r.call == "CreateDatasetVersion"]
    assert notes == [living.second_bodies[1]["text"]]


def test_kaggle_gets_the_records_licenses_and_only_the_categories_the_run_exports(living: LivingRun) -> None:
    """The double's records are MIT, but 306 (GPL): the run exports permissive ones only (export.license_categories),
    so Kaggle's description names 306 as left out, and its one license is "other" (Kaggle lists no MIT)."""
    create = next(r.json for r in living.kaggle_calls if r.call == "CreateDataset")
    assert create["licenseName"] == "other"
    assert "every record here has the license `mit` (MIT License), which Kaggle does not list" in create["description"]
    assert "| 306 | gpl-3.0-only | copyleft |" in create["description"]
    assert "306" in two_releases(living)[0].records  # the release itself holds every record


def test_zenodo_gets_a_new_version_of_the_same_concept(living: LivingRun) -> None:
    one, two = two_releases(living)
    assert two.published["zenodo"]["concept_id"] == one.published["zenodo"]["concept_id"]
    assert two.published["zenodo"]["doi"] != one.published["zenodo"]["doi"]


# --- a third update, with nothing new (these come last: they run it) -------------------------------------------


def test_an_update_with_nothing_new_makes_no_release(living: LivingRun,
                                                    nothing_new: subprocess.CompletedProcess[str]) -> None:
    assert "nothing new since release" in nothing_new.stdout and len(list_releases(living.run)) == 2
    assert len(living.webhook.bodies) == 2


def test_no_file_of_the_run_holds_a_credential(living: LivingRun,
                                                nothing_new: subprocess.CompletedProcess[str]) -> None:
    for path in living.run.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and DEPOSIT_TOKEN.encode() not in data, path


def test_after_an_update_with_nothing_new_the_next_finds_what_zenodo_gained(
        living: LivingRun, nothing_new: subprocess.CompletedProcess[str]) -> None:
    """The update after one that made no release searches from the same release again: a search taken as done
    because the same search was complete before would leave the dataset without what Zenodo gained (last: it
    makes a third release)."""
    top, files = stdlib_records(10, files_per_record=2)[9]
    living.zenodo.add_record(ZenodoDouble.make_hit(420, created=datetime.now(timezone.utc).isoformat(), title=top),
                             {f"{top}.zip": make_zip(files)})
    run_update(living.tmp_path, living.kaggle, living.config)
    releases = list_releases(living.run)
    assert len(releases) == 3 and releases[-1].added == ["420"]


# --- checksums work from where they are written (docs/updating.md) ------------------------------------------------


def checksum(folder: Path, name: str) -> subprocess.CompletedProcess[str]:
    """``md5sum -c`` or ``sha256sum -c`` of a checksum file, run in its folder."""
    tool = {"md5": "md5sum", "sha256": "sha256sum"}[name.rsplit(".", 1)[1]]
    return subprocess.run([tool, "-c", name], cwd=folder, capture_output=True, text=True, timeout=300)


def assert_checksums_check_where_the_docs_say(folder: Path, image: str) -> None:
    """docs/updating.md's commands (the release's version and image in place of its example's), in ``folder``."""
    page = (HERE.parent / "docs" / "updating.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", page, re.S) if "md5sum -c" in b]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:]]
    assert block.startswith("cd scratch/zenodo-ml/releases/2026.12.01\n") and len(commands) == 2
    for command in commands:
        tool, flag, name = command.replace("zenodo-ml-2026.12.01.sqsh", image).split()
        assert (tool, flag) in {("md5sum", "-c"), ("sha256sum", "-c")}
        checked = checksum(folder, name)
        assert (checked.returncode, checked.stdout) == (0, f"{image}: OK\n"), checked.stderr


def downloaded_from_zenodo(zenodo: ZenodoDouble, release: Release, folder: Path) -> Path:
    """The files of the release's Zenodo record, as a downloader saves them: in one folder."""
    record = int(release.published["zenodo"]["record_id"])
    folder.mkdir()
    for entry in zenodo.deposition(record)["files"]:
        (folder / entry["filename"]).write_bytes(zenodo.deposit_file(record, entry["filename"]))
    assert {p.name for p in folder.iterdir()} == {release.image, f"{release.image}.md5", f"{release.image}.sha256",
                                                   "CHANGELOG.md"}
    return folder


def test_a_release_folder_holds_its_image_and_checks_from_there(tmp_path: Path, zenodo_with_records,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without publishing: the release's folder holds its image (a hard link, no second copy), its checksums check
    there; a release made before its folder held its image gets it at the next release; where hard links are
    refused, a relative symbolic link does it."""
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    release = release_now(run, cfg)
    folder = run.root / "releases" / release.version
    assert (folder / release.image).stat().st_ino == (run.root / release.image).stat().st_ino
    assert_checksums_check_where_the_docs_say(folder, release.image)

    (folder / release.image).unlink()  # as releases were made before: the image only in the run directory
    assert "No such file" in checksum(folder, f"{release.image}.md5").stderr
    monkeypatch.setattr(os, "link", _no_hard_links)
    assert release_now(run, cfg) is None  # nothing new: no release, but the folder gets its image
    assert (folder / release.image).is_symlink()
    assert os.readlink(folder / release.image) == f"../../{release.image}"
    assert_checksums_check_where_the_docs_say(folder, release.image)


def _no_hard_links(source: object, target: object, *args: object, **kwargs: object) -> None:
    raise PermissionError(1, "Operation not permitted")  # what file systems without hard links answer

"""``update`` with ``publish.huggingface``: each release's Parquet export becomes one commit and one tag (the
release's version) of a Hub dataset repository, and the changelog, the feed and the notice link it; a failed
publication leaves the release whole and is done by the next ``update``; the token goes nowhere but the Hub.

The real pipeline (harvest, local rounds, pack, the Parquet export of the released image) against loopback
doubles: Zenodo with its deposit API, the Hub (tests/doubles/hf_hub.py, driven by the real ``huggingface_hub``
client), a webhook. In-process: unlike the kaggle client, ``huggingface_hub`` reads its endpoint and token when
it publishes, not when it is imported."""

from __future__ import annotations

import importlib.util
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from doubles import ZenodoDouble, make_zip
from doubles.hf_hub import HubDouble
from doubles.webhook import Webhook
from helpers import living_settings, stdlib_records
from pytest_httpserver import HTTPServer

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import RunDir
from zenodo_hpc.dataset.release import Release, list_releases
from zenodo_hpc.drivers.update import update

pytestmark = [
    pytest.mark.skipif(__import__("shutil").which("mksquashfs") is None, reason="mksquashfs not on PATH"),
    pytest.mark.skipif(importlib.util.find_spec("huggingface_hub") is None,
                       reason="the huggingface extra is not installed: pip install -e '.[huggingface]'"),
    pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None or importlib.util.find_spec("datasketch") is None,
                       reason="the Parquet export needs pyarrow and datasketch: pip install -e '.[export]'"),
    pytest.mark.skipif(importlib.util.find_spec("zenodo_hpc.dataset.hf_card") is None,
                       reason="zenodo_hpc/dataset/hf_card.py (the export's dataset card) is not in this tree yet"),
]

HF_TOKEN = "hf_updateHubTestTokenNotReal9876543210"  # recognisable: every output of the run is searched for it
DEPOSIT_TOKEN = "d3posit-t0ken-hubupdate"
REPO = "alice/zenodo-ml"


@dataclass
class HubRun:
    """Four updates and what each left: the first releases four records on the Hub; Zenodo gains two and the
    second release goes straight onto the Hub; Zenodo gains a new version of record 301's software, and the third
    release's commit fails on the Hub; the fourth update (nothing new on Zenodo) publishes the third release."""

    run: RunDir
    hub: HubDouble
    zenodo: ZenodoDouble
    webhook: Webhook
    releases: list[list[Release]] = field(default_factory=list)  # list_releases after each update
    heads: list[str] = field(default_factory=list)  # the Hub's main after each update
    tags: list[dict[str, str]] = field(default_factory=list)  # the Hub's tags after each update
    commits: list[int] = field(default_factory=list)  # the Hub's commits after each update
    puts: list[int] = field(default_factory=list)  # LFS objects stored, after each update
    exports: list[dict[str, dict[str, bytes]]] = field(default_factory=list)  # export/huggingface/, each update
    related: list[dict[str, list[str]]] = field(default_factory=list)  # the feed's related links, each update
    messages: list[str] = field(default_factory=list)  # what each update said
    logged: str = ""  # every log record of the updates

    @property
    def url(self) -> str:
        return f"{self.hub.url}/datasets/{REPO}"


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubRun]:
    tmp_path = tmp_path_factory.mktemp("hubupdate")
    server = HTTPServer()  # the webhook's own server (pytest-httpserver's shared one is cleared after each test)
    server.start()
    records = logging.getLogger()
    capture = _Capture()
    records.addHandler(capture)
    level = records.level
    records.setLevel(logging.INFO)
    # an earlier test's `zenodo-hpc` in this process (cli/main.py) may have stopped the package's records at its own
    # handler: they must reach the capture here whatever ran before
    package = logging.getLogger("zenodo_hpc")
    package_state = package.propagate, package.level
    package.propagate, package.level = True, logging.NOTSET
    try:
        with pytest.MonkeyPatch.context() as env, ZenodoDouble(tokens=[DEPOSIT_TOKEN]) as zenodo, \
                HubDouble(HF_TOKEN) as hub:
            env.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login of the machine is read or written
            env.setenv("HF_TOKEN", HF_TOKEN)
            env.setenv("HF_ENDPOINT", hub.url)
            env.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
            env.setenv("TEST_DEPOSIT_TOKEN", DEPOSIT_TOKEN)
            sources = stdlib_records(6, files_per_record=3)
            for i, (top, files) in enumerate(sources[:4], 1):
                hit = ZenodoDouble.make_hit(300 + i, created=f"2017-05-{i:02d}", title=top, conceptrecid=str(900 + i))
                zenodo.add_record(hit, {f"{top}.zip": make_zip(files)})
            webhook = Webhook(server)
            cfg = config_from_dict({
                **living_settings(tmp_path, zenodo),
                "publish": {"huggingface": {"repo": REPO},
                            "zenodo": {"api_url": zenodo.api_url, "token_env": "TEST_DEPOSIT_TOKEN",
                                       "creators": [{"name": "Doe, Jane", "affiliation": "Example University"}]}},
                "notify": {"webhook_url": webhook.url},
            })
            state = HubRun(RunDir(tmp_path / "scratch" / "living"), hub, zenodo, webhook)

            def one_update() -> None:
                state.messages.append(update(cfg, kind="local", progress=False).message)
                state.releases.append(list_releases(state.run))
                state.heads.append(hub.repos[REPO].branches["main"])
                state.tags.append(dict(hub.repos[REPO].tags))
                state.commits.append(len(hub.repos[REPO].commits))
                state.puts.append(len(hub.puts))
                folders = state.run.root / "export" / "huggingface"
                state.exports.append({p.name: local_files(p) for p in folders.iterdir()})
                state.related.append({version: related(entry) for version, entry in entries(state.run).items()})

            one_update()
            for new_id, (top, files) in ((410, sources[4]), (411, sources[5])):
                zenodo.add_record(ZenodoDouble.make_hit(new_id, created=now(), title=top),
                                  {f"{top}.zip": make_zip(files)})
            one_update()
            top, files = sources[0]
            zenodo.add_record(ZenodoDouble.make_hit(412, created=now(), title="301, version 2", conceptrecid="901"),
                              {f"{top}-v2.zip": make_zip(files)})
            hub.fail("POST", "commit", status=500)  # the third release's commit: once
            one_update()
            one_update()  # nothing new on Zenodo: this update publishes the third release on the Hub
            state.logged = capture.text()
            yield state
    finally:
        records.removeHandler(capture)
        records.setLevel(level)
        package.propagate, package.level = package_state
        server.clear()
        server.stop()


def now() -> str:
    """Zenodo's time of a record added now: within the next update's harvest (since the last one, minus a day)."""
    return datetime.now(timezone.utc).isoformat()


class _Capture(logging.Handler):
    """Every record the updates log, formatted with their arguments (what a log file would hold)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")

    def text(self) -> str:
        return "\n".join(self.lines)


def hub_files(hub: HubDouble, revision: str) -> dict[str, bytes]:
    """The release's files on the Hub (without the .gitattributes the Hub writes)."""
    return {k: v for k, v in hub.files(REPO, revision).items() if k != ".gitattributes"}


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def entries(run: RunDir) -> dict[str, ET.Element]:
    """The feed's entries by release version (the last part of their ids)."""
    atom = "{http://www.w3.org/2005/Atom}"
    root = ET.parse(run.feed).getroot()
    return {(e.findtext(f"{atom}id") or "").rsplit(":", 1)[1]: e for e in root.findall(f"{atom}entry")}


def related(entry: ET.Element) -> list[str]:
    return [link.get("href") or "" for link in entry.findall("{http://www.w3.org/2005/Atom}link")
            if link.get("rel") == "related"]


# --- the first release ---------------------------------------------------------------------------------------


def test_the_first_release_is_a_commit_and_a_tag_of_a_new_private_dataset(hub_run: HubRun) -> None:
    (one,) = hub_run.releases[0]
    hub = hub_run.hub
    published = one.published["huggingface"]
    assert hub.repos[REPO].private and len(hub.calls("POST", "/api/repos/create")) == 1
    assert published == {"ok": True, "repo": REPO, "url": hub_run.url, "tag": one.version,
                         "commit": hub_run.heads[0], "created": True}
    assert hub_run.tags[0] == {one.version: hub_run.heads[0]} and hub_run.commits[0] == 2  # the Hub's first, then it
    assert hub.repos[REPO].commits[1].summary.startswith(f"Zenodo-ML release {one.version}: 4 records")


def test_the_hub_holds_the_release_export_card_and_parquet_shards(hub_run: HubRun) -> None:
    (one,) = hub_run.releases[0]
    exported = hub_run.exports[0][one.version]
    assert hub_files(hub_run.hub, one.version) == exported
    assert "README.md" in exported and any(k.startswith("data/") and k.endswith(".parquet") for k in exported)
    assert exported["README.md"].startswith(b"---\n")  # the card's YAML front matter
    folder = hub_run.run.hub_export(one.version)
    assert not folder.is_relative_to(hub_run.run.export(one.version))  # organize replaces export/<version>/ whole


def test_the_first_release_s_shards_hold_its_records(hub_run: HubRun) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (one,) = hub_run.releases[0]
    shards = [pa.BufferReader(data) for name, data in hub_run.exports[0][one.version].items()
              if name.endswith(".parquet")]
    ids = {i for shard in shards for i in pq.read_table(shard, columns=["record_id"]).column(0).to_pylist()}
    assert ids == set(one.records)


def test_the_changelog_zenodo_got_links_the_hub(hub_run: HubRun) -> None:
    """The Hub goes before Zenodo, so the changelog uploaded there names it too."""
    one = hub_run.releases[0][0]
    line = f"- Hugging Face: {hub_run.url} (tag {one.version})\n"
    assert hub_run.run.changelog(one.version).read_text().endswith(f"\n## Published\n\n{line}")
    record = int(one.published["zenodo"]["record_id"])
    assert line.encode() in hub_run.zenodo.deposit_file(record, "CHANGELOG.md")


def test_the_notice_names_the_hub_dataset(hub_run: HubRun) -> None:
    first, second = hub_run.webhook.bodies[:2]
    assert first["release"]["huggingface"] == second["release"]["huggingface"] == hub_run.url
    assert f"huggingface: {hub_run.url}" in hub_run.messages[0]  # what update prints


# --- the second release: one more commit and tag -------------------------------------------------------------------


def test_the_next_release_is_one_more_commit_and_tag_and_main_holds_it(hub_run: HubRun) -> None:
    one, two = hub_run.releases[1]
    assert sorted(two.added) == ["410", "411"]
    assert two.published["huggingface"] == {"ok": True, "repo": REPO, "url": hub_run.url, "tag": two.version,
                                            "commit": hub_run.heads[1], "created": False}
    assert hub_run.tags[1] == {one.version: hub_run.heads[0], two.version: hub_run.heads[1]}
    assert hub_run.heads[1] != hub_run.heads[0] and hub_run.commits[1] == 3
    assert len(hub_run.hub.calls("POST", "/api/repos/create")) == 1
    # the second release's export, as published; the first's left the scratch (the Hub keeps it at its tag)
    assert sorted(hub_run.exports[1]) == [two.version]
    assert hub_files(hub_run.hub, two.version) == hub_run.exports[1][two.version]
    assert hub_files(hub_run.hub, one.version) == hub_run.exports[0][one.version]  # the first stays whole
    assert hub_run.related[1] == {one.version: [hub_run.url], two.version: [hub_run.url]}


# --- the third release: the Hub fails, the next update publishes it -------------------------------------------------


def test_a_failed_publication_leaves_the_release_whole_and_the_hub_as_it_was(hub_run: HubRun) -> None:
    three = hub_run.releases[2][2]
    assert three.superseded == [{"id": "301", "by": "412"}]
    failed = three.published["huggingface"]
    assert failed["ok"] is False and set(failed) == {"ok", "error"}
    assert "uploading (alice/zenodo-ml)" in failed["error"] and "\n" not in failed["error"]
    assert three.published["zenodo"]["ok"] and hub_run.run.image(three.image).is_file()  # the release stands
    assert (hub_run.heads[2], hub_run.tags[2], hub_run.commits[2]) == (hub_run.heads[1], hub_run.tags[1], 3)
    assert "publishing on huggingface failed" in hub_run.logged and "(the next update tries again)" in hub_run.logged
    assert "huggingface: failed" in hub_run.messages[2]
    assert hub_run.related[2][three.version] == []  # the feed links only what was published
    deposited = hub_run.zenodo.deposit_file(int(three.published["zenodo"]["record_id"]), "CHANGELOG.md")
    assert b"Hugging Face" not in deposited and b"## Published" not in deposited  # a failure is no link


def test_the_next_update_publishes_it_as_a_new_commit_and_tag(hub_run: HubRun) -> None:
    assert "nothing new since release" in hub_run.messages[3] and len(hub_run.releases[3]) == 3
    one, two, three = hub_run.releases[3]
    assert three.published["huggingface"] == {"ok": True, "repo": REPO, "url": hub_run.url, "tag": three.version,
                                              "commit": hub_run.heads[3], "created": False}
    assert hub_run.tags[3] == {**hub_run.tags[2], three.version: hub_run.heads[3]} and hub_run.commits[3] == 4
    assert hub_files(hub_run.hub, "main") == hub_files(hub_run.hub, three.version) == hub_run.exports[3][three.version]
    assert sorted(hub_run.exports[3]) == [three.version]
    assert [r.published for r in (one, two)] == [r.published for r in hub_run.releases[2][:2]]  # not again


def test_the_retry_sends_only_what_the_hub_lacks(hub_run: HubRun) -> None:
    """The failed try stored the new shards; the export it left is published as it is, nothing uploaded twice."""
    two, three = hub_run.releases[3][1:]
    assert hub_run.puts[3] == hub_run.puts[2] > hub_run.puts[1]
    assert hub_run.exports[3][three.version] == hub_run.exports[2][three.version]
    assert sorted(hub_run.exports[2]) == [two.version, three.version]  # the last one on the Hub stays until then
    assert len(hub_run.hub.puts) == len(set(hub_run.hub.puts))


def test_the_feed_and_the_changelog_link_the_third_release_once_published(hub_run: HubRun) -> None:
    three = hub_run.releases[3][2]
    assert all(links == [hub_run.url] for links in hub_run.related[3].values()) and len(hub_run.related[3]) == 3
    content = entries(hub_run.run)[three.version].findtext("{http://www.w3.org/2005/Atom}content") or ""
    assert f"Hugging Face: {hub_run.url} (tag {three.version})" in content
    changelog = hub_run.run.changelog(three.version).read_text()
    assert changelog.endswith(f"\n## Published\n\n- Hugging Face: {hub_run.url} (tag {three.version})\n")
    assert changelog.count("## Published") == 1


# --- the token ---------------------------------------------------------------------------------------------------


def test_the_token_is_nowhere_but_in_the_requests_to_the_hub(hub_run: HubRun) -> None:
    token = HF_TOKEN.encode()
    for path in hub_run.run.root.rglob("*"):  # logs, release.json, changelogs, the feed, the exports, run.yaml
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert HF_TOKEN not in hub_run.logged and HF_TOKEN not in "".join(hub_run.messages)
    assert all(r.authorized for r in hub_run.hub.requests if r.path.startswith("/api/"))
    assert not any(r.authorization for r in hub_run.hub.requests if r.path.startswith("/storage/"))

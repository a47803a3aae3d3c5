"""``zenodo-hpc publish huggingface`` (dataset/hub.py) against the Hub double (tests/doubles/hf_hub.py), driven by
the real ``huggingface_hub`` client: a first release, a new release, a failed upload resumed, and a token that
never leaves the Hub's origin nor reaches the output."""

from __future__ import annotations

import gzip
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import stdlib_package

from zenodo_hpc.core.errors import UserError

pytest.importorskip("huggingface_hub", reason="the huggingface extra is not installed: pip install -e '.[huggingface]'")

from doubles.elsewhere import HeaderRecorder
from doubles.hf_hub import HubDouble

from zenodo_hpc.dataset.hub import format_summary, publish_huggingface

TOKEN = "hf_zenodoHpcTestTokenNotReal0123456789"
REPO = "alice/zenodo-ml"
DAY = datetime(2026, 12, 7, tzinfo=timezone.utc)
CARD = ("---\nlicense: other\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*\n---\n")


def _shard(package: str) -> bytes:
    """Real bytes: the stdlib package's sources, one JSON line per file, gzip-compressed (a binary LFS file)."""
    lines = [f'{{"path": "{p.name}", "size": {p.stat().st_size}}}\n' + p.read_text(errors="replace")
             for p in sorted(stdlib_package(package).rglob("*.py"))]
    return gzip.compress("".join(lines).encode(), mtime=0)


def make_folder(root: Path, files: dict[str, bytes] | None = None) -> Path:
    folder = root / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "README.md").write_text(CARD + "# Zenodo-ML\n")
    for name, data in (files or {"data/train-00000.jsonl.gz": _shard("json"),
                                 "data/test-00000.jsonl.gz": _shard("email")}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login of the machine is read or written
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with HubDouble(TOKEN) as double:
        monkeypatch.setenv("HF_ENDPOINT", double.url)
        yield double


def publish(folder: Path, **kwargs):
    return publish_huggingface(folder, kwargs.pop("repo", REPO), today=DAY, **kwargs)


def test_first_release_creates_a_private_repository_with_one_commit_and_a_tag(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    result = publish(folder)

    creates = hub.calls("POST", "/api/repos/create")
    assert [r.json for r in creates] == [{"name": "zenodo-ml", "organization": "alice", "visibility": "private",
                                          "type": "dataset"}]
    repo = hub.repos[REPO]
    assert repo.private and result.created and result.private
    assert len(repo.commits) == 2  # the Hub's initial commit, then the release
    assert repo.tags == {"2026.12.07": repo.branches["main"]} and result.commit == repo.branches["main"]
    published = hub.files(REPO, "2026.12.07")
    assert {k: v for k, v in published.items() if k != ".gitattributes"} == folder_bytes(folder)
    # the shards went through LFS storage, the card in the commit itself
    assert sorted(hub.puts) == sorted(e.oid for p, e in repo.tree("main").items() if p.startswith("data/"))
    assert repo.tree("main")["README.md"].kind == "regular"
    summary = format_summary(result)
    assert "created the private Hugging Face dataset alice/zenodo-ml" in summary
    assert "tagged 2026.12.07" in summary and summary.endswith(f"{hub.url}/datasets/{REPO}")


def test_public_creates_a_public_repository(hub: HubDouble, tmp_path: Path) -> None:
    publish(make_folder(tmp_path), public=True)
    assert hub.calls("POST", "/api/repos/create")[0].json["visibility"] == "public"
    assert not hub.repos[REPO].private


def test_a_new_release_is_a_new_commit_and_tag_of_the_same_repository(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first = publish(folder, tag="v1")
    kept = (folder / "data/train-00000.jsonl.gz").read_bytes()
    (folder / "data/test-00000.jsonl.gz").unlink()
    (folder / "data/test-00001.jsonl.gz").write_bytes(_shard("html"))
    (folder / "README.md").write_text(CARD + "# Zenodo-ML, second release\n")
    puts_before = list(hub.puts)
    hub.add_file(REPO, "LICENSE.md", b"added on the website\n")  # not the release's: left alone

    second = publish(folder, tag="v2")

    repo = hub.repos[REPO]
    assert len(hub.calls("POST", "/api/repos/create")) == 1 and not second.created and second.private is None
    assert len(repo.commits) == 4 and second.commit != first.commit
    assert hub.files(REPO, "v2")["LICENSE.md"] == b"added on the website\n"
    assert repo.tags == {"v1": first.commit, "v2": second.commit} and repo.branches["main"] == second.commit
    assert {k: v for k, v in hub.files(REPO, "v2").items() if k not in (".gitattributes", "LICENSE.md")} \
        == folder_bytes(folder)
    assert "data/test-00000.jsonl.gz" in hub.files(REPO, "v1")  # the old release stays whole at its tag
    assert second.deleted == ["data/test-00000.jsonl.gz"] and second.changed == 2  # the card and the new shard
    new_puts = hub.puts[len(puts_before):]
    assert len(new_puts) == 1 and hub.objects[new_puts[0]] == _shard("html")  # the kept shard is not sent again
    assert hub.files(REPO, "v2")["data/train-00000.jsonl.gz"] == kept


def test_a_failed_upload_is_resumed_by_running_again(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    failing = (folder / "data/test-00000.jsonl.gz").read_bytes()
    hub.fail_upload(failing)

    with pytest.raises(UserError) as error:
        publish(folder, tag="v1")
    message = str(error.value)
    assert "\n" not in message and "uploading (alice/zenodo-ml)" in message and "run the same command" in message
    repo = hub.repos[REPO]
    assert len(repo.commits) == 1 and repo.tags == {}  # nothing committed, nothing tagged
    assert len(hub.puts) == 1  # the other shard reached the storage

    result = publish(folder, tag="v1")

    assert len(hub.calls("POST", "/api/repos/create")) == 1 and not result.created
    assert len(repo.commits) == 2 and repo.tags == {"v1": result.commit}
    assert {k: v for k, v in hub.files(REPO, "v1").items() if k != ".gitattributes"} == folder_bytes(folder)
    assert len(hub.puts) == len(set(hub.puts)) == 2  # each shard stored once: the resumed run sent only the failed one


def test_a_rerun_after_a_finished_release_commits_and_tags_nothing(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first = publish(folder)
    again = publish(folder)
    repo = hub.repos[REPO]
    assert len(repo.commits) == 2 and repo.tags == {"2026.12.07": first.commit}
    assert not again.committed and not again.tagged and again.tag == "2026.12.07"
    assert "nothing committed" in format_summary(again)


def test_a_large_file_goes_up_in_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    large = _shard("email") * 4
    with HubDouble(TOKEN, multipart_threshold=64 * 1024, chunk_size=48 * 1024) as double:
        folder = make_folder(tmp_path, {"data/train-00000.jsonl.gz": large})
        publish(folder, endpoint=double.url)
        parts = [r for r in double.calls("PUT", "/storage/") if r.path.count("/") == 3]
        assert len(parts) == -(-len(large) // (48 * 1024)) > 1
        assert double.files(REPO)["data/train-00000.jsonl.gz"] == large


@pytest.mark.parametrize("redirect", [False, True], ids=["verify-url-elsewhere", "verify-redirected-elsewhere"])
def test_the_token_never_leaves_the_hubs_origin(hub: HubDouble, tmp_path: Path, redirect: bool) -> None:
    with HeaderRecorder(b"{}", content_type="application/json") as elsewhere:
        hub.elsewhere, hub.verify_redirect = elsewhere.url, redirect
        publish(make_folder(tmp_path))
        assert elsewhere.requests, "the double sent nothing elsewhere: the test proves nothing"
        assert not elsewhere.authorization_seen
    api = [r for r in hub.requests if not r.path.startswith("/storage/")]
    assert api and all(r.authorized for r in api)  # the Hub itself got the token on every API call
    assert not any(r.authorization for r in hub.requests if r.path.startswith("/storage/"))


def test_the_token_is_never_printed_nor_logged(hub: HubDouble, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    folder = make_folder(tmp_path)
    hub.fail_upload((folder / "data/train-00000.jsonl.gz").read_bytes())
    with pytest.raises(UserError) as error:
        publish(folder)
    print(format_summary(publish(folder)))
    with pytest.raises(UserError) as refused:  # a token the Hub refuses: its error must not echo it
        publish(folder, token=TOKEN[::-1])
    out, err = capfd.readouterr()
    texts = [out, err, caplog.text, str(error.value), str(refused.value)]
    assert caplog.records, "nothing was logged: the test proves nothing"
    assert "the Hub refused the token (401)" in str(refused.value)
    for text in texts:
        assert TOKEN not in text and TOKEN[::-1] not in text


def test_checks_come_before_any_network_call(hub: HubDouble, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path)
    with pytest.raises(UserError, match="OWNER/NAME"):
        publish(folder, repo="alice")
    with pytest.raises(UserError, match="OWNER/NAME"):
        publish(folder, repo="alice/a--b")
    with pytest.raises(UserError, match="--tag"):
        publish(folder, tag="v1..2")
    (folder / "notes.txt").write_text("not part of the dataset\n")
    with pytest.raises(UserError, match="notes.txt"):
        publish(folder)
    (folder / "notes.txt").unlink()
    (folder / "data" / "link.gz").symlink_to(folder / "data/train-00000.jsonl.gz")
    with pytest.raises(UserError, match="symbolic link"):
        publish(folder)
    with pytest.raises(UserError, match="no README.md"):
        publish(tmp_path / "data-only" if (tmp_path / "data-only").mkdir() is None else folder)
    monkeypatch.delenv("HF_TOKEN")
    (folder / "data" / "link.gz").unlink()
    with pytest.raises(UserError, match="HF_TOKEN or run `hf auth login`"):
        publish(folder)
    assert hub.requests == []


def test_the_tag_of_another_release_is_refused_before_uploading(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    publish(folder, tag="v1")
    (folder / "README.md").write_text(CARD + "changed\n")
    publish(folder, tag="v2")
    puts = len(hub.puts)
    with pytest.raises(UserError, match="v1 already names another commit"):
        publish(folder, tag="v1")
    assert len(hub.puts) == puts and len(hub.repos[REPO].commits) == 3


def test_the_command_line(hub: HubDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zenodo_hpc.cli.main import main

    folder = make_folder(tmp_path)
    assert main(["publish", "huggingface", str(folder), "--repo", REPO, "--tag", "r1"]) == 0
    out = capsys.readouterr().out
    assert "created the private Hugging Face dataset" in out and "tagged r1" in out
    assert hub.repos[REPO].tags.keys() == {"r1"}


def test_the_token_stored_by_hf_auth_login_is_used(hub: HubDouble, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    stored = tmp_path / "hf-home" / "token"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(TOKEN + "\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(stored))
    publish(make_folder(tmp_path))
    assert hub.requests and all(r.authorized for r in hub.requests if not r.path.startswith("/storage/"))


def test_a_refused_commit_is_made_by_the_rerun_without_uploading_again(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    hub.fail("POST", "commit")
    with pytest.raises(UserError, match="run the same command again"):
        publish(folder, tag="v1")
    assert len(hub.repos[REPO].commits) == 1 and len(hub.puts) == 2  # uploaded, not committed
    result = publish(folder, tag="v1")
    assert len(hub.puts) == 2 and len(hub.repos[REPO].commits) == 2 and hub.repos[REPO].tags == {"v1": result.commit}


def test_a_commit_left_untagged_is_tagged_by_the_rerun(hub: HubDouble, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    hub.fail("POST", "tag")
    with pytest.raises(UserError, match="tagging the commit"):
        publish(folder, tag="v1")
    repo = hub.repos[REPO]
    assert len(repo.commits) == 2 and repo.tags == {}
    again = publish(folder, tag="v1")
    assert len(repo.commits) == 2 and repo.tags == {"v1": repo.branches["main"]}
    assert not again.committed and again.tagged

"""publish kaggle: the REAL kaggle client against a Kaggle double, and the summary and check it ends with.

Publishing runs ``publish_kaggle`` in a child process (``doubles/kaggle_api.py child``): the client reads its
environment (``KAGGLE_API_ENVIRONMENT``, credentials, ``TMPDIR``) once, at import, so every scenario gets a fresh
process pointed at a fresh :class:`KaggleDouble` on 127.0.0.1. Those tests are skipped when the ``kaggle`` extra
is not installed. The refusals before any network call are in tests/dataset/test_publish_checks.py.

They assert what the client's public behaviour promises, never how one release does it inside, so they
hold for kaggle 2.2.4 and 2.2.5 alike; where those two differ (a failed upload is skipped, or raises), a
test accepts either outcome and checks that the user is told what to do and that doing it converges.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from doubles import KaggleDouble
from helpers import KAGGLE_KEY as KEY
from helpers import KAGGLE_ORGANIZE_LICENSES as ORGANIZE_LICENSES
from helpers import KAGGLE_REF as REF
from helpers import KAGGLE_SLUG as SLUG
from helpers import KAGGLE_TITLE as TITLE
from helpers import KAGGLE_USER as USER
from helpers import edit_kaggle_package as edit_package
from helpers import make_kaggle_export as make_export

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.publish import METADATA_FILE, format_summary

HERE = Path(__file__).resolve().parents[1]
BASIC = base64.b64encode(f"{USER}:{KEY}".encode()).decode()  # the key as an HTTP Basic credential: grep for it too


needs_kaggle = pytest.mark.skipif(
    importlib.util.find_spec("kaggle") is None,
    reason="the kaggle client is not installed (the kaggle extra): publishing is not tested",
)


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path / "kaggle-export"
    return folder, make_export(folder)


# --- publishing with the real client against the double (child processes) ---------------------------------


def run_with_terminal_stderr(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with stderr on a pseudo-terminal (read back in full) and stdout on a pipe."""
    leader, follower = pty.openpty()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=follower) as child:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout = child.stdout.read() if child.stdout else b""
        returncode = child.wait(timeout=120)
    os.close(leader)
    return subprocess.CompletedProcess(command, returncode, stdout.decode(), b"".join(chunks).decode(errors="replace"))


class Publisher:
    """Runs ``publish_kaggle`` in a fresh child process against ``double``; every output is checked for KEY."""

    def __init__(self, tmp_path: Path, double: KaggleDouble) -> None:
        self.double = double
        self.root = tmp_path
        for sub in ("home", "config", "tmp"):
            (tmp_path / sub).mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KAGGLE_", "VERBOSE")) and k.lower() not in ("http_proxy", "https_proxy")}
        self.env.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY,
                        KAGGLE_CONFIG_DIR=str(tmp_path / "config"), TMPDIR=str(tmp_path / "tmp"),
                        HOME=str(tmp_path / "home"), NO_PROXY="127.0.0.1,localhost")

    def __call__(self, folder: Path, *, env: dict[str, str | None] | None = None, tty: bool = False, **kwargs: Any
                 ) -> subprocess.CompletedProcess[str]:
        arguments: dict[str, Any] = {"username": USER, "title": TITLE}
        arguments.update(kwargs)
        spec = self.root / "spec.json"
        spec.write_text(json.dumps({"endpoint": self.double.url, "folder": str(folder), "kwargs": arguments,
                                    "poll_seconds": 0}))
        child_env = dict(self.env)
        for name, value in (env or {}).items():
            if value is None:
                child_env.pop(name, None)
            else:
                child_env[name] = value
        command = [sys.executable, str(HERE / "doubles" / "kaggle_api.py"), "child", str(spec)]
        if tty:  # stderr on a terminal: the client's progress bars and prints are shown there
            done = run_with_terminal_stderr(command, child_env)
        else:
            done = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=120)
        for secret in (KEY, BASIC):
            assert secret not in done.stdout and secret not in done.stderr
        return done


@pytest.fixture
def double():
    with KaggleDouble(users={USER: KEY}, known_tags={"programming", "code", "software"}) as server:
        yield server


@pytest.fixture
def publish(tmp_path: Path, double: KaggleDouble) -> Publisher:
    return Publisher(tmp_path, double)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


CHECK_CALLS = {"GetDatasetStatus", "GetDataset", "ListDatasetFiles"}


def assert_publish_calls(calls: list[str], create: str, uploads: int | None = None) -> None:
    """The requests of one publish, in order: the status first (nothing is uploaded before it), the uploads,
    one ``create``, then the check: the status until the version is processed, then its file listing.
    The client may ask the status again on its own before uploading; ``uploads``: files sent from scratch."""
    assert calls.count(create) == 1, calls
    sent, check = calls[:calls.index(create)], calls[calls.index(create) + 1:]
    assert sent[0] == "GetDatasetStatus", calls
    assert set(sent) <= {"GetDatasetStatus", "GetDataset", "StartBlobUpload", "PUT"}, calls
    if uploads is not None:
        assert [c for c in sent if c in ("StartBlobUpload", "PUT")] == ["StartBlobUpload", "PUT"] * uploads, calls
    assert check[:2] == ["GetDatasetStatus", "GetDataset"] and check[-1] == "ListDatasetFiles", calls
    assert set(check) == CHECK_CALLS, calls


def listings(double: KaggleDouble) -> list[tuple[int | None, str]]:
    """(version number, page token) of every ListDatasetFiles request."""
    return [(r.json.get("datasetVersionNumber"), r.json.get("pageToken") or "") for r in double.requests
            if r.call == "ListDatasetFiles"]


def uploaded_files(double: KaggleDouble) -> dict[str, bytes]:
    """name -> bytes of what the client announced (StartBlobUpload) and then PUT, in order."""
    names = [r.json["name"] for r in double.requests if r.call == "StartBlobUpload"]
    data = [r.body for r in double.requests if r.call == "PUT"]
    assert len(names) == len(data)
    return dict(zip(names, data, strict=True))


def dir_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def export_listing(files: dict[str, bytes]) -> list[str]:
    """What the export folder holds after publishing: its own entries and dataset-metadata.json, nothing else."""
    return sorted([*files, "py", "js", "datapackage.json", METADATA_FILE])


@needs_kaggle
def test_creates_a_private_dataset_then_a_new_version(export, double, publish) -> None:
    folder, files = export
    double.max_page_size = 2  # 3 files: the check must read both pages of the listing
    (folder / ".py.tar.gz.partial").write_bytes(b"left over by a crashed writer")  # hidden: never uploaded
    done = publish(folder, keywords=["programming", "code", "not-a-kaggle-tag"])
    (folder / ".py.tar.gz.partial").unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"created the private Kaggle dataset {REF} (3 files, 72.4 KB, license CC0-1.0)",
        "only you can see it until you make it public on its Settings page",
        "Kaggle does not know these keywords, not added: not-a-kaggle-tag",
        "checked: version 1 on Kaggle lists every file, with its size",
        f"https://www.kaggle.com/datasets/{REF}",
    ]

    # status (404) first, then StartBlobUpload + PUT per file, then create, then the check of version 1
    assert_publish_calls(double.calls(), "CreateDataset", uploads=len(files))
    status = double.requests[0]
    assert status.path == "/api/v1/datasets.DatasetApiService/GetDatasetStatus"
    assert status.json == {"ownerSlug": USER, "datasetSlug": SLUG}
    assert {r.path for r in double.requests if r.method == "POST"} == {
        f"/api/v1/datasets.DatasetApiService/{call}" for call in ("GetDatasetStatus", "GetDataset", "CreateDataset",
                                                                  "ListDatasetFiles")
    } | {"/api/v1/blobs.BlobApiService/StartBlobUpload"}
    assert all(r.user == USER for r in double.requests if r.method == "POST")
    for start in (r for r in double.requests if r.call == "StartBlobUpload"):
        assert start.json["type"] == "DATASET"
        assert start.json["contentLength"] == len(files[start.json["name"]])
    assert uploaded_files(double) == files  # exactly the folder's files, byte for byte
    assert listings(double) == [(1, ""), (1, "2")]  # version 1, both pages

    create = next(r.json for r in double.requests if r.call == "CreateDataset")
    assert create["isPrivate"] is True
    assert (create["ownerSlug"], create["slug"], create["title"], create["licenseName"]) == (
        USER, SLUG, TITLE, "CC0-1.0")
    assert create["categoryIds"] == ["programming", "code", "not-a-kaggle-tag"]
    assert sorted(f["description"] for f in create["files"]) == sorted(f"the {n} part" for n in files)
    index = next(f for f in create["files"] if f["description"] == "the index.csv part")
    assert [(c["name"], c["type"], c["description"]) for c in index["columns"]] == [
        ("png", "string", "path of the PNG"), ("segment", "integer", "which image of the file")]
    assert create["subtitle"] == "Source code of Zenodo software records as 80x80 images, by language"
    assert create["description"] == "Code images, by language."
    assert double.files_of(REF) == files

    written = json.loads((folder / METADATA_FILE).read_text())
    assert written["id"] == REF and written["title"] == TITLE and written["licenses"] == [{"name": "CC0-1.0"}]
    assert dir_listing(folder) == export_listing(files)

    # again: the dataset exists, so a new version, with its notes
    double.clear_requests()
    (folder / "index.csv").write_bytes(files["index.csv"])  # same bytes, rewritten
    done = publish(folder, version_notes="Records harvested in 2026")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"published a new version of the Kaggle dataset {REF} (3 files, 72.4 KB): Records harvested in 2026",
        "checked: version 2 on Kaggle lists every file, with its size",
        f"https://www.kaggle.com/datasets/{REF}",
    ]
    assert_publish_calls(double.calls(), "CreateDatasetVersion", uploads=len(files))
    version = next(r.json for r in double.requests if r.call == "CreateDatasetVersion")
    assert (version["ownerSlug"], version["datasetSlug"]) == (USER, SLUG)
    assert version["body"]["versionNotes"] == "Records harvested in 2026"
    assert version["body"]["categoryIds"] == ["programming", "code"]
    assert uploaded_files(double) == files
    assert listings(double) == [(2, ""), (2, "2")]  # the new version, not the latest processed one
    assert [v["notes"] for v in double.datasets[REF]["versions"]] == [None, "Records harvested in 2026"]
    assert double.files_of(REF) == files


@needs_kaggle
def test_public_only_when_asked(export, double, publish) -> None:
    folder, _ = export
    done = publish(folder, public=True, license="CC-BY-SA-4.0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"created the public Kaggle dataset {REF}")
    create = next(r.json for r in double.requests if r.call == "CreateDataset")
    assert "isPrivate" not in create  # the client leaves out false, the default: public
    assert create["licenseName"] == "CC-BY-SA-4.0"
    assert double.datasets[REF]["isPrivate"] is False


@needs_kaggle
def test_an_export_of_records_with_several_licenses_is_published_as_other(export, double, publish) -> None:
    folder, _ = export
    description = "Code images.\n\n| license | records |\n|---|---|\n| mit | 1 |\n| apache-2.0 | 1 |"
    edit_package(folder, licenses=ORGANIZE_LICENSES, description=description,
                 zenodo_hpc={"pngs": 2, "kaggle_license": "other"})
    done = publish(folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"created the private Kaggle dataset {REF} (3 files, 72.4 KB, license other)")
    create = next(r.json for r in double.requests if r.call == "CreateDataset")
    assert create["licenseName"] == "other"  # Kaggle's "Other (specified in description)"
    assert create["description"] == description  # ... and the description gives each license
    assert json.loads((folder / METADATA_FILE).read_text())["licenses"] == [{"name": "other"}]


@needs_kaggle
def test_existing_dataset_needs_version_notes(export, double, publish) -> None:
    folder, _ = export
    double.add_dataset(REF, {"old.csv": b"a\n"})
    line = error_line(publish(folder))
    assert line == (f"zenodo-hpc publish: error: the Kaggle dataset {REF} already exists: "
                    "pass --version-notes TEXT to publish a new version of it")
    assert double.calls() == ["GetDatasetStatus", "GetDataset"]  # nothing uploaded
    assert len(double.datasets[REF]["versions"]) == 1


@needs_kaggle
def test_failed_upload_then_rerun_converges(export, double, publish) -> None:
    # the storage server fails the third file's PUT (its bytes are lost). A client may then stop (kaggle 2.2.5
    # raises) or publish without that file (2.2.4); either way the user is told what to do, and doing it
    # leaves Kaggle with every file
    folder, files = export
    double.fail("PUT", 500, "Backend Error", after=2)
    line = error_line(publish(folder))
    failed = double.blob_name([r for r in double.requests if r.call == "PUT"][2])
    assert failed in files
    assert dir_listing(folder) == export_listing(files)  # no half-state in DIR
    double.clear_requests()
    if REF not in double.datasets:  # the client stopped: nothing published, the same command again
        assert line.startswith("zenodo-hpc publish: error: publishing to Kaggle failed (")
        assert line.endswith("); nothing was published: re-run the same command")
        assert "CreateDataset" not in double.calls()
        done = publish(folder)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"created the private Kaggle dataset {REF} (3 files")
        assert_publish_calls(double.calls(), "CreateDataset")
        # the files sent before are confirmed with an empty resumable-upload probe, not sent again
        sent_again = [double.blob_name(r) for r in double.requests if r.call == "PUT" and r.body]
        assert sent_again == [failed]
        assert double.files_of(REF) == files
    else:  # the client published without the failed file: the check says so, and a new version mends it
        assert line == (f"zenodo-hpc publish: error: version 1 of the Kaggle dataset {REF} is incomplete "
                        f"({failed} missing): re-run with --version-notes TEXT to publish a complete version")
        assert set(double.files_of(REF)) == set(files) - {failed}
        done = publish(folder, version_notes="with every file")
        assert done.returncode == 0, done.stderr
        assert "checked: version 2 on Kaggle lists every file, with its size" in done.stdout
        assert double.files_of(REF) == files


@needs_kaggle
def test_a_version_kaggle_holds_without_a_file_is_reported(export, double, publish) -> None:
    # whatever the client sent, the version must list every file: the check catches one that is not there
    folder, files = export
    double.lose = {"js.tar.gz"}
    line = error_line(publish(folder))
    assert line == (f"zenodo-hpc publish: error: version 1 of the Kaggle dataset {REF} is incomplete "
                    "(js.tar.gz missing): re-run with --version-notes TEXT to publish a complete version")
    double.lose = set()
    done = publish(folder, version_notes="js.tar.gz again")
    assert done.returncode == 0, done.stderr
    assert double.files_of(REF) == files


def test_incomplete_listing_names_missing_files_and_wrong_sizes() -> None:
    from zenodo_hpc.dataset.publish import _check_complete

    _check_complete({"a.csv": 3, "b.csv": 4}, {"a.csv": 3, "b.csv": 4, "extra.txt": 1}, REF, 2)  # complete
    with pytest.raises(UserError, match=r"^version 2 of the Kaggle dataset alice/zenodo-ml-by-language is "
                       r"incomplete \(b\.csv missing; a\.csv has 2 bytes, not 3\): re-run with --version-notes"):
        _check_complete({"a.csv": 3, "b.csv": 4}, {"a.csv": 2}, REF, 2)


@needs_kaggle
def test_waits_while_kaggle_processes_the_new_version(export, double, publish) -> None:
    folder, files = export
    double.processing = ["NOT_YET_PERSISTED", "BLOBS_RECEIVED", "BLOBS_DECOMPRESSED"]
    done = publish(folder)
    assert done.returncode == 0, done.stderr
    calls = double.calls()
    check = calls[calls.index("CreateDataset") + 1:]
    assert check == ["GetDatasetStatus", "GetDataset"] * 4 + ["ListDatasetFiles"]  # listed once "READY"
    assert double.files_of(REF) == files


@needs_kaggle
def test_processing_failed_or_unfinished_is_one_line(export, double, publish) -> None:
    folder, _ = export
    double.final_status = "FAILED"
    line = error_line(publish(folder))
    assert line == (f"zenodo-hpc publish: error: Kaggle could not process version 1 of {REF} (status failed): "
                    "re-run with --version-notes TEXT to publish it again")
    assert "ListDatasetFiles" not in double.calls()

    double.final_status = "READY"
    double.processing = ["BLOBS_RECEIVED"] * 5
    line = error_line(publish(folder, version_notes="again", wait=0))
    assert line == (f"zenodo-hpc publish: error: Kaggle had not processed the new version of {REF} after 0 s "
                    f"(status blobs_received), so its files are not checked: check `kaggle datasets files {REF}` "
                    "later, and re-run with --version-notes TEXT if a file is missing")


@needs_kaggle
def test_transient_503_during_upload_is_retried_by_the_client(export, double, publish) -> None:
    folder, files = export
    double.fail("PUT", 503, "Service Unavailable")
    done = publish(folder)
    assert done.returncode == 0, done.stderr
    assert double.files_of(REF) == files
    assert double.calls().count("StartBlobUpload") == 3
    assert double.calls().count("PUT") > 3  # the failed PUT was sent again


@needs_kaggle
@pytest.mark.parametrize(("call", "failure", "said"), [
    ("StartBlobUpload", {"status": 500, "message": "Internal error, please retry"},
     "publishing to Kaggle failed (HTTP 500: Internal error, please retry)"),
    ("CreateDataset", {"status": 500, "message": "Internal error, please retry"},
     "publishing to Kaggle failed (HTTP 500: Internal error, please retry)"),
    ("CreateDataset", {"error_answer": True, "message": "The dataset could not be created, try again later"},
     "Kaggle refused the dataset (The dataset could not be created, try again later)"),
], ids=["StartBlobUpload", "CreateDataset", "refusal-in-the-answer"])
def test_server_error_answers_then_rerun_succeeds(export, double, publish, call: str, failure: dict[str, Any],
                                                  said: str) -> None:
    # an HTTP error, or a refusal in a 200 answer: nothing was published, the same command again publishes
    folder, files = export
    double.fail(call, **failure)
    line = error_line(publish(folder))
    assert line == f"zenodo-hpc publish: error: {said}; nothing was published: re-run the same command"
    assert REF not in double.datasets
    assert double.calls()[-1] == "GetDatasetStatus"  # "nothing was published" is what Kaggle said, not a guess
    assert dir_listing(folder) == export_listing(files)
    double.clear_requests()
    done = publish(folder)
    assert done.returncode == 0, done.stderr
    assert_publish_calls(double.calls(), "CreateDataset")
    assert double.files_of(REF) == files


@needs_kaggle
@pytest.mark.parametrize("error_answer", [False, True], ids=["HTTP error", "error answer"])
def test_key_echoed_by_the_server_is_masked(export, double, publish, error_answer: bool) -> None:
    folder, _ = export
    double.fail("CreateDataset", 400, f"bad request from {USER}:{KEY} (Authorization: Basic {BASIC})",
                error_answer=error_answer)
    line = error_line(publish(folder))  # the Publisher fails the test if KEY or BASIC shows anywhere
    assert f"bad request from {USER}:*** (Authorization: Basic ***)" in line


@needs_kaggle
def test_status_errors(export, double, publish) -> None:
    folder, _ = export
    double.fail("GetDatasetStatus", 503, "Service Unavailable")
    line = error_line(publish(folder))
    assert line == (f"zenodo-hpc publish: error: Kaggle could not tell whether {REF} exists "
                    "(HTTP 503: Service Unavailable)")
    assert double.calls() == ["GetDatasetStatus"]


@needs_kaggle
def test_wrong_key_is_refused_and_never_shown(export, double, publish) -> None:
    folder, _ = export
    double.users[USER] = "the-right-key"
    line = error_line(publish(folder))
    assert line == ("zenodo-hpc publish: error: Kaggle refused the credentials (HTTP 401): "
                    "create a new token at https://www.kaggle.com/settings/api")
    assert double.calls() == ["GetDatasetStatus"]


@needs_kaggle
def test_verbose_client_on_a_terminal_does_not_print_the_key(export, double, publish) -> None:
    # on a terminal the client's output is shown (on stderr); with VERBOSE=1 it would print every request
    # with its Authorization header: the Publisher checks that neither the key nor user:key in base64 shows
    done = publish(export[0], env={"VERBOSE": "1"}, tty=True)
    assert done.returncode == 0, done.stderr
    assert "Upload successful: py.tar.gz" in done.stderr  # the client's own progress lines
    assert "Authorization" not in done.stderr
    assert done.stdout.splitlines()[-1] == f"https://www.kaggle.com/datasets/{REF}"  # stdout: the summary only
    assert done.stdout.startswith("created the private Kaggle dataset")


@needs_kaggle
def test_kaggle_json_and_access_token(export, double, publish, tmp_path: Path) -> None:
    folder, files = export
    config = tmp_path / "config" / "kaggle.json"
    config.write_text(json.dumps({"username": USER, "key": KEY}))
    config.chmod(0o600)
    done = publish(folder, env={"KAGGLE_USERNAME": None, "KAGGLE_KEY": None})
    assert done.returncode == 0, done.stderr
    assert all(r.user == USER for r in double.requests if r.method == "POST")

    config.unlink()
    token = "kgat_" + KEY  # an access token: the client checks it over the network when it authenticates
    double.tokens[token] = USER
    double.clear_requests()
    done = publish(folder, version_notes="with a token", env={"KAGGLE_USERNAME": None, "KAGGLE_KEY": None,
                                                               "KAGGLE_API_TOKEN": token})
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    calls = double.calls()
    checked = calls[:calls.index("GetDatasetStatus")]
    assert checked and set(checked) == {"IntrospectToken"}  # the token is checked before anything else
    assert_publish_calls(calls[len(checked):], "CreateDatasetVersion")
    assert all(r.user == USER for r in double.requests if r.method == "POST" and r.call != "IntrospectToken")
    assert double.files_of(REF) == files

    double.tokens.clear()
    double.clear_requests()
    line = error_line(publish(folder, version_notes="x", env={"KAGGLE_USERNAME": None, "KAGGLE_KEY": None,
                                                              "KAGGLE_API_TOKEN": token}))
    assert line == ("zenodo-hpc publish: error: Kaggle did not accept the access token from KAGGLE_API_TOKEN: "
                    "create a new token at https://www.kaggle.com/settings/api")
    assert double.calls() and set(double.calls()) == {"IntrospectToken"}


def test_client_output_is_masked_even_when_a_secret_is_written_in_pieces() -> None:
    import io

    from zenodo_hpc.core.redact import Redactor
    from zenodo_hpc.dataset.publish import _RedactingStream

    target = io.StringIO()
    stream = _RedactingStream(target, Redactor([KEY, BASIC]))
    stream.write(f"Authorization: Basic {BASIC[:7]}")
    stream.write(f"{BASIC[7:]}\nkey {KEY[:10]}")
    stream.write(f"{KEY[10:]}\r50%")
    stream.finish()
    assert target.getvalue() == "Authorization: Basic ***\nkey ***\r50%"


def test_format_summary_of_a_new_version(tmp_path: Path) -> None:
    from zenodo_hpc.dataset.publish import PublishResult

    result = PublishResult(ref=REF, url=f"https://www.kaggle.com/datasets/{REF}", created=False, private=None,
                           title=TITLE, license="CC0-1.0", keywords=[], files=[("a.tar.gz", 1_500_000)],
                           version_notes="June refresh", metadata_path=tmp_path / METADATA_FILE,
                           notes=["--public does not change an existing dataset: set its visibility on Kaggle"],
                           version=4)
    assert format_summary(result).splitlines() == [
        f"published a new version of the Kaggle dataset {REF} (1 file, 1.5 MB): June refresh",
        "--public does not change an existing dataset: set its visibility on Kaggle",
        "checked: version 4 on Kaggle lists every file, with its size",
        f"https://www.kaggle.com/datasets/{REF}",
    ]


def test_an_archive_kaggle_unpacked_is_not_called_missing() -> None:
    from zenodo_hpc.dataset.publish import _check_complete

    expected = {"py.tar.gz": 100, "index.csv": 20}
    _check_complete(expected, {"py.tar.gz": 100, "index.csv": 20}, "a/b", 1)
    _check_complete(expected, {"py/1/1_0.png": 7, "index.csv": 20}, "a/b", 1)  # unpacked by Kaggle
    with pytest.raises(UserError, match=r"incomplete \(py.tar.gz missing\)"):
        _check_complete(expected, {"index.csv": 20}, "a/b", 1)  # dropped, nothing unpacked in its place
    with pytest.raises(UserError, match=r"incomplete \(index.csv missing\)"):
        _check_complete(expected, {"py/1/1_0.png": 7, "py.tar.gz": 100}, "a/b", 1)

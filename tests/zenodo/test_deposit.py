"""Publishing a release on Zenodo (zenodo_hpc.zenodo.deposit) against the deposit API of the Zenodo double.

The double answers as zenodo-rdm's legacy deposit API does (tests/fixtures/zenodo/deposit, SOURCES.md); nothing here
talks to the real service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from doubles import HeaderRecorder, ZenodoDouble

from zenodo_hpc.zenodo.client import HttpClient
from zenodo_hpc.zenodo.deposit import (
    DepositError,
    DepositResult,
    deposit_metadata,
    format_deposit_summary,
    publish_zenodo_version,
    read_deposit_token,
)

TOKEN = "dep0sit+T0ken/with=odd&chars-0123456789abcdefXYZ"  # quoting and base64 both change it
FIXTURES = Path(__file__).parents[1] / "fixtures" / "zenodo" / "deposit"
IMAGE = "zenodo-ml.sqsh"
METADATA: dict[str, Any] = {
    "title": "Zenodo-ML: code images of Zenodo software records",
    "creators": [{"name": "Doe, Jane", "affiliation": "Example University", "orcid": "0000-0002-1825-0097"}],
    "description": "<p>Every software record on Zenodo, its code as images.</p>",
    "version": "2026.1",
    "publication_date": "2026-01-15",
    "license": "cc-by-4.0",
    "keywords": ["machine learning", "source code"],
    "related_identifiers": [{"identifier": "https://github.com/zenodo-hpc", "relation": "isSupplementTo",
                             "scheme": "url"}],
}


@pytest.fixture
def zenodo() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as double:
        yield double


def release(folder: Path, tag: str, *, extra: dict[str, bytes] | None = None) -> tuple[Path, list[Path]]:
    """A release folder: the image and its checksum files, as pack writes them (contents differ per ``tag``)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / IMAGE
    image.write_bytes(f"hsqs image of release {tag}\n".encode() * 5000)
    data = image.read_bytes()
    sidecars = {f"{IMAGE}.md5": f"{hashlib.md5(data).hexdigest()}  {IMAGE}\n".encode(),
                f"{IMAGE}.sha256": f"{hashlib.sha256(data).hexdigest()}  {IMAGE}\n".encode(), **(extra or {})}
    paths = []
    for name, content in sidecars.items():
        (folder / name).write_bytes(content)
        paths.append(folder / name)
    return image, paths


def publish(zenodo: ZenodoDouble, image: Path, files: list[Path], concept: str | None, **kwargs: Any) -> DepositResult:
    options: dict[str, Any] = {"api_url": zenodo.api_url, "token": TOKEN, "concept_id": concept,
                               "metadata": METADATA, "per_minute": 60_000, "retries": 1}
    options.update(kwargs)
    return publish_zenodo_version(image, files, **options)


def calls(zenodo: ZenodoDouble) -> list[tuple[str, str]]:
    """Method and path of each request, bucket ids and file ids replaced by placeholders."""
    out = []
    for entry in zenodo.requests:
        path = entry.path
        parts = path.split("/")
        if path.startswith("/api/files/"):
            parts[3] = "<bucket>"
        elif "/files/" in path:
            parts[-1] = "<file>"
        out.append((entry.method, "/".join(parts)))
    return out


def one_line(error: pytest.ExceptionInfo[DepositError]) -> str:
    text = str(error.value)
    assert "\n" not in text and text.strip() == text and len(text) < 1200
    return text


# ------------------------------------------------------------------------------------------- first and next release


def test_first_release_creates_a_record_and_publishes_the_image_with_a_doi(zenodo: ZenodoDouble,
                                                                          tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    result = publish(zenodo, image, files, None)

    assert result.created and not result.resumed and not result.already_published
    assert result.doi == f"10.5281/zenodo.{result.record_id}"
    assert result.concept_doi == f"10.5281/zenodo.{result.concept_id}"
    assert result.url == f"{zenodo.ui_url}/records/{result.record_id}"
    assert result.files == [(p.name, p.stat().st_size) for p in [image, *files]]
    assert result.uploaded == [IMAGE, f"{IMAGE}.md5", f"{IMAGE}.sha256"] and result.deleted == []
    assert calls(zenodo) == [
        ("GET", "/api/deposit/depositions"),  # a draft of this title left by an earlier run? no
        ("POST", "/api/deposit/depositions"),
        ("PUT", f"/api/files/<bucket>/{IMAGE}"),
        ("PUT", f"/api/files/<bucket>/{IMAGE}.md5"),
        ("PUT", f"/api/files/<bucket>/{IMAGE}.sha256"),
        ("GET", f"/api/deposit/depositions/{result.record_id}"),
        ("POST", f"/api/deposit/depositions/{result.record_id}/actions/publish"),
    ]
    assert all(r.authenticated and r.authorization for r in zenodo.requests)
    assert all("access_token" not in r.query for r in zenodo.requests)

    published = zenodo.deposition(result.record_id)
    assert published["submitted"] and published["state"] == "done" and published["doi"] == result.doi
    assert zenodo.deposit_file(result.record_id, IMAGE) == image.read_bytes()
    metadata = published["metadata"]
    assert metadata["upload_type"] == "dataset" and metadata["access_right"] == "open"
    assert {k: metadata[k] for k in ("title", "description", "version", "publication_date", "keywords")} == {
        k: METADATA[k] for k in ("title", "description", "version", "publication_date", "keywords")}
    assert metadata["creators"] == [{"name": "Doe, Jane", "affiliation": "Example University",
                                     "orcid": "0000-0002-1825-0097"}]
    assert metadata["related_identifiers"] == METADATA["related_identifiers"]
    assert metadata["license"] == "cc-by-4.0"
    record = requests.get(f"{zenodo.api_url}/records/{result.record_id}", timeout=5).json()
    assert record["conceptrecid"] == result.concept_id and record["doi"] == result.doi

    summary = format_deposit_summary(result)
    assert summary.splitlines()[0] == (f"published version 2026.1 on Zenodo as a new record (concept "
                                       f"{result.concept_id}): DOI {result.doi}")
    assert summary.splitlines()[-1] == result.url


def test_second_release_is_a_new_version_of_the_same_concept_with_only_the_new_files(
        zenodo: ZenodoDouble, tmp_path: Path) -> None:
    image1, files1 = release(tmp_path / "r1", "1", extra={"NOTES-2026.1.txt": b"first release only\n"})
    first = publish(zenodo, image1, files1, None)
    image2, files2 = release(tmp_path / "r2", "2")
    zenodo.reset_log()

    second = publish(zenodo, image2, files2, first.concept_id, metadata={**METADATA, "version": "2026.2",
                                                                        "publication_date": "2026-07-01"})

    assert not second.created and second.concept_id == first.concept_id
    assert second.record_id != first.record_id and second.doi == f"10.5281/zenodo.{second.record_id}"
    assert second.concept_doi == first.concept_doi
    # Zenodo copied the first version's four files into the draft: none is this release's, all are replaced
    assert sorted(second.deleted) == sorted(p.name for p in [image1, *files1])
    assert second.uploaded == [IMAGE, f"{IMAGE}.md5", f"{IMAGE}.sha256"]
    new = zenodo.deposition(second.record_id)
    assert [(f["filename"], f["filesize"]) for f in new["files"]] == second.files
    for path in [image2, *files2]:
        assert zenodo.deposit_file(second.record_id, path.name) == path.read_bytes()
    assert new["metadata"]["version"] == "2026.2" and new["metadata"]["publication_date"] == "2026-07-01"
    old = zenodo.deposition(first.record_id)
    assert len(old["files"]) == 4 and zenodo.deposit_file(first.record_id, IMAGE) == image1.read_bytes()
    assert [c for c in calls(zenodo) if c[0] == "POST"] == [
        ("POST", f"/api/deposit/depositions/{first.record_id}/actions/newversion"),
        ("POST", f"/api/deposit/depositions/{second.record_id}/actions/publish")]
    # the public API: one concept, two versions, the latest shown by default
    latest = requests.get(f"{zenodo.api_url}/records", timeout=5).json()["hits"]["hits"]
    every = requests.get(f"{zenodo.api_url}/records", params={"all_versions": "true"}, timeout=5).json()
    assert [h["id"] for h in latest] == [second.record_id]
    assert {h["conceptrecid"] for h in every["hits"]["hits"]} == {first.concept_id}
    assert "new version of record" in format_deposit_summary(second).splitlines()[0]


def test_the_same_release_again_changes_nothing(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    first = publish(zenodo, image, files, None)
    zenodo.reset_log()
    by_concept = publish(zenodo, image, files, first.concept_id)
    by_title = publish(zenodo, image, files, None)
    for again in (by_concept, by_title):
        assert again.already_published and (again.record_id, again.doi) == (first.record_id, first.doi)
        assert again.uploaded == [] and again.concept_id == first.concept_id
    assert calls(zenodo) == [("GET", "/api/deposit/depositions")] * 2  # nothing but looking
    assert "nothing was uploaded" in format_deposit_summary(by_concept)


def test_a_published_record_of_the_same_title_is_not_duplicated(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    with pytest.raises(DepositError) as error:
        publish(zenodo, *release(tmp_path / "r2", "2"), None)
    assert f"set publish.zenodo.concept_id to {first.concept_id}" in one_line(error)
    assert len(zenodo.depositions()) == 1


# ------------------------------------------------------------------------------------------------- resuming


def test_a_failed_upload_leaves_the_draft_and_a_rerun_continues_it(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    image, files = release(tmp_path / "r2", "2")
    zenodo.fail(f"/api/files/*/{IMAGE}.md5", "503", times=2)  # the first try and the one retry (retries=1)
    with pytest.raises(DepositError) as error:
        publish(zenodo, image, files, first.concept_id)
    message = one_line(error)
    draft_id = first.record_id + 1
    assert message.startswith(f"uploading {IMAGE}.md5") and "HTTP 503" in message
    assert message.endswith(f"draft {draft_id} stays on Zenodo: re-run to continue it")
    assert not zenodo.deposition(draft_id)["submitted"]

    zenodo.reset_log()
    second = publish(zenodo, image, files, first.concept_id)
    assert second.resumed and second.record_id == draft_id and not second.created
    assert second.kept == [IMAGE] and second.uploaded == [f"{IMAGE}.md5", f"{IMAGE}.sha256"]
    assert not any(path.endswith("/actions/newversion") or (method, path) == ("POST", "/api/deposit/depositions")
                   for method, path in calls(zenodo))  # no second draft
    assert [d["id"] for d in zenodo.depositions()] == [first.record_id, draft_id]
    assert zenodo.deposit_file(draft_id, IMAGE) == image.read_bytes()


def test_a_draft_the_search_does_not_show_yet_is_waited_for_not_duplicated(zenodo: ZenodoDouble,
                                                                           tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    image, files = release(tmp_path / "r2", "2")
    zenodo.fail(f"/api/files/*/{IMAGE}.md5", "503", times=2)
    with pytest.raises(DepositError):
        publish(zenodo, image, files, first.concept_id)
    zenodo.hide_drafts_from_search()  # the draft holds the image, but the search index has not caught up
    with pytest.raises(DepositError) as error:
        publish(zenodo, image, files, first.concept_id)
    assert one_line(error).endswith(f"Zenodo says a draft of record {first.concept_id} exists already (it holds "
                                    f"files), but its search does not show it yet: re-run in a few minutes to "
                                    f"continue it")
    assert [r.status for r in zenodo.requests if r.path.endswith("/newversion")] == [201, 400]
    assert len(zenodo.depositions()) == 2  # still one draft
    zenodo.hide_drafts_from_search(False)
    result = publish(zenodo, image, files, first.concept_id)
    assert result.resumed and result.kept == [IMAGE] and len(zenodo.depositions()) == 2


def test_a_failed_first_release_is_found_again_by_its_title(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    zenodo.fail(f"/api/files/*/{IMAGE}", "500", times=2)
    with pytest.raises(DepositError, match=r"stays on Zenodo: re-run to continue it$"):
        publish(zenodo, image, files, None)
    zenodo.reset_log()
    result = publish(zenodo, image, files, None)
    assert result.resumed and result.created and len(zenodo.depositions()) == 1
    assert ("POST", "/api/deposit/depositions") not in calls(zenodo)
    assert result.uploaded == [IMAGE, f"{IMAGE}.md5", f"{IMAGE}.sha256"]


def test_an_upload_cut_off_in_the_middle_is_sent_again_whole(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    zenodo.fail(f"/api/files/*/{IMAGE}", "cut")
    result = publish(zenodo, image, files, None)
    uploads = [(r.status, r.fault) for r in zenodo.requests if r.path.endswith(f"/{IMAGE}")]
    assert uploads == [(0, "cut"), (201, None)]
    assert zenodo.deposit_file(result.record_id, IMAGE) == image.read_bytes()


def test_a_failed_publish_is_not_repeated_blindly_and_the_rerun_publishes(zenodo: ZenodoDouble,
                                                                          tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    zenodo.fail("/api/deposit/depositions/*/actions/publish", "503")
    with pytest.raises(DepositError) as error:
        publish(zenodo, image, files, None, retries=3)
    assert "the next run finds the published version" in one_line(error)
    assert [r.status for r in zenodo.requests if r.path.endswith("/publish")] == [503]  # not retried
    result = publish(zenodo, image, files, None)
    assert result.resumed and result.kept == [IMAGE, f"{IMAGE}.md5", f"{IMAGE}.sha256"] and result.uploaded == []


def test_a_draft_holding_damaged_bytes_gets_them_replaced(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    zenodo.fail("/api/deposit/depositions/*/actions/publish", "503")
    with pytest.raises(DepositError):
        publish(zenodo, image, files, None)
    (draft,) = zenodo.depositions()
    requests.put(f"{draft['links']['bucket']}/{IMAGE}", data=b"damaged", timeout=5,
                 headers={"Authorization": f"Bearer {TOKEN}"})
    result = publish(zenodo, image, files, None)
    assert result.deleted == [IMAGE] and result.uploaded == [IMAGE]
    assert zenodo.deposit_file(result.record_id, IMAGE) == image.read_bytes()


# ------------------------------------------------------------------------------------------------- the token


def all_forms(token: str) -> list[str]:
    return [token, urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token),
            base64.b64encode(f"zenodo-hpc:{token}".encode()).decode(), base64.b64encode(token.encode()).decode(),
            base64.urlsafe_b64encode(f"user:{token}".encode()).decode()]


def assert_nowhere(token: str, *texts: str, folder: Path | None = None) -> None:
    for text in texts:
        for form in all_forms(token):
            assert form not in text
    if folder is not None:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert all(form.encode() not in data for form in all_forms(token)), path


@pytest.mark.parametrize("where", ["list", "create", "upload", "publish"])
def test_the_token_never_shows_even_when_the_server_echoes_it(zenodo: ZenodoDouble, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             caplog: pytest.LogCaptureFixture, where: str) -> None:
    caplog.set_level(logging.DEBUG)
    image, files = release(tmp_path / "r1", "1")
    path = {"list": "/api/deposit/depositions", "create": "/api/deposit/depositions",
            "upload": f"/api/files/*/{IMAGE}", "publish": "/api/deposit/depositions/*/actions/publish"}[where]
    if where == "create":  # the list and the create share the path: the list passes, the create gets the echo
        zenodo.fail(path, "sleepy", status=200, headers={})
    zenodo.fail(path, "echo", status=400)
    with pytest.raises(DepositError) as error:
        publish(zenodo, image, files, None, token_env="ZENODO_DEPOSIT_TOKEN")
    echoed = [r for r in zenodo.requests if r.fault == "echo"]
    assert len(echoed) == 1 and echoed[0].status == 400
    message = one_line(error)
    assert "Request refused. Authorization: Bearer ***" in message and "query: access_token=***" in message
    assert re.search(r"forwarded as Basic [A-Za-z0-9+/]{0,16}\*\*\*[A-Za-z0-9+/=]{0,3};", message)
    out, err = capsys.readouterr()
    assert_nowhere(TOKEN, message, repr(error.value), out, err, caplog.text, folder=tmp_path)


def test_the_token_is_never_logged_on_a_whole_run(zenodo: ZenodoDouble, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    out, err = capsys.readouterr()
    assert "zenodo: uploading" in caplog.text
    assert_nowhere(TOKEN, caplog.text, out, err, repr(result), format_deposit_summary(result), folder=tmp_path)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_one_line_saying_what_to_do(tmp_path: Path, status: int) -> None:
    with ZenodoDouble(tokens=["another-token-entirely"], unauthorized_status=status) as zenodo, \
            pytest.raises(DepositError) as error:
        publish(zenodo, *release(tmp_path / "r1", "1"), None, token_env="ZENODO_DEPOSIT_TOKEN")
    message = one_line(error)
    assert f"Zenodo refused the deposit token (HTTP {status}: " in message
    assert "check that $ZENODO_DEPOSIT_TOKEN holds a personal access token with the deposit:write and " \
           "deposit:actions scopes" in message
    assert_nowhere(TOKEN, message)


@pytest.mark.parametrize("link", ["bucket", "publish", "self"])
def test_a_link_to_another_origin_gets_nothing_and_the_run_stops(zenodo: ZenodoDouble, tmp_path: Path,
                                                                 link: str) -> None:
    with HeaderRecorder(b"{}", content_type="application/json") as elsewhere:
        zenodo.override_deposit_links(**{link: f"{elsewhere.url}/api/files/0f0f-elsewhere"})
        with pytest.raises(DepositError) as error:
            publish(zenodo, *release(tmp_path / "r1", "1"), None)
        assert elsewhere.requests == []  # not even a request without the token
    message = one_line(error)
    assert f"points the {link} link to http://127.0.0.1:" in message
    assert "refusing to send the deposit token there; nothing was sent to it" in message
    assert not any(d["submitted"] for d in zenodo.depositions())


def test_a_new_versions_latest_draft_link_to_another_origin_is_refused(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    zenodo.reset_log()
    with HeaderRecorder(b"{}", content_type="application/json") as elsewhere:
        zenodo.override_deposit_links(latest_draft=f"{elsewhere.url}/api/deposit/depositions/5")
        with pytest.raises(DepositError, match="points the latest_draft link to http://127.0.0.1:"):
            publish(zenodo, *release(tmp_path / "r2", "2"), first.concept_id)
        zenodo.override_deposit_links(bucket=f"{elsewhere.url}/api/files/0f0f")
        with pytest.raises(DepositError, match="points the bucket link to http://127.0.0.1:"):
            publish(zenodo, *release(tmp_path / "r2", "2"), first.concept_id)
        assert elsewhere.requests == []
    # the draft was left as Zenodo made it: the check comes before any change
    assert not any(r.method in ("PUT", "DELETE") for r in zenodo.requests)
    assert len(zenodo.deposition(first.record_id + 1)["files"]) == 3


def test_a_link_to_the_wrong_place_on_the_api_is_refused(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    zenodo.override_deposit_links(bucket=f"{zenodo.api_url}/deposit/depositions/1/actions/publish")
    with pytest.raises(DepositError, match="points the bucket link to an unexpected place"):
        publish(zenodo, *release(tmp_path / "r1", "1"), None)
    assert not any(r.method == "PUT" for r in zenodo.requests)


def test_send_gives_the_token_only_to_its_own_origin_and_follows_no_redirect(zenodo: ZenodoDouble) -> None:
    with HeaderRecorder(b"{}") as elsewhere, HttpClient(per_minute=60_000, token=TOKEN,
                                                        token_url=zenodo.api_url) as http:
        http.send("PUT", f"{elsewhere.url}/api/files/x/y", body=lambda: open(__file__, "rb"))  # noqa: SIM115
        zenodo.fail("/api/deposit/depositions", "redirect", to=f"{elsewhere.url}/moved")
        moved = http.send("POST", f"{zenodo.api_url}/deposit/depositions", json_body={}, idempotent=False)
        assert moved.status_code == 302
        assert [(r.method, r.authorization) for r in elsewhere.requests] == [("PUT", False)]
        assert zenodo.requests[-1].authorization


def test_send_does_not_repeat_a_creation_the_server_may_have_done(zenodo: ZenodoDouble) -> None:
    with HttpClient(per_minute=60_000, token=TOKEN, token_url=zenodo.api_url, retries=3) as http:
        zenodo.fail("/api/deposit/depositions", "502")
        with pytest.raises(Exception, match="HTTP 502") as error:
            http.send("POST", f"{zenodo.api_url}/deposit/depositions", json_body={}, idempotent=False)
        assert error.value.reason == "http_502"
        zenodo.fail("/api/deposit/depositions", "sleepy", headers={"Retry-After": "0"})  # a 429: nothing was done
        created = http.send("POST", f"{zenodo.api_url}/deposit/depositions", json_body={}, idempotent=False)
        assert created.status_code == 201
    assert [r.status for r in zenodo.requests] == [502, 429, 201]


def test_the_recorded_error_shapes_give_one_line_naming_the_fields() -> None:
    from zenodo_hpc.zenodo.deposit import _error_detail

    def response(name: str) -> requests.Response:
        answer = requests.Response()
        payload = json.loads((FIXTURES / name).read_text())
        answer.status_code, answer._content = payload["status"], json.dumps(payload).encode()
        return answer

    assert _error_detail(response("error_validation_docs.json")) == (
        "Validation error; metadata.access_right: Not a valid choice; metadata.creators.0.name: Name is required.; "
        "non_existent: Unknown field name.")
    assert _error_detail(response("error_missing_metadata_400.json")) == (
        "A validation error occurred.; metadata.creators: Missing data for required field.; metadata.title: Missing "
        "data for required field.")
    assert _error_detail(response("error_remove_files_400.json")) == (
        "A validation error occurred.; files.enabled: Please remove all files first.")


# ------------------------------------------------------------------------------------------ checks and refusals


def test_a_metadata_error_is_one_line_naming_the_field_before_any_request(zenodo: ZenodoDouble,
                                                                          tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    for broken, field_name in [({"creators": []}, "creators"), ({"creators": [{"affiliation": "x"}]},
                                                                  "creators[0].name"),
                               ({"title": "ab"}, "title"), ({"publication_date": "15/01/2026"}, "publication_date"),
                               ({"related_identifiers": [{"identifier": "x", "relation": "sameAs"}]},
                                "related_identifiers[0].relation"), ({"upload_type": "software"}, "upload_type"),
                               ({"titel": "typo"}, "'titel'"), ({"keywords": "a,b"}, "keywords")]:
        with pytest.raises(DepositError) as error:
            publish(zenodo, image, files, None, metadata={**METADATA, **broken})
        assert field_name in one_line(error), broken
    assert zenodo.requests == []


def test_a_field_zenodo_refuses_is_named_in_one_line(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    with pytest.raises(DepositError) as error:
        publish(zenodo, *release(tmp_path / "r1", "1"), None, metadata={**METADATA, "license": "cc-by-99"})
    expected = json.loads((FIXTURES / "error_license_400.json").read_text())
    assert one_line(error) == (
        "creating the Zenodo deposition: Zenodo refused the metadata (HTTP 400: A validation error occurred.; "
        f"metadata.license: {expected['errors'][0]['messages'][0]}): correct the field named (the publish.zenodo "
        "settings) and re-run; nothing was created on Zenodo")
    assert zenodo.depositions() == []


def test_a_field_zenodo_refuses_in_a_new_version_keeps_the_draft_for_the_rerun(zenodo: ZenodoDouble,
                                                                               tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    image, files = release(tmp_path / "r2", "2")
    zenodo.reset_log()
    with pytest.raises(DepositError) as error:
        publish(zenodo, image, files, first.concept_id, metadata={**METADATA, "license": "cc-by-99"})
    assert "metadata.license: Invalid license provided: cc-by-99): correct the field named" in one_line(error)
    assert one_line(error).endswith(f"draft {first.record_id + 1} stays on Zenodo: re-run to continue it")
    assert not any(r.method in ("PUT", "DELETE") and "/files/" in r.path for r in zenodo.requests)
    result = publish(zenodo, image, files, first.concept_id)
    assert result.resumed and result.record_id == first.record_id + 1


def test_local_refusals(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    image, files = release(tmp_path / "r1", "1")
    cases = [
        ({"api_url": "http://zenodo.org/api"}, "must use https"),
        ({"api_url": "zenodo.org"}, "must be like https://zenodo.org/api"),
        ({"token": ""}, "no Zenodo deposit token"),
        ({"token": TOKEN + "\n"}, "holds spaces or control characters"),
        ({"concept_id": "record-7"}, "concept id must be a record number"),
    ]
    for options, expected in cases:
        with pytest.raises(DepositError, match=expected):
            publish(zenodo, image, files, None, **options)
    with pytest.raises(DepositError, match="is not a file"):
        publish(zenodo, tmp_path / "missing.sqsh", files, None)
    other = tmp_path / "other"
    other.mkdir()
    (other / f"{IMAGE}.md5").write_text("x")
    with pytest.raises(DepositError, match=f"two files to publish are named {IMAGE}.md5"):
        publish(zenodo, image, [*files, other / f"{IMAGE}.md5"], None)
    assert zenodo.requests == []


def test_a_concept_given_as_its_doi_and_a_concept_not_visible(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    second = publish(zenodo, *release(tmp_path / "r2", "2"), f"https://doi.org/{first.concept_doi}",
                     metadata={**METADATA, "version": "2026.2"})
    assert second.concept_id == first.concept_id and not second.created
    with pytest.raises(DepositError) as error:
        publish(zenodo, *release(tmp_path / "r3", "3"), "123")
    assert one_line(error).startswith("no deposition of record 123 is visible with this token on http://127.0.0.1:")


def test_sandbox_dois_come_from_the_answer_not_from_prereserve_doi(tmp_path: Path) -> None:
    with ZenodoDouble(tokens=[TOKEN], doi_prefix="10.5072") as sandbox:
        result = publish(sandbox, *release(tmp_path / "r1", "1"), None)
        assert sandbox.deposition(result.record_id)["metadata"]["prereserve_doi"]["doi"].startswith("10.5281/")
    assert result.doi == f"10.5072/zenodo.{result.record_id}" and result.concept_doi.startswith("10.5072/")
    shown = format_deposit_summary(DepositResult(**{**result.__dict__, "sandbox": True}))
    assert "sandbox.zenodo.org: a test DOI (10.5072), never registered" in shown


def test_the_token_comes_from_the_variable_named_in_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_ZENODO_TOKEN", raising=False)
    with pytest.raises(DepositError, match="set the environment variable MY_ZENODO_TOKEN") as error:
        read_deposit_token("MY_ZENODO_TOKEN", api_url="https://sandbox.zenodo.org/api")
    assert "https://sandbox.zenodo.org/account/settings/applications/tokens/new/" in one_line(error)
    monkeypatch.setenv("MY_ZENODO_TOKEN", f"  {TOKEN}\n")
    assert read_deposit_token("MY_ZENODO_TOKEN") == TOKEN


def test_the_update_commands_entry_reads_its_settings_and_the_token(zenodo: ZenodoDouble, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from zenodo_hpc.zenodo.deposit import publish_release_on_zenodo

    monkeypatch.setenv("ZENODO_SANDBOX_TOKEN", TOKEN)
    image, files = release(tmp_path / "r1", "1")
    settings = SimpleNamespace(api_url=zenodo.api_url, token_env="ZENODO_SANDBOX_TOKEN", concept_id=None, title="",
                               creators=[{"name": "Doe, Jane"}], description=None, license=None, keywords=["code"],
                               related_identifiers=[], rate_limit_per_min=60_000)
    first = publish_release_on_zenodo([image, *files], release=SimpleNamespace(version="2026.06"), settings=settings,
                                      run_name="zenodo-ml")
    assert first["doi"] == f"10.5281/zenodo.{first['record_id']}" and first["url"].endswith(f"/{first['record_id']}")
    shown = zenodo.deposition(first["record_id"])["metadata"]
    assert shown["title"] == "zenodo-ml: code images of Zenodo software records" and shown["version"] == "2026.06"
    second = publish_release_on_zenodo([*release(tmp_path / "r2", "2")[:1]], release=SimpleNamespace(version="2026.12"),
                                       settings=settings, concept_id=first["concept_id"])
    assert second["concept_id"] == first["concept_id"] and second["record_id"] != first["record_id"]
    monkeypatch.delenv("ZENODO_SANDBOX_TOKEN")
    with pytest.raises(DepositError, match="set the environment variable ZENODO_SANDBOX_TOKEN"):
        publish_release_on_zenodo([image], release=SimpleNamespace(version="x"), settings=settings)


def test_deposit_metadata_defaults() -> None:
    built = deposit_metadata({k: METADATA[k] for k in ("title", "creators", "description", "version")})
    assert built["upload_type"] == "dataset" and built["access_right"] == "open"
    assert built["license"] == "cc-by-4.0" and built["keywords"] == [] and built["related_identifiers"] == []
    assert len(built["publication_date"]) == 10

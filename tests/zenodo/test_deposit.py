"""Publishing a release on Zenodo (zenodo_hpc.zenodo.deposit) against the deposit API of the Zenodo double.

The double answers as zenodo-rdm's legacy deposit API does (tests/fixtures/zenodo/deposit, SOURCES.md); nothing here
talks to the real service. The deposit token's safety is tested in tests/zenodo/test_deposit_token.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from doubles import ZenodoDouble
from helpers import DEPOSIT_IMAGE as IMAGE
from helpers import DEPOSIT_METADATA as METADATA
from helpers import DEPOSIT_TOKEN as TOKEN
from helpers import deposit_publish as publish
from helpers import deposit_release as release
from helpers import one_line

from zenodo_hpc.zenodo.deposit import (
    DepositError,
    DepositResult,
    deposit_metadata,
    format_deposit_summary,
    read_deposit_token,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "zenodo" / "deposit"


@pytest.fixture
def zenodo() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as double:
        yield double


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


# ------------------------------------------------------------------------------------------ checks and refusals


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

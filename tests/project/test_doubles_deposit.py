"""The Zenodo double's deposit API (tests/doubles/zenodo_deposit.py) answers as zenodo-rdm's legacy API does.

Drafts, bucket uploads, publishing, new versions, the deposit list, and the token it needs: checked against the
recorded answers in ``tests/fixtures/zenodo/deposit`` (sources in ``tests/fixtures/zenodo/SOURCES.md``), plus the
faults (an upload cut off, a credential echoed) and hostile links a client must survive.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pytest
import requests
from doubles import ZenodoDouble
from helpers import DOUBLE_TOKEN as TOKEN
from helpers import ZENODO_FIXTURES as FIXTURES


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as running:
        yield running


DEPOSIT = FIXTURES / "deposit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATASET = {"title": "Zenodo-ML", "upload_type": "dataset", "creators": [{"name": "Doe, Jane"}],
           "description": "Code images.", "version": "1"}


def deposit_fixture(name: str) -> Any:
    return json.loads((DEPOSIT / name).read_text(encoding="utf-8"))


def create(double: ZenodoDouble, metadata: dict | None = None) -> dict:
    response = requests.post(f"{double.api_url}/deposit/depositions", json={"metadata": metadata or DATASET},
                             headers=AUTH, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()


def put_file(draft: dict, name: str, data: bytes) -> requests.Response:
    return requests.put(f"{draft['links']['bucket']}/{name}", data=data, headers=AUTH, timeout=5)


def published(double: ZenodoDouble, files: dict[str, bytes] | None = None) -> dict:
    draft = create(double)
    for name, data in (files or {"a.sqsh": b"image"}).items():
        assert put_file(draft, name, data).status_code == 201
    response = requests.post(draft["links"]["publish"], headers=AUTH, timeout=5)
    assert response.status_code == 202, response.text
    return response.json()


def test_the_recorded_deposit_answers_are_what_docs_say() -> None:
    """Guards the fixtures: the 2024 answers of zenodo-rdm's legacy API, and their quirks."""
    answer = deposit_fixture("publish_2024.json")
    assert answer["state"] == "done" and answer["submitted"] is True
    assert answer["links"]["latest_draft"].endswith(f"/deposit/depositions/{answer['id']}")  # itself (zenodo-rdm#858)
    assert answer["doi"].startswith("10.5072/") and answer["metadata"]["prereserve_doi"]["doi"].startswith("10.5281/")
    assert list(answer["files"][0]) == ["id", "filename", "filesize", "checksum", "links"]
    assert deposit_fixture("bucket_put_2024.json")["checksum"].startswith("md5:")
    draft = deposit_fixture("create_docs_2020.json")
    assert draft["state"] == "unsubmitted" and draft["submitted"] is False and "doi" not in draft


def test_a_new_draft_has_the_keys_zenodo_answers_with(double: ZenodoDouble) -> None:
    draft = create(double)
    recorded = deposit_fixture("create_docs_2020.json")
    assert set(recorded) - {"doi"} <= set(draft) and "doi" not in draft  # zenodo-rdm's quickstart test: no doi yet
    assert draft["conceptrecid"] == str(draft["id"] - 1) and draft["record_id"] == draft["id"]
    assert (draft["state"], draft["submitted"], draft["files"]) == ("unsubmitted", False, [])
    assert draft["metadata"]["prereserve_doi"] == {"doi": f"10.5281/zenodo.{draft['id']}", "recid": draft["id"]}
    assert set(recorded["links"]) <= set(draft["links"])
    assert draft["links"]["bucket"].startswith(f"{double.api_url}/files/")
    assert draft["links"]["latest_draft"] == draft["links"]["self"] == f"{double.api_url}/deposit/depositions/" \
                                                                        f"{draft['id']}"


def test_a_bucket_upload_answers_as_recorded(double: ZenodoDouble) -> None:
    draft = create(double)
    response = put_file(draft, "random3.txt", b"x" * 3080)
    recorded = deposit_fixture("bucket_put_2024.json")
    assert response.status_code == 201 and list(response.json()) == list(recorded)
    body = response.json()
    assert (body["key"], body["size"], body["checksum"]) == ("random3.txt", 3080,
                                                             "md5:" + hashlib.md5(b"x" * 3080).hexdigest())
    assert list(body["links"]) == list(recorded["links"]) and body["mimetype"] == "text/plain"
    again = put_file(draft, "random3.txt", b"y")  # the same name replaces the file
    listed = requests.get(draft["links"]["self"], headers=AUTH, timeout=5).json()["files"]
    assert again.status_code == 201 and [(f["filename"], f["filesize"]) for f in listed] == [("random3.txt", 1)]
    assert list(listed[0]) == list(deposit_fixture("deposition_inprogress_2024.json")["files"][0])


def test_a_published_version_answers_as_recorded(double: ZenodoDouble) -> None:
    answer = published(double)
    recorded = deposit_fixture("publish_2024.json")
    assert list(answer) == list(recorded) and list(answer["links"]) == list(recorded["links"])
    rid, concept = answer["id"], answer["conceptrecid"]
    assert answer["doi"] == f"10.5281/zenodo.{rid}" and answer["conceptdoi"] == f"10.5281/zenodo.{concept}"
    assert answer["links"]["self"] == f"{double.api_url}/records/{rid}"
    assert answer["links"]["html"] == f"{double.ui_url}/records/{rid}"
    assert answer["files"][0]["links"]["self"].startswith(f"{double.api_url}/records/{rid}/files/")
    assert requests.get(f"{double.api_url}/records/{rid}", timeout=5).json()["files"][0]["key"] == "a.sqsh"
    assert requests.post(answer["links"]["publish"], headers=AUTH, timeout=5).status_code == 404  # once only
    assert requests.put(answer["links"]["latest_draft"], json={}, headers=AUTH, timeout=5).status_code == 404
    assert requests.delete(answer["links"]["latest_draft"], headers=AUTH, timeout=5).status_code == 404
    assert put_file(answer, "b.txt", b"late").json() == {"status": 403, "message": "Permission denied."}


def test_publishing_refuses_missing_files_and_metadata_with_the_real_bodies(double: ZenodoDouble) -> None:
    draft = create(double)
    refused = requests.post(draft["links"]["publish"], headers=AUTH, timeout=5)
    assert (refused.status_code, refused.json()) == (400, deposit_fixture("error_missing_files_400.json"))
    empty = requests.post(f"{double.api_url}/deposit/depositions", json={}, headers=AUTH, timeout=5).json()
    put_file(empty, "a.txt", b"a")
    refused = requests.post(empty["links"]["publish"], headers=AUTH, timeout=5)
    assert refused.status_code == 400
    assert {e["field"] for e in refused.json()["errors"]} == {"metadata.resource_type", "metadata.creators",
                                                              "metadata.title", "metadata.publication_date"}
    updated = requests.put(empty["links"]["self"], json={"metadata": {"upload_type": "dataset", "title": "Zen"}},
                           headers=AUTH, timeout=5)
    assert updated.status_code == 200 and updated.json()["metadata"]["license"] == "cc-zero"  # CC0 for a dataset
    refused = requests.post(empty["links"]["publish"], headers=AUTH, timeout=5)
    assert refused.json()["errors"] == [{"field": "metadata.creators",
                                         "messages": ["Missing data for required field."]}]
    bad = requests.put(empty["links"]["self"], json={"metadata": {**DATASET, "license": "cc-by-99"}}, headers=AUTH,
                       timeout=5)
    assert (bad.status_code, bad.json()) == (400, deposit_fixture("error_license_400.json"))
    unknown = requests.put(empty["links"]["self"], json={"metadata": DATASET, "extra": 1}, headers=AUTH, timeout=5)
    assert unknown.json()["errors"] == [{"field": "extra", "messages": ["Unknown field."]}]


def test_a_new_version_shares_the_concept_and_starts_with_the_previous_files(double: ZenodoDouble) -> None:
    first = published(double, {"a.sqsh": b"v1", "a.sqsh.md5": b"m1"})
    response = requests.post(first["links"]["newversion"], headers=AUTH, timeout=5)
    assert response.status_code == 201
    draft = response.json()  # zenodo-rdm answers with the new draft, whose latest_draft is itself
    assert draft["id"] != first["id"] and draft["conceptrecid"] == first["conceptrecid"]
    assert draft["links"]["latest_draft"] == draft["links"]["self"] and not draft["submitted"]
    assert draft["conceptdoi"] == first["conceptdoi"] and "doi" not in draft
    assert [(f["filename"], f["checksum"]) for f in draft["files"]] == [(f["filename"], f["checksum"])
                                                                        for f in first["files"]]
    assert "version" not in draft["metadata"] and draft["metadata"]["publication_date"] == \
        datetime.now(timezone.utc).date().isoformat()
    again = requests.post(first["links"]["newversion"], headers=AUTH, timeout=5)  # a draft with files exists
    assert (again.status_code, again.json()) == (400, deposit_fixture("error_remove_files_400.json"))
    for entry in draft["files"]:
        assert requests.delete(entry["links"]["self"], headers=AUTH, timeout=5).status_code == 204
    reimported = requests.post(first["links"]["newversion"], headers=AUTH, timeout=5)  # no files: imported again
    assert reimported.status_code == 201 and reimported.json()["id"] == draft["id"]
    assert len(reimported.json()["files"]) == 2
    assert requests.post(draft["links"]["newversion"], headers=AUTH, timeout=5).status_code == 404  # not published


def test_the_deposit_list_shows_each_concepts_latest_draft_unless_all_versions(double: ZenodoDouble) -> None:
    first = published(double)
    draft = requests.post(first["links"]["newversion"], headers=AUTH, timeout=5).json()
    other = create(double, {**DATASET, "title": "Something else"})

    def listed(**params: Any) -> list[int]:
        response = requests.get(f"{double.api_url}/deposit/depositions", params=params, headers=AUTH, timeout=5)
        assert response.status_code == 200 and isinstance(response.json(), list)
        return [d["id"] for d in response.json()]

    assert listed() == [other["id"], draft["id"]]  # newest first
    assert listed(q=f"conceptrecid:{first['conceptrecid']}") == [draft["id"]]
    assert listed(q=f"conceptrecid:{first['conceptrecid']}", all_versions="true") == [draft["id"], first["id"]]
    assert listed(q='title:"zenodo-ml"', status="draft") == [draft["id"]]  # status: accepted, not applied
    assert listed(q='title:"zenodo-ml"', status="published") == [draft["id"]]
    assert listed(q='"something else"') == [other["id"]]
    assert listed(sort="oldest", size=1, page=2) == [other["id"]]
    bad = requests.get(f"{double.api_url}/deposit/depositions", params={"q": "creators.name:Doe"}, headers=AUTH,
                       timeout=5)
    assert bad.status_code == 400 and "does not support" in bad.json()["message"]
    double.hide_drafts_from_search()
    assert listed(q=f"conceptrecid:{first['conceptrecid']}", all_versions="1") == [first["id"]]
    assert requests.delete(other["links"]["self"], headers=AUTH, timeout=5).status_code == 204
    assert requests.get(other["links"]["self"], headers=AUTH, timeout=5).status_code == 404


@pytest.mark.parametrize("status", [401, 403])
def test_the_deposit_api_needs_the_token(status: int) -> None:
    expected = deposit_fixture("error_unauthorized_401_docs.json" if status == 401 else "error_permission_403.json")
    with ZenodoDouble(tokens=[TOKEN], unauthorized_status=status) as double:
        draft = create(double)
        for method, url in [("GET", f"{double.api_url}/deposit/depositions"), ("POST", draft["links"]["publish"]),
                            ("PUT", f"{draft['links']['bucket']}/a.txt"), ("GET", draft["links"]["self"])]:
            for headers, params in [({}, {}), ({"Authorization": f"Bearer {TOKEN}x"}, {}),
                                    ({}, {"access_token": "wrong"})]:
                response = requests.request(method, url, headers=headers, params=params, timeout=5)
                assert (response.status_code, response.json()) == (status, expected)
        by_param = requests.get(f"{double.api_url}/deposit/depositions", params={"access_token": TOKEN}, timeout=5)
        assert by_param.status_code == 200
    with pytest.raises(ValueError):
        ZenodoDouble(unauthorized_status=404)


def test_an_upload_can_be_cut_off_and_a_credential_echoed(double: ZenodoDouble) -> None:
    draft = create(double)
    double.fail("/api/files/*/big.bin", "cut")
    with pytest.raises(requests.ConnectionError):
        put_file(draft, "big.bin", b"z" * 2_000_000)
    assert double.requests[-1].fault == "cut" and double.requests[-1].status == 0
    assert put_file(draft, "big.bin", b"z" * 10).status_code == 201  # the pattern fault was used up
    double.fail(draft["links"]["publish"], "echo", status=502)
    echoed = requests.post(draft["links"]["publish"], headers=AUTH, timeout=5)
    basic = base64.b64encode(f"zenodo-hpc:{TOKEN}".encode()).decode()
    assert echoed.status_code == 502
    assert echoed.json()["message"] == (f"Request refused. Authorization: Bearer {TOKEN}; forwarded as Basic "
                                        f"{basic}; query: access_token={quote(TOKEN, safe='')}")
    assert TOKEN not in repr(double.requests)


def test_deposition_links_can_be_made_hostile(double: ZenodoDouble) -> None:
    draft = create(double)
    double.override_deposit_links(bucket="http://elsewhere.example/files/x", self="file:///etc/passwd")
    shown = requests.get(draft["links"]["self"], headers=AUTH, timeout=5).json()["links"]
    assert (shown["bucket"], shown["self"]) == ("http://elsewhere.example/files/x", "file:///etc/passwd")
    assert put_file(draft, "a.txt", b"a").status_code == 201  # the real bucket still works
    double.override_deposit_links()
    assert double.deposition(draft["id"])["links"]["bucket"] == draft["links"]["bucket"]

"""The Zenodo/codeload double answers like the real services, and misbehaves exactly when told to.

"Like the real services" is checked against the recorded answers and code-derived bodies in
``tests/fixtures/zenodo`` (sources in its SOURCES.md). Every test talks to the double with plain ``requests``
(or a raw socket), as production code does.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from doubles import (
    FAULT_MODES,
    SHAPES,
    ZENODO_GUEST_LIMITS,
    HeaderRecorder,
    ZenodoDouble,
    make_zip,
)

from zenodo_hpc.demo.server import LoopbackZenodo

TOKEN = "s3cr3t-t0ken-never-logged"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "zenodo"
NATIVE = "application/vnd.inveniordm.v1+json"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as running:
        yield running


def search(double: ZenodoDouble, token: str | None = None, **params: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{double.api_url}/records", params=params, headers=headers, timeout=5)


def ids(response: requests.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]["hits"]]


def add_days(double: ZenodoDouble, count: int, *, first_id: int = 1) -> None:
    """``count`` software records, one per day of March 2018 onward, ids in creation order."""
    for n in range(count):
        day = f"2018-03-{n + 1:02d}" if n < 31 else f"2018-04-{n - 30:02d}"
        double.add_record(ZenodoDouble.make_hit(first_id + n, created=f"{day}T12:00:00"))


def path_of(url: str) -> str:
    return urlsplit(url).path


def read_streamed(url: str) -> bytes:
    with requests.get(url, stream=True, timeout=5) as response:
        return b"".join(response.iter_content(chunk_size=64))


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=5, **kwargs)


# ------------------------------------------------------------------------------------------------ fixtures


def test_every_fixture_loads_and_is_cited_in_sources() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert len(names) >= 15
    for name in names:
        assert fixture(name) is not None, name
        assert f"`{name}`" in sources, f"{name} has no entry in SOURCES.md"


def test_the_recorded_shapes_are_what_docs_say() -> None:
    """Guards the fixtures themselves: each era's file entry, as recorded."""
    legacy = fixture("search_legacy_2021.json")["hits"]["hits"][0]["files"][0]
    assert list(legacy) == ["bucket", "checksum", "key", "links", "size", "type"]
    assert legacy["links"]["self"].startswith("https://zenodo.org/api/files/")
    era_2023 = fixture("record_2023.json")["hits"]["hits"][0]["files"][0]
    assert list(era_2023) == ["id", "filename", "filesize", "checksum", "links"]
    assert not era_2023["links"]["self"].endswith("/content") and era_2023["links"]["download"].endswith("/content")
    current = fixture("record_current_2025.json")["files"][0]
    assert list(current) == ["id", "key", "size", "checksum", "links"] and list(current["links"]) == ["self"]
    assert current["links"]["self"].endswith("/content") and current["checksum"].startswith("md5:")
    restricted = fixture("record_2023_restricted.json")["hits"]["hits"][0]
    assert restricted["metadata"]["access_right"] == "restricted" and restricted["files"] == []


# ---------------------------------------------------------------------------------------------- shapes


def add_shaped(double: ZenodoDouble, shape: str, record_id: int = 5, **kwargs: Any) -> tuple[dict, bytes, str]:
    data = make_zip({"utoaztecan-v1.1/README.md": b"# hello\n"})
    key = "lexibank/utoaztecan-v1.1.zip"
    hit = ZenodoDouble.make_hit(record_id, created="2021-08-10", github=("lexibank", "utoaztecan", "v1.1"),
                                **kwargs)
    return double.add_record(hit, {key: data}, shape=shape), data, key


def test_current_shape_is_the_recorded_one(double: ZenodoDouble) -> None:
    served, data, key = add_shaped(double, "current")
    recorded = fixture("record_current_2025.json")
    assert list(served) == list(recorded)
    (entry,) = served["files"]
    assert list(entry) == list(recorded["files"][0]) and list(entry["links"]) == ["self"]
    assert entry["key"] == key and entry["size"] == len(data)
    assert entry["checksum"] == "md5:" + hashlib.md5(data).hexdigest()
    github = fixture("record_current_github.json")["files"][0]["links"]["self"]
    assert github.endswith(f"/records/5173799/files/{key}/content")
    assert entry["links"]["self"] == f"{double.api_url}/records/5/files/{key}/content"
    assert get(entry["links"]["self"]).content == data
    assert served["metadata"]["related_identifiers"] == fixture("record_2023.json")["hits"]["hits"][0][
        "metadata"]["related_identifiers"]


def test_2023_shape_links_self_to_the_file_metadata_and_download_to_the_bytes(double: ZenodoDouble) -> None:
    served, data, key = add_shaped(double, "2023")
    (entry,) = served["files"]
    recorded = fixture("record_2023.json")["hits"]["hits"][0]["files"][0]
    assert list(entry) == list(recorded) and list(entry["links"]) == list(recorded["links"])
    assert entry["filename"] == key and entry["filesize"] == len(data)
    assert entry["checksum"] == hashlib.md5(data).hexdigest()
    metadata = get(entry["links"]["self"])
    assert metadata.headers["Content-Type"] == "application/json"
    expected = fixture("file_metadata_2025.json")
    assert list(metadata.json()) == list(expected)
    assert set(metadata.json()["links"]) == set(expected["links"]) - {"commit"}  # a published record's file
    assert metadata.json()["links"]["content"] == entry["links"]["download"]
    assert metadata.json()["checksum"] == "md5:" + entry["checksum"] and metadata.json()["key"] == key
    assert get(entry["links"]["download"]).content == data
    assert double.add_record(ZenodoDouble.make_hit(6, created="2021-01-01"), {"a.zip": b"a"}, legacy=True)[
        "files"][0]["links"]["self"].endswith("/records/6/files/a.zip")  # legacy=True is this shape


def test_legacy_shape_serves_files_from_a_bucket(double: ZenodoDouble) -> None:
    served, data, key = add_shaped(double, "legacy")
    (entry,) = served["files"]
    recorded = fixture("search_legacy_2021.json")["hits"]["hits"][0]
    assert list(entry) == list(recorded["files"][0]) and list(entry["links"]) == ["self"]
    assert entry["type"] == "zip" and entry["checksum"] == "md5:" + hashlib.md5(data).hexdigest()
    assert re.fullmatch(rf"{double.api_url}/files/[0-9a-f-]{{36}}/{key}", entry["links"]["self"])
    assert served["links"]["bucket"] == entry["links"]["self"].rsplit("/lexibank/", 1)[0]
    assert get(entry["links"]["self"]).content == data
    assert get(f"{double.api_url}/records/5/files/{key}").status_code == 404  # no such route before Oct 2023


def test_native_shape_is_the_invenio_rdm_one(double: ZenodoDouble) -> None:
    served, data, key = add_shaped(double, "native")
    recorded = fixture("record_native.json")
    assert served["id"] == "5"
    assert list(served["files"]) == list(recorded["files"])
    entry = served["files"]["entries"][key]
    assert list(entry) == list(recorded["files"]["entries"]["lexibank/utoaztecan-v1.1.zip"])
    assert served["files"]["count"] == 1 and served["files"]["total_bytes"] == len(data)
    assert get(entry["links"]["content"]).content == data
    assert get(entry["links"]["self"]).json()["size"] == len(data)
    response = get(f"{double.api_url}/records/5", headers={"Accept": NATIVE})
    assert response.json() == served
    assert double.requests[-1].accept == NATIVE


@pytest.mark.parametrize("shape", SHAPES)
def test_search_serves_each_shape_as_stored(double: ZenodoDouble, shape: str) -> None:
    served, _, _ = add_shaped(double, shape)
    assert search(double).json()["hits"]["hits"] == [served]


@pytest.mark.parametrize(("shape", "shown"), [("current", []), ("2023", []), ("legacy", None),
                                              ("native", {"enabled": True})])
@pytest.mark.parametrize("access_right", ["restricted", "embargoed", "closed"])
def test_files_of_records_not_open_are_hidden_and_refused(double: ZenodoDouble, shape: str, shown: Any,
                                                          access_right: str) -> None:
    served, _, key = add_shaped(double, shape, access_right=access_right)
    assert served["metadata"]["access_right"] == access_right
    assert served.get("files") == shown and ("files" in served) == (shown is not None)
    refused = fixture("error_restricted_file_403.json")
    for url in (f"{double.api_url}/records/5/files/{key}/content", f"{double.api_url}/records/5/files/{key}"):
        answer = get(url)
        assert (answer.status_code, answer.json()) == (403, refused), url
    assert search(double).json()["hits"]["hits"] == [served]


def test_missing_records_and_files_answer_as_zenodo(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(5173799, created="2021-08-10"), {"a.zip": b"a"})
    missing = get(f"{double.api_url}/records/8")
    assert (missing.status_code, missing.json()) == (404, fixture("error_missing_record_404.json"))
    no_file = get(f"{double.api_url}/records/5173799/files/other.zip/content")
    assert (no_file.status_code, no_file.json()) == (404, fixture("error_missing_file_404.json"))


def test_the_demos_server_alone_serves_records_search_files_and_codeload() -> None:
    """The package's own server (what ``zenodo-hpc demo`` publishes on) answers without the tests' doubles: no
    deposit API, no rate limit, no fault to inject."""
    with LoopbackZenodo() as server:
        hit = server.add_record(LoopbackZenodo.make_hit(5, created="2021-08-10"), {"a.zip": b"abc"})
        server.add_codeload("o", "r", "v1", make_zip({"r-v1/a.txt": b"a"}))
        assert search(server).json()["hits"]["hits"] == [hit]
        assert get(hit["files"][0]["links"]["self"]).content == b"abc"
        assert get(f"{server.codeload_url}/o/r/zip/refs/tags/v1").status_code == 200
        assert requests.post(f"{server.api_url}/deposit/depositions", json={}, timeout=5).status_code == 405
        assert "X-RateLimit-Limit" not in get(f"{server.api_url}/records/5").headers
        assert not hasattr(server, "fail")
        assert [r.path for r in server.requests][:2] == ["/api/records", "/api/records/5/files/a.zip/content"]


def test_make_hit_has_the_keys_of_todays_answer_and_zenodo_timestamps() -> None:
    hit = ZenodoDouble.make_hit(5, created="2018-03-01T12:00:00")
    assert set(hit) == set(fixture("record_current_2025.json"))
    assert hit["created"] == "2018-03-01T12:00:00.000000+00:00"
    assert hit["updated"] == hit["created"]
    assert ZenodoDouble.make_hit(5, created="2018-03-01")["created"] == "2018-03-01T00:00:00.000000+00:00"
    assert hit["conceptrecid"] == "5" and hit["recid"] == "5"
    assert isinstance(hit["id"], int)
    assert hit["metadata"]["resource_type"]["type"] == "software"
    with pytest.raises(ValueError, match="access_right"):
        ZenodoDouble.make_hit(5, created="2018-03-01", access_right="secret")


def test_make_hit_takes_other_related_identifiers_as_given() -> None:
    other = {"identifier": "https://github.com/IPBES-Data/IPBES_LOD/tree/main/Global%20Assessment%201",
             "relation": "isIdenticalTo", "scheme": "url"}
    hit = ZenodoDouble.make_hit(5, created="2018-03-01", related=[other])
    assert hit["metadata"]["related_identifiers"] == [other]


def test_keys_with_slashes_work_quoted_and_unquoted(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(5, created="2018-01-01"), {"owner/my pkg.zip": b"abc"})
    for key in ("owner/my%20pkg.zip", quote("owner/my pkg.zip", safe="")):
        response = get(f"{double.api_url}/records/5/files/{key}/content")
        assert response.content == b"abc"
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Length"] == "3"


def test_checksum_override_serves_a_wrong_md5(double: ZenodoDouble) -> None:
    wrong = "0" * 32
    files = {"a.zip": b"aaa", "b.zip": b"bbb"}
    hit = double.add_record(ZenodoDouble.make_hit(7, created="2018-01-01"), files, checksums={"a.zip": wrong})
    served = {entry["key"]: entry["checksum"] for entry in hit["files"]}
    assert served == {"a.zip": f"md5:{wrong}", "b.zip": "md5:" + hashlib.md5(b"bbb").hexdigest()}
    old = double.add_record(ZenodoDouble.make_hit(8, created="2018-01-01"), files, shape="2023",
                            checksums={"b.zip": f"md5:{wrong}"})
    assert {entry["filename"]: entry["checksum"] for entry in old["files"]}["b.zip"] == wrong
    assert get(f"{double.api_url}/records/8/files/b.zip").json()["checksum"] == f"md5:{wrong}"
    with pytest.raises(ValueError, match="c.zip"):
        double.add_record(ZenodoDouble.make_hit(9, created="2018-01-01"), files, checksums={"c.zip": wrong})


def test_add_record_refuses_unknown_shapes_and_contradictions(double: ZenodoDouble) -> None:
    hit = ZenodoDouble.make_hit(1, created="2018-01-01")
    with pytest.raises(ValueError, match="shape"):
        double.add_record(hit, {"a.zip": b"a"}, shape="2019")
    with pytest.raises(ValueError, match="contradicts"):
        double.add_record(hit, {"a.zip": b"a"}, legacy=True, shape="current")
    with pytest.raises(ValueError, match="integer"):
        double.add_record({**hit, "id": "1"})


# ------------------------------------------------------------------------------------------------ search


def test_paging_follows_next_links_to_the_last_page(double: ZenodoDouble) -> None:
    add_days(double, 7)
    seen: list[int] = []
    url: str | None = f"{double.api_url}/records?type=software&size=3&sort=oldest"
    pages = 0
    while url:
        body = get(url).json()
        assert body["hits"]["total"] == 7
        assert body["links"]["self"].startswith(double.api_url)
        seen += [hit["id"] for hit in body["hits"]["hits"]]
        url = body["links"].get("next")
        pages += 1
    assert seen == [1, 2, 3, 4, 5, 6, 7]
    assert pages == 3


def test_search_defaults_are_page_1_size_25_newest_first(double: ZenodoDouble) -> None:
    add_days(double, 30)
    assert ids(search(double)) == list(range(30, 5, -1))
    assert ids(search(double, page=2)) == [5, 4, 3, 2, 1]
    assert ids(search(double, q="record")) == list(range(30, 5, -1))  # bestmatch: relevance is not modelled


def test_page_size_cap_is_25_anonymous_and_100_with_a_token(double: ZenodoDouble) -> None:
    assert search(double, size=25).status_code == 200
    refused = search(double, size=26)
    assert (refused.status_code, refused.json()) == (400, fixture("error_page_size_guest_400.json"))
    assert search(double, token=TOKEN, size=100).status_code == 200
    refused = search(double, token=TOKEN, size=101)
    assert (refused.status_code, refused.json()) == (400, fixture("error_page_size_token_400.json"))
    assert [r.authenticated for r in double.requests] == [False, False, True, True]


def test_an_unknown_token_is_served_as_anonymous(double: ZenodoDouble) -> None:
    assert search(double, token="not-a-known-token", size=25).status_code == 200
    refused = search(double, token="not-a-known-token", size=100)  # the anonymous cap applies
    assert (refused.status_code, refused.json()) == (400, fixture("error_page_size_guest_400.json"))
    assert [(r.authenticated, r.authorization) for r in double.requests] == [(False, True), (False, True)]


def test_results_stop_at_the_window_with_zenodos_error_and_next_links_past_it() -> None:
    with ZenodoDouble(window=100) as double:
        add_days(double, 60)
        for n in range(61, 121):
            double.add_record(ZenodoDouble.make_hit(n, created="2019-01-01"))
        last = search(double, size=25, page=4, sort="oldest")
        assert last.json()["hits"]["total"] == 120
        assert ids(last) == list(range(76, 101))
        beyond = get(last.json()["links"]["next"])  # Zenodo links on while page*size < total...
        assert (beyond.status_code, beyond.json()) == (400, fixture("error_window_400.json"))  # ...into the 400
        cut = search(double, size=24, page=5, sort="oldest")  # from 96: only 4 fit below the window
        assert ids(cut) == [97, 98, 99, 100]


def test_date_ranges_inclusive_exclusive_and_open(double: ZenodoDouble) -> None:
    add_days(double, 10)  # record n created 2018-03-0n 12:00 UTC

    def oldest(q: str) -> list[int]:
        return ids(search(double, q=q, sort="oldest"))

    assert oldest("created:[2018-03-03 TO 2018-03-05]") == [3, 4]  # bare date = midnight
    assert oldest("created:[2018-03-03 TO 2018-03-05T12:00:00]") == [3, 4, 5]
    assert oldest("created:[2018-03-03 TO 2018-03-05T12:00:00}") == [3, 4]
    assert oldest("created:{2018-03-03T12:00:00+00:00 TO 2018-03-05T12:00:00Z]") == [4, 5]
    assert oldest("created:[2018-03-08 TO *]") == [8, 9, 10]
    assert oldest("created:[* TO 2018-03-02]") == [1]


def test_updated_ranges_and_anded_title_words(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01", updated="2020-06-01", title="Climate Model"))
    double.add_record(ZenodoDouble.make_hit(2, created="2018-01-02", updated="2018-01-02", title="Climate data"))
    double.add_record(ZenodoDouble.make_hit(3, created="2018-01-03", updated="2021-01-01", title="Ocean model"))

    def oldest(q: str) -> list[int]:
        return ids(search(double, q=q, sort="oldest"))

    assert oldest("updated:[2020-01-01 TO *]") == [1, 3]
    assert oldest("updated:[2020-01-01 TO *] AND model") == [1, 3]
    assert oldest("updated:[2020-01-01 TO *] climate") == [1]
    assert oldest("CLIMATE NOT data") == [1]
    assert oldest("created:[2018-01-02 TO *] AND updated:[* TO 2020-12-31]") == [2]


def test_unsupported_query_syntax_is_a_400_not_a_silent_mismatch(double: ZenodoDouble) -> None:
    for q in ("climate OR ocean", "title:climate", "publication_date:[2018 TO *]", "created:[yesterday TO *]"):
        response = search(double, q=q)
        assert response.status_code == 400, q
        assert response.json()["status"] == 400


def test_type_filters_on_the_resource_type(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
    double.add_record(ZenodoDouble.make_hit(2, created="2018-01-02", resource_type="dataset"))
    assert ids(search(double, type="software")) == [1]
    assert ids(search(double, type="dataset")) == [2]
    assert ids(search(double, sort="oldest")) == [1, 2]


def test_all_versions_false_keeps_the_highest_id_per_concept(double: ZenodoDouble) -> None:
    for record_id, day in ((10, "01"), (12, "03"), (11, "02")):
        double.add_record(ZenodoDouble.make_hit(record_id, created=f"2018-05-{day}", conceptrecid="9"))
    double.add_record(ZenodoDouble.make_hit(20, created="2018-05-04"))

    def oldest(**params: object) -> list[int]:
        return ids(search(double, sort="oldest", **params))

    assert oldest() == [12, 20]
    assert oldest(all_versions="0") == [12, 20]
    assert oldest(all_versions="false") == [12, 20]
    assert oldest(all_versions="true") == [10, 11, 12, 20]
    assert oldest(all_versions=1) == [10, 11, 12, 20]
    # The latest version decides: an older version matching the filter is not returned in its place.
    assert oldest(q="created:[* TO 2018-05-02]") == []


def test_sort_orders_and_zenodos_error_for_an_unknown_one(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(3, created="2018-01-02", updated="2018-01-05"))
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-02", updated="2018-01-03"))
    double.add_record(ZenodoDouble.make_hit(2, created="2018-01-01", updated="2018-01-04"))
    ascending = [2, 1, 3]  # created, then id
    for name in ("oldest", "-mostrecent", "publication-asc", "-publication_date"):
        assert ids(search(double, sort=name)) == ascending, name
    for name in ("newest", "mostrecent", "bestmatch", "publication-desc", "publication_date"):
        assert ids(search(double, sort=name)) == ascending[::-1], name
    assert ids(search(double, sort="updated-asc")) == [1, 2, 3]
    assert ids(search(double, sort="updated-desc")) == [3, 2, 1]
    unknown = search(double, sort="bestest")
    assert (unknown.status_code, unknown.json()) == (400, fixture("error_sort_400.json"))
    unmodelled = search(double, sort="mostviewed")  # Zenodo takes it; the double has no view counts
    assert unmodelled.status_code == 400 and "does not model" in unmodelled.json()["message"]


def test_verified_owners_come_first_whatever_the_sort(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
    double.add_record(ZenodoDouble.make_hit(2, created="2018-01-02"), verified=True)
    double.add_record(ZenodoDouble.make_hit(3, created="2018-01-03"))
    assert ids(search(double, sort="oldest")) == [2, 1, 3]
    assert ids(search(double, sort="newest")) == [2, 3, 1]


def test_bad_paging_parameters_are_zenodos_validation_errors(double: ZenodoDouble) -> None:
    cases = {("size", "ten"): "Not a valid integer.", ("page", "0"): "Must be greater than or equal to 1."}
    for (name, value), message in cases.items():
        response = search(double, **{name: value})
        assert response.status_code == 400
        assert response.json() == {"status": 400, "message": "A validation error occurred.",
                                   "errors": [{"field": name, "messages": [message]}]}
    assert search(double, all_versions="maybe").status_code == 400


def test_one_record_by_id(double: ZenodoDouble) -> None:
    stored = double.add_record(ZenodoDouble.make_hit(7, created="2018-01-01", github=("o", "r", "v1.0")))
    response = get(f"{double.api_url}/records/7")
    assert response.json() == stored
    assert stored["metadata"]["related_identifiers"][0]["identifier"] == "https://github.com/o/r/tree/v1.0"
    assert stored["links"]["self"] == f"{double.api_url}/records/7"


# --------------------------------------------------------------------------------------- hostile answers


def test_raw_hits_are_served_verbatim(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
    infinite = '{"id": 2, "files": [{"key": "x.zip", "size": Infinity, "links": {"self": "file:///etc/passwd"}}]}'
    double.add_raw_hit(infinite)
    double.add_raw_hit('{"id": "../../etc", "metadata": "not an object"}', record_id=-1)
    response = search(double)
    assert '"size": Infinity' in response.text
    hits = response.json()["hits"]  # Python's json reads Infinity; a strict parser would not
    assert hits["total"] == 3 and [h["id"] for h in hits["hits"]] == [1, 2, "../../etc"]
    assert math.isinf(hits["hits"][1]["files"][0]["size"]) and hits["hits"][2]["metadata"] == "not an object"
    odd = get(f"{double.api_url}/records/-1")
    assert odd.text == '{"id": "../../etc", "metadata": "not an object"}'
    with pytest.raises(TypeError):
        double.add_raw_hit({"id": 3})  # type: ignore[arg-type]


def test_a_lying_total_repeats_the_same_hits(double: ZenodoDouble) -> None:
    add_days(double, 3)
    double.lie_about_total(1_000)
    first = search(double, size=2)
    assert first.json()["hits"]["total"] == 1_000
    second = get(first.json()["links"]["next"])
    third = get(second.json()["links"]["next"])
    assert ids(first) == [3, 2] and ids(second) == [1] and ids(third) == [3, 2]  # the first page again
    assert "next" in third.json()["links"]
    double.lie_about_total(None)
    assert search(double).json()["hits"]["total"] == 3


def test_file_links_can_point_anywhere(double: ZenodoDouble) -> None:
    hit = ZenodoDouble.make_hit(1, created="2018-01-01")
    files = {"a.zip": b"a", "b.zip": b"b"}
    served = double.add_record(hit, files, file_links={"a.zip": "file:///etc/passwd",
                                                       "b.zip": "http://elsewhere.invalid/b.zip"})
    assert [e["links"]["self"] for e in served["files"]] == ["file:///etc/passwd", "http://elsewhere.invalid/b.zip"]
    old = double.add_record({**hit, "id": 2}, files, shape="2023", file_links={"a.zip": "file:///x"})
    assert old["files"][0]["links"]["download"] == "file:///x"
    assert old["files"][0]["links"]["self"] == f"{double.api_url}/records/2/files/a.zip"


# ------------------------------------------------------------------------------------------------ faults


@pytest.fixture
def file_url(double: ZenodoDouble) -> str:
    hit = double.add_record(ZenodoDouble.make_hit(5, created="2018-01-01"), {"x.zip": bytes(range(256)) * 40})
    return hit["files"][0]["links"]["self"]


@pytest.mark.parametrize("mode", ["500", "502", "503", "404"])
def test_status_faults_hit_the_next_requests_then_stop(double: ZenodoDouble, file_url: str, mode: str) -> None:
    double.fail(path_of(file_url), mode, times=2)
    assert [get(file_url).status_code for _ in range(3)] == [int(mode), int(mode), 200]
    assert [r.fault for r in double.requests] == [mode, mode, None]


def test_faults_for_a_path_queue_in_order(double: ZenodoDouble, file_url: str) -> None:
    double.fail(file_url, "503")  # a full URL is accepted too
    double.fail(path_of(file_url), "html")
    first, second, third = (get(file_url) for _ in range(3))
    assert first.status_code == 503
    assert second.status_code == 200
    assert second.headers["Content-Type"].startswith("text/html")
    assert second.text.lstrip().startswith("<!DOCTYPE html>")
    assert third.headers["Content-Type"] == "application/octet-stream"


def test_truncated_body_raises_chunked_encoding_error(double: ZenodoDouble, file_url: str) -> None:
    full = get(file_url).content
    double.fail(path_of(file_url), "truncate", times=2)
    with requests.get(file_url, stream=True, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(full))  # the full length is promised...
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
            b"".join(response.iter_content(chunk_size=1024))  # ...but half arrives
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(file_url)  # not streamed: the same error, raised by get() itself
    assert read_streamed(file_url) == full


def test_slow_answer_waits_then_answers(double: ZenodoDouble, file_url: str) -> None:
    double.fail(path_of(file_url), "slow", seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(file_url, timeout=0.2)
    double.fail(path_of(file_url), "slow", seconds=0.05)
    assert get(file_url).status_code == 200
    assert [r.fault for r in double.requests] == ["slow", "slow"]


def raw_get(url: str) -> tuple[socket.socket, bytes, bytes]:
    """Send a GET by hand and read until the headers and at least one body byte are in."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received or not received.split(b"\r\n\r\n", 1)[1]:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed early"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    return sock, head, body


def test_trickle_sends_the_full_length_then_one_byte_at_a_time(double: ZenodoDouble, file_url: str) -> None:
    full = get(file_url).content
    double.fail(path_of(file_url), "trickle", seconds=30)
    sock, head, body = raw_get(file_url)
    with sock:
        assert f"Content-Length: {len(full)}".encode() in head
        assert body == full[:1]  # one byte now...
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # ...and the next one not yet
    assert double.requests[-1].fault == "trickle"
    double.fail(path_of(file_url), "trickle", seconds=0)
    assert read_streamed(file_url) == full  # trickled bytes are the right ones


def test_sleepy_answers_carry_absurd_wait_headers() -> None:
    with ZenodoDouble(rate_per_min=100) as double:
        hit = double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"), {"a.zip": b"aa"})
        url = hit["files"][0]["links"]["self"]
        double.fail(url, "sleepy", headers={"Retry-After": "1000000000"})
        double.fail(url, "sleepy", status=503, headers={"Retry-After": "Thu, 01 Jan 2099 00:00:00 GMT"})
        double.fail(url, "sleepy", status=200, headers={"X-RateLimit-Remaining": "0",
                                                        "X-RateLimit-Reset": "4102444800"})
        first, second, third = (get(url) for _ in range(3))
        assert (first.status_code, first.headers["Retry-After"]) == (429, "1000000000")
        assert (second.status_code, second.headers["Retry-After"]) == (503, "Thu, 01 Jan 2099 00:00:00 GMT")
        assert third.status_code == 200 and third.content == b"aa"
        assert third.headers["X-RateLimit-Reset"] == "4102444800"  # replaced, not sent twice
        assert third.headers["X-RateLimit-Remaining"] == "0"
        assert third.headers["X-RateLimit-Limit"] == "100"


def test_redirect_loop_raises_too_many_redirects_then_recovers(double: ZenodoDouble, file_url: str) -> None:
    double.fail(path_of(file_url), "redirect_loop")
    with pytest.raises(requests.exceptions.TooManyRedirects):
        get(file_url)
    assert all(r.status == 302 and r.path == path_of(file_url) for r in double.requests)
    assert len(double.requests) == 31  # requests gives up after 30 redirects
    assert get(file_url).status_code == 200


def test_reset_closes_without_an_answer(double: ZenodoDouble, file_url: str) -> None:
    double.fail(path_of(file_url), "reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        get(file_url)
    assert double.requests[-1].status == 0
    assert double.requests[-1].fault == "reset"
    assert get(file_url).status_code == 200


def test_faults_apply_to_search_too(double: ZenodoDouble) -> None:
    double.fail("/api/records", "502")
    assert search(double).status_code == 502
    assert search(double).status_code == 200


def test_fail_rejects_unknown_modes_and_options(double: ZenodoDouble) -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        double.fail("/api/records", "teapot")
    with pytest.raises(ValueError, match="takes no option"):
        double.fail("/api/records", "500", seconds=1)
    with pytest.raises(ValueError, match="takes no option"):
        double.fail("/api/records", "sleepy", seconds=1)
    with pytest.raises(ValueError, match="to=<url>"):
        double.fail("/api/records", "redirect")
    with pytest.raises(ValueError):
        double.fail("/api/records", "500", times=0)
    with pytest.raises(ValueError, match="takes no option"):
        double.fail("/api/records", "cut", status=500)
    assert set(FAULT_MODES) == {"500", "502", "503", "404", "truncate", "slow", "html", "redirect_loop", "reset",
                                "trickle", "sleepy", "redirect", "cut", "echo"}


# ------------------------------------------------------------------------------------ tokens and origins


def test_header_recorder_is_another_origin_that_records_authorization() -> None:
    with HeaderRecorder() as recorder:
        assert urlsplit(recorder.url).hostname == "127.0.0.1"
        plain = get(f"{recorder.url}/any/path/x.zip")
        assert zipfile.ZipFile(io.BytesIO(plain.content)).namelist() == ["elsewhere/README.md"]
        assert not recorder.authorization_seen
        get(f"{recorder.url}/other", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/zip"})
        assert recorder.authorization_seen
        assert [(r.path, r.authorization, r.accept) for r in recorder.requests][1] == (
            "/other", True, "application/zip")
        assert TOKEN not in repr(recorder.requests)


def test_a_redirect_to_another_origin_does_not_carry_the_token(double: ZenodoDouble, file_url: str) -> None:
    with HeaderRecorder(b"moved") as recorder:
        double.fail(path_of(file_url), "redirect", to=f"{recorder.url}/moved.zip")
        response = get(file_url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.content == b"moved"
        assert double.requests[-1].authorization and double.requests[-1].status == 302
        assert [r.authorization for r in recorder.requests] == [False]  # requests drops it across origins


def test_the_log_records_authorization_and_accept_but_never_the_token(double: ZenodoDouble) -> None:
    search(double, token=TOKEN, size=50)
    get(f"{double.api_url}/records", params={"access_token": TOKEN, "size": 50})
    search(double, token=TOKEN + "x")
    get(f"{double.api_url}/records", headers={"Accept": NATIVE})
    assert [(r.status, r.authenticated, r.authorization) for r in double.requests] == [
        (200, True, True), (200, True, False), (200, False, True), (200, False, False)]
    assert double.requests[-1].accept == NATIVE
    assert TOKEN not in repr(double.requests)
    assert double.requests[1].query == {"size": "50"}


def test_log_records_method_path_query_and_time(double: ZenodoDouble) -> None:
    search(double, size=5, q="created:[2018-01-01 TO *]")
    requests.head(f"{double.api_url}/records/1", timeout=5)
    first, second = double.requests
    assert (first.method, first.path, first.status) == ("GET", "/api/records", 200)
    assert first.query == {"size": "5", "q": "created:[2018-01-01 TO *]"}
    assert (second.method, second.path, second.status) == ("HEAD", "/api/records/1", 404)
    assert first.time <= second.time <= time.monotonic()
    double.reset_log()
    assert double.requests == []


# ------------------------------------------------------------------------------------------- rate limits


def test_every_answer_under_a_limit_carries_the_headers_zenodo_sends() -> None:
    recorded = {name.lower() for name in fixture("headers_legacy_2022.json")[1]["headers"]}
    assert {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= recorded
    assert "retry-after" in fixture("headers_current_2025.json")[0]["headers"]  # on a 202
    with ZenodoDouble(rate_per_min=3) as double:
        before = time.time()
        answers = [search(double) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"3"}
        reset = {int(a.headers["X-RateLimit-Reset"]) for a in answers}
        assert len(reset) == 1 and int(before) + 61 <= reset.pop() <= int(time.time()) + 61  # oldest + 60 + 1
        assert all(0 <= int(a.headers["Retry-After"]) <= 61 for a in answers)  # on the 200s too
        assert answers[-1].json() == {"message": "3 per 1 minute", "status": 429}
        assert list(answers[-1].json()) == ["message", "status"]
        assert [r.status for r in double.requests] == [200, 200, 200, 429]


def test_zenodos_own_limits_and_429_body() -> None:
    with ZenodoDouble(**ZENODO_GUEST_LIMITS) as double:
        double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
        url = f"{double.api_url}/records/1"
        answers = [get(url) for _ in range(134)]
        assert [a.status_code for a in answers[-2:]] == [200, 429]
        assert answers[-1].json() == fixture("error_rate_limit_429.json")
        assert answers[0].headers["X-RateLimit-Limit"] == "133"  # the minute limit is shown, not the hour
        searches = [search(double) for _ in range(31)]  # searches have their own 30/min, not the 133
        assert [s.status_code for s in searches[-2:]] == [200, 429]
        assert searches[0].headers["X-RateLimit-Limit"] == "30"
        assert searches[-1].json()["message"] == "30 per 1 minute"


def test_the_minute_counts_requests_the_hour_then_refuses() -> None:
    with ZenodoDouble(rate_per_min=5, rate_per_hour=3) as double:
        answers = [get(f"{double.api_url}/records/1") for _ in range(6)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429, 429, 429]
        assert [a.json()["message"] for a in answers[3:]] == ["3 per 1 hour", "3 per 1 hour", "5 per 1 minute"]
        assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["5", "5", "5", "3", "3", "5"]


def test_the_hour_can_have_a_length_of_its_own() -> None:
    """A scaled-down "hour" for tests and benchmarks of a long campaign: its own limit, label, Reset and Retry-After."""
    with ZenodoDouble(rate_per_min=10, rate_per_hour=3, rate_window_seconds=1.0, hour_window_seconds=30.0) as double:
        before = time.time()
        answers = [get(f"{double.api_url}/records/1") for _ in range(4)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["10", "10", "10", "3"]  # the minute until breached
        assert answers[-1].json() == {"message": "3 per 30 seconds", "status": 429}
        reset = int(answers[-1].headers["X-RateLimit-Reset"])
        assert int(before) + 31 <= reset <= int(time.time()) + 31  # the oldest request + 30 s + 1, epoch seconds
        assert 28 <= int(answers[-1].headers["Retry-After"]) <= 31  # the rest of the "hour", not of the minute


def test_no_retry_after_anywhere_when_asked() -> None:
    with ZenodoDouble(rate_per_min=1, send_retry_after=False) as double:
        first = search(double)
        assert first.status_code == 200 and "Retry-After" not in first.headers
        limited = search(double)
        assert limited.status_code == 429
        assert "Retry-After" not in limited.headers
        assert limited.headers["X-RateLimit-Remaining"] == "0"


def test_answers_of_429_do_not_use_up_the_window() -> None:
    with ZenodoDouble(rate_per_min=2, rate_window_seconds=1.0) as double:
        assert search(double).status_code == 200
        time.sleep(0.5)
        assert search(double).status_code == 200
        assert [search(double).status_code for _ in range(3)] == [429, 429, 429]
        time.sleep(0.55)  # the first request left the window; had the 429s counted, it would still be full
        again = search(double)
        assert again.status_code == 200
        assert again.headers["X-RateLimit-Remaining"] == "0"


def test_search_limit_replaces_the_general_one_for_searches() -> None:
    with ZenodoDouble(rate_per_min=100, search_rate_per_min=2) as limited:
        limited.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
        assert [search(limited).status_code for _ in range(3)] == [200, 200, 429]
        record = get(f"{limited.api_url}/records/1")
        assert record.status_code == 200
        assert (record.headers["X-RateLimit-Limit"], record.headers["X-RateLimit-Remaining"]) == ("100", "99")
    with ZenodoDouble(search_rate_per_min=2) as only_search:
        only_search.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
        assert "X-RateLimit-Limit" not in get(f"{only_search.api_url}/records/1").headers


def test_codeload_is_not_rate_limited() -> None:
    with ZenodoDouble(rate_per_min=1) as double:
        double.add_codeload("o", "r", "v1", make_zip({"r-v1/a.txt": b"a"}))
        url = f"{double.codeload_url}/o/r/zip/refs/tags/v1"
        assert [get(url).status_code for _ in range(3)] == [200, 200, 200]


# ---------------------------------------------------------------------------------------------- codeload


def test_codeload_tags_heads_and_404(double: ZenodoDouble) -> None:
    tag_zip = make_zip({"repo-v1.0/setup.py": b"print('hi')\n"})
    head_zip = make_zip({"repo-main/setup.py": b"print('main')\n"})
    double.add_codeload("owner", "repo", "v1.0", tag_zip)
    double.add_codeload("owner", "repo", "main", head_zip, kind="heads")
    tag = get(f"{double.codeload_url}/owner/repo/zip/refs/tags/v1.0")
    assert tag.status_code == 200
    assert tag.headers["Content-Type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(tag.content)).namelist() == ["repo-v1.0/setup.py"]
    assert get(f"{double.codeload_url}/owner/repo/zip/refs/heads/main").content == head_zip
    for missing in ("refs/tags/main", "refs/heads/v1.0", "refs/tags/v2.0"):
        assert get(f"{double.codeload_url}/owner/repo/zip/{missing}").status_code == 404
    assert get(f"{double.codeload_url}/owner/other/zip/refs/tags/v1.0").status_code == 404
    with pytest.raises(ValueError):
        double.add_codeload("owner", "repo", "x", tag_zip, kind="branches")


def test_make_zip_is_deterministic_and_sorted() -> None:
    files = {"b/x.py": b"x = 1\n", "a.txt": b"a"}
    assert make_zip(files) == make_zip(dict(reversed(files.items())))
    archive = zipfile.ZipFile(io.BytesIO(make_zip(files)))
    assert archive.namelist() == ["a.txt", "b/x.py"]
    assert archive.read("b/x.py") == b"x = 1\n"
    assert archive.getinfo("a.txt").date_time == (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------------------------------------ lifecycle


def test_stop_closes_the_port_and_open_connections() -> None:
    double = ZenodoDouble().start()
    port = urlsplit(double.api_url).port
    session = requests.Session()
    assert session.get(f"{double.api_url}/records", timeout=5).status_code == 200  # a kept-alive connection
    double.stop()
    double.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{double.api_url}/records", timeout=2)
    with pytest.raises(RuntimeError):
        double.start()


def test_stop_does_not_wait_for_slow_answers() -> None:
    double = ZenodoDouble().start()
    double.fail("/api/records", "slow", seconds=30)
    threading.Timer(0.2, double.stop).start()
    with pytest.raises(requests.exceptions.ConnectionError):  # cut off by stop(): not a ReadTimeout
        requests.get(f"{double.api_url}/records", timeout=10)


# ------------------------------------------------------------------------------------------------ deposit API

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


def test_every_deposit_fixture_loads_and_is_cited_in_sources() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    names = sorted(p.name for p in DEPOSIT.glob("*.json"))
    assert len(names) >= 12
    for name in names:
        assert deposit_fixture(name) is not None
        assert f"`deposit/{name}`" in sources, f"deposit/{name} has no entry in SOURCES.md"


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


def test_the_header_recorder_records_uploads_too() -> None:
    with HeaderRecorder(b"{}") as recorder:
        requests.put(f"{recorder.url}/files/x/a.bin", data=b"abc", headers=AUTH, timeout=5)
        requests.post(f"{recorder.url}/actions/publish", timeout=5)
        requests.delete(f"{recorder.url}/files/x/a.bin", timeout=5)
    assert [(r.method, r.path, r.authorization) for r in recorder.requests] == [
        ("PUT", "/files/x/a.bin", True), ("POST", "/actions/publish", False), ("DELETE", "/files/x/a.bin", False)]

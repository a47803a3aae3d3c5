"""The Zenodo double's records, search and files (tests/doubles/zenodo_records.py and the demo's server it extends).

They answer like the real service: checked against the recorded answers and code-derived bodies in
``tests/fixtures/zenodo`` (sources in its SOURCES.md), in every shape Zenodo has served, with codeload beside them.
Every test talks to the double with plain ``requests``, as production code does.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import zipfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from doubles import SHAPES, ZenodoDouble, make_zip
from helpers import DOUBLE_TOKEN as TOKEN
from helpers import NATIVE
from helpers import ZENODO_FIXTURES as FIXTURES
from helpers import http_get as get
from helpers import search_double as search
from helpers import zenodo_fixture as fixture

from zenodo_hpc.demo.server import LoopbackZenodo


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as running:
        yield running


def ids(response: requests.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]["hits"]]


def add_days(double: ZenodoDouble, count: int, *, first_id: int = 1) -> None:
    """``count`` software records, one per day of March 2018 onward, ids in creation order."""
    for n in range(count):
        day = f"2018-03-{n + 1:02d}" if n < 31 else f"2018-04-{n - 30:02d}"
        double.add_record(ZenodoDouble.make_hit(first_id + n, created=f"{day}T12:00:00"))


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize(("folder", "at_least"), [("", 15), ("deposit/", 12)], ids=["records", "deposit"])
def test_every_fixture_loads_and_is_cited_in_sources(folder: str, at_least: int) -> None:
    """The recorded answers of the records and search (and, in ``deposit/``, of the deposit API) load, each with
    its entry in SOURCES.md."""
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    names = sorted(p.name for p in (FIXTURES / folder).glob("*.json"))
    assert len(names) >= at_least
    for name in names:
        assert fixture(folder + name) is not None, folder + name
        assert f"`{folder}{name}`" in sources, f"{folder}{name} has no entry in SOURCES.md"


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

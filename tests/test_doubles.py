"""The Zenodo/codeload double behaves like the real services, and misbehaves exactly when told to.

Every test talks to the double with plain ``requests``, as production code does.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest
import requests

from zenodo_hpc.doubles import FAULT_MODES, ZenodoDouble, make_zip

TOKEN = "s3cr3t-t0ken-never-logged"


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


# ------------------------------------------------------------------------------------------------ search


def test_paging_follows_next_links_to_the_last_page(double: ZenodoDouble) -> None:
    add_days(double, 7)
    seen: list[int] = []
    url: str | None = f"{double.api_url}/records?type=software&size=3&sort=oldest"
    pages = 0
    while url:
        body = requests.get(url, timeout=5).json()
        assert body["hits"]["total"] == 7
        assert body["links"]["self"].startswith(double.api_url)
        seen += [hit["id"] for hit in body["hits"]["hits"]]
        url = body["links"].get("next")
        pages += 1
    assert seen == [1, 2, 3, 4, 5, 6, 7]
    assert pages == 3


def test_search_defaults_are_page_1_size_10_oldest_first(double: ZenodoDouble) -> None:
    add_days(double, 12)
    assert ids(search(double)) == list(range(1, 11))
    assert ids(search(double, page=2)) == [11, 12]
    assert ids(search(double, page=3)) == []


def test_page_size_cap_is_25_anonymous_and_100_with_a_token(double: ZenodoDouble) -> None:
    assert search(double, size=25).status_code == 200
    refused = search(double, size=26)
    assert refused.status_code == 400
    assert refused.json()["status"] == 400
    assert "25" in refused.json()["message"]
    assert search(double, token=TOKEN, size=100).status_code == 200
    assert search(double, token=TOKEN, size=101).status_code == 400
    assert [r.authenticated for r in double.requests] == [False, False, True, True]


def test_unknown_token_is_401_with_a_json_error(double: ZenodoDouble) -> None:
    response = search(double, token="not-a-known-token", size=5)
    assert response.status_code == 401
    assert response.json()["status"] == 401
    assert not double.requests[-1].authenticated


def test_results_stop_at_the_window_but_total_is_the_true_count() -> None:
    with ZenodoDouble(window=100) as double:
        add_days(double, 60)
        for n in range(61, 121):
            double.add_record(ZenodoDouble.make_hit(n, created="2019-01-01"))
        last = search(double, size=25, page=4)
        assert last.json()["hits"]["total"] == 120
        assert ids(last) == list(range(76, 101))
        assert "next" not in last.json()["links"]
        beyond = search(double, size=25, page=5)
        assert beyond.status_code == 400
        assert beyond.json()["status"] == 400


def test_date_ranges_inclusive_exclusive_and_open(double: ZenodoDouble) -> None:
    add_days(double, 10)  # record n created 2018-03-0n 12:00 UTC
    assert ids(search(double, q="created:[2018-03-03 TO 2018-03-05]")) == [3, 4]  # bare date = midnight
    assert ids(search(double, q="created:[2018-03-03 TO 2018-03-05T12:00:00]")) == [3, 4, 5]
    assert ids(search(double, q="created:[2018-03-03 TO 2018-03-05T12:00:00}")) == [3, 4]
    assert ids(search(double, q="created:{2018-03-03T12:00:00+00:00 TO 2018-03-05T12:00:00Z]")) == [4, 5]
    assert ids(search(double, q="created:[2018-03-08 TO *]")) == [8, 9, 10]
    assert ids(search(double, q="created:[* TO 2018-03-02]")) == [1]


def test_updated_ranges_and_anded_title_words(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-01", updated="2020-06-01", title="Climate Model"))
    double.add_record(ZenodoDouble.make_hit(2, created="2018-01-02", updated="2018-01-02", title="Climate data"))
    double.add_record(ZenodoDouble.make_hit(3, created="2018-01-03", updated="2021-01-01", title="Ocean model"))
    assert ids(search(double, q="updated:[2020-01-01 TO *]")) == [1, 3]
    assert ids(search(double, q="updated:[2020-01-01 TO *] AND model")) == [1, 3]
    assert ids(search(double, q="updated:[2020-01-01 TO *] climate")) == [1]
    assert ids(search(double, q="CLIMATE NOT data")) == [1]
    assert ids(search(double, q="created:[2018-01-02 TO *] AND updated:[* TO 2020-12-31]")) == [2]


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
    assert ids(search(double)) == [1, 2]


def test_all_versions_false_keeps_the_highest_id_per_concept(double: ZenodoDouble) -> None:
    for record_id, day in ((10, "01"), (12, "03"), (11, "02")):
        double.add_record(ZenodoDouble.make_hit(record_id, created=f"2018-05-{day}", conceptrecid="9"))
    double.add_record(ZenodoDouble.make_hit(20, created="2018-05-04"))
    assert ids(search(double)) == [12, 20]
    assert ids(search(double, all_versions="0")) == [12, 20]
    assert ids(search(double, all_versions="false")) == [12, 20]
    assert ids(search(double, all_versions="true")) == [10, 11, 12, 20]
    assert ids(search(double, all_versions=1)) == [10, 11, 12, 20]
    # The latest version decides: an older version matching the filter is not returned in its place.
    assert ids(search(double, q="created:[* TO 2018-05-02]")) == []


def test_sort_orders(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(3, created="2018-01-02"))
    double.add_record(ZenodoDouble.make_hit(1, created="2018-01-02"))
    double.add_record(ZenodoDouble.make_hit(2, created="2018-01-01"))
    ascending = [2, 1, 3]  # created, then id
    assert ids(search(double)) == ascending
    assert ids(search(double, sort="oldest")) == ascending
    assert ids(search(double, sort="-mostrecent")) == ascending
    assert ids(search(double, sort="newest")) == ascending[::-1]
    assert ids(search(double, sort="mostrecent")) == ascending[::-1]
    assert search(double, sort="bestest").status_code == 400


def test_bad_paging_parameters_are_json_400s(double: ZenodoDouble) -> None:
    for params in ({"size": "ten"}, {"page": 0}, {"all_versions": "maybe"}):
        response = search(double, **params)
        assert response.status_code == 400
        assert set(response.json()) == {"status", "message"}


def test_one_record_by_id_and_404(double: ZenodoDouble) -> None:
    stored = double.add_record(ZenodoDouble.make_hit(7, created="2018-01-01", github=("o", "r", "v1.0")))
    response = requests.get(f"{double.api_url}/records/7", timeout=5)
    assert response.json() == stored
    assert stored["metadata"]["related_identifiers"][0]["identifier"] == "https://github.com/o/r/tree/v1.0"
    missing = requests.get(f"{double.api_url}/records/8", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["status"] == 404


def test_make_hit_writes_zenodo_timestamps() -> None:
    hit = ZenodoDouble.make_hit(5, created="2018-03-01T12:00:00")
    assert hit["created"] == "2018-03-01T12:00:00.000000+00:00"
    assert hit["updated"] == hit["created"]
    assert ZenodoDouble.make_hit(5, created="2018-03-01")["created"] == "2018-03-01T00:00:00.000000+00:00"
    assert hit["conceptrecid"] == "5"
    assert isinstance(hit["id"], int)
    assert hit["metadata"]["resource_type"]["type"] == "software"


# ------------------------------------------------------------------------------------------------- files


def test_files_are_served_with_their_md5_in_the_current_shape(double: ZenodoDouble) -> None:
    data = make_zip({"pkg-1.0/README.md": b"# hello\n"})
    hit = double.add_record(ZenodoDouble.make_hit(5, created="2018-01-01"), {"owner/pkg-v1.0.zip": data})
    (entry,) = hit["files"]
    assert entry["key"] == "owner/pkg-v1.0.zip"
    assert entry["size"] == len(data)
    assert entry["checksum"] == "md5:" + hashlib.md5(data).hexdigest()
    assert entry["links"]["self"] == f"{double.api_url}/records/5/files/owner/pkg-v1.0.zip/content"
    response = requests.get(entry["links"]["self"], timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Length"] == str(len(data))
    assert response.content == data
    assert ids(search(double)) == [5]
    assert search(double).json()["hits"]["hits"][0]["files"] == [entry]


def test_keys_with_slashes_work_quoted_and_unquoted(double: ZenodoDouble) -> None:
    double.add_record(ZenodoDouble.make_hit(5, created="2018-01-01"), {"owner/my pkg.zip": b"abc"})
    for key in ("owner/my%20pkg.zip", quote("owner/my pkg.zip", safe="")):
        response = requests.get(f"{double.api_url}/records/5/files/{key}/content", timeout=5)
        assert response.content == b"abc"
    assert requests.get(f"{double.api_url}/records/5/files/other.zip/content", timeout=5).status_code == 404


def test_legacy_file_shape_is_served_too(double: ZenodoDouble) -> None:
    data = b"legacy bytes" * 10
    hit = double.add_record(ZenodoDouble.make_hit(6, created="2018-01-01"), {"code.tar.gz": data}, legacy=True)
    (entry,) = hit["files"]
    assert set(entry) == {"filename", "filesize", "checksum", "links"}
    assert entry["filename"] == "code.tar.gz"
    assert entry["filesize"] == len(data)
    assert entry["checksum"] == hashlib.md5(data).hexdigest()
    assert set(entry["links"]) == {"download"}
    assert requests.get(entry["links"]["download"], timeout=5).content == data


def test_checksum_override_serves_a_wrong_md5(double: ZenodoDouble) -> None:
    wrong = "0" * 32
    files = {"a.zip": b"aaa", "b.zip": b"bbb"}
    hit = double.add_record(ZenodoDouble.make_hit(7, created="2018-01-01"), files, checksums={"a.zip": wrong})
    served = {entry["key"]: entry["checksum"] for entry in hit["files"]}
    assert served == {"a.zip": f"md5:{wrong}", "b.zip": "md5:" + hashlib.md5(b"bbb").hexdigest()}
    legacy = double.add_record(ZenodoDouble.make_hit(8, created="2018-01-01"), files, legacy=True,
                               checksums={"b.zip": f"md5:{wrong}"})
    assert {entry["filename"]: entry["checksum"] for entry in legacy["files"]}["b.zip"] == wrong
    with pytest.raises(ValueError, match="c.zip"):
        double.add_record(ZenodoDouble.make_hit(9, created="2018-01-01"), files, checksums={"c.zip": wrong})


# ------------------------------------------------------------------------------------------------ faults


@pytest.fixture
def file_url(double: ZenodoDouble) -> str:
    hit = double.add_record(ZenodoDouble.make_hit(5, created="2018-01-01"), {"x.zip": bytes(range(256)) * 40})
    return hit["files"][0]["links"]["self"]


@pytest.mark.parametrize("mode", ["500", "502", "503", "404"])
def test_status_faults_hit_the_next_requests_then_stop(double: ZenodoDouble, file_url: str, mode: str) -> None:
    double.fail(path_of(file_url), mode, times=2)
    assert [requests.get(file_url, timeout=5).status_code for _ in range(3)] == [int(mode), int(mode), 200]
    assert [r.fault for r in double.requests] == [mode, mode, None]


def test_faults_for_a_path_queue_in_order(double: ZenodoDouble, file_url: str) -> None:
    double.fail(file_url, "503")  # a full URL is accepted too
    double.fail(path_of(file_url), "html")
    first, second, third = (requests.get(file_url, timeout=5) for _ in range(3))
    assert first.status_code == 503
    assert second.status_code == 200
    assert second.headers["Content-Type"].startswith("text/html")
    assert second.text.lstrip().startswith("<!DOCTYPE html>")
    assert third.headers["Content-Type"] == "application/octet-stream"


def test_truncated_body_raises_chunked_encoding_error(double: ZenodoDouble, file_url: str) -> None:
    full = requests.get(file_url, timeout=5).content
    double.fail(path_of(file_url), "truncate", times=2)
    with requests.get(file_url, stream=True, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(full))  # the full length is promised...
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
            b"".join(response.iter_content(chunk_size=1024))  # ...but half arrives
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(file_url, timeout=5)  # not streamed: the same error, raised by get() itself
    assert read_streamed(file_url) == full


def test_slow_answer_waits_then_answers(double: ZenodoDouble, file_url: str) -> None:
    double.fail(path_of(file_url), "slow", seconds=0.3)
    started = time.monotonic()
    assert requests.get(file_url, timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3
    double.fail(path_of(file_url), "slow", seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(file_url, timeout=0.2)


def test_redirect_loop_raises_too_many_redirects_then_recovers(double: ZenodoDouble, file_url: str) -> None:
    double.fail(path_of(file_url), "redirect_loop")
    with pytest.raises(requests.exceptions.TooManyRedirects):
        requests.get(file_url, timeout=5)
    assert all(r.status == 302 and r.path == path_of(file_url) for r in double.requests)
    assert len(double.requests) == 31  # requests gives up after 30 redirects
    assert requests.get(file_url, timeout=5).status_code == 200


def test_reset_closes_without_an_answer(double: ZenodoDouble, file_url: str) -> None:
    double.fail(path_of(file_url), "reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(file_url, timeout=5)
    assert double.requests[-1].status == 0
    assert double.requests[-1].fault == "reset"
    assert requests.get(file_url, timeout=5).status_code == 200


def test_faults_apply_to_search_too(double: ZenodoDouble) -> None:
    double.fail("/api/records", "502")
    assert search(double).status_code == 502
    assert search(double).status_code == 200


def test_fail_rejects_unknown_modes_and_options(double: ZenodoDouble) -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        double.fail("/api/records", "teapot")
    with pytest.raises(ValueError, match="takes no option"):
        double.fail("/api/records", "500", seconds=1)
    with pytest.raises(ValueError):
        double.fail("/api/records", "500", times=0)
    assert set(FAULT_MODES) == {"500", "502", "503", "404", "truncate", "slow", "html", "redirect_loop", "reset"}


# ------------------------------------------------------------------------------------------- rate limits


def test_rate_limit_counts_down_then_429_with_retry_after() -> None:
    with ZenodoDouble(rate_per_min=3) as double:
        answers = [search(double) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"3"}
        reset = int(answers[0].headers["X-RateLimit-Reset"])
        assert time.time() + 55 < reset <= time.time() + 61
        limited = answers[-1]
        assert limited.json()["status"] == 429
        assert 55 <= int(limited.headers["Retry-After"]) <= 60
        assert [r.status for r in double.requests] == [200, 200, 200, 429]


def test_429_without_retry_after_when_asked() -> None:
    with ZenodoDouble(rate_per_min=1, send_retry_after=False) as double:
        assert search(double).status_code == 200
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


def test_search_rate_limits_searches_only() -> None:
    with ZenodoDouble(search_rate_per_min=2) as limited:
        limited.add_record(ZenodoDouble.make_hit(1, created="2018-01-01"))
        assert [search(limited).status_code for _ in range(3)] == [200, 200, 429]
        record = requests.get(f"{limited.api_url}/records/1", timeout=5)
        assert record.status_code == 200
        assert "X-RateLimit-Limit" not in record.headers  # no limit applies to record reads here


def test_codeload_is_not_rate_limited() -> None:
    with ZenodoDouble(rate_per_min=1) as double:
        double.add_codeload("o", "r", "v1", make_zip({"r-v1/a.txt": b"a"}))
        url = f"{double.codeload_url}/o/r/zip/refs/tags/v1"
        assert [requests.get(url, timeout=5).status_code for _ in range(3)] == [200, 200, 200]


# ---------------------------------------------------------------------------------------------- codeload


def test_codeload_tags_heads_and_404(double: ZenodoDouble) -> None:
    tag_zip = make_zip({"repo-v1.0/setup.py": b"print('hi')\n"})
    head_zip = make_zip({"repo-main/setup.py": b"print('main')\n"})
    double.add_codeload("owner", "repo", "v1.0", tag_zip)
    double.add_codeload("owner", "repo", "main", head_zip, kind="heads")
    tag = requests.get(f"{double.codeload_url}/owner/repo/zip/refs/tags/v1.0", timeout=5)
    assert tag.status_code == 200
    assert tag.headers["Content-Type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(tag.content)).namelist() == ["repo-v1.0/setup.py"]
    assert requests.get(f"{double.codeload_url}/owner/repo/zip/refs/heads/main", timeout=5).content == head_zip
    for missing in ("refs/tags/main", "refs/heads/v1.0", "refs/tags/v2.0"):
        assert requests.get(f"{double.codeload_url}/owner/repo/zip/{missing}", timeout=5).status_code == 404
    assert requests.get(f"{double.codeload_url}/owner/other/zip/refs/tags/v1.0", timeout=5).status_code == 404
    with pytest.raises(ValueError):
        double.add_codeload("owner", "repo", "x", tag_zip, kind="branches")


def test_make_zip_is_deterministic_and_sorted() -> None:
    files = {"b/x.py": b"x = 1\n", "a.txt": b"a"}
    assert make_zip(files) == make_zip(dict(reversed(files.items())))
    archive = zipfile.ZipFile(io.BytesIO(make_zip(files)))
    assert archive.namelist() == ["a.txt", "b/x.py"]
    assert archive.read("b/x.py") == b"x = 1\n"
    assert archive.getinfo("a.txt").date_time == (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------------------------- log and lifecycle


def test_the_log_never_holds_the_token(double: ZenodoDouble) -> None:
    search(double, token=TOKEN, size=50)
    requests.get(f"{double.api_url}/records", params={"access_token": TOKEN, "size": 50}, timeout=5)
    search(double, token=TOKEN + "x")
    assert [(r.status, r.authenticated) for r in double.requests] == [(200, True), (200, True), (401, False)]
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
    started = time.monotonic()
    threading.Timer(0.2, double.stop).start()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{double.api_url}/records", timeout=5)
    assert time.monotonic() - started < 3

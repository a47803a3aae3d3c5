"""The whole Zenodo double (tests/doubles/zenodo.py) misbehaves exactly when told to: faults, rate limits, its log.

Faults on any URL (status codes, truncated, slow, trickled and reset answers, redirects), Zenodo's rate limits and
their headers (as recorded in ``tests/fixtures/zenodo``), a request log that never holds the token, and a server
that stops at once. Every test talks to the double with plain ``requests`` (or a raw socket), as production code does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from doubles import FAULT_MODES, ZENODO_GUEST_LIMITS, HeaderRecorder, ZenodoDouble, make_zip
from helpers import DOUBLE_TOKEN as TOKEN
from helpers import NATIVE
from helpers import http_get as get
from helpers import search_double as search
from helpers import zenodo_fixture as fixture


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as running:
        yield running


def path_of(url: str) -> str:
    return urlsplit(url).path


def read_streamed(url: str) -> bytes:
    with requests.get(url, stream=True, timeout=5) as response:
        return b"".join(response.iter_content(chunk_size=64))


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

"""The polite client: even spacing, 429 with and without Retry-After, quota headers, retries, timeouts."""

from __future__ import annotations

import random

import pytest

from zenodo_hpc.demo.doubles import ZenodoDouble
from zenodo_hpc.zenodo.client import (
    HttpClient,
    RateLimiter,
    RequestFailed,
    backoff_delay,
    quota_exhausted_seconds,
    retry_after_seconds,
    share_of_budget,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limiter_spaces_requests_evenly_without_bursts() -> None:
    fake = FakeClock()
    limiter = RateLimiter(30, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        limiter.acquire()
    assert fake.slept == [2.0, 2.0, 2.0, 2.0]  # the first goes at once, then one every 60/30 s
    fake.now += 10  # idle time is not saved up into a burst
    limiter.acquire()
    limiter.acquire()
    assert fake.slept[-1] == 2.0


def test_limiter_can_be_held_by_the_server() -> None:
    fake = FakeClock()
    limiter = RateLimiter(600, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    limiter.hold_until(fake.now + 7)
    assert limiter.acquire() == pytest.approx(7)


def test_budget_is_shared_between_concurrent_workers() -> None:
    assert share_of_budget(60, 4) == 15
    assert share_of_budget(60, 0) == 60


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, base=1, cap=30, rng=rng) for a in range(12) for _ in range(50)]
    assert all(0.5 <= d <= 30 for d in delays)
    assert max(backoff_delay(1, base=1, cap=30, rng=rng) for _ in range(200)) <= 2
    assert len({round(d, 3) for d in delays}) > 100  # jittered, not lock-step


def test_server_hints_are_parsed() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470) == 10
    assert retry_after_seconds({}) is None and retry_after_seconds({"Retry-After": "soon"}) is None
    now = 1_700_000_000  # Zenodo sends X-RateLimit-Reset in epoch seconds
    assert quota_exhausted_seconds({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(now + 10)}, now=now) == 10
    assert quota_exhausted_seconds({"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": str(now + 10)}, now=now) is None
    assert quota_exhausted_seconds({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"}, now=now) == 7  # seconds
    # absurd answers are reported as they are (the client refuses to wait that long, see below), never capped quietly
    assert retry_after_seconds({"Retry-After": "1000000000"}) == 1e9
    assert retry_after_seconds({"Retry-After": "9" * 40}) == float("inf")
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 2099 00:00:00 GMT"}, now=now) > 2e9


@pytest.mark.parametrize("retry_after", [True, False])
def test_429_is_waited_out_and_never_fails_the_request(retry_after: bool) -> None:
    with ZenodoDouble(rate_per_min=3, rate_window_seconds=1.0, send_retry_after=retry_after) as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        url = f"{zenodo.api_url}/records/1"
        other = HttpClient(per_minute=6000, retries=0)  # another worker that used the quota up
        for _ in range(3):
            assert other.get(url).status_code == 200
        client = HttpClient(per_minute=6000, retries=0)  # has not seen the quota headers: gets 429s
        assert [client.get(url).status_code for _ in range(3)] == [200] * 3
        assert client.stats.throttled >= 1
        assert len([r for r in zenodo.requests if r.status == 429]) == client.stats.throttled


def test_quota_headers_hold_the_next_request() -> None:
    with ZenodoDouble(rate_per_min=2, rate_window_seconds=1.0) as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        client = HttpClient(per_minute=6000, retries=0)
        for _ in range(4):
            assert client.get(f"{zenodo.api_url}/records/1").status_code == 200
        # Remaining hit 0 after the second request: the client waited for Reset instead of earning a 429
        assert [r.status for r in zenodo.requests] == [200] * 4


def test_5xx_bursts_are_retried_then_reported_with_a_reason() -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        url = f"{zenodo.api_url}/records/1"
        zenodo.fail("/api/records/1", "503", times=2)
        client = HttpClient(per_minute=6000, retries=2, sleep=lambda s: None)
        client.limiter = RateLimiter(6000, sleep=lambda s: None)
        assert client.get(url).status_code == 200
        zenodo.fail("/api/records/1", "502", times=3)
        with pytest.raises(RequestFailed, match="HTTP 502 after 3 tries") as info:
            client.get(url)
        assert info.value.reason == "http_502"


def test_404_is_returned_for_the_caller_to_judge() -> None:
    with ZenodoDouble() as zenodo:
        client = HttpClient(per_minute=6000, retries=3)
        assert client.get(f"{zenodo.api_url}/records/77").status_code == 404
        assert len(zenodo.requests) == 1


def test_slow_answer_times_out_and_is_retried() -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        zenodo.fail("/api/records/1", "slow", seconds=1.5)
        client = HttpClient(per_minute=6000, retries=1, timeout_s=0.5)
        client.limiter = RateLimiter(6000, sleep=lambda s: None)
        assert client.get(f"{zenodo.api_url}/records/1").status_code == 200
        assert [r.fault for r in zenodo.requests] == ["slow", None]  # timed out once, then answered


def test_redirect_loop_and_refused_connection_have_reasons() -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        zenodo.fail("/api/records/1", "redirect_loop")
        client = HttpClient(per_minute=6000, retries=0)
        with pytest.raises(RequestFailed) as info:
            client.get(f"{zenodo.api_url}/records/1")
        assert info.value.reason == "redirect_loop"
    with pytest.raises(RequestFailed, match="cannot reach http://127.0.0.1:9") as info:
        HttpClient(per_minute=6000, retries=0).get("http://127.0.0.1:9/api/records")
    assert info.value.reason == "connection_error"


def test_token_goes_in_the_header_only() -> None:
    with ZenodoDouble(tokens=["tok"]) as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        client = HttpClient(per_minute=6000, token="tok", token_url=zenodo.api_url)
        response = client.get(f"{zenodo.api_url}/records/1")
        assert "tok" not in response.url and zenodo.requests[0].authenticated


def test_our_own_slow_spacing_is_never_refused_as_a_long_wait() -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        waits: list[float] = []
        client = HttpClient(per_minute=0.5, max_wait_s=1, sleep=waits.append)  # a tiny share: 120 s apart
        assert [client.get(f"{zenodo.api_url}/records/1").status_code for _ in range(2)] == [200, 200]
        assert waits and waits[-1] > 100  # it waited its turn instead of failing


def test_accept_header_only_when_asked() -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        client = HttpClient(per_minute=6000)
        client.get(f"{zenodo.api_url}/records/1", accept="application/json")
        client.get(f"{zenodo.api_url}/records/1")
        assert [r.accept for r in zenodo.requests] == ["application/json", "*/*"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "relative/x.zip", "http://[invalid"])
def test_links_that_are_not_http_fail_with_bad_link(url: str) -> None:
    with pytest.raises(RequestFailed) as info:
        HttpClient(per_minute=6000, retries=0).get(url)
    assert info.value.reason == "bad_link"

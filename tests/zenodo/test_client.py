"""The polite client: even spacing in both windows, 429 with and without Retry-After, quota headers, retries."""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
from doubles import ZenodoDouble, make_zip
from helpers import run_config, stdlib_records

from zenodo_hpc.core.config import GUEST_BUDGET, TOKEN_BUDGET, Config, RequestBudget, config_from_dict
from zenodo_hpc.core.state import ids_in, open_run
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.client import (
    PACE,
    HttpClient,
    RateLimiter,
    RequestFailed,
    backoff_delay,
    quota_exhausted_seconds,
    retry_after_seconds,
    share_of_budget,
    spread_s,
)
from zenodo_hpc.zenodo.fetch import download_client
from zenodo_hpc.zenodo.harvest import harvest


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
    # one every 60/30 s, the first too: a task that replaces one that just ended adds no request to its slot
    assert fake.slept == [pytest.approx(2.0 / PACE)] * 5  # PACE: a hair under the budget, off the window's edge
    fake.now += 10  # idle time is not saved up into a burst
    limiter.acquire()
    limiter.acquire()
    assert fake.slept[-1] == pytest.approx(2.0 / PACE)


@pytest.mark.parametrize(("per_minute", "per_hour", "interval"), [(60, 1800, 2.0), (60, 7200, 1.0), (60, None, 1.0)])
def test_limiter_paces_at_the_tightest_window(per_minute: float, per_hour: float | None, interval: float) -> None:
    fake = FakeClock()
    limiter = RateLimiter(per_minute, per_hour=per_hour, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        limiter.acquire()
    assert fake.slept == [pytest.approx(interval / PACE)] * 3


def test_limiter_can_be_held_by_the_server() -> None:
    fake = FakeClock()
    limiter = RateLimiter(600, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    limiter.hold_until(fake.now + 7)
    assert limiter.acquire() == pytest.approx(7)


def test_budget_is_shared_between_concurrent_workers() -> None:
    assert share_of_budget(60, 4) == 15
    assert share_of_budget(60, 0) == 60


@pytest.mark.parametrize(("token", "interval"), [(None, 3600 / (2000 / 4)), ("tok", 3600 / (5000 / 4))])
def test_unset_budgets_are_zenodos_published_limits_for_a_guest_or_a_token(
        monkeypatch: pytest.MonkeyPatch, token: str | None, interval: float) -> None:
    # developers.zenodo.org: guests 60 a minute and 2,000 an hour, a token 100 and 5,000: the hour is the tighter
    if token:
        monkeypatch.setenv("ZENODO_TOKEN", token)
    else:
        monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    cfg = Config()
    assert (cfg.zenodo.rate_limit_per_min, cfg.zenodo.rate_limit_per_hour) == (None, None)  # loading reads no token
    client = download_client(cfg, concurrent=4)
    assert (client.limiter.interval, client.workers) == (pytest.approx(interval / PACE), 4)
    assert cfg.zenodo.request_budget(has_token=bool(token)) == (TOKEN_BUDGET if token else GUEST_BUDGET)
    set_keys = config_from_dict({"zenodo": {"rate_limit_per_min": 10, "rate_limit_per_hour": 6000}})
    assert set_keys.zenodo.request_budget(has_token=bool(token)) == RequestBudget(per_minute=10, per_hour=6000)
    assert download_client(set_keys, concurrent=2).limiter.interval == pytest.approx(60 / 5 / PACE)


def test_workers_sharing_both_windows_never_run_into_the_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zenodo's two windows scaled down: a 1 s "minute" of 30 and a 4 s "hour" of 40 (10 a second, the tighter).
    Four workers take shards of 4 records, each shard with a new client and its share (as the local executor's
    worker processes do). Pacing by the minute alone spends the hour's 40 in its first 1.4 s; every request then
    earns a 429 whose Retry-After (about 3 s, most of the "hour") is above max_wait_s: rate_limited."""
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    minute, hour, workers, records = 1.0, 4.0, 4, 48
    with ZenodoDouble(rate_per_min=30, rate_per_hour=40, rate_window_seconds=minute,
                      hour_window_seconds=hour) as zenodo:
        urls = []
        for i in range(1, records + 1):
            hit = zenodo.add_record(ZenodoDouble.make_hit(i, created="2020-01-01"), {"a.zip": make_zip({"a.py": b"1"})})
            urls.append(hit["files"][0]["links"]["self"])
        cfg = config_from_dict({"zenodo": {"api_url": zenodo.api_url, "rate_limit_per_min": 30 * 60 / minute,
                                           "rate_limit_per_hour": 40 * 3600 / hour, "max_wait_s": 1.5, "retries": 0}})
        shards = [urls[i:i + 4] for i in range(0, records, 4)]
        failed: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not shards:
                        return
                    shard = shards.pop()
                with download_client(cfg, concurrent=workers) as client:
                    for url in shard:
                        try:
                            client.get(url).close()
                        except RequestFailed as exc:
                            failed.append(exc.reason)

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = Counter(r.status for r in zenodo.requests)
    assert failed == [] and statuses[200] == records
    # a stray 429 at a window's edge (a loaded machine's jitter) is waited out, a short Retry-After: never a cliff
    assert statuses[429] <= workers


def test_what_the_server_says_is_left_is_spread_among_the_workers() -> None:
    with ZenodoDouble(rate_per_min=20) as zenodo:  # a real 60 s window, of which someone else used half
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2020-01-01"))
        url = f"{zenodo.api_url}/records/1"
        for _ in range(10):
            assert requests.get(url, timeout=5).status_code == 200
        waits: list[float] = []
        client = HttpClient(per_minute=6000, workers=2, sleep=waits.append)  # a share far above what is left
        assert client.get(url).headers["X-RateLimit-Remaining"] == "9"
        client.get(url)
        # 9 left until the window's oldest request expires (about 61 s, Reset in epoch seconds), for 2 workers:
        # this one's next request waits about 61 * 2 / 9 s instead of its own 0.01 s
        assert 12 < waits[-1] <= 61 * 2 / 9 + 0.1
        assert [r.status for r in zenodo.requests] == [200] * 12


def test_fewer_left_than_workers_waits_for_the_reset_at_most() -> None:
    assert spread_s(remaining=2, until_reset=30, workers=4) == 30
    assert spread_s(remaining=40, until_reset=30, workers=4) == 3
    assert spread_s(remaining=0, until_reset=30, workers=1) == 30


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
        for _ in range(3):  # someone else on the same address used the quota up
            assert requests.get(url, timeout=5).status_code == 200
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


def test_worker_processes_sharing_both_windows_do_every_record_in_one_round(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through the local executor's worker processes (a process, and a client, per shard of 8 records;
    2 at once, each told so): a 1 s "minute" of 30 and a 3 s "hour" of 6 hold 16 downloads back, and
    ``max_wait_s`` is below the hour's reset, as a real hour's is above 600 s. Every record is done in the one
    round, none failed for the budget. Keeping to the minute alone, the hour ran out after 6 downloads and the
    other 10 records failed as ``rate_limited``."""
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    with ZenodoDouble(rate_per_min=30, rate_per_hour=6, rate_window_seconds=1.0, hour_window_seconds=3.0,
                      search_rate_per_min=10_000) as double:
        for i, (top, files) in enumerate(stdlib_records(16, files_per_record=2), 1):
            double.add_record(ZenodoDouble.make_hit(100 + i, created=f"2016-03-{i:02d}", title=top),
                              {f"{top}.zip": make_zip(files)})
        data = run_config(tmp_path, double, records_per_shard=8, local={"workers": 2}).to_dict()
        data["zenodo"].update(rate_limit_per_min=30 * 60, rate_limit_per_hour=6 * 3600 / 3, max_wait_s=1)
        cfg = config_from_dict(data)
        run = open_run(cfg)
        harvest(cfg, progress=False)
        submit_pending(run, cfg, kind="local")
        statuses = Counter(r.status for r in double.requests)
    assert len(ids_in(run, "done")) == 16 and ids_in(run, "failed") == set()
    assert statuses[429] <= 2  # at most a stray one per worker at a window's edge, waited out

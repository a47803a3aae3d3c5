"""Zenodo's two windows: a campaign longer than the hour, several workers sharing one budget (issue 20).

A Zenodo double limits ``/api`` requests twice, as Zenodo does (Flask-Limiter's moving windows, the real
``X-RateLimit-*`` headers, 429 with ``Retry-After``): Zenodo's published guest limits, 60 a minute and 2,000
an hour, with time scaled down by ``--scale`` (60: a 1 s "minute" and a 60 s "hour"). P workers (threads) take
shards of records, each shard with a new client and its share of the budget, as the executor's tasks do, and
download every record's archive. ``zenodo.max_wait_s`` is scaled too (600 s -> 10 s): a 429 asking for longer
fails the record with ``rate_limited``, as on Zenodo when the hour is used up.

Measured in the same run:

- zenodo-hpc: ``download_client(cfg, P)``, the tighter of the minute's and the hour's shares, the headers;
- the baseline: the pacing before issue 20, the minute's share only (``rate_limit_per_min / P``; the first
  request at once; only ``X-RateLimit-Remaining: 0`` obeyed).

Reported: run time against the floor (downloads / the tightest budget: N / (2,000 per "hour")), the
utilization (floor / time), 429 answers, records downloaded and failed. Targets: every record downloaded,
no 429 beyond a few, utilization >= 0.9.

    python benchmarks/bench_budget.py [--records 3000] [--workers 8] [--scale 60]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests
from _common import machine_line
from doubles import ZenodoDouble, make_zip

from zenodo_hpc.core.config import GUEST_BUDGET, Config, config_from_dict
from zenodo_hpc.zenodo.client import HttpClient, RequestFailed, quota, share_of_budget
from zenodo_hpc.zenodo.fetch import download_client

SHARD = 25  # records per task: each task builds its own client, as a worker process does


class MinuteOnlyClient(HttpClient):
    """The pacing before issue 20: the minute's share only, the first request at once, and of the headers only
    ``X-RateLimit-Remaining: 0`` (wait for the reset)."""

    def __init__(self, cfg: Config, workers: int) -> None:
        super().__init__(per_minute=share_of_budget(GUEST_BUDGET.per_minute * cfg_scale(cfg), workers),
                         retries=cfg.zenodo.retries, max_wait_s=cfg.zenodo.max_wait_s, timeout_s=cfg.fetch.timeout_s)
        self.limiter._next = 0.0  # the old limiter's first slot was free

    def _obey_quota_headers(self, response: requests.Response) -> None:
        found = quota(response.headers)
        if found is not None and found[0] == 0:
            self._hold_for_reset(found[1])


def cfg_scale(cfg: Config) -> float:
    """How much faster than Zenodo's the config's budget runs (its per-minute budget over the guest's)."""
    assert cfg.zenodo.rate_limit_per_min is not None
    return cfg.zenodo.rate_limit_per_min / GUEST_BUDGET.per_minute


def make_double(records: int, scale: float) -> tuple[ZenodoDouble, list[str]]:
    double = ZenodoDouble(rate_per_min=GUEST_BUDGET.per_minute, rate_per_hour=GUEST_BUDGET.per_hour,
                          rate_window_seconds=60 / scale, hour_window_seconds=3600 / scale)
    urls = []
    for i in range(1, records + 1):
        hit = double.add_record(ZenodoDouble.make_hit(i, created="2020-01-01"),
                                {f"r{i}.zip": make_zip({f"r{i}/main.py": f"print({i})\n".encode()})})
        urls.append(hit["files"][0]["links"]["self"])
    return double.start(), urls


def run(make_client: Callable[[], HttpClient], urls: list[str], workers: int) -> tuple[float, Counter[str]]:
    """``workers`` threads download ``urls`` in shards, a new client per shard; the seconds taken, and the outcomes."""
    shards = [urls[i:i + SHARD] for i in range(0, len(urls), SHARD)]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not shards:
                    return
                shard = shards.pop(0)
            with make_client() as client:
                for url in shard:
                    try:
                        client.get(url).close()
                        outcome = "done"
                    except RequestFailed as exc:
                        outcome = exc.reason
                    with lock:
                        outcomes[outcome] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, outcomes


def measure(name: str, client_for: Callable[[Config], HttpClient], records: int, workers: int,
            scale: float) -> dict[str, Any]:
    double, urls = make_double(records, scale)
    cfg = config_from_dict({"zenodo": {
        "api_url": double.api_url, "rate_limit_per_min": GUEST_BUDGET.per_minute * scale,
        "rate_limit_per_hour": GUEST_BUDGET.per_hour * scale, "max_wait_s": 600 / scale, "retries": 3}})
    try:
        elapsed, outcomes = run(lambda: client_for(cfg), urls, workers)
    finally:
        double.stop()
    statuses = Counter(r.status for r in double.requests)
    floor = records / (GUEST_BUDGET.per_hour * scale / 3600)
    return {"name": name, "elapsed": elapsed, "floor": floor, "utilization": floor / elapsed,
            "throttled": statuses[429], "done": outcomes.pop("done", 0), "failed": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3000, help="downloads, more than the hour's 2,000")
    parser.add_argument("--workers", type=int, default=8, help="P: workers sharing the budget")
    parser.add_argument("--scale", type=float, default=60, help="time runs this much faster than on Zenodo")
    args = parser.parse_args()
    print(machine_line())
    print(f"{args.records} downloads, {args.workers} workers (a new client every {SHARD} records), Zenodo's guest "
          f"limits 60/min and 2,000/h with time x{args.scale:g}: a {60 / args.scale:g} s minute, a "
          f"{3600 / args.scale:g} s hour; max_wait_s {600 / args.scale:g} s")
    results = [
        measure("zenodo-hpc (both windows)", lambda cfg: download_client(cfg, args.workers), args.records,
                args.workers, args.scale),
        measure("minute only (baseline)", lambda cfg: MinuteOnlyClient(cfg, args.workers), args.records,
                args.workers, args.scale),
    ]
    for r in results:
        failed = ", ".join(f"{reason} {n}" for reason, n in r["failed"].most_common()) or "none"
        use = f"{r['utilization']:.2f}" if r["done"] == args.records else "- (records lost)"
        print(f"{r['name']:26s}: {r['done']:5d} downloaded in {r['elapsed']:6.1f} s, floor {r['floor']:.1f} s, "
              f"utilization {use}, {r['throttled']:5d} answered 429; failed: {failed}")
    ours = results[0]
    ok = ours["done"] == args.records and ours["throttled"] <= args.workers and ours["utilization"] >= 0.9
    print(f"target: every record, at most {args.workers} 429s, utilization >= 0.9: {'PASS' if ok else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()

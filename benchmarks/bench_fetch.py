"""Rate-limit discipline: four concurrent fetchers against a Zenodo double limited to R requests/minute.

Each fetcher is a zenodo-hpc client with its share of the run's budget (R/4 per minute), downloading
records' archives from the double (a real HTTP server on 127.0.0.1 that answers 429 over R requests in
any 60 s). Baseline, measured in the same run: four naive fetchers (plain requests.get in a loop, no
spacing, no Retry-After, as the 2018 scripts did) for the same time; every 429 they get is a record lost.
Both run for less than the 60 s window, so the naive burst shows as a rate above R and as 429s.
Reported: the achieved request rate as a fraction of R, 429 answers received, records lost.
Target: >= 0.9 R and no record lost to 429.

    python benchmarks/bench_fetch.py [--rate 240] [--seconds 50]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
from pathlib import Path

import requests
from _common import machine_line
from doubles import ZenodoDouble, make_zip

from zenodo_hpc.core.config import Config
from zenodo_hpc.zenodo.client import HttpClient, share_of_budget
from zenodo_hpc.zenodo.fetch import FetchFailed, download, zenodo_archives

FETCHERS = 4


def make_double(rate: float, records: int) -> tuple[ZenodoDouble, list[dict]]:
    double = ZenodoDouble(rate_per_min=rate)
    hits = [double.add_record(ZenodoDouble.make_hit(i, created="2020-01-01"),
                              {f"r{i}.zip": make_zip({f"r{i}/main.py": f"print({i})\n".encode()})})
            for i in range(1, records + 1)]
    return double.start(), hits


def run_polite(rate: float, seconds: float, folder: Path) -> dict:
    double, hits = make_double(rate, records=int(rate * seconds / 60) + 50)
    queue = list(hits)
    lock = threading.Lock()
    done: list[int] = []
    failed: list[str] = []
    cfg = Config()
    deadline = time.monotonic() + seconds

    def fetcher(index: int) -> None:
        client = HttpClient(per_minute=share_of_budget(rate, FETCHERS), retries=3)
        while time.monotonic() < deadline:
            with lock:
                if not queue:
                    return
                hit = queue.pop(0)
            try:
                download(client, zenodo_archives(hit)[0], folder / str(index), cfg)
                done.append(hit["id"])
            except FetchFailed as exc:
                failed.append(exc.reason)

    elapsed = run_fetchers(fetcher)
    double.stop()
    return summarise(double, elapsed, rate, done=len(done), failed=len(failed))


def run_naive(rate: float, seconds: float) -> dict:
    double, hits = make_double(rate, records=200)
    done: list[int] = []
    failed: list[int] = []
    deadline = time.monotonic() + seconds

    def fetcher(index: int) -> None:
        session = requests.Session()
        for hit in itertools.cycle(hits[index::FETCHERS]):
            if time.monotonic() >= deadline:
                return
            response = session.get(hit["files"][0]["links"]["self"], timeout=30)
            (done if response.status_code == 200 else failed).append(hit["id"])

    elapsed = run_fetchers(fetcher)
    double.stop()
    return summarise(double, elapsed, rate, done=len(done), failed=len(failed))


def run_fetchers(fetcher) -> float:
    """Run FETCHERS threads of ``fetcher(index)`` to the end; return the seconds they took."""
    started = time.monotonic()
    threads = [threading.Thread(target=fetcher, args=(i,)) for i in range(FETCHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def summarise(double: ZenodoDouble, elapsed: float, rate: float, *, done: int, failed: int) -> dict:
    served = [r for r in double.requests if r.status == 200]
    throttled = [r for r in double.requests if r.status == 429]
    achieved = len(served) / elapsed * 60
    return {"elapsed": elapsed, "served": len(served), "throttled": len(throttled),
            "fraction": achieved / rate, "done": done, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=240, help="R: the double's limit, requests per minute")
    parser.add_argument("--seconds", type=float, default=50, help="how long each method runs (< the 60 s window)")
    args = parser.parse_args()
    print(machine_line())
    print(f"{FETCHERS} concurrent fetchers, double limited to R = {args.rate:.0f} requests/min "
          f"(sliding 60 s window), {args.seconds:.0f} s each")
    with tempfile.TemporaryDirectory() as tmp:
        polite = run_polite(args.rate, args.seconds, Path(tmp))
    naive = run_naive(args.rate, args.seconds)
    for name, r in (("zenodo-hpc (R/4 each)", polite), ("naive loop (baseline)", naive)):
        print(f"{name:24s}: {r['served']:4d} downloads served in {r['elapsed']:.1f} s = {r['fraction']:.2f} R, "
              f"{r['throttled']:5d} answered 429, {r['done']} records fetched, {r['failed']} failed")
    ok = polite["fraction"] >= 0.9 and polite["failed"] == 0
    print(f"target >= 0.9 R and no record failed: {'PASS' if ok else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()

"""Harvest over a live index: records found and search requests spent, against the floor and naive paging.

A Zenodo double holds N software records whose creation times grow like Zenodo's (few in 2014, many in
2025), a third of them from verified owners (Zenodo's ``oldest`` sort lists those first), and while the
harvest runs the index changes under it: every few searches an older record gets a new version (the old
one leaves the latest-versions results, the new one appears today). Measured in the same run:

- zenodo-hpc's harvest (windows on ``created`` that each fit one page);
- the baseline: paging ``sort=oldest`` page after page up to the 10,000-result window, as the 2018 scripts
  and most clients do;
- the floor: ``ceil(N / page size)`` searches, the fewest any harvest could spend.

Reported: records that are latest versions at the end but were never harvested (must be 0), and searches
against the floor. Targets: nothing missed; at most 2.5x the floor's searches.

    python benchmarks/bench_harvest.py [--records 3000]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
from _common import machine_line
from doubles import ZenodoDouble

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import iter_records
from zenodo_hpc.zenodo.client import HttpClient
from zenodo_hpc.zenodo.harvest import harvest

PAGE = 25
CHANGE_EVERY = 7  # searches between two new versions of an older record
START = datetime(2014, 1, 1, tzinfo=timezone.utc)
END = datetime(2026, 1, 1, tzinfo=timezone.utc)


def creation_times(count: int, rng: random.Random) -> list[datetime]:
    """Creation times growing exponentially over the years, as Zenodo's software records did."""
    span = (END - START).total_seconds()
    return sorted(START + timedelta(seconds=span * math.log1p(rng.random() * (math.e ** 4 - 1)) / 4)
                  for _ in range(count))


class ChangingIndex:
    """Every CHANGE_EVERY searches, a random older record gets a new version created now."""

    def __init__(self, double: ZenodoDouble, first_id: int, rng: random.Random) -> None:
        self.double, self.next_id, self.rng = double, first_id, rng
        self.searches = 0
        self.last_added: int | None = None  # added after the last search: no harvest could have seen it

    def tick(self) -> None:
        self.searches += 1
        self.last_added = None
        if self.searches % CHANGE_EVERY == 0:
            old = self.rng.randrange(1, self.next_id // 2)
            self.double.add_record(ZenodoDouble.make_hit(self.next_id, created=datetime.now(timezone.utc).isoformat(),
                                                         conceptrecid=str(old)))
            self.last_added = self.next_id
            self.next_id += 1

    def missed(self, double: ZenodoDouble, got: set[int]) -> int:
        """Latest versions at the end that were not harvested (a version born after the last search aside)."""
        return len(latest_ids(double) - got - {self.last_added})


class _TickingClient(HttpClient):
    def __init__(self, index: ChangingIndex, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        response = super().get(url, **kwargs)
        self.index.tick()
        return response


def build(count: int, seed: int) -> tuple[ZenodoDouble, ChangingIndex]:
    rng = random.Random(seed)
    double = ZenodoDouble(window=10_000).start()
    for i, when in enumerate(creation_times(count, rng), 1):
        double.add_record(ZenodoDouble.make_hit(i, created=when.isoformat()), verified=rng.random() < 1 / 3)
    return double, ChangingIndex(double, count + 1, rng)


def latest_ids(double: ZenodoDouble) -> set[int]:
    ids: set[int] = set()
    page = 1
    while True:  # the double's own view, page by page under its window (nothing changes now)
        body = requests.get(f"{double.api_url}/records", params={"size": PAGE, "page": page, "sort": "oldest"},
                            timeout=30).json()
        hits = body["hits"]["hits"]
        ids |= {int(h["id"]) for h in hits}
        if len(hits) < PAGE or page * PAGE >= 10_000:
            return ids
        page += 1


def run_zenodo_hpc(count: int, seed: int) -> tuple[int, int, int]:
    double, index = build(count, seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict({"run": {"scratch": tmp, "name": "h"},
                                "zenodo": {"api_url": double.api_url, "limit": 10**6}})
        client = _TickingClient(index, per_minute=10**6, retries=2, token_url=double.api_url)
        harvest(cfg, progress=False, client=client)
        got = {int(r["id"]) for r in iter_records(Path(tmp) / "h" / "records.jsonl")}
    missed = index.missed(double, got)
    double.stop()
    return missed, index.searches, len(got)


def run_naive(count: int, seed: int) -> tuple[int, int, int]:
    double, index = build(count, seed)
    got: set[int] = set()
    page = 1
    while (page - 1) * PAGE < 10_000:
        body = requests.get(f"{double.api_url}/records", params={"size": PAGE, "page": page, "sort": "oldest"},
                            timeout=30).json()
        index.tick()
        hits = body["hits"]["hits"]
        got |= {int(h["id"]) for h in hits}
        if len(hits) < PAGE:
            break
        page += 1
    missed = index.missed(double, got)
    double.stop()
    return missed, index.searches, len(got)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    floor = math.ceil(args.records / PAGE)
    print(machine_line())
    print(f"{args.records} records (a third from verified owners), page size {PAGE}, "
          f"a new version of an older record every {CHANGE_EVERY} searches")
    ours = run_zenodo_hpc(args.records, args.seed)
    naive = run_naive(args.records, args.seed)
    for name, (missed, searches, got) in (("zenodo-hpc (windows)", ours), ("naive paging (baseline)", naive)):
        print(f"{name:24}: {got:5d} harvested, {missed:4d} latest records missed, {searches:4d} searches "
              f"= {searches / floor:.2f}x the floor ({floor})")
    ok = ours[0] == 0 and ours[1] <= 2.5 * floor
    print(f"target: nothing missed and <= 2.5x the floor's searches: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()

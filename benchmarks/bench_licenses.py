"""What reading a record's license costs organize, against what it pays anyway to read the record's metadata.

organize reads each record's metadata (``metadata_<id>.json``) and now also its license and the license's
category (zenodo_hpc/core/licenses.py). Measured on hits shaped as Zenodo gives them (the recorded
``record_2023.json`` hit with its license replaced: today's legacy ``{"id"}``, an older plain string, InvenioRDM's
``rights``, none), licenses drawn from Zenodo's whole vocabulary plus legacy and malformed ids:

- floor: ``json.loads`` of the hit alone (a record's metadata JSON also holds its file tree, so the real read
  costs more than this floor);
- licenses: ``record_license`` + ``license_category`` of the parsed hit.

Target: the license read is a small fraction of the floor (it runs once per record, beside PNG encoding that
costs about 1 ms per image).

    python benchmarks/bench_licenses.py [--records 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from _common import machine_line
from helpers import licensed_hit

from zenodo_hpc.core.licenses import license_category, record_license, vocabulary

SHAPES = ("legacy", "string", "rdm")


def hits(count: int) -> list[str]:
    """``count`` hits as JSON text, licenses and shapes drawn at random (seeded)."""
    rng = random.Random(22)
    ids = [*vocabulary(), "GPL-3.0", "cc-zero", "MIT", "not an id!"]
    texts = []
    for i in range(count):
        license_id = None if i % 10 == 0 else rng.choice(ids)
        texts.append(json.dumps(licensed_hit(str(1000 + i), license_id, rng.choice(SHAPES))))
    return texts


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    texts = hits(args.records)
    parsed = [json.loads(text) for text in texts]
    vocabulary()  # read once, as in a worker's first record
    floor = best_of(3, lambda: [json.loads(text) for text in texts])
    cost = best_of(3, lambda: [license_category(record_license(hit)) for hit in parsed])
    print(machine_line())
    print(f"{args.records:,} hits: floor (json.loads of the hit) {floor:.3f} s, {floor / args.records * 1e6:.2f} us a "
          f"record; licenses (record_license + license_category) {cost:.3f} s, {cost / args.records * 1e6:.2f} us a "
          f"record: {cost / floor:.1%} of the floor")


if __name__ == "__main__":
    main()

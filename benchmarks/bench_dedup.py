"""The Parquet export's deduplication (zenodo_hpc/dataset/dedup.py): rows/s and peak memory, against a floor.

Rows: this Python's standard library (its ``.py`` files under 100 KB), cycled until ``--rows`` rows, as the
export sees a run's files: each pass over the files is a new "record" of every one; pass 0 the originals, then
in turn an exact copy (the same bytes), a copy with a few lines changed (a near duplicate) and a copy with a
line in three changed (not one: a new cluster). Each row's text is made when it is needed, so no side holds the corpus.

- floor: making each row's text and its SHA-256 (what the export pays anyway to write the row);
- dedup: the same, then ``Deduplicator.see`` (exact set, MinHash, LSH query, index insert).

Each side runs in a child process of its own, so its peak RSS (``ru_maxrss``) is its own. What the deduplicator
keeps (set against ``EXACT_BYTES_PER_ROW`` per digest and ``INDEX_BYTES_PER_ROW`` per cluster row) is counted by
tracemalloc in a third child (slower, so not timed): the bytes still allocated after the last row.

    python benchmarks/bench_dedup.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from _common import machine_line, stdlib_python_files
from datasketch import MinHash

from zenodo_hpc.dataset.dedup import (
    EXACT_BYTES_PER_ROW,
    INDEX_BYTES_PER_ROW,
    NUM_PERM,
    SEED,
    Deduplicator,
    minhash_of,
    shingles,
)


def change_lines(text: str, every: int, word: str = "changed") -> str:
    lines = text.splitlines(keepends=True)
    return "".join(line.rstrip("\n") + f"  # {word}\n" if i % every == every // 2 else line
                   for i, line in enumerate(lines))


def rows(count: int) -> Iterator[tuple[int, str, str]]:
    """(record id, path, text) in record-id order: pass k over the files is record 1000 + k."""
    files = stdlib_python_files()
    for i in range(count):
        passes, path = divmod(i, len(files))
        text = files[path].read_text(encoding="utf-8", errors="replace")
        kind = passes % 4
        if kind == 2:
            text = change_lines(text, every=60 + passes)
        elif kind == 3:
            text = change_lines(text, every=3, word=f"pass {passes}")  # new text: a cluster of its own
        yield 1000 + passes, files[path].name, text


def run_side(side: str, count: int) -> dict[str, float]:
    """One side in this process: seconds, rows, peak RSS, and the deduplicator's counts."""
    dedup = Deduplicator() if side in ("dedup", "traced") else None
    if side == "traced":  # first calls import and cache what every row shares: not the rows' memory
        warm = Deduplicator()
        for record, path, text in rows(3):
            warm.see(record, path, "py", hashlib.sha256(text.encode("utf-8")).digest(), text)
        tracemalloc.start()
    start = time.perf_counter()
    for record, path, text in rows(count):
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if dedup is not None:
            dedup.see(record, path, "py", digest, text)
    seconds = time.perf_counter() - start
    out: dict[str, float] = {"seconds": seconds, "rows": count,
                             "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if side == "traced":
        out["kept_bytes"] = tracemalloc.get_traced_memory()[0]
    if dedup is not None:
        total = dedup.stats.total()
        out.update(clusters=dedup.cluster_count, exact=total.exact_duplicates, near=total.near_duplicates,
                   not_compared=dedup.stats.not_compared)
    return out


def compare_hashing(count: int = 300) -> tuple[float, float, float]:
    """Seconds for the MinHash of ``count`` files: as The Stack hashes shingles (SHA-1 of each shingle's text,
    datasketch's default hash) and as dedup.py does; and the largest difference of their Jaccard estimates
    between each file and a near copy (the two hashings draw different permutations of the same sets)."""
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in stdlib_python_files()[:count]]
    start = time.perf_counter()
    per_shingle = []
    for text in texts:
        signature = MinHash(num_perm=NUM_PERM, seed=SEED)
        signature.update_batch(list(shingles(text)))
        per_shingle.append(signature)
    middle = time.perf_counter()
    ours = [minhash_of(text) for text in texts]
    end = time.perf_counter()
    worst = 0.0
    for text, theirs, mine in list(zip(texts, per_shingle, ours, strict=True))[:50]:
        copy = change_lines(text, every=40)
        if mine is None or len(shingles(text)) < 100:
            continue
        reference = MinHash(num_perm=NUM_PERM, seed=SEED)
        reference.update_batch(list(shingles(copy)))
        mine_copy = minhash_of(copy)
        assert mine_copy is not None
        worst = max(worst, abs(theirs.jaccard(reference) - mine.jaccard(mine_copy)))
    return middle - start, end - middle, worst


def child(side: str, count: int) -> dict[str, float]:
    root = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--side", side, "--rows", str(count)],
                          capture_output=True, text=True, check=True, cwd=root.parent)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--side", choices=("floor", "dedup", "traced"), help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.rows)))
        return
    print(machine_line())
    print(f"rows: {args.rows} from {len(stdlib_python_files())} standard-library files, one pass a record "
          "(original, exact copy, a few lines changed, a line in three changed)")
    floor, dedup, traced = child("floor", args.rows), child("dedup", args.rows), child("traced", args.rows)
    for name, side in (("floor (text + sha256)", floor), ("dedup (+ Deduplicator.see)", dedup)):
        print(f"  {name:28s} {side['seconds']:7.1f} s  {side['rows'] / side['seconds']:8.0f} rows/s  "
              f"peak RSS {side['max_rss_kb'] / 1024:6.0f} MB")
    ratio = dedup["seconds"] / floor["seconds"]
    print(f"  dedup / floor: {ratio:.1f}x the time; {dedup['exact']:.0f} exact and {dedup['near']:.0f} near "
          f"duplicates, {dedup['clusters']:.0f} clusters, {dedup['not_compared']:.0f} rows too short to compare")
    extra = (dedup["max_rss_kb"] - floor["max_rss_kb"]) / 1024
    digests = traced["rows"] - traced["exact"]  # the exact set holds one digest per row not an exact duplicate
    bound = digests * EXACT_BYTES_PER_ROW + traced["clusters"] * INDEX_BYTES_PER_ROW
    per_cluster = (traced["kept_bytes"] - digests * EXACT_BYTES_PER_ROW) / traced["clusters"]
    print(f"  peak RSS over the floor: {extra:.1f} MB; kept after the last row (tracemalloc): "
          f"{traced['kept_bytes'] / 2**20:.1f} MB for {digests:.0f} digests and {traced['clusters']:.0f} cluster "
          f"rows, {per_cluster:.0f} bytes per cluster row beside {EXACT_BYTES_PER_ROW} per digest")
    print(f"  stated bound ({EXACT_BYTES_PER_ROW} per digest + {INDEX_BYTES_PER_ROW} per cluster row): "
          f"{bound / 2**20:.1f} MB: {'within' if traced['kept_bytes'] <= bound else 'OVER'}")
    theirs, ours, worst = compare_hashing()
    print(f"  MinHash of 300 files: SHA-1 per shingle (The Stack's) {theirs:.2f} s, per word combined in numpy "
          f"(dedup.py) {ours:.2f} s = {theirs / ours:.1f}x faster; their Jaccard estimates of 50 near copies "
          f"differ by at most {worst:.3f}")


if __name__ == "__main__":
    main()

"""Rasterizer speed: zenodo_hpc.record.raster.rasterize against a re-creation of the 2018 approach, same corpus.

Corpus: the running Python's standard library ``.py`` files under 100 KB (real source code, found at run
time). Both run in this process, one core. The 2018 approach (vsoch/zenodo-ml, slurm/run.py) decoded
each file, split it into lines, built per-character Python lists of ``ord`` values for each 80-line
segment and turned each segment into a pandas DataFrame cut to 80 columns (int64). Target: >= 100x.

    python benchmarks/bench_raster.py [--repeat 3] [--limit-mb N]
"""

from __future__ import annotations

import argparse
import time

from _common import machine_line, stdlib_python_files

from zenodo_hpc.record.raster import rasterize


def rasterize_2018(data: bytes, width: int = 80, height: int = 80) -> list:
    """The 2018 algorithm, step by step (its bugs included: the last line of a file is dropped)."""
    import pandas

    text = data.decode("utf8", "ignore")
    lines = text.replace("\r", "").replace("\t", "    ").split("\n")
    segments = []
    start = 0
    while start + height < len(lines):
        block = lines[start:start + height]
        rows = [[ord(ch) for ch in list(line) + (width - len(line)) * [" "]] for line in block]
        segments.append(rows)
        start += height
    if start < len(lines):
        last = len(lines) - 1
        block = [lines[start]] if start == last else lines[start:last]
        rows = [[ord(ch) for ch in list(line) + (width - len(line)) * [" "]] for line in block]
        segments.append(rows)
    return [pandas.DataFrame(rows).loc[:, 0:width - 1].values for rows in segments]


def best_rate(func, corpus: list[bytes], repeat: int) -> tuple[float, float]:
    """Best MB/s over ``repeat`` passes (the least disturbed by other load), and its seconds."""
    size = sum(map(len, corpus))
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for data in corpus:
            func(data)
        best = min(best, time.process_time() - started)
    return size / 1e6 / best, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="passes per method; the best is kept")
    parser.add_argument("--limit-mb", type=float, default=None, help="use only the first N MB of the corpus")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")  # pandas warns about the ragged rows the 2018 code relied on
    corpus = [p.read_bytes() for p in stdlib_python_files()]
    if args.limit_mb:
        kept, total = [], 0
        for data in corpus:
            if total >= args.limit_mb * 1e6:
                break
            kept.append(data)
            total += len(data)
        corpus = kept
    size = sum(map(len, corpus))
    print(machine_line())
    print(f"corpus: {len(corpus)} stdlib .py files, {size / 1e6:.1f} MB")
    new_rate, new_s = best_rate(rasterize, corpus, args.repeat)
    print(f"zenodo_hpc.record.raster.rasterize : {new_rate:8.1f} MB/s  ({new_s:.2f} s per pass, best of {args.repeat})")
    old_rate, old_s = best_rate(rasterize_2018, corpus, 1)
    print(f"2018 approach (pandas/int64): {old_rate:8.2f} MB/s  ({old_s:.2f} s per pass)")
    ratio = new_rate / old_rate
    print(f"speed-up: {ratio:.0f}x (target >= 100x): {'PASS' if ratio >= 100 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()

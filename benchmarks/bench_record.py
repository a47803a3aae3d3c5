"""Bytes on disk per 80x80 segment of images_<id>.h5, on real source code; target <= 1,024.

Records: each package folder of the running Python's standard library (json, email, asyncio, ...) is
processed as one record with the real pipeline (walk, rasterize, write). Baseline, measured in the same
run on the same records: the 2018 layout (one HDF5 dataset per segment, int64, uncompressed) and the
2018-compatible pickle.

    python benchmarks/bench_record.py [--records N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _common import machine_line, stdlib_root

from zenodo_hpc.config import Config
from zenodo_hpc.load import load_images
from zenodo_hpc.process import process_path


def package_folders(limit: int) -> list[Path]:
    root = stdlib_root()
    folders = [p for p in sorted(root.iterdir())
               if p.is_dir() and (p / "__init__.py").exists() and p.name not in {"site-packages", "test"}]
    return folders[:limit]


def write_2018_h5(path: Path, images: dict[str, np.ndarray]) -> None:
    """The 2018 layout: one dataset per segment named '<path>__<i>', int64, no compression."""
    with h5py.File(path, "w") as h5:
        for key, segments in images.items():
            for i, segment in enumerate(segments):
                h5.create_dataset(f"{key.replace('/', '|')}__{i}", data=segment.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=40, help="how many stdlib packages to use as records")
    args = parser.parse_args()
    print(machine_line())
    cfg = Config()
    totals = {"segments": 0, "h5": 0, "pkl": 0, "h5_2018": 0}
    per_record = []
    read_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for folder in package_folders(args.records):
            result = process_path(folder, data, cfg, record_id=folder.name)
            segments = result.stats.segments
            if not segments:
                continue
            rec = result.written.folder
            h5_bytes = (rec / f"images_{folder.name}.h5").stat().st_size
            started = time.perf_counter()
            images = load_images(rec / f"images_{folder.name}.h5")
            read_seconds += time.perf_counter() - started
            old = Path(tmp) / f"old_{folder.name}.h5"
            write_2018_h5(old, images)
            totals["segments"] += segments
            totals["h5"] += h5_bytes
            totals["pkl"] += (rec / f"images_{folder.name}.pkl").stat().st_size
            totals["h5_2018"] += old.stat().st_size
            per_record.append((h5_bytes / segments, folder.name, segments))
    n = totals["segments"]
    per_record.sort()
    print(f"records: {len(per_record)} stdlib packages, {n} segments")
    print(f"images_<id>.h5 (this layout) : {totals['h5'] / n:9.0f} bytes/segment "
          f"(records from {per_record[0][0]:.0f} [{per_record[0][1]}] to {per_record[-1][0]:.0f} "
          f"[{per_record[-1][1]}, {per_record[-1][2]} segments])")
    print(f"2018 h5 layout (int64, 1 dataset/segment): {totals['h5_2018'] / n:9.0f} bytes/segment")
    print(f"images_<id>.pkl (2018-compatible, uint32): {totals['pkl'] / n:9.0f} bytes/segment")
    print(f"h5 is {totals['h5_2018'] / totals['h5']:.0f}x smaller than the 2018 h5; "
          f"read back at {n / read_seconds:,.0f} segments/s")
    ok = totals["h5"] / n <= 1024
    print(f"target <= 1,024 bytes/segment: {'PASS' if ok else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()

"""The Parquet export (zenodo_hpc/dataset/export.py): speed against a floor, and peak memory as the run grows.

A run of ``--records`` records made by the real process step from this Python's standard library (``--files``
``.py`` files each, under 100 KB, each file in one record only, spread so that every third of the records has
the same mix of file sizes), then exported. Each side runs in a child process
of its own, so its time and peak RSS (``ru_maxrss``) are its own:

- floor: read every record's h5 (each file's text and images, as the export reads them) and write the same rows,
  the same columns, with pyarrow's ParquetWriter (zstd, the same row groups): what any export of these rows pays;
- export: ``export_dataset`` on the same run: the floor's work plus the license filter, the split, deduplication
  (exact and MinHash), three writers and the card;
- export of the first third of the records (a run directory with the others' done markers taken away): how peak
  memory changes when the run is three times larger (the export streams; only the deduplication index grows).

    python benchmarks/bench_export.py [--records 120] [--files 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_line, stdlib_python_files

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import DONE, RunDir, append_records, ids_in, mark_done, marker, open_run


def build_run(root: Path, records: int, files: int) -> Path:
    """A run directory of ``records`` done records, each ``files`` distinct stdlib files, processed for real."""
    from zenodo_hpc.record.process import process_sources

    cfg = config_from_dict({"run": {"scratch": str(root), "name": "bench"}})
    run = open_run(cfg)
    sources = stdlib_python_files()
    if len(sources) < records * files:
        raise SystemExit(f"this stdlib has {len(sources)} files under 100 KB: ask for fewer records or files")
    hits = []
    for i in range(records):
        record_id = str(1000 + i)
        folder = root / "sources" / record_id / f"pkg-{record_id}"
        folder.mkdir(parents=True)
        for j, path in enumerate(sources[i:records * files:records]):  # spread: each third alike in file sizes
            shutil.copy(path, folder / f"{j:02d}_{path.name}")
        hit = {"id": int(record_id), "conceptrecid": str(900_000 + i), "doi": f"10.5281/zenodo.{record_id}",
               "metadata": {"title": f"bench {record_id}", "license": {"id": ("mit", "gpl-3.0-only")[i % 2]}}}
        process_sources(record_id, [(folder, "")], run.data, cfg, hit=hit, source_info={"kind": "local"})
        mark_done(run, record_id, {})
        hits.append(hit)
    append_records(run.records, hits)
    return run.root


def first_third(run_root: Path, into: Path) -> Path:
    """A copy of the run whose records past the first third are no longer done."""
    shutil.copytree(run_root, into)
    run = RunDir(into)
    ids = sorted(ids_in(run, DONE), key=int)
    for record_id in ids[len(ids) // 3:]:
        marker(run, DONE, record_id).unlink()
    return into


def floor(run_root: Path, out: Path) -> int:
    """Read each record's text and images and write the same columns with pyarrow, no more."""
    import pyarrow.parquet as pq

    from zenodo_hpc.dataset.export import ROW_GROUP_ROWS, SplitWriter, file_rows, record_fields
    from zenodo_hpc.dataset.load import load_metadata

    out.mkdir(parents=True)
    writer = SplitWriter(out, "all", 80, 80)
    rows = 0
    for folder in sorted((run_root / "data").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1):
        if not folder.name.isdigit():
            continue
        fields = record_fields(folder.name, load_metadata(folder))
        for row, images in file_rows(fields, folder / f"images_{folder.name}.h5"):
            writer.add(dict(row, near_dup_cluster=f"{row['record_id']}/{row['path']}"), images)
            rows += 1
    writer.close()
    assert all(pq.ParquetFile(p).metadata.row_group(0).num_rows <= ROW_GROUP_ROWS for p in out.iterdir())
    return rows


def side(name: str, run_root: Path, out: Path) -> dict[str, float]:
    import datasketch  # noqa: F401 - imported before the clock starts, by both sides: not what is measured
    import pyarrow.parquet  # noqa: F401

    from zenodo_hpc.dataset import dedup, hf_card  # noqa: F401
    from zenodo_hpc.dataset.export import export_dataset

    started = time.perf_counter()
    if name == "floor":
        rows = floor(run_root, out)
    else:
        result = export_dataset(run_root, out, progress=False)
        rows = sum(result.rows.values())
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    return {"seconds": seconds, "rows": rows, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parquet_mb": size / 1e6}


def child(name: str, run_root: Path, out: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--side", name, "--run", str(run_root),
                           "--out", str(out)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=120)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--side", choices=("floor", "export"), help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.run, args.out)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        run_root = build_run(root / "scratch", args.records, args.files)
        built = time.perf_counter() - started
        small = first_third(run_root, root / "third")
        base = child("floor", run_root, root / "floor")
        full = child("export", run_root, root / "export")
        third = child("export", small, root / "export-third")
    print(machine_line())
    print(f"run: {args.records} records x {args.files} stdlib files, processed in {built:.1f} s")
    for label, r in (("floor (read h5s, write the same rows with pyarrow)", base), ("export", full),
                     ("export of the first third", third)):
        print(f"{label}: {r['rows']:.0f} rows in {r['seconds']:.2f} s ({r['rows'] / r['seconds']:.0f} rows/s), "
              f"peak RSS {r['peak_mb']:.0f} MB, Parquet {r['parquet_mb']:.1f} MB")
    print(f"export / floor: {full['seconds'] / base['seconds']:.2f}x the time; peak RSS, 3x the records: "
          f"{third['peak_mb']:.0f} -> {full['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()

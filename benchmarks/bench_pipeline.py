"""End to end: `process` on archives of real packages against the floor, step shares, bytes per segment, pack.

Archives: the packages of the running Python's site-packages with the most files (numpy, pip, pygments,
...: real code, found at run time, ``__pycache__`` left out), each zipped and tar.gz'ed into a temporary
folder, as GitHub release archives hold a project under one top folder. Measured side by side on each
archive, in turn (the order alternates, so that neither always finds the caches warm):

- the floor: extract with zipfile/tarfile (``extractall``), read and sha256 every file, remove the
  folder; in the place `process` extracts the archive to (a RAM-backed folder when it fits
  ``extract.memory_budget_mb``, else node-local disk), and on node-local disk;
- `process` (``zenodo_hpc.process.process_path``) with the default config, its time split by step
  (extraction, walk + read + sha256, rasterize, the h5, the pickles, the metadata files, the rest);
- `process` with ``extract.memory_budget_mb: 0`` (extraction on node-local disk, as before).

Reported: end to end against the floor (target <= 1.6x), the share of each step, bytes on disk per segment
of the default config's record folders (target <= 1,024), and `pack` of those records (record checks,
mksquashfs, verification of every file) at the default ``pack.level`` and at mksquashfs's own default
(zstd 15, what pack used before ``pack.level``): MB/s and image size (target: >= 5x faster).

    python benchmarks/bench_pipeline.py [--packages 20] [--no-pack]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from _common import machine_line

from zenodo_hpc import extract as extract_module
from zenodo_hpc import process as process_module
from zenodo_hpc import store as store_module
from zenodo_hpc.config import config_from_dict
from zenodo_hpc.process import process_path
from zenodo_hpc.state import append_records, mark_done, open_run

STEPS = ("extract", "walk + read + sha256", "rasterize", "h5", "pickle of images", "metadata files", "other")


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def package_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts)


def packages(count: int) -> list[tuple[Path, list[Path]]]:
    """The ``count`` packages of site-packages with the most files (ties by name), with their files."""
    found = []
    for folder in sorted(site_packages().iterdir()):
        if folder.is_dir() and (folder / "__init__.py").is_file():
            found.append((folder, package_files(folder)))
    found.sort(key=lambda item: (-len(item[1]), item[0].name))
    return found[:count]


def make_archives(out: Path, count: int) -> list[Path]:
    """A zip and a tar.gz of each package, its files under ``<name>-1.0/`` (deterministic order)."""
    archives = []
    for folder, files in packages(count):
        top = f"{folder.name}-1.0"
        zipped = out / f"{folder.name}.zip"
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
        tarred = out / f"{folder.name}.tar.gz"
        with tarfile.open(tarred, "w:gz") as tf:
            for path in files:
                tf.add(path, f"{top}/{path.relative_to(folder).as_posix()}", recursive=False)
        archives += [zipped, tarred]
    return archives


# --- the floor ------------------------------------------------------------------------------------------


def floor(archive: Path, where: Path) -> tuple[float, int, int]:
    """Extract with the standard library, read and hash every file, remove the folder: (seconds, files, bytes)."""
    started = time.perf_counter()
    target = Path(tempfile.mkdtemp(prefix="floor-", dir=where))
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target)
    else:
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(target, filter="data")
            else:
                tf.extractall(target)
    files = size = 0
    for folder, _, names in os.walk(target):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            hashlib.sha256(data).hexdigest()
            files += 1
            size += len(data)
    shutil.rmtree(target)
    return time.perf_counter() - started, files, size


# --- process, timed step by step ------------------------------------------------------------------------


class Steps:
    """Seconds per step of `process`, from wrappers put around the functions each step calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, module: Any, name: str, step: str) -> None:
        original = getattr(module, name, None)
        if original is None:  # renamed since: that step counts as "other"
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[step] += time.perf_counter() - started

        self._patched.append((module, name, original))
        setattr(module, name, timed)

    def wrap_generator(self, module: Any, name: str, step: str) -> None:
        original = getattr(module, name, None)
        if original is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            items = original(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    self.seconds[step] += time.perf_counter() - started
                    return
                self.seconds[step] += time.perf_counter() - started
                yield item

        self._patched.append((module, name, original))
        setattr(module, name, timed)

    def __enter__(self) -> Steps:
        self.wrap(process_module, "extract_archive", "extract")
        self.wrap(process_module, "list_entries", "walk + read + sha256")
        self.wrap_generator(process_module, "walk", "walk + read + sha256")
        self.wrap(process_module, "rasterize", "rasterize")
        self.wrap(process_module, "write_record", "write")
        self.wrap(store_module, "write_images_h5", "h5")
        self.wrap(store_module, "write_images_pkl", "pickle of images")
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, original in reversed(self._patched):
            setattr(module, name, original)

    def shares(self, total: float) -> dict[str, float]:
        s = dict(self.seconds)
        write = s.pop("write", 0.0)
        s["metadata files"] = max(0.0, write - s.get("h5", 0.0) - s.get("pickle of images", 0.0))
        s["other"] = max(0.0, total - sum(s.values()))
        return {step: s.get(step, 0.0) for step in STEPS}


def extraction_place(archive: Path, cfg: Any, disk: Path) -> tuple[Path, str]:
    """Where `process` extracts this archive with ``cfg``: (folder, what it is)."""
    choose = getattr(extract_module, "choose_memory_root", None)
    if choose is None or not getattr(cfg.extract, "memory_budget_mb", 0):
        return disk, "disk"
    placement = choose(archive, cfg.extract.memory_budget_mb * 1_000_000)
    return (placement.root, "RAM") if placement.root is not None else (disk, "disk")


def timed_process(archive: Path, data: Path, cfg: Any, record_id: str, disk: Path,
                  steps: Steps | None = None) -> tuple[float, Any]:
    started = time.perf_counter()
    if steps is None:
        result = process_path(archive, data, cfg, record_id=record_id, tmp_dir=disk)
    else:
        with steps:
            result = process_path(archive, data, cfg, record_id=record_id, tmp_dir=disk)
    return time.perf_counter() - started, result


def record_bytes(folder: Path) -> dict[str, int]:
    """Bytes of each kind of file in a record folder (the names' first part: images, metadata; suffix)."""
    out: dict[str, int] = defaultdict(int)
    for path in folder.iterdir():
        kind = f"{path.name.split('_', 1)[0]}.{path.suffix.lstrip('.')}"
        out[kind] += path.stat().st_size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=20, help="packages to archive (each as .zip and .tar.gz)")
    parser.add_argument("--no-pack", action="store_true", help="skip packing the records")
    args = parser.parse_args()
    print(machine_line())
    disk = Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        (root / "archives").mkdir()
        archives = make_archives(root / "archives", args.packages)
        cfg = config_from_dict({"run": {"scratch": str(root), "name": "run"}})
        disk_cfg = config_from_dict({"run": {"scratch": str(root), "name": "run"},
                                     "extract": {"memory_budget_mb": 0}}) if hasattr(
            cfg.extract, "memory_budget_mb") else None
        run = open_run(cfg)
        scratch = root / "disk-variant"
        totals: dict[str, float] = defaultdict(float)
        step_totals: dict[str, float] = defaultdict(float)
        sizes: dict[str, int] = defaultdict(int)
        places: dict[str, int] = defaultdict(int)
        files = data_bytes = segments = 0
        hits = []
        for i, archive in enumerate(archives):
            record_id = str(8_000_000 + i)
            where, place = extraction_place(archive, cfg, disk)
            places[place] += 1
            steps = Steps()
            runs: list[tuple[str, Callable[[], Any]]] = [
                ("floor", partial(floor, archive, where)),
                ("floor on disk", partial(floor, archive, disk)),
                ("process", partial(timed_process, archive, run.data, cfg, record_id, disk, steps)),
            ]
            if disk_cfg is not None:
                runs.append(("process, extraction on disk",
                             partial(timed_process, archive, scratch, disk_cfg, record_id, disk)))
            if i % 2:
                runs.reverse()
            results = {}
            for name, fn in runs:
                results[name] = fn()
                totals[name] += results[name][0]
            shutil.rmtree(scratch, ignore_errors=True)
            _, n_files, n_bytes = results["floor"]
            files += n_files
            data_bytes += n_bytes
            seconds, result = results["process"]
            for step, value in steps.shares(seconds).items():
                step_totals[step] += value
            segments += result.stats.segments
            for kind, size in record_bytes(result.written.folder).items():
                sizes[kind] += size
            hit = {"id": int(record_id), "doi": f"10.5281/zenodo.{record_id}", "metadata": {"title": archive.name}}
            hits.append(hit)
            mark_done(run, record_id, {"segments": result.stats.segments})
        append_records(run.records, hits)
        archive_bytes = sum(a.stat().st_size for a in archives)
        print(f"archives: {len(archives)} ({args.packages} packages of {site_packages()} as .zip and .tar.gz), "
              f"{archive_bytes / 1e6:.1f} MB; {files} files, {data_bytes / 1e6:.1f} MB of files, {segments} segments")
        print(f"extracted by process: {places['RAM']} archives in RAM, {places['disk']} on node-local disk ({disk})")
        base = totals["floor"]
        for name in ("floor", "floor on disk", "process", "process, extraction on disk"):
            if name in totals:
                print(f"  {name:30s} {totals[name]:7.2f} s = {totals[name] / base:4.2f}x the floor "
                      f"({data_bytes / 1e6 / totals[name]:6.1f} MB/s of files)")
        print("process, by step (default config):")
        for step in STEPS:
            print(f"  {step:30s} {step_totals[step]:7.2f} s  {step_totals[step] / totals['process']:4.0%}")
        written = sum(sizes.values())
        detail = ", ".join(f"{kind} {size / segments:,.0f}" for kind, size in sorted(sizes.items()))
        print(f"bytes on disk per segment (default output.formats {cfg.output.formats}): {written / segments:,.0f} "
              f"({detail})")
        ratio = totals["process"] / base
        per_segment = written / segments
        print(f"target end to end <= 1.6x the floor: {'PASS' if ratio <= 1.6 else 'ABOVE TARGET'} ({ratio:.2f}x)")
        print(f"target <= 1,024 bytes per segment: {'PASS' if per_segment <= 1024 else 'ABOVE TARGET'} "
              f"({per_segment:,.0f})")
        if not args.no_pack:
            pack_report(run, cfg)


def pack_report(run: Any, cfg: Any) -> None:
    from zenodo_hpc.pack import pack

    levels = [("default", cfg)]
    if hasattr(cfg.pack, "level"):
        old = config_from_dict({**cfg.to_dict(), "pack": {**cfg.to_dict()["pack"], "level": 15}})
        levels.append(("zstd 15 (before)", old))
    rates = {}
    for name, each in levels:
        result = pack(run, each, progress=False)
        rates[name] = result.data_bytes / 1e6 / result.seconds
        level = getattr(each.pack, "level", None)
        print(f"pack, {name} (level {level if level is not None else 'mksquashfs default'}): "
              f"{result.seconds:.2f} s = {rates[name]:.1f} MB/s of {result.data_bytes / 1e6:.1f} MB, image "
              f"{result.image_bytes / 1e6:.1f} MB ({result.image_bytes / result.data_bytes:.1%}), md5 {result.md5}")
    if len(rates) == 2:
        speedup = rates["default"] / rates["zstd 15 (before)"]
        print(f"target pack >= 5x faster than before: {'PASS' if speedup >= 5 else 'BELOW TARGET'} ({speedup:.1f}x)")
    print(json.dumps({"pack_mb_s": rates}))


if __name__ == "__main__":
    main()

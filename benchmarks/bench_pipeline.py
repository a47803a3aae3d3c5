"""End to end: `process` on archives of real packages against the floor, step shares, bytes per segment, pack.

Archives: the packages of the running Python's site-packages with the most files (numpy, pip, pygments,
...: real code, found at run time, ``__pycache__`` left out; their names are printed), each zipped and
tar.gz'ed into a temporary folder, as GitHub release archives hold a project under one top folder.
Measured side by side on each archive, in turn (the order alternates, so that none always finds the caches
warm), one core:

- the floor: extract with zipfile/tarfile (``extractall``), read and sha256 every file, remove the folder,
  in the place `process` extracts that archive to (a RAM-backed folder when it fits
  ``extract.memory_budget_mb``, else node-local disk); and the same on node-local disk;
- `process` (``zenodo_hpc.record.process.process_path``) with the default config, its time split by step;
- `process` as before this work (the 2018 pickle too, h5 gzip-6, extraction on node-local disk);
- `process` with ``extract.memory_budget_mb: 0`` (the default config, extraction on disk), and with other
  ``output.h5_compression`` (``--h5``), to show what each costs.

Reported: end to end against the floor (target <= 1.6x), the share of each step, bytes on disk per segment
of the default config's record folders (target <= 1,024), and `pack` (record checks, mksquashfs,
verification of every file) of the same records as before (its records, zstd 15) and now (the default
config's records and ``pack.level``), with the level's own share (target: >= 5x faster).

    python benchmarks/bench_pipeline.py [--packages 20] [--h5 lzf gzip-1] [--no-pack]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
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

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import append_records, mark_done, open_run
from zenodo_hpc.record import process as process_module
from zenodo_hpc.record import store as store_module
from zenodo_hpc.record.extract import choose_memory_root
from zenodo_hpc.record.process import process_path

# The defaults before this work: the 2018 pickle too, h5 gzip-6, extraction on node-local disk, pack at zstd 15.
BEFORE = {"output": {"formats": ["h5", "pkl"], "h5_compression": "gzip-6"}, "extract": {"memory_budget_mb": 0},
          "pack": {"level": 15}}
STEPS = ("where to extract", "extract", "walk + read + sha256", "rasterize", "remove extracted files", "h5",
         "pickle of images", "metadata files", "other")


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


def floor(archive: Path, where: Path) -> tuple[float, tuple[int, int]]:
    """Extract with the standard library, read and hash every file, remove the folder: seconds, (files, bytes)."""
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
    return time.perf_counter() - started, (files, size)


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
        self.wrap(process_module, "choose_memory_root", "where to extract")
        self.wrap(process_module, "extract_archive", "extract")
        self.wrap(process_module, "list_entries", "walk + read + sha256")
        self.wrap(process_module, "classify", "walk + read + sha256")
        self.wrap_generator(process_module, "walk", "walk + read + sha256")  # versions that walked twice
        self.wrap(process_module, "rasterize", "rasterize")  # the code before this work
        self.wrap(process_module, "rasterize_narrow", "rasterize")  # uint8 for ASCII text (alone, as a fallback)
        self.wrap(process_module, "rasterize_many", "rasterize")  # today: files in batches
        self.wrap(process_module._ExtractionSpace, "__exit__", "remove extracted files")
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
    """Where `process` extracts this archive with ``cfg``: (folder, "RAM" or "disk")."""
    placement = choose_memory_root(archive, cfg.extract.memory_budget_mb << 20)
    return (placement.root, "RAM") if placement.root is not None else (disk, "disk")


def timed_process(archive: Path, data: Path, cfg: Any, record_id: str, disk: Path, steps: Steps) -> tuple[float, Any]:
    started = time.perf_counter()
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
    parser.add_argument("--h5", nargs="*", default=["lzf", "gzip-1"], metavar="COMPRESSION",
                        help="also time process with these output.h5_compression (default: lzf gzip-1)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of everything per archive; the best is kept")
    parser.add_argument("--no-pack", action="store_true", help="skip packing the records")
    args = parser.parse_args()
    print(machine_line())
    disk = Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        (root / "archives").mkdir()
        archives = make_archives(root / "archives", args.packages)
        base_cfg = {"run": {"scratch": str(root), "name": "run"}}
        cfg = config_from_dict(base_cfg)
        run = open_run(cfg)
        before_cfg = config_from_dict({**BEFORE, "run": {"scratch": str(root), "name": "before"}})
        before_run = open_run(before_cfg)
        # name -> (config, data folder); "process" and "process, as before" keep their records for pack
        variants = {"process": (cfg, run.data), "process, as before": (before_cfg, before_run.data),
                    "process, extraction on disk": (
                        config_from_dict({**base_cfg, "extract": {"memory_budget_mb": 0}}), root / "variant")}
        for compression in args.h5:
            variants[f"process, h5 {compression}"] = (
                config_from_dict({**base_cfg, "output": {"h5_compression": compression}}), root / "variant")
        totals: dict[str, float] = defaultdict(float)
        step_totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        sizes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        places: dict[str, int] = defaultdict(int)
        files = data_bytes = segments = 0
        hits = []
        for i, archive in enumerate(archives):
            record_id = str(8_000_000 + i)
            where, place = extraction_place(archive, cfg, disk)
            places[place] += 1
            best: dict[str, tuple[float, Any, Steps | None]] = {}
            for repeat in range(args.repeat):
                runs: list[tuple[str, Callable[[], Any]]] = [
                    ("floor", partial(floor, archive, where)), ("floor on disk", partial(floor, archive, disk))]
                steps_of = {name: Steps() for name in variants}
                runs += [(name, partial(timed_process, archive, data, each, record_id, disk, steps_of[name]))
                         for name, (each, data) in variants.items()]
                if (i + repeat) % 2:
                    runs.reverse()
                for name, fn in runs:
                    seconds, result = fn()
                    if name not in best or seconds < best[name][0]:
                        best[name] = (seconds, result, steps_of.get(name))
                    shutil.rmtree(root / "variant", ignore_errors=True)
            for name, (seconds, _, steps) in best.items():
                totals[name] += seconds
                if steps is not None:
                    for step, value in steps.shares(seconds).items():
                        step_totals[name][step] += value
            n_files, n_bytes = best["floor"][1]
            files += n_files
            data_bytes += n_bytes
            for name in ("process", "process, as before"):
                result = best[name][1]
                for kind, size in record_bytes(result.written.folder).items():
                    sizes[name][kind] += size
            segments += best["process"][1].stats.segments
            hit = {"id": int(record_id), "doi": f"10.5281/zenodo.{record_id}", "metadata": {"title": archive.name}}
            hits.append(hit)
            for each_run in (run, before_run):
                mark_done(each_run, record_id, {"segments": best["process"][1].stats.segments})
        for each_run in (run, before_run):
            append_records(each_run.records, hits)
        archive_bytes = sum(a.stat().st_size for a in archives)
        names = ", ".join(a.name.split(".")[0] for a in archives[::2])
        print(f"archives: {len(archives)} ({names}; as .zip and .tar.gz), {archive_bytes / 1e6:.1f} MB; {files} files, "
              f"{data_bytes / 1e6:.1f} MB of files, {segments} segments; best of {args.repeat} per archive")
        print(f"process extracted {places['RAM']} archives in RAM, {places['disk']} on node-local disk ({disk}); the "
              f"floor extracts each where process does")
        base = totals["floor"]
        for name in ("floor", "floor on disk", *variants):
            print(f"  {name:30s} {totals[name]:7.2f} s = {totals[name] / base:4.2f}x the floor "
                  f"({data_bytes / 1e6 / totals[name]:6.1f} MB/s of files)")
        shown = ("process", "process, as before", "process, extraction on disk")
        print("by step, seconds (and x the floor):" + "".join(f" {name:>26s}" for name in shown))
        for step in STEPS:
            cells = (f" {step_totals[name][step]:8.2f} s ({step_totals[name][step] / base:4.2f}x)" for name in shown)
            print(f"  {step:30s}" + "".join(cells))
        for name in ("process", "process, as before"):
            written = sum(sizes[name].values())
            detail = ", ".join(f"{kind} {size / segments:,.0f}" for kind, size in sorted(sizes[name].items()))
            print(f"bytes on disk per segment, {name} (output.formats {variants[name][0].output.formats}): "
                  f"{written / segments:,.0f} ({detail})")
        ratio = totals["process"] / base
        per_segment = sum(sizes["process"].values()) / segments
        print(f"target end to end <= 1.6x the floor: {'PASS' if ratio <= 1.6 else 'ABOVE TARGET'} ({ratio:.2f}x)")
        print(f"target <= 1,024 bytes per segment: {'PASS' if per_segment <= 1024 else 'ABOVE TARGET'} "
              f"({per_segment:,.0f})")
        if not args.no_pack:
            pack_report(run, cfg, before_run, before_cfg)


def mksquashfs_alone(run: Any, cfg: Any) -> tuple[float, int]:
    """Seconds and image bytes of mksquashfs alone on the run's data folder, with pack's own options."""
    from zenodo_hpc.core.state import DONE, ids_in
    from zenodo_hpc.dataset.pack import excluded_entries, mksquashfs_command

    with tempfile.TemporaryDirectory(prefix="bench-mksquashfs-") as tmp:
        exclude, image = Path(tmp) / "exclude.txt", Path(tmp) / "image.sqsh"
        exclude.write_text("".join(f"{e}\n" for e in excluded_entries(run, ids_in(run, DONE))))
        started = time.perf_counter()
        subprocess.run(mksquashfs_command("mksquashfs", run.data, image, cfg, exclude, False), check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - started, image.stat().st_size


def pack_report(run: Any, cfg: Any, before_run: Any, before_cfg: Any) -> None:
    """The whole pack (record checks, mksquashfs, verification of every file, and the report's figures when the
    report extra is installed) of these records, and mksquashfs alone, best of 2: as before (its records, zstd
    15), the default config's records at zstd 15, and at the default level."""
    from zenodo_hpc.dataset import pack as pack_module
    from zenodo_hpc.report import card_figures

    at_15 = config_from_dict({**cfg.to_dict(), "pack": {**cfg.to_dict()["pack"], "level": 15}})
    whole, alone = {}, {}
    for name, each_run, each in (("as before (its records, level 15)", before_run, before_cfg),
                                 ("default records, level 15", run, at_15),
                                 (f"default records, level {cfg.pack.level} (default)", run, cfg)):
        packs = []
        for _ in range(2):
            steps = Steps()
            steps.wrap(pack_module, "_card_figures", "figures")  # the report's figures, when pack makes them
            with steps:
                result = pack_module.pack(each_run, each, progress=False, figures=card_figures)
            figures = steps.seconds.get("figures", 0.0)
            packs.append((result.seconds - figures, result, figures))
        whole[name], best, figures = min(packs, key=lambda item: item[0])
        alone[name] = min(mksquashfs_alone(each_run, each) for _ in range(2))
        print(f"pack, {name:38s} {best.seconds:6.2f} s ({figures:.2f} s of it the report's figures) = "
              f"{best.data_bytes / 1e6 / whole[name]:6.1f} MB/s of {best.data_bytes / 1e6:6.1f} MB without them; "
              f"mksquashfs alone {alone[name][0]:5.2f} s = {best.data_bytes / 1e6 / alone[name][0]:6.1f} MB/s; image "
              f"{best.image_bytes / 1e6:.1f} MB ({best.image_bytes / best.data_bytes:.1%})")
    before, level_15, now = whole
    speedup = whole[before] / whole[now]
    print(f"pack of the same records, before -> now, without the figures: {speedup:.1f}x faster (mksquashfs alone "
          f"{alone[before][0] / alone[now][0]:.1f}x); the level alone, on the same records: "
          f"{whole[level_15] / whole[now]:.1f}x (mksquashfs {alone[level_15][0] / alone[now][0]:.1f}x); "
          f"target >= 5x: {'PASS' if speedup >= 5 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()

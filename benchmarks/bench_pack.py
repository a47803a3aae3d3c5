"""Packing speed and size: a run of a few hundred real records packed twice with the real mksquashfs.

Records are made by the real pipeline, with the default config (or ``--formats``), from real source trees:
groups of the standard library's files, and the largest packages of this Python's site-packages (numpy,
pip, ...), each one record.
Reported: pack MB/s (record checks, manifest, card, mksquashfs, verification of every file and checksums
included) and the verification's share, the image size against the data folder's, and whether the two
packs have the same md5. Baseline in the same run: `tar -czf` of the same data folder (the obvious
alternative to an image), its time and size. Then the ways of reading every file of the image back to
verify it, timed on the same image (best of 3): `unsquashfs -cat` streaming (what pack uses),
`unsquashfs` extracting to a temporary folder (pack's fallback for squashfs-tools < 4.5), and the
package's own no-mount reader (zenodo_hpc/dataset/image.py, when the [image] extra is installed).

Then the cost of each zstd level (``pack.level``): mksquashfs alone on the same data folder with pack's own
options and every usable CPU, best of 3 per level, its MB/s and the image's share of the data; and the whole
pack (checks and verification included) at the default level against level 15 (mksquashfs's own default,
what pack used before ``pack.level``). The default is the level that packs smallest among those at least 5x
as fast as level 15 (the issue's target), printed as "pick".

    python benchmarks/bench_pack.py [--records 300] [--packages 40] [--formats h5 pkl] [--levels 1 3 6 9 12 15 19]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import machine_line, stdlib_python_files
from bench_pipeline import packages

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import DONE, append_records, ids_in, mark_done, open_run
from zenodo_hpc.dataset import pack as pack_module
from zenodo_hpc.dataset.pack import CAT_BATCH, EXTRAS, excluded_entries, mksquashfs_command, pack, usable_cpus
from zenodo_hpc.record.process import process_sources
from zenodo_hpc.report import card_figures


def build_run(root: Path, records: int, n_packages: int = 0, formats: list[str] | None = None):
    cfg = config_from_dict({"run": {"scratch": str(root), "name": "bench"},
                            **({"output": {"formats": formats}} if formats else {})})
    run = open_run(cfg)
    files = stdlib_python_files()
    per = max(1, len(files) // records)
    hits = []
    for i in range(records):
        record_id = str(5_000_000 + i)
        src = root / "src" / f"repo-{i}"
        for f in files[i * per:(i + 1) * per]:
            target = src / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        hit = {"id": int(record_id), "doi": f"10.5281/zenodo.{record_id}", "metadata": {"title": f"repo {i}"}}
        hits.append(hit)
        result = process_sources(record_id, [(src, "")], run.data, cfg, hit=hit, source_info={"kind": "local"})
        mark_done(run, record_id, {"segments": result.stats.segments})
    for i, (folder, _) in enumerate(packages(n_packages)):
        record_id = str(6_000_000 + i)
        hit = {"id": int(record_id), "doi": f"10.5281/zenodo.{record_id}", "metadata": {"title": folder.name}}
        hits.append(hit)
        result = process_sources(record_id, [(folder, "")], run.data, cfg, hit=hit, source_info={"kind": "local"})
        mark_done(run, record_id, {"segments": result.stats.segments})
    append_records(run.records, hits)
    return run, cfg


def read_back_times(image: Path, data: Path) -> dict[str, float]:
    """Seconds to read every file of the image back and hash it, per way of reading (best of 3)."""
    files = image_files(data)
    ways = {"unsquashfs -cat (streamed)": lambda: by_unsquashfs(image, files, pack_module._read_back_by_cat),
            "unsquashfs, extracting": lambda: by_unsquashfs(image, files, pack_module._read_back_by_extracting)}
    try:
        from zenodo_hpc.dataset.image import SquashImage

        SquashImage(image).close()
        ways["zenodo_hpc.dataset.image (PySquashfsImage)"] = lambda: by_reader(image, files, SquashImage)
    except Exception as exc:  # the optional extra is missing: say so, measure the rest
        print(f"(no-mount reader not measured: {exc})")
    times = {}
    for name, way in ways.items():
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            way()
            best = min(best, time.perf_counter() - started)
        times[name] = best
    return times


def image_files(data: Path) -> dict[str, int]:
    """Every file the image holds, path -> size: the manifest's record files and the root's own."""
    files = {f["name"]: f["size"] for line in (data / "manifest.jsonl").read_text().splitlines()
             for f in json.loads(line)["files"]}
    files.update({name: (data / name).stat().st_size for name in EXTRAS})
    return dict(sorted(files.items()))


def by_unsquashfs(image: Path, files: dict[str, int], read_back) -> None:
    names = list(files)
    for start in range(0, len(names), CAT_BATCH):
        batch = names[start:start + CAT_BATCH]
        read_back(image, batch, [files[n] for n in batch])


def by_reader(image: Path, files: dict[str, int], reader) -> None:
    with reader(image) as opened:
        for name in files:
            hashlib.sha256(opened.read_bytes(name)).hexdigest()


def level_costs(run, cfg, levels: list[int], tmp: Path) -> dict[int, tuple[float, int]]:
    """level -> (best seconds of 3, image bytes): mksquashfs alone, as pack calls it, on the run's data folder."""
    exclude = tmp / "exclude.txt"
    exclude.write_text("".join(f"{e}\n" for e in excluded_entries(run, ids_in(run, DONE))))
    costs = {}
    for level in levels:
        each = config_from_dict({**cfg.to_dict(), "pack": {**cfg.to_dict()["pack"], "level": level}})
        image = tmp / f"level-{level}.sqsh"
        command = mksquashfs_command("mksquashfs", run.data, image, each, exclude, False)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - started)
        costs[level] = (best, image.stat().st_size)
        image.unlink()
    return costs


def timed_pack(run, cfg) -> tuple[object, float]:
    """A pack, and the seconds of it spent on the report's figures beside the card (0 without the report
    extra): they cost the same whatever the data, so they are shown apart."""
    original = getattr(pack_module, "_card_figures", None)
    spent = [0.0]

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    if original is not None:
        pack_module._card_figures = timed
    try:
        return pack(run, cfg, progress=False, figures=card_figures), spent[0]
    finally:
        if original is not None:
            pack_module._card_figures = original


def pick_level(costs: dict[int, tuple[float, int]], data: int, baseline: int = 15, speedup: float = 5.0) -> int:
    """The level with the smallest image among those at least ``speedup`` x as fast as ``baseline``."""
    fast = [level for level, (seconds, _) in costs.items() if costs[baseline][0] / seconds >= speedup]
    return min(fast, key=lambda level: (costs[level][1], level)) if fast else baseline


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300, help="records made of the standard library's files")
    parser.add_argument("--packages", type=int, default=40, help="site-packages packages, one record each")
    parser.add_argument("--formats", nargs="+", help="output.formats (default: the config's default)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6, 9, 12, 15, 19])
    args = parser.parse_args()
    if 15 not in args.levels:
        args.levels.append(15)
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        run, cfg = build_run(Path(tmp), args.records, args.packages, args.formats)
        (first, first_figures), (second, second_figures) = timed_pack(run, cfg), timed_pack(run, cfg)
        data = folder_bytes(run.data)
        started = time.perf_counter()
        tarball = Path(tmp) / "data.tar.gz"
        subprocess.run(["tar", "-czf", str(tarball), "-C", str(run.data), "."], check=True)
        tar_s = time.perf_counter() - started
        print(f"run: {first.records} records (output.formats {cfg.output.formats}), {first.files} files, data "
              f"folder {data / 1e6:.1f} MB; pack.level {cfg.pack.level}")
        for name, r, figures in (("pack #1", first, first_figures), ("pack #2", second, second_figures)):
            rate = r.data_bytes / 1e6 / (r.seconds - figures)
            print(f"{name}: {r.seconds:.2f} s, {figures:.2f} s of it the report's figures; without them {rate:.1f} "
                  f"MB/s (verifying every file: {r.verify_seconds:.2f} s), image {r.image_bytes / 1e6:.1f} MB "
                  f"({r.image_bytes / data:.1%} of the data folder), md5 {r.md5}")
        print(f"tar -czf (baseline): {tar_s:.2f} s = {data / 1e6 / tar_s:.1f} MB/s, "
              f"{tarball.stat().st_size / 1e6:.1f} MB ({tarball.stat().st_size / data:.1%} of the data folder)")
        exclude = Path(tmp) / "exclude.txt"
        exclude.write_text("".join(f"{e}\n" for e in excluded_entries(run, ids_in(run, DONE))))
        started = time.perf_counter()
        subprocess.run(mksquashfs_command("mksquashfs", run.data, Path(tmp) / "bare.sqsh", cfg, exclude, False),
                       check=True, stdout=subprocess.DEVNULL)
        bare_s = time.perf_counter() - started
        print(f"mksquashfs alone, same data and options: {bare_s:.2f} s = {data / 1e6 / bare_s:.1f} MB/s (the rest: "
              "each record's files hashed and checked against its done marker, manifest, verification, checksums)")
        print(f"two packs byte-identical: {'YES' if first.md5 == second.md5 else 'NO'}")
        print(f"reading all {first.files} files of the image back and hashing them (best of 3):")
        for name, seconds in read_back_times(first.image, run.data).items():
            print(f"  {name:36s} {seconds:.2f} s = {first.data_bytes / 1e6 / seconds:.0f} MB/s")
        print(f"zstd levels, mksquashfs alone with pack's options on {usable_cpus()} CPUs (best of 3), "
              f"{data / 1e6:.1f} MB of data:")
        costs = level_costs(run, cfg, sorted(set(args.levels)), Path(tmp))
        for level, (seconds, size) in costs.items():
            print(f"  level {level:2d}: {seconds:6.2f} s = {data / 1e6 / seconds:7.1f} MB/s, image "
                  f"{size / 1e6:6.1f} MB ({size / data:5.1%} of the data), {costs[15][0] / seconds:5.1f}x level 15's "
                  "speed")
        pick = pick_level(costs, data)
        print(f"pick: level {pick} (the smallest image among levels >= 5x as fast as 15); pack.level default: "
              f"{cfg.pack.level}")
        old = config_from_dict({**cfg.to_dict(), "pack": {**cfg.to_dict()["pack"], "level": 15}})
        for name, each in ((f"default level {cfg.pack.level}", cfg), ("level 15 (before)", old)):
            r, figures = timed_pack(run, each)
            print(f"whole pack, {name}: {r.seconds:.2f} s ({figures:.2f} s of it the report's figures) = "
                  f"{r.data_bytes / 1e6 / (r.seconds - figures):.1f} MB/s without them, image "
                  f"{r.image_bytes / 1e6:.1f} MB, md5 {r.md5}")


if __name__ == "__main__":
    main()

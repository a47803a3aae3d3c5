"""What keeping each file's text in the h5 (format 3) costs: the process step's time, the h5's bytes and the
squashfs image's bytes, with the text and without it (format 2, the baseline), measured in the same run.

Corpora (real code, found at run time or shipped):

- the demo's records: the sample zenodo-hpc ships for ``zenodo-hpc demo`` (25 standard-library packages, the C
  headers, IDLE's docs: 28 records), each zipped as a record's archive;
- one stdlib-sized record: the running Python's whole standard library (``test``, ``site-packages`` and
  ``idlelib`` left out, as bench_secrets.py does) in one zip archive.

Each archive is processed as a worker does after the download (extract, walk, mask, rasterize, write:
``zenodo_hpc.record.process.process_path``, default config: gzip-2) with the text stored and, as the baseline,
with ``write_record`` given no text (what the step wrote before), in turn (order alternating), best of
``--repeat``, in CPU seconds of this process (``time.process_time``: the wall clock of this shared machine varies
2x between identical runs). Then each side's data folder is packed with mksquashfs as
``pack`` calls it (zstd level 3, 1 MiB blocks, one processor). Last, on the stdlib record: the text's bytes with
other chunk sizes and ``output.h5_compression`` values, and the time to read the text back (``load_files``)
against reading the images (``load_images``).

    python benchmarks/bench_text.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine_line, stdlib_root

from zenodo_hpc.core.config import PACK_LEVEL, Config, config_from_dict
from zenodo_hpc.dataset.load import load_files, load_images
from zenodo_hpc.demo.demo import load_sample
from zenodo_hpc.record import process as process_module
from zenodo_hpc.record import store as store_module
from zenodo_hpc.record.process import process_path

LEFT_OUT = {"test", "site-packages", "__pycache__", "idlelib"}


def zipped(archive: Path, files: dict[str, bytes]) -> Path:
    """A record's archive as Zenodo holds a GitHub release: the files under ``<name>/``, deflated."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in sorted(files.items()):
            zf.writestr(f"{archive.stem}/{path}", data)
    return archive


def demo_records(root: Path) -> list[Path]:
    """The demo's sample as 28 record archives (its packages, its headers, its docs)."""
    sample = load_sample()
    groups = {**{f"stdlib-{name}": files for name, files in sample.packages.items()},
              "headers": sample.headers, "idle-docs": sample.idle_docs}
    return [zipped(root / f"{name}.zip", files) for name, files in groups.items()]


def stdlib_record(root: Path) -> list[Path]:
    """The standard library as one record's archive (links and caches left out)."""
    source = stdlib_root()
    files = {}
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in LEFT_OUT or "__pycache__" in relative.parts or path.is_symlink() or not path.is_file():
            continue
        files[relative.as_posix()] = path.read_bytes()
    return [zipped(root / "stdlib.zip", files)]


def without_text(function: Callable[..., Any]) -> Callable[..., Any]:
    """``write_record`` as the step called it before: no text, so format 2."""
    def write(*args: Any, **kwargs: Any) -> Any:
        kwargs["texts"] = None
        return function(*args, **kwargs)
    return write


def process_all(archives: list[Path], data: Path, cfg: Config, text: bool) -> float:
    """CPU seconds to process every archive into ``data``, with or without the text."""
    real = process_module.write_record
    process_module.write_record = real if text else without_text(real)  # type: ignore[assignment]
    try:
        started = time.process_time()
        for archive in archives:
            process_path(archive, data, cfg, record_id=archive.stem)
        return time.process_time() - started
    finally:
        process_module.write_record = real  # type: ignore[assignment]


def h5_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("*/images_*.h5"))


def image_bytes(data: Path, target: Path) -> int:
    """The squashfs image of ``data`` as ``pack`` builds it (zstd, its level, 1 MiB blocks), one processor."""
    subprocess.run(["mksquashfs", str(data), str(target), "-noappend", "-comp", "zstd", "-Xcompression-level",
                    str(PACK_LEVEL), "-b", "1M", "-processors", "1", "-no-progress", "-quiet"], check=True,
                   capture_output=True)
    return target.stat().st_size


def compare(name: str, folders: list[Path], work: Path, repeat: int) -> dict[str, Any]:
    cfg = Config()
    seconds: dict[bool, float] = {True: float("inf"), False: float("inf")}
    for i in range(repeat):
        for text in ((True, False) if i % 2 == 0 else (False, True)):
            seconds[text] = min(seconds[text], process_all(folders, work / f"data-{text}", cfg, text))
    texts = [load_files(work / "data-True" / archive.stem) for archive in folders]
    files, text_bytes = sum(map(len, texts)), sum(len(t) for record in texts for t in record.values())
    h5 = {text: h5_bytes(work / f"data-{text}") for text in (True, False)}
    image = {text: image_bytes(work / f"data-{text}", work / f"{name}-{text}.sqsh") for text in (True, False)}
    print(f"corpus: {name}: {len(folders)} records, {files} files rasterized, {text_bytes / 1e6:.2f} MB of text")
    print(f"  process, images only (format 2)  {seconds[False]:6.2f} s = 1.000x")
    print(f"  process, with the text (format 3) {seconds[True]:5.2f} s = {seconds[True] / seconds[False]:.3f}x")
    for label, sizes in (("h5 files", h5), ("squashfs image", image)):
        print(f"  {label:<16} {sizes[False] / 1e6:8.2f} MB -> {sizes[True] / 1e6:8.2f} MB "
              f"({sizes[True] / sizes[False]:.2f}x; the text: {(sizes[True] - sizes[False]) / text_bytes:.3f} "
              "bytes per byte of text)")
    return {"seconds": seconds, "h5": h5, "image": image, "text_bytes": text_bytes}


def chunk_and_filter_sizes(record: Path, work: Path) -> None:
    """The stdlib record's h5 with the text chunked by other sizes and compressed with other filters."""
    base = h5_bytes_of(record, work / "base", "gzip-2", store_module.CONTENT_CHUNK, text=False)
    print(f"stdlib record, h5 bytes by the text's chunk size and compression (images only: {base / 1e6:.2f} MB):")
    compressions = ["gzip-2", "gzip-6", "lzf"]
    try:
        import hdf5plugin  # noqa: F401
        compressions += ["zstd-3"]
    except ImportError:
        print("  (zstd-3 not measured: hdf5plugin is not installed)")
    for compression in compressions:
        base = h5_bytes_of(record, work / f"b-{compression}", compression, store_module.CONTENT_CHUNK, text=False)
        sizes = [h5_bytes_of(record, work / f"{compression}-{chunk}", compression, chunk, text=True) - base
                 for chunk in (1 << 16, 1 << 18, 1 << 20)]
        print(f"  {compression:<7} the text takes {'  '.join(f'{s / 1e6:6.2f} MB' for s in sizes)}"
              "  (chunks of 64 KiB, 256 KiB, 1 MiB)")


def h5_bytes_of(record: Path, data: Path, compression: str, chunk: int, text: bool) -> int:
    cfg = config_from_dict({"output": {"h5_compression": compression}})
    saved = store_module.CONTENT_CHUNK
    store_module.CONTENT_CHUNK = chunk
    try:
        process_all([record], data, cfg, text)
    finally:
        store_module.CONTENT_CHUNK = saved
    return h5_bytes(data)


def read_times(folder: Path, repeat: int) -> None:
    """CPU seconds to read the stdlib record's text back (each file checked against its sha256) and its images."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        for label, read in (("load_files", load_files), ("load_images", load_images)):
            started = time.process_time()
            read(folder)
            best[label] = min(best.get(label, float("inf")), time.process_time() - started)
    print(f"stdlib record, reading back: load_files {best['load_files']:.3f} s, load_images "
          f"{best['load_images']:.3f} s (best of {repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        work = Path(tmp)
        compare("the demo's records", demo_records(work / "demo-src"), work / "demo", args.repeat)
        stdlib = stdlib_record(work / "stdlib-src")
        compare("one stdlib-sized record", stdlib, work / "stdlib", args.repeat)
        read_times(work / "stdlib" / "data-True" / stdlib[0].stem, args.repeat)
        chunk_and_filter_sizes(stdlib[0], work / "chunks")


if __name__ == "__main__":
    main()

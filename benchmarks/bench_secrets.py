"""What masking credentials costs the process step (issue 22; target: under ~10% of the step without it).

Corpus: the running Python's standard library (real code, found at run time; ``test`` and ``site-packages`` left
out, as the stdlib copies of the tests are), each top-level package folder zipped into an archive with its files
under ``<name>-1.0/`` as GitHub release archives hold a project, the lone modules together in one more archive;
``--plant`` adds to one archive the files of tests/helpers.py ``plant_credentials`` (fake credentials in a
.env, a config.yaml, a PEM key, ...), so the run shows them found.

Measured side by side on each archive, in turn, the order alternating (best of ``--repeat`` each), one core, in
CPU seconds of this process (``time.process_time``: on a shared machine the wall clock varies 2x between runs):

- `process` (``zenodo_hpc.record.process.process_path``, default config) as it is: credentials masked;
- the same with masking off: ``process.mask_secrets`` replaced by a function returning the file as it is;
- masking alone: the seconds spent in ``mask_secrets`` during the first, and in its prefilter.

    python benchmarks/bench_secrets.py [--repeat 3] [--no-plant] [--corpus site-packages [--packages 10]]
"""

from __future__ import annotations

import argparse
import sysconfig
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from _common import machine_line, stdlib_root

from zenodo_hpc.core.config import Config
from zenodo_hpc.record import process as process_module
from zenodo_hpc.record import secrets as secrets_module
from zenodo_hpc.record.process import process_path

TARGET = 0.10  # masking's share of the process step without it


def stdlib_sources() -> list[tuple[str, list[tuple[Path, str]]]]:
    """(archive name, [(file, its path in the archive)]) per package of the stdlib, the lone modules last."""
    root = stdlib_root()
    groups: list[tuple[str, list[tuple[Path, str]]]] = []
    modules = []
    for entry in sorted(root.iterdir()):
        if entry.name in {"test", "site-packages", "__pycache__", "idlelib"} or entry.is_symlink():
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            if files:
                groups.append((entry.name, [(p, p.relative_to(root).as_posix()) for p in files]))
        elif entry.suffix == ".py":
            modules.append((entry, entry.name))
    groups.append(("modules", modules))
    return groups


def site_packages_sources(count: int) -> list[tuple[str, list[tuple[Path, str]]]]:
    """The ``count`` packages of this venv's site-packages with the most files (numpy, pip, ...: larger records)."""
    root = Path(sysconfig.get_paths()["purelib"])
    found = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and (folder / "__init__.py").is_file():
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                           and "__pycache__" not in p.parts)
            found.append((folder.name, [(p, p.relative_to(root).as_posix()) for p in files]))
    found.sort(key=lambda item: (-len(item[1]), item[0]))
    return found[:count] + [("modules", [])]


def make_archives(out: Path, plant: bool, corpus: str = "stdlib", count: int = 10) -> list[Path]:
    archives = []
    planted = out / "planted"
    if plant:
        from helpers import plant_credentials  # tests/ is on sys.path (benchmarks/_common.py)

        plant_credentials(planted)
    for name, files in (stdlib_sources() if corpus == "stdlib" else site_packages_sources(count)):
        archive = out / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, arcname in files:
                zf.write(path, f"{name}-1.0/{arcname}")
            if plant and name == "modules":
                for path in sorted(p for p in planted.rglob("*") if p.is_file()):
                    zf.write(path, f"{name}-1.0/deploy/{path.relative_to(planted).as_posix()}")
        archives.append(archive)
    return archives


class MaskTimer:
    """Seconds in mask_secrets and in its prefilter, and what it found, while installed."""

    def __init__(self) -> None:
        self.seconds = self.prefilter = 0.0
        self.files = 0
        self.kinds: Counter[str] = Counter()
        self._mask, self._candidates = process_module.mask_secrets, secrets_module._candidate_lines

    def __enter__(self) -> MaskTimer:
        def mask(data: bytes, path: str = "") -> Any:
            started = time.process_time()
            try:
                masked, findings = self._mask(data, path)
            finally:
                self.seconds += time.process_time() - started
            self.files += bool(findings)
            self.kinds.update(f.kind for f in findings)
            return masked, findings

        def candidates(text: bytes) -> Any:
            started = time.process_time()
            try:
                return self._candidates(text)
            finally:
                self.prefilter += time.process_time() - started

        process_module.mask_secrets, secrets_module._candidate_lines = mask, candidates  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        process_module.mask_secrets, secrets_module._candidate_lines = self._mask, self._candidates  # type: ignore


class MaskingOff:
    def __enter__(self) -> None:
        self._mask = process_module.mask_secrets
        process_module.mask_secrets = lambda data, path="": (data, [])  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        process_module.mask_secrets = self._mask  # type: ignore[assignment]


def timed(archive: Path, data: Path, cfg: Config) -> tuple[float, Any]:
    """CPU seconds of this process (the step is CPU-bound: extraction in RAM, rasterizing, zlib), which the other
    jobs of a shared machine change far less than the wall clock."""
    started = time.process_time()
    result = process_path(archive, data, cfg, record_id=archive.stem)
    return time.process_time() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side per archive; the best counts")
    parser.add_argument("--no-plant", dest="plant", action="store_false", help="no planted credentials")
    parser.add_argument("--corpus", choices=("stdlib", "site-packages"), default="stdlib",
                        help="stdlib (default), or the site-packages packages with the most files (larger records)")
    parser.add_argument("--packages", type=int, default=10, help="how many, with --corpus site-packages")
    parser.add_argument("--engine", choices=("auto", "aho-corasick"), default="auto",
                        help="the prefilter: auto (Hyperscan where installed) or the Aho-Corasick one")
    args = parser.parse_args()
    cfg = Config()
    if args.engine != "auto":
        secrets_module.prefilter_engine = lambda: args.engine  # type: ignore[assignment]
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-secrets-") as tmp:
        tmp_path = Path(tmp)
        archives = make_archives(tmp_path, args.plant, args.corpus, args.packages)
        secrets_module.mask_secrets(b"warm up: compile the patterns and the automaton\n", "x.py")
        on = off = masking = prefilter = 0.0
        files = size = segments = masked_files = 0
        kinds: Counter[str] = Counter()
        for i, archive in enumerate(archives):
            best_on = best_off = best_mask = best_pre = float("inf")
            for r in range(args.repeat):
                for side in (("on", "off") if (i + r) % 2 == 0 else ("off", "on")):
                    if side == "off":
                        with MaskingOff():
                            seconds, _ = timed(archive, tmp_path / "off", cfg)
                        best_off = min(best_off, seconds)
                        continue
                    with MaskTimer() as timer:
                        seconds, result = timed(archive, tmp_path / "on", cfg)
                    if seconds < best_on:
                        best_on, best_mask, best_pre = seconds, timer.seconds, timer.prefilter
                    if r == 0:
                        masked_files += timer.files
                        kinds.update(timer.kinds)
                        files += result.stats.rasterized
                        size += result.stats.bytes_rasterized
                        segments += result.stats.segments
            on, off, masking, prefilter = on + best_on, off + best_off, masking + best_mask, prefilter + best_pre
        what = ("the stdlib of this Python" if args.corpus == "stdlib" else
                f"the {args.packages} packages of site-packages with the most files")
        print(f"corpus: {what} in {len(archives)} zip archives (one per package, the lone modules or the planted "
              f"files in one{', with the planted credentials' if args.plant else ''}): {files} files rasterized, "
              f"{size / 1e6:.1f} MB, {segments} segments; best of {args.repeat} per archive and side, CPU seconds")
        print(f"  process, masking off   {off:7.2f} s = 1.000x  ({size / 1e6 / off:5.1f} MB/s of files)")
        print(f"  process, masking on    {on:7.2f} s = {on / off:.3f}x  ({size / 1e6 / on:5.1f} MB/s of files)")
        print(f"  mask_secrets alone     {masking:7.2f} s = {masking / off:.3f}x of the step without it "
              f"({size / 1e6 / masking:5.1f} MB/s), its prefilter {prefilter:.2f} s")
        found = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())
        print(f"  prefilter engine: {secrets_module.prefilter_engine()}")
        print(f"  masked: {sum(kinds.values())} credentials in {masked_files} files ({found or 'none'})")
        share = masking / off
        print(f"target: masking under {TARGET:.0%} of the process step: {'PASS' if share < TARGET else 'FAIL'} "
              f"({share:.1%} measured inside the step; end to end {on / off - 1:+.1%})")


if __name__ == "__main__":
    main()

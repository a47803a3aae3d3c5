"""Run the demo and write what it prints into the sample-output blocks of the README and the docs.

A page shows the demo's output between these two lines, around a fenced block::

    <!-- demo output: scripts/update_demo_output.py writes it -->
    <!-- end of demo output -->

The demo runs as the README's set-up runs it: ``zenodo-hpc demo --out build/demo`` from a clone's root with
the venv not activated (``--executor local`` here, so that the output does not depend on a SLURM cluster).
The block keeps what the run printed, but for the folders of this run (the venv's ``bin`` is written
``.venv/bin``, the temporary folder it ran in is left out). What differs from one run to the next is left
out of the comparison: the double's port, durations, rates, and the image's md5 (the image records the port
in its run config and records) and its compression ratio (its dataset card's figures are PNGs drawn by
matplotlib, whose bytes change with matplotlib's version; the sizes in MB do not). A page is rewritten
only when something else changed, so running this again leaves the pages as they are. tests/demo/test_demo.py
fails when a page and a run disagree.

    .venv/bin/python scripts/update_demo_output.py           # rewrite the blocks that are stale
    .venv/bin/python scripts/update_demo_output.py --check   # only say which are stale (exit 1)
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BEGIN = "<!-- demo output: scripts/update_demo_output.py writes it -->"
END = "<!-- end of demo output -->"
BLOCK = re.compile(re.escape(BEGIN) + r"\n```\n(.*?)```\n" + re.escape(END), re.S)
OUT = "build/demo"  # as `make demo` writes it
VENV_BIN = ".venv/bin"  # as `make demo` makes it
VARYING = [  # what differs from run to run, and what it is written as when comparing
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"\b\d+(\.\d+)? s\b"), "N s"),
    (re.compile(r"\b\d+(\.\d+)? MB/s\b"), "N MB/s"),
    (re.compile(r"\bmd5 [0-9a-f]{32}\b"), "md5 MD5"),
    (re.compile(r"\bratio \d+\.\d+"), "ratio N"),  # the card's figures are PNGs of matplotlib, whose bytes
]                                                # differ from one version of it to another


@dataclass
class DemoRun:
    """One run of the demo as the README's set-up runs it."""

    where: Path  # the folder it ran from (the clone's root, for `make demo`)
    scripts: Path  # the venv's bin, where `zenodo-hpc` and `python` are
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> Path:
        return self.where / OUT


def path_without(folder: Path) -> str:
    """PATH without ``folder``: the venv is not active after `make demo`."""
    entries = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and Path(e).resolve() != folder.resolve())


def run_demo(where: Path, scripts: Path | None = None) -> DemoRun:
    """``zenodo-hpc demo --out build/demo --executor local`` from ``where``, the one installed in ``scripts``
    (default: this Python's venv)."""
    scripts = scripts or Path(sysconfig.get_path("scripts"))
    env = dict(os.environ, PATH=path_without(scripts))
    done = subprocess.run([str(scripts / "zenodo-hpc"), "demo", "--out", OUT, "--executor", "local"], cwd=where,
                          env=env, capture_output=True, text=True, timeout=900)
    return DemoRun(where, scripts, done.returncode, done.stdout, done.stderr)


def sample_block(run: DemoRun) -> str:
    """What the run printed, with its own folders written as in a clone after `make demo`."""
    text = run.stdout.replace(f"{run.scripts}/", f"{VENV_BIN}/").replace(f"{run.where}/", "")
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


def masked(text: str) -> str:
    """``text`` with what differs from run to run replaced by a name."""
    for pattern, name in VARYING:
        text = pattern.sub(name, text)
    return text


def blocks_in(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def pages_with_blocks() -> list[Path]:
    return [page for page in PAGES if blocks_in(page)]


def stale(page: Path, block: str) -> str:
    """How the page's blocks differ from ``block`` (a diff), or "" when only what varies differs."""
    diffs = []
    for shown in blocks_in(page):
        if masked(shown) != masked(block):
            diffs += difflib.unified_diff(masked(shown).splitlines(), masked(block).splitlines(),
                                          f"{page.name} (shown)", "the demo now", lineterm="")
    return "\n".join(diffs)


def rewrite(page: Path, block: str) -> None:
    text = BLOCK.sub(lambda _: f"{BEGIN}\n```\n{block}```\n{END}", page.read_text())
    partial = page.with_name(f".{page.name}.partial")
    partial.write_text(text)
    os.replace(partial, page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is stale")
    args = parser.parse_args(argv)
    pages = pages_with_blocks()
    if not pages:
        print(f"no page has a demo output block ({BEGIN})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="zenodo-hpc-demo-") as where:
        run = run_demo(Path(where))
        if run.returncode != 0:
            print(f"the demo failed ({run.returncode}):\n{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        block = sample_block(run)
    found_stale = False
    for page in pages:
        diff = stale(page, block)
        name = page.relative_to(ROOT)
        if not diff:
            print(f"{name}: up to date")
        elif args.check:
            found_stale = True
            print(f"{name}: stale\n{diff}")
        else:
            rewrite(page, block)
            print(f"{name}: demo output rewritten")
    return 1 if found_stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""Build ``zenodo_hpc/demo/sample.tar.gz``, the demo's sample of real code, from a CPython installation.

Its output is committed: the demo reads it as package data, so that ``zenodo-hpc demo`` runs, and prints
the same, on every Python the package accepts (Debian's and Ubuntu's own ``python3`` have neither IDLE nor
the C headers unless optional packages are installed, so the demo cannot take them from the running Python).
Run it only to change the sample, with the venv's Python (it uses the package); the committed one was built
from CPython 3.11.7 (pyenv)::

    .venv/bin/python scripts/build_demo_sample.py ~/.pyenv/versions/3.11.7

What it takes, under ``cpython-<version>/`` in the archive: the first 26 packages of the standard library
(by name; tests, IDLE, Tk and the like left out), each with up to 12 of its files of at most 40 kB; 25 of
the C headers; IDLE's text, HTML and config documents; CPython's ``LICENSE.txt`` (PSF License, version 2);
and ``SOURCES.txt``, naming the installed file each one was copied from. The same installation gives the
same bytes: members sorted, fixed times, owners and modes, gzip without a name or a time stamp.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from zenodo_hpc.demo.demo import tar_gz  # the demo's own deterministic tar.gz: same members, same bytes

PACKAGES = 26
FILES_PER_PACKAGE = 12
MAX_FILE_BYTES = 40_000
HEADERS = 25
IDLE_DOCS = (".txt", ".html", ".def")
SKIP_PACKAGES = {"test", "site-packages", "idlelib", "lib2to3", "pydoc_data", "turtledemo", "tkinter", "ensurepip"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "zenodo_hpc" / "demo" / "sample.tar.gz"

SOURCES_HEAD = """\
The demo's sample of real code: files of CPython {version}, copied unchanged from an installation of it
(each line below: the file's path in this sample <- its path under the installation's prefix).

Licence: CPython is distributed under the PSF License Agreement for Python, version 2 (SPDX: PSF-2.0);
its full text, with the copyright notices and the history of the software, is LICENSE.txt beside this file.

Built by scripts/build_demo_sample.py of the zenodo-hpc repository; read by zenodo_hpc/demo/demo.py.

sample path <- installed file
"""


def python_version(include: Path) -> str:
    """The version of the installation, from its ``patchlevel.h`` (no need to run its interpreter)."""
    found = re.search(r'#define PY_VERSION\s+"([^"]+)"', (include / "patchlevel.h").read_text())
    if found is None:
        raise SystemExit(f"no PY_VERSION in {include / 'patchlevel.h'}")
    return found.group(1)


def installation_dirs(prefix: Path) -> tuple[Path, Path]:
    """The standard library's folder and the C headers' folder of the installation at ``prefix``."""
    stdlibs = sorted(p for p in (prefix / "lib").glob("python3.*") if (p / "os.py").is_file())
    includes = sorted(p for p in (prefix / "include").glob("python3.*") if (p / "Python.h").is_file())
    if not stdlibs or not includes:
        raise SystemExit(f"{prefix}: not a full CPython installation (needs lib/python3.*/os.py and "
                         "include/python3.*/Python.h, e.g. a pyenv or python.org build)")
    return stdlibs[-1], includes[-1]


def chosen_files(stdlib: Path, include: Path) -> dict[str, Path]:
    """``{path in the sample: installed file}`` for every file the sample takes."""
    chosen: dict[str, Path] = {}
    packages = [p for p in sorted(stdlib.iterdir())
                if p.is_dir() and (p / "__init__.py").is_file() and p.name not in SKIP_PACKAGES][:PACKAGES]
    for package in packages:
        files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.stat().st_size <= MAX_FILE_BYTES)
        chosen.update({f"stdlib/{package.name}/{p.relative_to(package).as_posix()}": p
                       for p in files[:FILES_PER_PACKAGE]})
    headers = [p for p in sorted(include.glob("*.h")) if p.name != "pyconfig.h"][:HEADERS]  # pyconfig: generated
    chosen.update({f"headers/{p.name}": p for p in headers})
    idle = stdlib / "idlelib"
    chosen.update({f"idle-docs/{p.name}": p for p in sorted(idle.iterdir()) if p.is_file() and p.suffix in IDLE_DOCS})
    chosen["LICENSE.txt"] = stdlib / "LICENSE.txt"
    return chosen


def sources_text(version: str, prefix: Path, chosen: dict[str, Path]) -> str:
    lines = [f"{name} <- {path.relative_to(prefix).as_posix()}" for name, path in sorted(chosen.items())]
    return SOURCES_HEAD.format(version=version) + "\n".join(lines) + "\n"


def build(prefix: Path) -> tuple[bytes, int, str]:
    """The sample's bytes, how many files of code it holds, and the CPython version they come from."""
    stdlib, include = installation_dirs(prefix)
    version = python_version(include)
    chosen = chosen_files(stdlib, include)
    members = {name: path.read_bytes() for name, path in chosen.items()}
    members["SOURCES.txt"] = sources_text(version, prefix, chosen).encode()
    top = f"cpython-{version}"
    return tar_gz({f"{top}/{name}": data for name, data in members.items()}), len(chosen) - 1, version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", type=Path, help="a CPython installation's prefix (e.g. ~/.pyenv/versions/3.11.7)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    data, files, version = build(args.prefix.expanduser().resolve())
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, args.out)
    print(f"{args.out}: {files} files of CPython {version}, {len(data) / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

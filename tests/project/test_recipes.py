"""The recipes users copy, run as written against a really packed image (mksquashfs): every command and Python
block of the dataset card inside it (for whoever downloads the image without zenodo-hpc), and the recipes of
docs/formats.md and docs/image.md; under this venv's numpy 2 and, in a throwaway venv that holds only what the
card tells a downloader to install, under numpy 1 (which the package accepts: ``numpy>=1.24``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from doubles import ZenodoDouble, make_zip
from helpers import run_config, stdlib_package, stdlib_records
from registry_venv import run_from_registry, source_copy, throwaway_venv, venv_environment

from zenodo_hpc.core.state import open_run
from zenodo_hpc.dataset.load import load_images, load_metadata
from zenodo_hpc.dataset.pack import READ_H5_RECIPE, pack
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

ROOT = Path(__file__).resolve().parents[2]
DOCS = {name: (ROOT / "docs" / name).read_text() for name in ("formats.md", "image.md")}
DOCS_RECORD = "1065022"  # the record the docs' recipes name
IMAGE = "zenodo-ml.sqsh"
WAYS = ("squashfuse", "mount", "unsquashfs")  # the ways in that the card and docs/image.md show, by their command
# Printed after each recipe block: what it read, comparable with what zenodo-hpc reads (numpy 1 and 2 alike).
DUMP = """
import hashlib as _hashlib, json as _json
print("RECIPE-RESULT", _json.dumps({"images": {str(_p): [list(_a.shape), str(_a.dtype),
                                                        _hashlib.sha256(_a.tobytes()).hexdigest()]
                                              for _p, _a in globals().get("images", {}).items()},
                                   "meta": globals().get("meta")}), flush=True)
"""
# One record holding each kind of file the h5 stores differently: two ASCII files (the second starts past the
# first), one that needs 16 bits, one with an emoji (32 bits) and an empty one (no image).
DOCS_RECORD_FILES = {
    "code-1.0/json/decoder.py": (stdlib_package("json") / "decoder.py").read_bytes(),
    "code-1.0/json/encoder.py": (stdlib_package("json") / "encoder.py").read_bytes(),
    "code-1.0/README.md": "naïve – ünïcode\n".encode() * 100,
    "code-1.0/emoji.txt": "done 😀\n".encode(),
    "code-1.0/empty.py": b"",
}

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                reason="mksquashfs not on PATH (apt-get install squashfs-tools)")


@dataclass
class Packed:
    image: Path  # the image as pack wrote it, with its .md5 and .sha256 beside it
    card: str = field(repr=False)  # its README.md
    # record id -> {"images": digest, "meta": metadata}, as zenodo-hpc reads them
    expected: dict[str, dict[str, Any]] = field(repr=False)
    arrays: dict[str, np.ndarray] = field(repr=False)  # the docs' record's images


def digest(images: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {path: [list(a.shape), str(a.dtype), hashlib.sha256(a.tobytes()).hexdigest()] for path, a in images.items()}


def pack_a_run(root: Path, **output: Any) -> Packed:
    """A run of three records (the docs' 1065022 first) from a Zenodo double, processed and packed."""
    with ZenodoDouble() as double:
        double.add_record(ZenodoDouble.make_hit(int(DOCS_RECORD), created="2017-11-21", title="every kind of file"),
                          {"code-1.0.zip": make_zip(DOCS_RECORD_FILES)})
        for i, (top, files) in enumerate(stdlib_records(2, files_per_record=3), 1):
            double.add_record(ZenodoDouble.make_hit(int(DOCS_RECORD) + i, created=f"2017-12-0{i}", title=top),
                              {f"{top}.zip": make_zip(files)})
        cfg = run_config(root, double)
        for key, value in output.items():
            setattr(cfg.output, key, value)
        harvest(cfg, progress=False)
        run = open_run(cfg)
        submit_pending(run, cfg, kind="debug")
    result = pack(run, cfg, progress=False)
    assert result.records == 3
    expected = {}
    for record_id in (DOCS_RECORD, str(int(DOCS_RECORD) + 1), str(int(DOCS_RECORD) + 2)):
        folder = run.record_folder(record_id)
        expected[record_id] = {"images": digest(load_images(folder)), "meta": load_metadata(folder)}
    arrays = load_images(run.record_folder(DOCS_RECORD))
    with h5py.File(run.record_folder(DOCS_RECORD) / f"images_{DOCS_RECORD}.h5") as h5:
        assert {"segments_uint8", "segments_uint16", "segments_uint32"} <= set(h5)
        assert h5["files/start"][()].max() > 0  # a file starts past another in its dataset
    assert min(a.shape[0] for a in arrays.values()) == 0  # and an empty file
    return Packed(result.image, (run.data / "README.md").read_text(), expected, arrays)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    return pack_a_run(tmp_path_factory.mktemp("packed"))


# --- reading the pages ------------------------------------------------------------------------------------------


def fenced(markdown: str, *languages: str) -> list[str]:
    """The fenced code blocks of these languages, in page order."""
    return [m.group(2) for m in re.finditer(r"```([a-z]*)\n(.*?)```", markdown, re.S) if m.group(1) in languages]


def pip_lines(markdown: str) -> list[str]:
    return [line for block in fenced(markdown, "sh", "bash") for line in block.splitlines()
            if line.startswith("python -m pip ")]


def opening_block(markdown: str, way: str) -> str:
    """The shell block that opens the image this way (by its command)."""
    command = {"squashfuse": "squashfuse ", "mount": "mount -t squashfs", "unsquashfs": "unsquashfs -d"}[way]
    (block,) = [b for b in fenced(markdown, "sh", "bash") if command in b]
    return block


def inline(markdown: str, pattern: str) -> str:
    """An inline command the page shows (`...`)."""
    match = re.search(rf"`({pattern})`", markdown)
    assert match, f"the page shows no `{pattern}`"
    return match.group(1)


# --- running them -----------------------------------------------------------------------------------------------


def download(packed: Packed, folder: Path) -> Path:
    """The image and its checksum files, in a folder of their own, as a downloader has them."""
    folder.mkdir(parents=True)
    for name in (IMAGE, f"{IMAGE}.md5", f"{IMAGE}.sha256"):
        os.link(packed.image.with_name(name), folder / name)
    return folder


def shell(commands: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["bash", "-ec", commands], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"`{commands.strip()}` failed in {cwd}: {done.stdout}{done.stderr}"
    return done.stdout


def run_python(python: Path | str, blocks: list[str], cwd: Path, env: dict[str, str] | None = None
               ) -> list[dict[str, Any]]:
    """The blocks run one after the other in one interpreter, as a user pastes them; what each read."""
    script = "".join(block + DUMP for block in blocks)
    done = subprocess.run([str(python), "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the recipe failed in {cwd}:\n{done.stderr[-3000:]}"
    return [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("RECIPE-RESULT ")]


def can_open(way: str) -> str | None:
    """Why this machine cannot open an image this way (None: it can)."""
    if way == "squashfuse" and not (shutil.which("squashfuse") and shutil.which("fusermount3")):
        return "squashfuse is not installed (apt-get install squashfuse)"
    if way == "squashfuse" and not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if way == "mount" and os.geteuid() != 0:
        return "mounting with the kernel's squashfs driver needs root"
    return None


def open_image(markdown: str, way: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    block = opening_block(markdown, way)
    done = subprocess.run(["bash", "-ec", block], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and way == "mount" and "loop" in done.stderr:
        pytest.skip(f"this machine has no loop device to mount the image: {done.stderr.strip()}")
    assert done.returncode == 0, f"`{block.strip()}` failed: {done.stderr}"


def close_image(markdown: str, way: str, cwd: Path, folder: str) -> None:
    """Unmount it with the command the page shows."""
    if way != "unsquashfs":
        shell(inline(markdown, rf"{'fusermount3 -u' if way == 'squashfuse' else 'umount'} {folder}/?"), cwd)


def check_then_read(page: str, shell_lang: str, python: Path | str, way: str, folder: Path, mount: str,
                    env: dict[str, str] | None) -> list[dict[str, Any]]:
    """A page's steps for a downloader, as written, in ``folder``: its checksum block (both say OK), opening the
    image this way as ``mount``, every Python block (what each printed), closing the image again."""
    out = shell(next(b for b in fenced(page, shell_lang) if "md5sum -c" in b), folder, env)
    assert out.splitlines() == [f"{IMAGE}: OK", f"{IMAGE}: OK"]
    open_image(page, way, folder, env)
    try:
        return run_python(python, fenced(page, "python"), folder, env)
    finally:
        close_image(page, way, folder, mount)


def check_card(packed: Packed, python: Path | str, way: str, folder: Path, env: dict[str, str] | None = None) -> None:
    """The card's commands and recipes, in a downloader's folder: the checksums, opening the image this way, each
    Python block (with h5py and numpy, with PySquashfsImage, with zenodo-hpc), closing it."""
    card = packed.card
    record = re.search(r'^RECORD = "([^"]+)"', card, re.M).group(1)
    found = check_then_read(card, "sh", python, way, folder, "zenodo-ml", env)
    assert len(found) == 3  # h5py and numpy; without mounting; zenodo-hpc
    for read in found:
        assert read == packed.expected[record]


def check_formats_page(packed: Packed, python: Path | str, folder: Path, env: dict[str, str] | None = None) -> None:
    """docs/formats.md's images recipe, in the folder of a record of the image (extracted as docs/image.md shows);
    then on a format 1 file, which it reads too (its text recipe: tests/dataset/test_load.py)."""
    shell(opening_block(DOCS["image.md"], "unsquashfs"), folder, env)
    recipe = [block for block in fenced(DOCS["formats.md"], "python") if "def read_images" in block]
    (found,) = run_python(python, recipe, folder / "mnt" / DOCS_RECORD, env)
    assert found["images"] == packed.expected[DOCS_RECORD]["images"]
    old = folder / "format-1"
    old.mkdir()
    write_format_1(old / f"images_{DOCS_RECORD}.h5", packed.arrays)
    (found,) = run_python(python, recipe, old, env)
    assert found["images"] == packed.expected[DOCS_RECORD]["images"]


def write_format_1(path: Path, images: dict[str, np.ndarray]) -> None:
    """Format 1 as docs/formats.md describes it: one /segments dataset in the record's widest dtype."""
    keys = sorted(images)
    offsets = np.cumsum([0] + [images[k].shape[0] for k in keys]).astype(np.uint64)
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"format": "zenodo-hpc-images", "format_version": 1, "record_id": DOCS_RECORD})
        h5.create_dataset("segments", data=np.concatenate([images[k] for k in keys]), compression="gzip")
        h5.create_dataset("files/path", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset("files/offset", data=offsets)


def check_image_page(packed: Packed, python: Path | str, way: str, folder: Path,
                     env: dict[str, str] | None = None) -> None:
    """docs/image.md: its checksum commands, then its Python blocks with the image opened this way as ``mnt/``."""
    found = check_then_read(DOCS["image.md"], "bash", python, way, folder, "mnt", env)
    assert found[-1] == packed.expected[DOCS_RECORD]  # the last block reads the mounted (or extracted) record


# --- the tests --------------------------------------------------------------------------------------------------


def test_every_shell_block_of_the_card_is_one_the_tests_run(packed: Packed) -> None:
    card = packed.card
    run = {opening_block(card, way) for way in WAYS} | {b for b in fenced(card, "sh") if "md5sum -c" in b}
    installs = {b for b in fenced(card, "sh") if all(line.startswith("python -m pip ") for line in b.splitlines())}
    assert set(fenced(card, "sh")) == run | installs
    assert "pip install 'zenodo-hpc" not in card and "docs/" not in card  # nothing a downloader cannot follow
    for name in ("/files/path", "/files/offset", "/files/itemsize", "/files/start", "/segments_uint16"):
        assert f"`{name}`" in card


def test_the_formats_page_recipe_is_the_card_s(packed: Packed) -> None:
    """One recipe: the card's ``read_images`` is the one docs/formats.md shows (and tests below run both)."""
    assert READ_H5_RECIPE in DOCS["formats.md"] and READ_H5_RECIPE in packed.card


@pytest.mark.parametrize("way", WAYS)
def test_the_card_s_commands_and_recipes_run_as_written(packed: Packed, way: str, tmp_path: Path) -> None:
    if why := can_open(way):
        pytest.skip(why)
    check_card(packed, sys.executable, way, download(packed, tmp_path / "download"))


def test_the_card_of_an_image_of_zstd_h5_files_says_to_install_hdf5plugin(tmp_path: Path) -> None:
    """``output.h5_compression: zstd-N``: h5py reads those files only with hdf5plugin imported; the card's recipes
    install and import it."""
    pytest.importorskip("hdf5plugin", reason="zstd h5 files need hdf5plugin: pip install 'zenodo-hpc[hdf5plugin]'")
    packed = pack_a_run(tmp_path / "run", h5_compression="zstd-3")
    assert all("hdf5plugin" in line for line in pip_lines(packed.card)[:2])
    check_card(packed, sys.executable, "unsquashfs", download(packed, tmp_path / "download"))


def test_the_formats_page_recipe_runs_as_written(packed: Packed, tmp_path: Path) -> None:
    check_formats_page(packed, sys.executable, download(packed, tmp_path / "download"))


@pytest.mark.parametrize("way", WAYS)
def test_the_image_page_recipes_run_as_written(packed: Packed, way: str, tmp_path: Path) -> None:
    if why := can_open(way):
        pytest.skip(why)
    check_image_page(packed, sys.executable, way, download(packed, tmp_path / "download"))


@pytest.mark.registry
def test_every_recipe_runs_under_numpy_1(packed: Packed, tmp_path: Path) -> None:
    """A throwaway venv with numpy<2 pinned and exactly what the card (and docs/image.md) tell a downloader to
    install, each ``python -m pip`` line run as written in a copy of the repository (zenodo-hpc is not on PyPI)."""
    python = throwaway_venv(tmp_path / "venv", pip=True)
    (tmp_path / "numpy-1.txt").write_text("numpy<2\n")
    env = venv_environment(python, PIP_CONSTRAINT=str(tmp_path / "numpy-1.txt"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    repository = source_copy(tmp_path / "zenodo-hpc")
    lines = pip_lines(packed.card) + pip_lines(DOCS["image.md"])
    assert len(lines) == 6  # the card's five, docs/image.md's one
    for line in lines:
        run_from_registry(line, what=line, cwd=repository, env=env)
    version = shell("python -c 'import numpy; print(numpy.__version__)'", tmp_path, env).strip()
    assert version.startswith("1."), version
    check_card(packed, python, "unsquashfs", download(packed, tmp_path / "card"), env)
    check_formats_page(packed, python, download(packed, tmp_path / "formats"), env)
    check_image_page(packed, python, "unsquashfs", download(packed, tmp_path / "image"), env)

"""One archive or folder -> one record folder: extract, walk, rasterize, write (and read back)."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import stdlib_package

from zenodo_hpc.config import Config, config_from_dict
from zenodo_hpc.errors import ExtractError
from zenodo_hpc.load import load_images, load_metadata
from zenodo_hpc.process import default_record_id, format_summary, process_path
from zenodo_hpc.raster import rasterize
from zenodo_hpc.walk import iter_tree_files


def zip_folder(folder: Path, archive: Path) -> Path:
    """A zip of ``folder`` with the folder itself as the top entry, like GitHub's release zips."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def test_real_zip_gives_four_files_that_read_back_equal_to_rasterize(tmp_path: Path) -> None:
    package = stdlib_package("email")
    archive = zip_folder(package, tmp_path / "email-1.0.zip")
    result = process_path(archive, tmp_path / "data", Config(), record_id="1065022")
    folder = tmp_path / "data" / "1065022"
    assert sorted(p.name for p in folder.iterdir()) == [
        "images_1065022.h5", "images_1065022.pkl", "metadata_1065022.json", "metadata_1065022.pkl"]

    sources = {f"email/{p.relative_to(package).as_posix()}": p.read_bytes()
               for p in package.rglob("*.py") if "__pycache__" not in p.parts and p.stat().st_size <= 100_000}
    assert len(sources) > 20
    for which in (folder, folder / "images_1065022.h5", folder / "images_1065022.pkl"):
        images = load_images(which)
        assert set(sources) <= set(images)
        for key, data in sources.items():
            np.testing.assert_array_equal(images[key], rasterize(data), err_msg=key)
    assert result.stats.segments == sum(len(a) for a in load_images(folder).values())


def test_tree_records_every_file_with_hash_segments_or_reason(source_tree: Path, tmp_path: Path) -> None:
    result = process_path(source_tree, tmp_path / "data", Config(), record_id="42")
    meta = load_metadata(result.written.folder)
    assert set(meta) == {"hit", "tree", "source", "stats", "tool"}
    files = dict(iter_tree_files(meta["tree"]))
    top = "demo-json-1a2b3c4"
    assert f"{top}/.git/HEAD" not in files and f"{top}/.gitignore" in files
    readme = files[f"{top}/README.md"]
    data = (source_tree / "README.md").read_bytes()
    assert readme == {"type": "file", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "segments": 1}
    assert files[f"{top}/logo.png"]["skipped"] == "binary"
    assert files[f"{top}/big.txt"]["skipped"] == "too_large" and files[f"{top}/big.txt"]["size"] == 100_001
    assert files[f"{top}/README.link"] == {"type": "symlink", "target": "README.md", "skipped": "symlink"}
    assert files[f"{top}/empty.py"]["segments"] == 0
    assert meta["tree"]["children"][top]["children"]["json"]["type"] == "dir"
    assert meta["stats"]["skipped"] == {"binary": 1, "symlink": 1, "too_large": 1}
    assert meta["stats"]["files"] == len(files)
    assert meta["tool"]["name"] == "zenodo-hpc" and len(meta["tool"]["config_sha256"]) == 64
    assert load_images(result.written.folder)[f"{top}/empty.py"].shape == (0, 80, 80)


def test_folder_keys_start_with_the_folder_name(source_tree: Path, tmp_path: Path) -> None:
    result = process_path(source_tree, tmp_path / "data", Config(), record_id="1")
    assert all(key.startswith("demo-json-1a2b3c4/") for key in load_images(result.written.folder))


def test_tar_gz_and_zip_of_the_same_tree_give_the_same_images(source_tree: Path, tmp_path: Path) -> None:
    tgz = tmp_path / "t.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(source_tree, arcname=source_tree.name)
    zipped = zip_folder(source_tree, tmp_path / "t.zip")
    a = load_images(process_path(tgz, tmp_path / "a", Config(), record_id="1").written.folder)
    b = load_images(process_path(zipped, tmp_path / "b", Config(), record_id="1").written.folder)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_processing_twice_is_byte_identical(source_tree: Path, tmp_path: Path) -> None:
    archive = zip_folder(source_tree, tmp_path / "r.zip")
    process_path(archive, tmp_path / "one", Config(), record_id="5")
    process_path(archive, tmp_path / "two", Config(), record_id="5")
    for name in ["images_5.h5", "images_5.pkl", "metadata_5.json", "metadata_5.pkl"]:
        assert (tmp_path / "one/5" / name).read_bytes() == (tmp_path / "two/5" / name).read_bytes(), name


def test_non_utf8_file_is_rasterized_with_replacement_characters(tmp_path: Path) -> None:
    root = tmp_path / "latin"
    root.mkdir()
    (root / "old.c").write_bytes("/* caf\xe9 */\n".encode("latin-1"))
    images = load_images(process_path(root, tmp_path / "d", Config(), record_id="2").written.folder)
    assert 0xFFFD in images["latin/old.c"][0, 0]


def test_empty_repository_gives_an_empty_record(tmp_path: Path) -> None:
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("owner-repo-abc1234/", "")
    result = process_path(archive, tmp_path / "d", Config(), record_id="3")
    assert result.stats.files == 0 and result.stats.segments == 0
    meta = load_metadata(result.written.folder)
    assert meta["tree"] == {"type": "dir", "children": {"owner-repo-abc1234": {"type": "dir", "children": {}}}}
    assert load_images(result.written.folder) == {}
    assert "0 files seen" in format_summary(result)


def test_config_controls_geometry_and_formats(source_tree: Path, tmp_path: Path) -> None:
    cfg = config_from_dict({"raster": {"width": 40, "height": 20}, "output": {"formats": ["h5"]}})
    result = process_path(source_tree, tmp_path / "d", cfg, record_id="4")
    assert not (result.written.folder / "images_4.pkl").exists()
    readme = load_images(result.written.folder)["demo-json-1a2b3c4/README.md"]
    np.testing.assert_array_equal(readme, rasterize((source_tree / "README.md").read_bytes(), width=40, height=20))


def test_bad_archive_writes_nothing_and_cleans_its_temp_folder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"<html><body>502 Bad Gateway</body></html>")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with pytest.raises(ExtractError):
        process_path(bad, tmp_path / "d", Config(), record_id="6", tmp_dir=scratch)
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "d" / "6").exists()


def test_default_record_id_from_archive_name(tmp_path: Path) -> None:
    assert default_record_id(Path("MUSE-1.0.tar.gz")) == "MUSE-1.0"
    assert default_record_id(Path("owner/repo v2.ZIP")) == "repo_v2"
    assert default_record_id(Path("...zip")) == "record"


def test_summary_line(source_tree: Path, tmp_path: Path) -> None:
    result = process_path(source_tree, tmp_path / "d", Config(), record_id="7")
    line = format_summary(result)
    assert "\n" not in line
    stats = result.stats
    assert line.startswith(f"record 7: {stats.files} files seen, {stats.rasterized} rasterized, 3 skipped")
    assert "(binary 1, symlink 1, too_large 1)" in line and f"{result.stats.segments} segments" in line
    shutil.rmtree(result.written.folder)

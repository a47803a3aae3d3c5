"""One archive or folder -> one record folder: extract, walk, rasterize, write (and read back)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import stdlib_package, zip_folder

import zenodo_hpc.record.extract as extract_module
import zenodo_hpc.record.process as process_module
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import ExtractError
from zenodo_hpc.dataset.load import load_images, load_metadata
from zenodo_hpc.record.extract import MAX_DEPTH, MAX_LISTED_SKIPS
from zenodo_hpc.record.process import ProcessResult, default_record_id, format_summary, process_path, process_sources
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.walk import iter_tree_files

BOTH_FORMATS = config_from_dict({"output": {"formats": ["h5", "pkl"]}})  # the h5 and the 2018 pickle, read alike

pytestmark = pytest.mark.usefixtures("ram_root")  # every test gets its own RAM folder (tests/conftest.py)


def test_real_zip_gives_four_files_that_read_back_equal_to_rasterize(tmp_path: Path) -> None:
    package = stdlib_package("email")
    archive = zip_folder(package, tmp_path / "email-1.0.zip")
    result = process_path(archive, tmp_path / "data", BOTH_FORMATS, record_id="1065022")
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
    assert set(meta) == {"hit", "tree", "source", "stats", "tool", "masked"}
    assert meta["masked"] == [] and meta["stats"]["masked"] == 0  # the json package holds no credential
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
    process_path(archive, tmp_path / "one", BOTH_FORMATS, record_id="5")
    process_path(archive, tmp_path / "two", BOTH_FORMATS, record_id="5")
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


@pytest.mark.parametrize("compression, h5py_filter", [("lzf", "lzf"), ("gzip-7", "gzip")])
def test_config_chooses_the_h5_compression(source_tree: Path, tmp_path: Path, compression: str,
                                           h5py_filter: str) -> None:
    import h5py

    cfg = config_from_dict({"output": {"h5_compression": compression}})
    result = process_path(source_tree, tmp_path / "d", cfg, record_id="4")
    with h5py.File(result.written.folder / "images_4.h5") as h5:
        assert h5.attrs["compression"] == compression
        assert {h5[name].compression for name in h5 if name.startswith("segments_")} == {h5py_filter}
    default = process_path(source_tree, tmp_path / "e", Config(), record_id="4")
    with h5py.File(default.written.folder / "images_4.h5") as h5:
        assert h5.attrs["compression"] == Config().output.h5_compression


def test_a_file_the_rasterizer_fails_on_is_skipped_and_its_batch_kept(source_tree: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are rasterized in batches: when a batch fails, each file is tried alone, and only the one that fails
    costs its images (the tree says why), as when files were rasterized one by one."""
    want = load_images(process_path(source_tree, tmp_path / "good", Config(), record_id="4").written.folder)
    bad_key, bad_text = "demo-json-1a2b3c4/README.md", (source_tree / "README.md").read_bytes()
    alone = process_module.rasterize_narrow

    def batch_fails(texts: list[bytes], **geometry: Any) -> list[np.ndarray]:
        raise MemoryError("no room for the batch")

    def fails_on_readme(text: bytes, **geometry: Any) -> np.ndarray:
        if text == bad_text:
            raise MemoryError("no room for this file")
        return alone(text, **geometry)

    monkeypatch.setattr(process_module, "rasterize_many", batch_fails)
    monkeypatch.setattr(process_module, "rasterize_narrow", fails_on_readme)
    result = process_path(source_tree, tmp_path / "d", Config(), record_id="4")
    got = load_images(result.written.folder)
    assert set(got) == set(want) - {bad_key} and len(got) > 3
    for key in got:
        np.testing.assert_array_equal(got[key], want[key])
    readme = load_metadata(result.written.folder)["tree"]["children"]["demo-json-1a2b3c4"]["children"]["README.md"]
    assert readme["skipped"] == "error: MemoryError: no room for this file" and "segments" not in readme
    assert result.stats.skipped["error"] == 1 and result.stats.rasterized == len(want) - 1


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


# --- odd names: the record is written, the odd file is in the tree with its reason -----------------------------

OK_PY = b"print('still here')\n"


def tar_of(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """A tar with these folders then files; names holding surrogate escapes are written as raw bytes."""
    with tarfile.open(path, "w", encoding="utf-8", errors="surrogateescape") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def zip_with_invalid_utf8_name(path: Path) -> Path:
    """``proj/caf\\xff\\xfe.py`` flagged UTF-8 (it is not), beside ``proj/ok.py``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("proj/caf\u00e9.py", b"x = 1\n")
        zf.writestr("proj/ok.py", OK_PY)
    path.write_bytes(buf.getvalue().replace("caf\u00e9".encode(), b"caf\xff\xfe"))
    return path


def deep_tar(path: Path) -> Path:
    """1,500 nested folders with a file at the bottom, and a normal file beside them."""
    deep = ["proj", *["d"] * 1500]
    return tar_of(path, {"/".join([*deep, "bottom.py"]): b"deep\n", "proj/ok.py": OK_PY},
                  dirs=tuple("/".join(deep[:i]) for i in range(1, len(deep) + 1)))


def long_name_tar(path: Path) -> Path:
    return tar_of(path, {"proj/" + "a" * 300 + ".py": b"long\n", "proj/ok.py": OK_PY})


def process_in_scratch(source: Path, tmp_path: Path, record_id: str) -> tuple[ProcessResult, dict[str, Any]]:
    """Process with a temporary folder of our own, check it is left empty (and RAM too), and check every output
    loads."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    result = process_path(source, tmp_path / "data", BOTH_FORMATS, record_id=record_id, tmp_dir=scratch)
    assert list(scratch.iterdir()) == [] and list(extract_module.SHM.iterdir()) == []
    folder = result.written.folder
    meta = load_metadata(folder / f"metadata_{record_id}.json")
    assert load_metadata(folder / f"metadata_{record_id}.pkl") == meta
    from_h5, from_pkl = load_images(folder / f"images_{record_id}.h5"), load_images(folder / f"images_{record_id}.pkl")
    assert from_h5.keys() == from_pkl.keys()
    for key in from_h5:
        np.testing.assert_array_equal(from_h5[key], from_pkl[key])
    return result, meta


@pytest.mark.parametrize(
    ("build", "odd_key", "reason"),
    [
        (lambda p: tar_of(p / "latin.tar", {"proj/caf\udce9.py": b"x\n", "proj/ok.py": OK_PY}),
         "proj/caf\ufffd.py", "bad_name"),
        (lambda p: zip_with_invalid_utf8_name(p / "flagged.zip"), "proj/caf\ufffd\ufffd.py", "bad_name"),
        (lambda p: long_name_tar(p / "long.tar"), "proj/" + "a" * 300 + ".py", "name_too_long"),
        (lambda p: deep_tar(p / "deep.tar"), None, "too_deep"),
    ],
    ids=["tar-not-utf8", "zip-flagged-not-utf8", "name-too-long", "1500-deep"],
)
def test_one_odd_member_is_its_skip_reason_not_the_records_failure(
    tmp_path: Path, build: Any, odd_key: str | None, reason: str
) -> None:
    result, meta = process_in_scratch(build(tmp_path), tmp_path, "9")
    files = dict(iter_tree_files(meta["tree"]))
    assert files["proj/ok.py"]["segments"] == 1
    [odd] = [key for key in files if key != "proj/ok.py"]
    if odd_key is not None:
        assert odd == odd_key
    else:  # the deep key is shortened around "…" and keeps its start and end
        assert odd.startswith("proj/d/d/") and odd.endswith("/d/bottom.py") and "…" in odd
    assert files[odd] == {"type": "file", "skipped": reason}
    assert meta["stats"]["skipped"] == {reason: 1} and meta["stats"]["files"] == 2
    assert result.stats.rasterized == 1
    images = load_images(result.written.folder)
    assert list(images) == ["proj/ok.py"]
    np.testing.assert_array_equal(images["proj/ok.py"], rasterize(OK_PY))


def test_a_file_at_the_depth_limit_is_rasterized_and_its_deep_tree_written(tmp_path: Path) -> None:
    at_limit = "/".join(["proj", *["d"] * (MAX_DEPTH - 2), "deepest.py"])
    over = "/".join(["proj", *["d"] * (MAX_DEPTH - 1), "over.py"])
    archive = tar_of(tmp_path / "limit.tar", {at_limit: OK_PY, over: b"x\n"})
    result, meta = process_in_scratch(archive, tmp_path, "10")
    np.testing.assert_array_equal(load_images(result.written.folder)[at_limit], rasterize(OK_PY))
    files = dict(iter_tree_files(meta["tree"]))
    assert files[over] == {"type": "file", "skipped": "too_deep"} and files[at_limit]["segments"] == 1


def test_many_skipped_members_are_listed_up_to_the_cap_and_all_counted(tmp_path: Path) -> None:
    odd = {f"proj/bad\udcff{i:04}.py": b"x\n" for i in range(MAX_LISTED_SKIPS + 5)}
    result, meta = process_in_scratch(tar_of(tmp_path / "many.tar", {**odd, "proj/ok.py": OK_PY}), tmp_path, "11")
    files = dict(iter_tree_files(meta["tree"]))
    assert len(files) == MAX_LISTED_SKIPS + 1 and files["proj/ok.py"]["segments"] == 1
    assert meta["stats"]["skipped"] == {"bad_name": MAX_LISTED_SKIPS + 5}
    assert meta["stats"]["files"] == MAX_LISTED_SKIPS + 6


def test_folder_with_names_that_are_not_utf8_gives_a_record(tmp_path: Path) -> None:
    root = tmp_path / "src" / "proj"
    root.mkdir(parents=True)
    (root / "ok.py").write_bytes(OK_PY)
    with open(os.fsencode(root) + b"/caf\xe9.py", "wb") as handle:
        handle.write(b"x\n")
    os.mkdir(os.fsencode(root) + b"/d\xff")
    result, meta = process_in_scratch(root, tmp_path, "12")
    files = dict(iter_tree_files(meta["tree"]))
    assert files["proj/caf\ufffd.py"] == {"type": "file", "skipped": "bad_name"}
    assert meta["tree"]["children"]["proj"]["children"]["d\ufffd"] == {"type": "dir", "children": {},
                                                                           "skipped": "bad_name"}
    assert meta["stats"]["skipped"] == {"bad_name": 2} and list(load_images(result.written.folder)) == ["proj/ok.py"]


def test_the_same_path_from_two_sources_keeps_the_first(tmp_path: Path) -> None:
    first = tar_of(tmp_path / "one.tar", {"proj/a.py": b"first = 1\n", "proj/x": b"a file\n"})
    second = tar_of(tmp_path / "two.tar", {"proj/a.py": b"second = 2\n", "proj/x/y.py": b"below a file\n"})
    result = process_sources("13", [(first, ""), (second, "")], tmp_path / "data", Config(), hit=None,
                             source_info=None)
    images = load_images(result.written.folder)
    assert list(images) == ["proj/a.py", "proj/x"]
    np.testing.assert_array_equal(images["proj/a.py"], rasterize(b"first = 1\n"))
    meta = load_metadata(result.written.folder)
    assert meta["tree"]["children"]["proj"]["children"]["x"]["type"] == "file"
    assert meta["stats"]["skipped"] == {"duplicate_path": 2} and meta["stats"]["files"] == 4


# --- the temporary folder goes whatever happens -----------------------------------------------------------------


def html_page(path: Path) -> Path:
    path.write_bytes(b"<html><body>502 Bad Gateway</body></html>")
    return path


def deep_then_unsafe_tar(path: Path) -> Path:
    """Extracts down to the depth limit, then meets an entry that escapes."""
    deepest = "/".join(["proj", *["d"] * (MAX_DEPTH - 2), "deepest.py"])
    return tar_of(path, {deepest: b"x\n", "proj/ok.py": OK_PY, "../outside.py": b"evil\n"})


@pytest.mark.parametrize(
    ("build", "reason"),
    [(lambda p: html_page(p / "bad.zip"), "bad_archive"),
     (lambda p: deep_then_unsafe_tar(p / "evil.tar"), "unsafe_archive")],
    ids=["html-page", "deep-then-unsafe"],
)
def test_an_archive_that_fails_to_extract_writes_nothing_and_leaves_no_temporary_folder(
        tmp_path: Path, ram_root: Path, build: Any, reason: str) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ExtractError) as caught:
        process_path(build(tmp_path), tmp_path / "data", Config(), record_id="14", tmp_dir=scratch)
    assert caught.value.reason == reason
    assert list(scratch.iterdir()) == [] and not (tmp_path / "data" / "14").exists()
    assert list(ram_root.iterdir()) == []


def test_a_failure_after_extraction_leaves_no_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               ram_root: Path) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("zenodo_hpc.record.process.sort_tree", broken)  # fails inside rasterize_tree, mid-record
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(RuntimeError, match="disk on fire"):
        process_path(deep_tar(tmp_path / "deep.tar"), tmp_path / "data", Config(), record_id="15", tmp_dir=scratch)
    assert list(scratch.iterdir()) == []
    assert list(ram_root.iterdir()) == []


def test_process_masks_planted_credentials_in_every_output(tmp_path: Path) -> None:
    """`zenodo-hpc process` on an archive with credentials planted among real code: the h5's and the pickle's
    images (decoded back to text) and the metadata hold none of them; the metadata lists where they were."""
    from helpers import image_rows, leaked, plant_credentials

    from zenodo_hpc.cli import main

    top = tmp_path / "src" / "app-1.0"
    shutil.copytree(stdlib_package("json"), top / "json", ignore=shutil.ignore_patterns("__pycache__"))
    planted = plant_credentials(top)
    values = [value for file_values in planted.values() for value in file_values]
    originals = {f"app-1.0/{name}": (top / name).read_bytes() for name in planted}
    assert all(leaked(image_rows(rasterize(data)), planted[name[8:]]) for name, data in originals.items())
    config = tmp_path / "c.yaml"
    config.write_text("output:\n  formats: [h5, pkl]\n")
    assert main(["process", str(zip_folder(top, tmp_path / "app.zip")), "--out", str(tmp_path / "out"), "--id", "7",
                 "-c", str(config)]) == 0
    folder = tmp_path / "out" / "7"
    h5_images, pkl_images = load_images(folder / "images_7.h5"), load_images(folder / "images_7.pkl")
    assert set(originals) <= set(h5_images) and h5_images.keys() == pkl_images.keys()
    for path, images in h5_images.items():
        np.testing.assert_array_equal(images, pkl_images[path])
        assert leaked(image_rows(images), values) == [], path
    meta = load_metadata(folder / "metadata_7.json")
    raw = [(folder / name).read_bytes().decode("latin-1") for name in ("metadata_7.json", "metadata_7.pkl")]
    assert leaked(raw, values) == []
    assert meta == load_metadata(folder / "metadata_7.pkl")
    masked = meta["masked"]
    assert {(m["file"], m["kind"]) for m in masked} >= {("app-1.0/keys/deploy_key.pem", "Private Key"),
                                                         ("app-1.0/upload/s3.py", "AWS Access Key"),
                                                         ("app-1.0/.env", "Secret Keyword"),
                                                         ("app-1.0/config.yaml", "Secret Keyword"),
                                                         ("app-1.0/ci/release.sh", "GitHub Token"),
                                                         ("app-1.0/notify.py", "Slack Token")}
    assert all(set(m) == {"kind", "file", "line"} and m["line"] >= 1 for m in masked)
    assert meta["stats"]["masked"] == len(masked)
    assert {m["file"] for m in masked} == set(originals)  # the json package's code is left alone
    node = meta["tree"]["children"]["app-1.0"]["children"]["config.yaml"]
    assert node["masked"] == 1 and node["sha256"] != hashlib.sha256(originals["app-1.0/config.yaml"]).hexdigest()
    json_node = meta["tree"]["children"]["app-1.0"]["children"]["json"]["children"]["decoder.py"]
    assert json_node["sha256"] == hashlib.sha256((top / "json" / "decoder.py").read_bytes()).hexdigest()


def test_the_h5_keeps_each_file_s_published_text_masked_with_the_tree_s_sha256(tmp_path: Path) -> None:
    """Every rasterized file's bytes come back from the h5: as they were, or with the planted credentials masked
    (what mask_secrets gives, none of the values); their size and sha256 are the tree's (of the masked text)."""
    from helpers import plant_credentials

    from zenodo_hpc.dataset.load import load_files
    from zenodo_hpc.record.secrets import mask_secrets

    top = tmp_path / "src" / "app-1.0"
    shutil.copytree(stdlib_package("json"), top / "json", ignore=shutil.ignore_patterns("__pycache__"))
    planted = plant_credentials(top)
    result = process_path(top, tmp_path / "data", Config(), record_id="7")
    texts = load_files(result.written.folder)
    assert texts.keys() == load_images(result.written.folder).keys()
    originals = {f"app-1.0/{p.relative_to(top).as_posix()}": p.read_bytes() for p in top.rglob("*") if p.is_file()}
    assert texts.keys() == originals.keys()
    for name, values in planted.items():
        key = f"app-1.0/{name}"
        masked, findings = mask_secrets(originals[key], key)
        assert findings and texts[key] == masked != originals[key]
        assert not [v for v in values if v.encode() in texts[key]], key
    assert texts["app-1.0/json/decoder.py"] == originals["app-1.0/json/decoder.py"]  # no credential: as it was
    nodes = {path: node for path, node in iter_tree_files(load_metadata(result.written.folder)["tree"])}
    for key, text in texts.items():
        assert (nodes[key]["size"], nodes[key]["sha256"]) == (len(text), hashlib.sha256(text).hexdigest()), key
    again = process_path(top, tmp_path / "again", Config(), record_id="7")
    assert (again.written.folder / "images_7.h5").read_bytes() == (result.written.folder / "images_7.h5").read_bytes()


def test_a_file_whose_masking_fails_is_skipped_never_rasterized_unmasked(source_tree: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = process_module.mask_secrets

    def failing(data: bytes, path: str = "") -> Any:
        if path.endswith("decoder.py"):
            raise RecursionError("the line that held password = 'hunter2'")
        return real(data, path)

    monkeypatch.setattr(process_module, "mask_secrets", failing)
    result = process_path(source_tree, tmp_path / "data", Config(), record_id="5")
    meta = load_metadata(result.written.folder)
    node = meta["tree"]["children"]["demo-json-1a2b3c4"]["children"]["json"]["children"]["decoder.py"]
    assert node["skipped"] == "error: masking credentials failed (RecursionError)" and "segments" not in node
    assert "demo-json-1a2b3c4/json/decoder.py" not in load_images(result.written.folder)
    assert meta["stats"]["skipped"]["error"] == 1 and "hunter2" not in json.dumps(meta)

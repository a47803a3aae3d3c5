"""Reading records straight out of a real squashfs image (made by mksquashfs, zstd) without mounting it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import stdlib_package

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.decode import NoStoredText
from zenodo_hpc.dataset.image import (
    READER_REQUIREMENTS,
    SquashImage,
    iter_image_records,
    load_images_from_image,
    load_metadata_from_image,
    split_image_path,
    verify_image_checksum,
)
from zenodo_hpc.dataset.load import load_files
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.store import write_record

try:
    import PySquashfsImage  # noqa: F401
    import zstandard  # noqa: F401
    HAVE_READER = True
except ImportError:
    HAVE_READER = False

MKSQUASHFS = shutil.which("mksquashfs")
needs_mksquashfs = pytest.mark.skipif(MKSQUASHFS is None, reason="mksquashfs not found: apt-get install "
                                      "squashfs-tools to build the test image")
needs_reader = pytest.mark.skipif(not HAVE_READER, reason="the optional extra is not installed: "
                                  "pip install '.[image]' in the repository (PySquashfsImage, zstandard)")


def _meta(record_id: str, files: dict[str, np.ndarray]) -> dict:
    return {"hit": {"id": int(record_id), "metadata": {"title": f"record {record_id}", "keywords": ["a", "ü"]}},
            "tree": {"type": "dir", "children": {k: {"size": int(v.size), "segments": int(v.shape[0])}
                                                 for k, v in files.items()}},
            "source": {"kind": "zenodo", "url": f"https://zenodo.org/records/{record_id}"},
            "stats": {"segments": int(sum(v.shape[0] for v in files.values()))},
            "tool": {"name": "zenodo-hpc", "version": "test", "config_sha256": "0" * 64}}


JSON_IMAGES = {f"json/{p.name}": rasterize(p.read_bytes()) for p in sorted(stdlib_package("json").glob("*.py"))}
SMALL_TEXTS = {"r/u.txt": "ünïcödé 中文 😀\n".encode(), "r/empty.py": b"", "r/a.py": b"import os\n" * 170}
SMALL_IMAGES = {path: rasterize(text) for path, text in SMALL_TEXTS.items()}
# id -> (images, output.formats): "12" has only the pickle, "9" only the h5, so both fallbacks are read; "9" is
# format 3 (with the files' text), "7" format 2 (images only, as records processed before the text was kept)
RECORDS = {"7": (JSON_IMAGES, ("h5", "pkl")), "9": (SMALL_IMAGES, ("h5",)), "12": (SMALL_IMAGES, ("pkl",))}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(image, data folder it was packed from)``: real records, packed as ``pack`` does, with checksums."""
    if MKSQUASHFS is None:
        pytest.skip("mksquashfs not found: apt-get install squashfs-tools to build the test image")
    tmp = tmp_path_factory.mktemp("image")
    data = tmp / "data"
    for record_id, (images, formats) in RECORDS.items():
        texts = SMALL_TEXTS if images is SMALL_IMAGES else None
        write_record(data, record_id, images, _meta(record_id, images), formats=formats, texts=texts)
    (data / "manifest.jsonl").write_text("".join(json.dumps({"id": r, "status": "done"}) + "\n" for r in RECORDS))
    (data / "README.md").write_text("# test image\n")
    (data / "notes").mkdir()  # a folder that is not a record
    (data / "notes" / "todo.txt").write_text("not a record\n")
    image = tmp / "zenodo-ml.sqsh"
    subprocess.run([MKSQUASHFS, str(data), str(image), "-comp", "zstd", "-b", "1M", "-noappend", "-all-root",
                    "-no-xattrs", "-mkfs-time", "0", "-all-time", "0", "-quiet", "-no-progress"],
                   check=True, capture_output=True)
    _write_checksums(image)
    return image, data


def _write_checksums(image: Path) -> None:
    content = image.read_bytes()
    for kind in ("md5", "sha256"):
        digest = hashlib.new(kind, content).hexdigest()
        image.with_name(f"{image.name}.{kind}").write_text(f"{digest}  {image.name}\n")


@pytest.fixture
def image(built: tuple[Path, Path]) -> Path:
    return built[0]


@pytest.fixture
def copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the image and its checksum files, free to damage."""
    for name in ("zenodo-ml.sqsh", "zenodo-ml.sqsh.md5", "zenodo-ml.sqsh.sha256"):
        shutil.copy(built[0].with_name(name), tmp_path / name)
    return tmp_path / "zenodo-ml.sqsh"


def _assert_images_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key, array in want.items():
        assert got[key].dtype == np.uint32, key
        assert got[key].shape == array.shape, key
        np.testing.assert_array_equal(got[key], array, err_msg=key)


# --- reading records back ---------------------------------------------------------------------------------

@needs_reader
def test_every_record_reads_back_equal_to_what_was_written(image: Path) -> None:
    seen = []
    for record_id, images, metadata in iter_image_records(image, verify=True):
        seen.append(record_id)
        want_images, _ = RECORDS[record_id]
        _assert_images_equal(images, want_images)
        assert metadata == _meta(record_id, want_images)
    assert seen == ["7", "9", "12"]  # numeric ids in numeric order, not "12" < "7"


@needs_reader
@pytest.mark.parametrize("member", ["7", "7/", "/7", "7/images_7.h5", "7/images_7.pkl"])
def test_load_images_from_a_record_folder_or_file(image: Path, member: str) -> None:
    _assert_images_equal(load_images_from_image(image, member), JSON_IMAGES)


@needs_reader
@pytest.mark.parametrize("member", ["7", "7/metadata_7.json", "7/metadata_7.pkl"])
def test_load_metadata_from_a_record_folder_or_file(image: Path, member: str) -> None:
    assert load_metadata_from_image(image, member) == _meta("7", JSON_IMAGES)


@needs_reader
def test_folder_falls_back_to_the_pickle_when_there_is_no_h5(image: Path) -> None:
    with SquashImage(image) as sq:
        assert sq.listdir("12") == ["images_12.pkl", "metadata_12.json", "metadata_12.pkl"]
        _assert_images_equal(sq.images("12"), SMALL_IMAGES)
        assert sq.images("12")["r/empty.py"].shape == (0, 80, 80)


@needs_reader
def test_image_colon_member_string_is_accepted(image: Path) -> None:
    _assert_images_equal(load_images_from_image(f"{image}:9"), SMALL_IMAGES)
    assert load_metadata_from_image(f"{image}:9/metadata_9.json")["hit"]["id"] == 9


@needs_reader
def test_load_files_reads_the_text_out_of_the_image_and_says_when_there_is_none(image: Path) -> None:
    assert load_files(f"{image}:9") == load_files(f"{image}:9/images_9.h5") == SMALL_TEXTS
    with pytest.raises(NoStoredText, match=r"zenodo-ml\.sqsh:7/images_7\.h5: holds no text \(format_version 2"):
        load_files(f"{image}:7")
    with pytest.raises(NoStoredText, match=r"zenodo-ml\.sqsh:12/images_12\.pkl: holds no text"):
        load_files(f"{image}:12")


@needs_reader
def test_listing_matches_the_folder_that_was_packed(built: tuple[Path, Path]) -> None:
    image, data = built
    on_disk = sorted((p.relative_to(data).as_posix(), p.stat().st_size) for p in data.rglob("*") if p.is_file())
    with SquashImage(image) as sq:
        assert list(sq.walk_files()) == on_disk
        assert sq.listdir() == ["12", "7", "9", "README.md", "manifest.jsonl", "notes"]
        assert sq.record_ids() == ["7", "9", "12"]
        assert sq.is_dir("") and sq.is_dir("7") and not sq.is_dir("7/images_7.h5") and not sq.is_dir("nope")
        for name, _ in on_disk:
            assert sq.read_bytes(name) == (data / name).read_bytes(), name


# --- paths inside an image ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "want"), [
    ("zenodo-ml.sqsh:1065022/images_1065022.h5", ("zenodo-ml.sqsh", "1065022/images_1065022.h5")),
    ("zenodo-ml.sqsh:1065022", ("zenodo-ml.sqsh", "1065022")),
    ("zenodo-ml.sqsh:/1065022/", ("zenodo-ml.sqsh", "1065022")),
    ("zenodo-ml.sqsh", ("zenodo-ml.sqsh", "")),
    ("zenodo-ml.sqsh:", ("zenodo-ml.sqsh", "")),
    ("/scratch/run:2/zenodo-ml.squashfs:7/metadata_7.json", ("/scratch/run:2/zenodo-ml.squashfs", "7/metadata_7.json")),
    ("data/1065022", None),
    ("data/a:b/images_1.h5", None),  # a colon in an ordinary path
    ("notes.sqsh.txt", None),
    ("x.sqshy:1", None),
])
def test_split_image_path(path: str, want: tuple[str, str] | None) -> None:
    assert split_image_path(path) == (None if want is None else (Path(want[0]), want[1]))


def test_split_image_path_prefers_what_exists_on_disk(tmp_path: Path) -> None:
    assert split_image_path(tmp_path / "x.sqsh:7") == (tmp_path / "x.sqsh", "7")  # a PathLike works too
    (tmp_path / "x.sqsh:7").write_text("an ordinary file whose name has a colon")
    assert split_image_path(tmp_path / "x.sqsh:7") is None
    (tmp_path / "extracted.sqsh").mkdir()  # a folder named like an image is an ordinary folder
    assert split_image_path(tmp_path / "extracted.sqsh") is None
    (tmp_path / "a.sqsh:b.sqsh").write_bytes(b"hsqs")  # an image whose own name holds ".sqsh:"
    assert split_image_path(f"{tmp_path}/a.sqsh:b.sqsh:7") == (tmp_path / "a.sqsh:b.sqsh", "7")


# --- errors ------------------------------------------------------------------------------------------------

@needs_reader
def test_member_not_in_the_image_says_what_is_there(image: Path) -> None:
    with pytest.raises(UserError) as err:
        load_images_from_image(image, "7/images_8.h5")
    message = str(err.value)
    assert message.startswith(f"7/images_8.h5 is not in {image}")
    assert "images_7.h5, images_7.pkl, metadata_7.json, metadata_7.pkl" in message
    with pytest.raises(UserError, match=r"^1065022 is not in .*: its root holds 12, 7, 9, README.md"):
        load_metadata_from_image(image, "1065022")
    with pytest.raises(UserError, match=r"zenodo-ml.sqsh:notes is not a record folder: it has no images_notes.h5 "
                                        r"or images_notes.pkl \(it holds todo.txt\)"):
        load_images_from_image(image, "notes")
    with pytest.raises(UserError, match="expected images_<id>.h5 or images_<id>.pkl"):
        load_images_from_image(image, "7/metadata_7.json")
    with pytest.raises(UserError, match="is a folder, not a file"):
        SquashImage(image).read_bytes("7")


@needs_reader
def test_missing_image_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.sqsh does not exist"):
        load_images_from_image(tmp_path / "nope.sqsh", "7")
    (tmp_path / "not-an-image.sqsh").write_bytes(b"this is not squashfs" * 100)
    with pytest.raises(UserError, match="not a readable squashfs image"):
        SquashImage(tmp_path / "not-an-image.sqsh")


@needs_mksquashfs
def test_checksums_of_a_good_image_verify(image: Path) -> None:
    assert verify_image_checksum(image) == hashlib.md5(image.read_bytes()).hexdigest()


@needs_mksquashfs
def test_flipped_byte_is_caught_by_verify(copy: Path) -> None:
    with open(copy, "r+b") as handle:
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    want = copy.with_name("zenodo-ml.sqsh.md5").read_text().split()[0]
    got = hashlib.md5(copy.read_bytes()).hexdigest()
    message = f"{copy}: md5 {got} does not match zenodo-ml.sqsh.md5 ({want}): the image is damaged or incomplete"
    with pytest.raises(UserError) as err:
        verify_image_checksum(copy)
    assert str(err.value) == message
    with pytest.raises(UserError) as err:
        SquashImage(copy, verify=True)  # checked before the image is parsed, so no reader needed
    assert str(err.value) == message


@needs_mksquashfs
def test_truncated_image(copy: Path) -> None:
    with open(copy, "r+b") as handle:
        handle.truncate(copy.stat().st_size // 2)
    with pytest.raises(UserError, match=r"md5 \w+ does not match zenodo-ml.sqsh.md5"):
        verify_image_checksum(copy)
    if HAVE_READER:  # without verify, the reader fails cleanly too (its tables are at the end, now gone)
        with pytest.raises(UserError, match="damaged or incomplete"), SquashImage(copy) as sq:
            for name, _ in sq.walk_files():
                sq.read_bytes(name)


@needs_mksquashfs
def test_sha256_is_checked_when_present(copy: Path) -> None:
    copy.with_name("zenodo-ml.sqsh.sha256").write_text(f"{'0' * 64}  zenodo-ml.sqsh\n")
    with pytest.raises(UserError, match=r"sha256 \w+ does not match zenodo-ml.sqsh.sha256 \(0{64}\)"):
        verify_image_checksum(copy)
    copy.with_name("zenodo-ml.sqsh.sha256").unlink()
    assert verify_image_checksum(copy)  # md5 alone is enough when there is no .sha256


@needs_mksquashfs
def test_missing_or_malformed_md5_file(copy: Path) -> None:
    md5_file = copy.with_name("zenodo-ml.sqsh.md5")
    md5_file.write_text("not a checksum\n")
    with pytest.raises(UserError, match="zenodo-ml.sqsh.md5: not a checksum line"):
        verify_image_checksum(copy)
    md5_file.unlink()
    with pytest.raises(UserError, match="no zenodo-ml.sqsh.md5 beside it"):
        verify_image_checksum(copy)
    if HAVE_READER:  # verify=True checks the .md5 only "if present"
        with SquashImage(copy, verify=True) as sq:
            assert sq.record_ids() == ["7", "9", "12"]


# --- without the optional extra ----------------------------------------------------------------------------

def test_missing_extra_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: a None entry in sys.modules makes "import PySquashfsImage" raise ImportError.
    monkeypatch.setitem(sys.modules, "PySquashfsImage", None)
    (tmp_path / "x.sqsh").write_bytes(b"hsqs" + bytes(200))
    with pytest.raises(UserError) as err:
        load_images_from_image(tmp_path / "x.sqsh", "7")
    # zenodo-hpc is not on PyPI: the hint names the extra's packages, which are, as pyproject pins them
    assert ("needs PySquashfsImage: python -m pip install 'PySquashfsImage>=0.9,<0.10' 'zstandard>=0.18' "
            in str(err.value))
    assert "zenodo-hpc[image]" not in str(err.value) and "\n" not in str(err.value)


def test_the_install_hint_pins_what_the_image_extra_pins() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's: pyproject.toml is read with it")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert shlex.split(READER_REQUIREMENTS) == pyproject["project"]["optional-dependencies"]["image"]


@needs_reader
@needs_mksquashfs
def test_missing_zstandard_says_how_to_install(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: PySquashfsImage imports zstandard only when it meets a zstd image; the None entry fails it.
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(UserError, match=r"needs zstandard: python -m pip install 'PySquashfsImage>=0.9,<0.10' "
                                        r"'zstandard>=0.18'$"):
        SquashImage(image)


def test_package_imports_and_works_without_the_extra() -> None:
    # Simulated in a fresh interpreter: both modules of the extra made unimportable before anything loads.
    code = ("import sys; sys.modules['PySquashfsImage'] = None; sys.modules['zstandard'] = None\n"
            "import zenodo_hpc, zenodo_hpc.dataset.image, zenodo_hpc.dataset.load, zenodo_hpc.cli\n"
            "print(zenodo_hpc.dataset.image.split_image_path('a.sqsh:1'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(PosixPath('a.sqsh'), '1')"

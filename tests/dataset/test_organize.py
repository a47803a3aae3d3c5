"""organize: the by-language export of a real run directory (or its image) into PNGs, index, archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sysconfig
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers import export_files as tree
from helpers import read_organize_index as read_index

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import append_records, mark_done, open_run
from zenodo_hpc.dataset.load import load_images
from zenodo_hpc.dataset.organize import (
    DEFAULT_EXTENSIONS,
    EMPTY,
    INDEX_COLUMNS,
    NOT_LISTED,
    LeftOut,
    OrganizeResult,
    file_extension,
    format_summary,
    organize,
    resource_name,
)
from zenodo_hpc.record.process import process_sources

Image = pytest.importorskip("PIL.Image", reason="Pillow decodes the PNGs in these tests: pip install pillow")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
INCLUDE = Path(sysconfig.get_paths()["include"])

R_CODE = "".join(f"fit{i} <- lm(y ~ x{i}, data = df)  # model {i}: résumé\nsummary(fit{i})\n" for i in range(50))
C_CODE = '#include <stdio.h>\n#include "util.h"\n\nint main(void) {\n\tprintf("héllo → wörld\\n");\n\treturn 0;\n}\n'


def _record_101(root: Path) -> None:
    """The stdlib json package (several .py, two images for the longest), a .md, an .R, an .r, no-extension."""
    shutil.copytree(STDLIB / "json", root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "README.md").write_text("# demo\n\nA copy of the *json* package — with ünïcode and 😀.\n")
    (root / "analysis.R").write_text(R_CODE)  # 100 lines: 2 images
    (root / "helper.r").write_text("helper <- function(x) x + 1\n")
    (root / "Makefile").write_text("all:\n\tpython -m json.tool < in.json\n")
    (root / ".gitignore").write_text("*.pyc\n")
    (root / "empty.py").write_bytes(b"")  # 0 images: no PNG, no row


def _record_102(root: Path) -> None:
    """C: a .c, a real CPython header (.h), a .json made of real config values."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text(C_CODE)
    header = INCLUDE / "pymacro.h"
    fallback = b"#define MAX(a, b) ((a) > (b) ? (a) : (b))\n"
    (root / "src" / "util.h").write_bytes(header.read_bytes() if header.exists() else fallback)
    config = {k: str(v) for k, v in sorted(sysconfig.get_config_vars().items())[:120]}
    (root / "config.json").write_text(json.dumps(config, indent=2))


def _record_9(root: Path) -> None:
    """Only Python, id 9: sorts before 101 in the index."""
    root.mkdir(parents=True)
    shutil.copy(STDLIB / "textwrap.py", root / "textwrap.py")
    (root / "data.R").write_text("x <- c(1, 2, 3)\n")


BUILDERS = {"101": _record_101, "102": _record_102, "9": _record_9, "103": _record_9}
# Each record's license in a shape Zenodo gives (core/licenses.py): today's legacy JSON, an older record's upper
# case, InvenioRDM's rights; 103 is not done.
LICENSES = {"9": {"license": {"id": "apache-2.0"}}, "101": {"license": {"id": "MIT"}},
            "102": {"rights": [{"id": "gpl-3.0-only", "title": {"en": "GNU General Public License v3.0 only"},
                                "props": {"scheme": "spdx", "url": "https://www.gnu.org/licenses/gpl-3.0-standalone.html"}}]},
            "103": {}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    """A real run directory: records 9, 101, 102 done; 103 processed but not marked done (must be left out)."""
    tmp = tmp_path_factory.mktemp("organize")
    cfg = config_from_dict({"run": {"scratch": str(tmp), "name": "r"}})
    run = open_run(cfg)
    hits = []
    for record_id, build in BUILDERS.items():
        folder = tmp / "sources" / record_id / f"demo-{record_id}-1a2b3c"
        build(folder)
        hit = {"id": int(record_id), "metadata": {"title": f"demo {record_id}", **LICENSES[record_id]}}
        if record_id != "102":  # a record without a DOI keeps an empty doi column
            hit["doi"] = f"10.5281/zenodo.{record_id}"
        process_sources(record_id, [(folder, "")], run.data, cfg, hit=hit, source_info={"kind": "local"})
        if record_id != "103":
            mark_done(run, record_id, {})
        hits.append(hit)
    append_records(run.records, hits)
    return run, cfg


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OrganizeResult]:
    run, _ = finished_run
    out = tmp_path_factory.mktemp("export") / "out"
    result = organize(run.root, out, extensions=DEFAULT_EXTENSIONS + ("r",), workers=1, progress=False)
    return out, result


def pixels(png: Path) -> tuple[str, np.ndarray]:
    with Image.open(png) as image:
        image.load()
        assert image.size == (80, 80)
        return image.mode, np.asarray(image)


@pytest.mark.parametrize(("path", "want"), [
    ("a/b/script.py", "py"), ("analysis.R", "R"), ("helper.r", "r"), ("archive.tar.gz", "gz"),
    ("Makefile", None), (".gitignore", None), ("a/.gitignore", None), ("notes.", None), ("..", None),
    ("a.b/Makefile", None), (".eslintrc.json", "json"), ("x..c", "c"), ("dir.py/", None),
])
def test_file_extension(path: str, want: str | None) -> None:
    assert file_extension(path) == want


def test_pngs_are_where_the_index_says_and_nothing_else(finished_run, exported) -> None:
    run, _ = finished_run
    out, result = exported
    rows = read_index(out)
    assert list(rows[0]) == list(INDEX_COLUMNS)
    pngs = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert pngs == {row["png"] for row in rows}
    assert len(rows) == result.pngs == sum(result.by_extension.values())
    assert {row["record_id"] for row in rows} == {"9", "101", "102"}  # 103 has no done marker
    assert result.records == 3
    assert set(result.by_extension) == {"py", "md", "R", "r", "c", "h", "json"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*result.by_extension, *(f"{e}.tar.gz" for e in result.by_extension), "index.csv", "datapackage.json"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_every_png_equals_its_clipped_code_image(finished_run, exported) -> None:
    run, _ = finished_run
    out, _ = exported
    images = {record_id: load_images(run.record_folder(record_id)) for record_id in ("9", "101", "102")}
    for row in read_index(out):
        mode, got = pixels(out / row["png"])
        assert mode == "L"
        want = images[row["record_id"]][row["file_path"]][int(row["segment"])]
        np.testing.assert_array_equal(got, np.minimum(want, 255))
    assert 255 in pixels(out / "md/101/101_0.png")[1]  # "😀" and "—" are beyond Latin-1


def test_numbering_follows_sorted_paths_then_segments(finished_run, exported) -> None:
    run, _ = finished_run
    out, _ = exported
    rows = read_index(out)
    by_key = {(r["extension"], r["record_id"], r["file_path"], int(r["segment"])): r["png"] for r in rows}
    for record_id in ("9", "101", "102"):
        numbers: dict[str, int] = defaultdict(int)
        for path, segments in sorted(load_images(run.record_folder(record_id)).items()):
            ext = file_extension(path)
            if ext is None:
                continue
            for segment in range(segments.shape[0]):
                want = f"{ext}/{record_id}/{record_id}_{numbers[ext]}.png"
                assert by_key.pop((ext, record_id, path, segment)) == want
                numbers[ext] += 1
    assert not by_key
    r_rows = [r for r in rows if r["extension"] == "R" and r["record_id"] == "101"]
    assert [(Path(r["file_path"]).name, r["segment"]) for r in r_rows] == [("analysis.R", "0"), ("analysis.R", "1")]
    # index order: extension, record id numerically (9 before 101), PNG number
    assert [r["record_id"] for r in rows if r["extension"] == "py"][0] == "9"
    assert rows == sorted(rows, key=lambda r: (r["extension"], len(r["record_id"]), r["record_id"],
                                              int(r["png"].rsplit("_", 1)[1][:-4])))


def test_index_rows_carry_doi_path_and_segment(exported) -> None:
    out, _ = exported
    rows = {r["png"]: r for r in read_index(out)}
    row = rows["c/102/102_0.png"]
    assert row == {"png": "c/102/102_0.png", "extension": "c", "record_id": "102", "doi": "",
                   "file_path": "demo-102-1a2b3c/src/main.c", "segment": "0", "license": "gpl-3.0-only"}
    assert rows["r/101/101_0.png"]["file_path"] == "demo-101-1a2b3c/helper.r"
    assert rows["R/9/9_0.png"]["doi"] == "10.5281/zenodo.9"
    assert not any(r["file_path"].endswith(("Makefile", ".gitignore", "empty.py")) for r in rows.values())


def test_upper_and_lower_case_extensions_are_kept_apart(finished_run, tmp_path: Path) -> None:
    run, _ = finished_run
    result = organize(run.root, tmp_path / "out", extensions=["R"], workers=1, progress=False)
    assert result.by_extension == {"R": 3}  # analysis.R (2 images) and data.R, not helper.r
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["R", "R.tar.gz", "datapackage.json", "index.csv"]
    rows = read_index(tmp_path / "out")
    assert {Path(r["file_path"]).name for r in rows} == {"analysis.R", "data.R"}
    result = organize(run.root, tmp_path / "out", extensions="r", workers=1, progress=False)
    assert result.by_extension == {"r": 1}
    assert not (tmp_path / "out" / "R").exists()
    assert resource_name("R.tar.gz") == "_r.tar.gz" != resource_name("r.tar.gz") == "r.tar.gz"


def test_tar_members_are_sorted_and_carry_no_time_or_owner(exported) -> None:
    out, result = exported
    for archive in result.archives:
        data = archive.read_bytes()
        assert data[:3] == b"\x1f\x8b\x08"
        assert data[3] == 0  # FLG: no file name, no comment, no extra field
        assert data[4:8] == b"\0\0\0\0"  # MTIME 0
        ext = archive.name.removesuffix(".tar.gz")
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert names == sorted(names, key=lambda n: n.split("/"))
            assert names[0] == ext and all(n == ext or n.startswith(ext + "/") for n in names)
            for member in members:
                assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
                assert member.mode == (0o755 if member.isdir() else 0o644)
                if member.isfile():
                    assert tar.extractfile(member).read() == (out / member.name).read_bytes()
            assert {n for n in names if n.endswith(".png")} == {
                p.relative_to(out).as_posix() for p in (out / ext).rglob("*.png")}


def test_two_runs_give_byte_identical_exports(finished_run, exported, tmp_path: Path) -> None:
    run, _ = finished_run
    first, _ = exported
    second = tmp_path / "second"
    organize(run.root, second, extensions=DEFAULT_EXTENSIONS + ("r",), workers=2, progress=False)
    assert tree(second) == tree(first)


def test_rerun_replaces_the_export_without_stale_files(finished_run, tmp_path: Path) -> None:
    run, _ = finished_run
    out = tmp_path / "out"
    organize(run.root, out, workers=1, progress=False)
    assert (out / "py" / "101").is_dir()
    (out / "extra-note.txt").write_text("left by hand\n")
    result = organize(run.root, out, extensions=["md", "c"], workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["c", "c.tar.gz", "datapackage.json", "index.csv", "md",
                                                     "md.tar.gz"]
    assert result.out == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old copy left


def test_datapackage_is_kaggle_metadata_and_a_valid_data_package(exported) -> None:
    out, result = exported
    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    assert package["licenses"] == [  # the records' own, as Zenodo's vocabulary names them
        {"name": "apache-2.0", "title": "Apache License 2.0", "path": "http://www.apache.org/licenses/LICENSE-2.0"},
        {"name": "gpl-3.0-only", "title": "GNU General Public License v3.0 only",
         "path": "https://www.gnu.org/licenses/gpl-3.0-standalone.html"},
        {"name": "mit", "title": "MIT License", "path": "https://opensource.org/licenses/MIT"}]
    assert package["name"] == "zenodo-ml-code-images"
    assert package["id"] == "zenodo-hpc/zenodo-ml-code-images"
    assert 6 <= len(package["title"]) <= 50 and 20 <= len(package["subtitle"]) <= 80
    assert package["keywords"] and package["description"]
    paths = [r["path"] for r in package["resources"]]
    assert paths == [*(f"{e}.tar.gz" for e in sorted(result.by_extension)), "index.csv"]
    assert len({r["name"] for r in package["resources"]}) == len(paths)
    for resource in package["resources"]:
        data = (out / resource["path"]).read_bytes()
        assert resource["bytes"] == len(data)
        assert resource["hash"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert resource["description"]
    frictionless = pytest.importorskip("frictionless", reason="validates the data package: pip install frictionless")
    report = frictionless.validate(str(out / "datapackage.json"))
    assert report.valid, report.flatten(["type", "note"])


def test_frictionless_catches_a_changed_archive(exported, tmp_path: Path) -> None:
    frictionless = pytest.importorskip("frictionless", reason="validates the data package: pip install frictionless")
    out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with gzip.open(copy / "md.tar.gz") as handle:
        tar = handle.read()
    (copy / "md.tar.gz").write_bytes(gzip.compress(tar, compresslevel=1, mtime=0))  # same files, other bytes
    report = frictionless.validate(str(copy / "datapackage.json"))
    assert not report.valid
    assert {"hash-count", "byte-count"} <= {error[0] for error in report.flatten(["type"])}


def test_palette_mode(finished_run, exported, tmp_path: Path) -> None:
    run, _ = finished_run
    grey_out, _ = exported
    out = tmp_path / "palette"
    result = organize(run.root, out, extensions=["md", "c"], png="palette", workers=1, progress=False)
    assert result.png == "palette"
    for row in read_index(out):
        mode, got = pixels(out / row["png"])
        assert mode == "P"
        np.testing.assert_array_equal(got, pixels(grey_out / row["png"])[1])  # the indices are the grey values
    assert json.loads((out / "datapackage.json").read_text())["zenodo_hpc"]["png"] == "palette"


def test_summary_is_one_line(exported) -> None:
    out, result = exported
    line = format_summary(result)
    assert "\n" not in line
    assert f"{result.pngs} PNGs (grey)" in line and "from 3 records" in line and str(out) in line


def test_what_is_left_out_is_counted_by_reason_and_extension(finished_run, tmp_path: Path) -> None:
    """Makefile and .gitignore (no extension) and helper.r (r is not a default extension) give no PNG, nor does
    the empty empty.py: the summary, the description and datapackage.json say so, and every image is accounted for."""
    run, _ = finished_run
    result = organize(run.root, tmp_path / "out", workers=1, progress=False)
    images = [load_images(run.record_folder(record_id)) for record_id in ("9", "101", "102")]
    assert result.pngs + sum(e.images for e in result.left_out) == sum(len(s) for i in images for s in i.values())
    left = {(e.reason, e.extension): (e.files, e.images) for e in result.left_out}
    assert left == {(NOT_LISTED, "(none)"): (2, 2), (NOT_LISTED, "r"): (1, 1), (EMPTY, "py"): (1, 0)}
    assert result.left_out[0].reason == NOT_LISTED and result.left_out[-1] == LeftOut(EMPTY, "py", 1, 0)
    line = format_summary(result)
    assert "\n" not in line
    assert line.endswith("; left out: 3 images of 3 files whose extension is not exported ((none) 2, r 1), and "
                         "1 empty file (py 1)")
    package = json.loads((tmp_path / "out" / "datapackage.json").read_text(encoding="utf-8"))
    assert package["zenodo_hpc"]["left_out"] == [
        {"reason": NOT_LISTED, "extension": "(none)", "files": 2, "images": 2},
        {"reason": NOT_LISTED, "extension": "r", "files": 1, "images": 1},
        {"reason": EMPTY, "extension": "py", "files": 1, "images": 0}]
    description = package["description"]
    assert "Left out: 3 images of 3 files whose extension is not among those exported, and 1 empty file" in description
    assert f"| (none) | 2 | 2 | {NOT_LISTED} |\n| r | 1 | 1 | {NOT_LISTED} |\n| py | 1 | 0 | {EMPTY} |" in description

    everything = organize(run.root, tmp_path / "all", extensions=["py", "md", "R", "r", "c", "h", "json"], workers=1,
                          progress=False)
    assert [(e.extension, e.files) for e in everything.left_out if e.reason == NOT_LISTED] == [("(none)", 2)]
    assert "left out: 2 images of 2 files" in format_summary(everything)


def test_progress_bar_when_asked(finished_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = finished_run
    organize(run.root, tmp_path / "out", extensions=["md"], workers=1, progress=True)
    assert "organize" in capsys.readouterr().err


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        organize(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="is neither a run directory .* nor a squashfs image"):
        organize(tmp_path / "plain", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="is neither a run directory nor a squashfs image"):
        organize(tmp_path / "notes.txt", tmp_path / "out")
    cfg = config_from_dict({"run": {"scratch": str(tmp_path), "name": "empty"}})
    run = open_run(cfg)
    with pytest.raises(UserError, match="has no completed records"):
        organize(run.root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_options(finished_run, tmp_path: Path) -> None:
    run, _ = finished_run
    out = tmp_path / "out"
    with pytest.raises(UserError, match="unknown PNG mode 'gray': use grey or palette"):
        organize(run.root, out, png="gray")
    for empty in ([], "", " , "):
        with pytest.raises(UserError, match="no extensions given"):
            organize(run.root, out, extensions=empty)
    with pytest.raises(UserError, match="bad extension 'p/y'"):
        organize(run.root, out, extensions=["p/y"])
    with pytest.raises(UserError, match="nothing to export"):
        organize(run.root, out, extensions=["rs"], workers=1)
    with pytest.raises(UserError, match="bad dataset title"):
        organize(run.root, out, title="short")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_foreign_folder_is_never_replaced(finished_run, tmp_path: Path) -> None:
    run, _ = finished_run
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious\n")
    with pytest.raises(UserError, match="is not empty and holds no earlier organize output"):
        organize(run.root, home, extensions=["md"], workers=1)
    assert (home / "thesis.tex").read_text() == "precious\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        organize(run.root, tmp_path / "file", extensions=["md"], workers=1)
    (tmp_path / "empty").mkdir()
    organize(run.root, tmp_path / "empty", extensions=["md"], workers=1, progress=False)
    assert (tmp_path / "empty" / "index.csv").is_file()


def test_relative_out_is_made_absolute(finished_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = finished_run
    monkeypatch.chdir(tmp_path)
    result = organize(run.root, "rel", extensions=["md"], workers=1, progress=False)
    assert result.out == tmp_path / "rel"
    assert (tmp_path / "rel" / "md.tar.gz").is_file()


def test_a_damaged_record_stops_the_export_and_leaves_nothing(finished_run, tmp_path: Path) -> None:
    run, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("*.sqsh*"))
    (copy / "data" / "101" / "images_101.h5").write_bytes(b"not HDF5 at all")
    with pytest.raises(UserError, match="images_101.h5: cannot read HDF5 file"):
        organize(copy, tmp_path / "out", workers=2, progress=False)  # raised in a worker process
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --- from the packed image ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(finished_run) -> Path:
    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs not on PATH (apt-get install squashfs-tools)")
    from zenodo_hpc.dataset.pack import pack

    run, cfg = finished_run
    return pack(run, cfg, progress=False, allow_partial=True).image  # 103 is not done: left out


def test_organizing_the_image_gives_the_same_export(image: Path, exported, tmp_path: Path) -> None:
    pytest.importorskip("PySquashfsImage", reason="reading the image needs the image extra (pip install -e '.[image]')")
    out, _ = exported
    result = organize(image, tmp_path / "from-image", extensions=DEFAULT_EXTENSIONS + ("r",), workers=2,
                      progress=False)
    assert result.records == 3
    assert tree(tmp_path / "from-image") == tree(out)


def test_organizing_an_extracted_image_gives_the_same_export(image: Path, exported, tmp_path: Path) -> None:
    out, _ = exported
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tmp_path / "mnt"), str(image)], check=True,
                   capture_output=True)
    organize(tmp_path / "mnt", tmp_path / "from-folder", extensions=DEFAULT_EXTENSIONS + ("r",), workers=1,
             progress=False)
    assert tree(tmp_path / "from-folder") == tree(out)


def test_tar_is_readable_by_the_system_tar(exported, tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar on PATH")
    out, _ = exported
    subprocess.run(["tar", "-xzf", str(out / "py.tar.gz"), "-C", str(tmp_path)], check=True)
    assert tree(tmp_path / "py") == {k.removeprefix("py/"): v for k, v in tree(out).items() if k.startswith("py/")}
    with gzip.open(out / "py.tar.gz") as handle, tarfile.open(fileobj=io.BytesIO(handle.read())) as tar:
        assert tar.getnames()[0] == "py"


def test_index_cells_that_look_like_formulas_are_shown_as_text(tmp_path: Path) -> None:
    cfg = config_from_dict({"run": {"scratch": str(tmp_path), "name": "r"}})
    run = open_run(cfg)
    for record_id, top in ((7, "=HYPERLINK(x)"), (8, "+SUM(A1)"), (10, "@cmd"), (11, "-2+3"), (12, "plain")):
        folder = tmp_path / "src" / str(record_id) / top  # keys start with the folder's name, like a top folder
        folder.mkdir(parents=True)
        (folder / "a.py").write_text("x = 1\n")
        process_sources(str(record_id), [(folder, "")], run.data, cfg, hit={"id": record_id, "doi": "=1+1"},
                        source_info={"kind": "local"})
        mark_done(run, str(record_id), {})
    out = tmp_path / "out"
    organize(run.root, out, extensions=("py",), workers=1, progress=False)
    rows = read_index(out)
    assert sorted(r["file_path"] for r in rows) == ["'+SUM(A1)/a.py", "'-2+3/a.py", "'=HYPERLINK(x)/a.py",
                                                    "'@cmd/a.py", "plain/a.py"]
    assert all(not r[column].startswith(("=", "+", "-", "@")) for r in rows for column in r)
    assert {r["doi"] for r in rows} == {"'=1+1"}


def test_a_record_folder_with_a_newline_in_its_name_is_refused(finished_run, tmp_path: Path) -> None:
    run, cfg = finished_run
    odd = run.data / "101\nrm -rf"
    odd.mkdir()
    try:
        with pytest.raises(UserError, match="has a name no record can have"):
            organize(run.root, tmp_path / "out", workers=1, progress=False)
        assert not (tmp_path / "out").exists()
    finally:
        odd.rmdir()


def test_no_planted_credential_reaches_a_png(tmp_path: Path) -> None:
    """Credentials planted in a record's code are masked when it is processed: organize's PNGs, made from the
    h5, hold none of them (each PNG decoded back to its rows of text)."""
    from helpers import image_rows, leaked, plant_credentials

    cfg = config_from_dict({"run": {"scratch": str(tmp_path), "name": "r"}})
    run = open_run(cfg)
    folder = tmp_path / "sources" / "demo-7-1a2b3c"
    folder.mkdir(parents=True)
    shutil.copy(STDLIB / "textwrap.py", folder / "textwrap.py")
    planted = plant_credentials(folder)
    values = [value for file_values in planted.values() for value in file_values]
    hit = {"id": 7, "doi": "10.5281/zenodo.7", "metadata": {"title": "demo 7"}}
    process_sources("7", [(folder, "")], run.data, cfg, hit=hit, source_info={"kind": "local"})
    mark_done(run, "7", {})
    append_records(run.records, [hit])
    out = tmp_path / "out"
    organize(run.root, out, extensions=["py", "yaml", "pem", "sh"], workers=1, progress=False)
    rows = read_index(out)
    assert {row["file_path"] for row in rows} == {"demo-7-1a2b3c/" + name for name in
                                                  ("textwrap.py", "config.yaml", "keys/deploy_key.pem", "ci/release.sh",
                                                   "notify.py", "settings.py", "upload/s3.py")}
    texts = [line for row in rows for line in image_rows(pixels(out / row["png"])[1])]
    assert any("-----BEGIN RSA PRIVATE KEY-----" in line for line in texts)  # the PNGs were read as text
    assert leaked(texts, values) == []


# --- licenses ------------------------------------------------------------------------------------------------


def test_licenses_are_in_the_index_the_data_package_and_the_summary(exported) -> None:
    out, result = exported
    assert {(r["record_id"], r["license"]) for r in read_index(out)} == {
        ("9", "apache-2.0"), ("101", "mit"), ("102", "gpl-3.0-only")}  # 101's "MIT" in lower case
    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    block = package["zenodo_hpc"]
    assert block["kaggle_license"] == "other"  # three licenses: Kaggle takes one, "specified in description"
    assert block["license_categories"] == ["permissive", "copyleft", "other", "none"]
    assert [(e["license"], e["category"], e["records"]) for e in block["licenses"]] == [
        ("apache-2.0", "permissive", 1), ("gpl-3.0-only", "copyleft", 1), ("mit", "permissive", 1)]
    images = defaultdict(int)
    for row in read_index(out):
        images[row["license"]] += 1
    assert {e["license"]: e["images"] for e in block["licenses"]} == images
    assert block["license_left_out"] == []
    description = package["description"]
    assert f"| mit | MIT License | permissive | 1 | {images['mit']} |" in description
    assert (f"| permissive | 2 | {images['mit'] + images['apache-2.0']} |\n"
            f"| copyleft | 1 | {images['gpl-3.0-only']} |") in description
    assert "| record | license |\n|---|---|\n| 9 | apache-2.0 |\n| 101 | mit |\n| 102 | gpl-3.0-only |" in description
    assert "Kaggle takes one license per dataset: `other`" in description
    assert "licenses: apache-2.0 1, gpl-3.0-only 1, mit 1" in format_summary(result)
    assert result.licenses == {"apache-2.0": 1, "gpl-3.0-only": 1, "mit": 1}

"""``zenodo-hpc process`` (zenodo_hpc/cli/process.py): one archive or folder to one record folder, a one-line
summary, one-line errors, nothing half-written."""

from __future__ import annotations

import io as _io
import json
import re
import tarfile
from pathlib import Path

import pytest
from helpers import assert_one_line_error, call_as_nobody, make_zip, stdlib_package, visible
from helpers import run_cli as run

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config
from zenodo_hpc.record.store import record_file_names


def test_process_prints_a_one_line_summary(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "r.zip", {
        f"pkg-abc/{p.name}": p.read_bytes() for p in sorted(stdlib_package("json").glob("*.py"))})
    code, out, err = run("process", str(archive), "--out", str(tmp_path / "out"), "--id", "123")
    assert code == 0, err
    assert out.count("\n") == 1
    assert out.startswith("record 123: ") and "files seen" in out and "segments" in out and " s\n" in out
    assert visible(tmp_path / "out" / "123") == sorted(record_file_names("123", Config().output.formats))


def test_default_id_is_the_archive_name(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "tool-2.1.zip", {"tool-2.1/a.py": b"a = 1\n"})
    code, out, _ = run("process", str(archive), "--out", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / "tool-2.1" / "images_tool-2.1.h5").exists()


def _tar_with(path: Path, name: str, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, _io.BytesIO(data))
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    truncated = make_zip(tmp / "trunc.zip", {"a/b.py": (stdlib_package("json") / "decoder.py").read_bytes()})
    truncated.write_bytes(truncated.read_bytes()[:200])
    html = tmp / "page.zip"
    html.write_bytes(b"<!DOCTYPE html><html><body>Not Found</body></html>")
    bomb = make_zip(tmp / "bomb.zip", {"bomb/zeros.txt": b"0" * 3_000_000})
    return {
        "missing": (tmp / "nope.zip", "does not exist"),
        "truncated": (truncated, "trunc.zip"),
        "not an archive": (html, "HTML"),
        "escaping": (_tar_with(tmp / "evil.tar.gz", "../../etc/evil"), "evil.tar.gz"),
        "zip bomb": (bomb, "bomb.zip"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "not an archive", "escaping", "zip bomb"])
def test_bad_inputs_get_one_line_errors_and_write_nothing(tmp_path: Path, case: str) -> None:
    source, pattern = _bad_inputs(tmp_path)[case]
    config = tmp_path / "small.yaml"
    config.write_text("extract: {max_bytes: 1000000}\n")
    code, out, err = run("process", str(source), "--out", str(tmp_path / "out"), "--id", "9", "-c", str(config))
    assert_one_line_error(code, err, pattern)
    assert err.startswith("zenodo-hpc process: error: ")
    assert visible(tmp_path / "out") == []
    assert out == ""


def test_bad_config_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("raster: {widht: 80}\n")
    code, _, err = run("process", str(tmp_path), "--out", str(tmp_path / "o"), "-c", str(config))
    assert_one_line_error(code, err, "c.yaml: raster.widht: unknown key")


def test_bad_record_id_is_refused(tmp_path: Path) -> None:
    code, _, err = run("process", str(tmp_path), "--out", str(tmp_path / "o"), "--id", "../x")
    assert_one_line_error(code, err, "bad record id")


def test_unwritable_output_folder(shared_tmp: Path) -> None:
    src = shared_tmp / "src"
    src.mkdir()
    (src / "a.py").write_text("a = 1\n")
    out = shared_tmp / "locked"
    out.mkdir()
    out.chmod(0o555)
    code, _, err = call_as_nobody(run, "process", str(src), "--out", str(out), "--id", "1")
    assert_one_line_error(code, err, "Permission denied")
    assert visible(out) == []


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "process", str(tmp_path / "nope.zip"), "--out", str(tmp_path)])


def test_help_describes_process() -> None:
    code, out, _ = run("process", "--help")
    assert code == 0
    for flag in ("ARCHIVE_OR_DIR", "--out", "--id", "--config"):
        assert flag in out


def test_process_help_names_the_files_process_writes(tmp_path: Path) -> None:
    """--help names every file of the record folder, and says which ones only some configs write."""
    _, out, _ = run("process", "--help")
    text = " ".join(out.split())
    named = set(re.findall(r"\b(?:images|metadata)_ID\.\w+", text))
    only_if = {name for name in named if re.search(re.escape(name) + r"[^,;]*? when output\.formats", text)}
    archive = make_zip(tmp_path / "r.zip", {"r/a.py": b"a = 1\n"})
    for formats in (None, ["h5", "pkl"]):
        config = tmp_path / f"{formats}.yaml"
        config.write_text(json.dumps({"output": {"formats": formats}} if formats else {}))
        code, _, err = run("process", str(archive), "--out", str(tmp_path / str(formats)), "--id", "7", "-c",
                           str(config))
        assert code == 0, err
        written = {name.replace("_7.", "_ID.") for name in visible(tmp_path / str(formats) / "7")}
        assert written == (named if formats else named - only_if)
    assert only_if == {"images_ID.pkl"}


def test_missing_arguments_are_a_usage_error() -> None:
    code, _, err = run("process")
    assert code == 2 and "--out" in err

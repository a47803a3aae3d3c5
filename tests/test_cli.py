"""The command line: one-line summaries, one-line errors, non-zero exits, nothing half-written."""

from __future__ import annotations

import contextlib
import io
import io as _io
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import call_as_nobody, stdlib_package

from zenodo_hpc.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_process_prints_a_one_line_summary(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "r.zip", {
        f"pkg-abc/{p.name}": p.read_bytes() for p in sorted(stdlib_package("json").glob("*.py"))})
    code, out, err = run("process", str(archive), "--out", str(tmp_path / "out"), "--id", "123")
    assert code == 0, err
    assert out.count("\n") == 1
    assert out.startswith("record 123: ") and "files seen" in out and "segments" in out and " s\n" in out
    assert visible(tmp_path / "out" / "123") == ["images_123.h5", "images_123.pkl", "metadata_123.json",
                                                 "metadata_123.pkl"]


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


def test_missing_arguments_are_a_usage_error() -> None:
    code, _, err = run("process")
    assert code == 2 and "--out" in err


def test_every_command_and_flag_is_in_the_docs() -> None:
    import argparse

    from zenodo_hpc.cli import build_parser

    doc = (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f"## `zenodo-hpc {name}" in doc, f"command {name} has no section in docs/commands.md"
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = list(nested[0].choices.values()) if nested else [sub]  # `publish kaggle`
        for each in parsers:
            for action in each._actions:
                for flag in action.option_strings:
                    if flag not in ("-h", "--help"):
                        assert f"`{flag}" in doc or f" {flag} " in doc, f"{name} {flag} is not in docs/commands.md"


def test_a_bug_is_one_line_without_debug_and_a_traceback_with_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug cannot be made on purpose in real code: this one is planted in the process command.
    import zenodo_hpc.process as process

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planted bug")

    monkeypatch.setattr(process, "process_path", broken)
    code, _, err = run("process", str(tmp_path), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "internal error: RuntimeError: planted bug (run again with --debug")
    with pytest.raises(RuntimeError, match="planted bug"):
        main(["--debug", "process", str(tmp_path), "--out", str(tmp_path / "o")])

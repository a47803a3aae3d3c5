"""The docs and the command line agree: every command and flag the docs show exists, and the
quickstart's commands run as written."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from zenodo_hpc.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# A command line: `zenodo-hpc <command> ...` at the start of a line of code (not inside an error message).
COMMAND = re.compile(r"^[ \t$]*zenodo-hpc[ \t]+(?:--debug[ \t]+)?([a-z]+)((?:[ \t]+[^\s`|#;)]+)*)", re.M)


def code_of(markdown: str) -> str:
    """The code in a page: fenced blocks, indented blocks and `inline` spans (prose may say "zenodo-hpc")."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S)
    rest = re.sub(r"```.*?```", "", markdown, flags=re.S)
    indented = [line for line in rest.splitlines() if line.startswith("    ")]
    inline = re.findall(r"`([^`\n]+)`", rest)
    return "\n".join(fenced + indented + inline)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def flags_of(sub: argparse.ArgumentParser) -> set[str]:
    return {flag for action in sub._actions for flag in action.option_strings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_and_flag_in_the_docs_exists(page: Path) -> None:
    commands = subcommands()
    for match in COMMAND.finditer(code_of(page.read_text())):
        name, rest = match.group(1), match.group(2)
        assert name in commands, f"{page.name}: `zenodo-hpc {name}` is not a command"
        sub, tokens = commands[name], rest.split()
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested and tokens:  # `zenodo-hpc publish kaggle ...`
            assert tokens[0] in nested[0].choices, f"{page.name}: `zenodo-hpc {name} {tokens[0]}` does not exist"
            sub, tokens = nested[0].choices[tokens[0]], tokens[1:]
        known = flags_of(sub) | {"--help", "-h"}
        for token in tokens:
            flag = token.split("=")[0]
            if flag.startswith("--") or re.fullmatch(r"-[a-z]", flag):
                assert flag in known, f"{page.name}: `zenodo-hpc {name} {flag}` is not an option of {name}"


def quickstart_commands() -> list[str]:
    text = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("zenodo-hpc ")]


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH (the demo packs an image)")
def test_the_quickstart_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    commands = quickstart_commands()
    assert commands[0].startswith("zenodo-hpc demo") and len(commands) >= 5
    for name in ("zenodo_hpc", "configs"):  # the quickstart runs from the repository's root
        os.symlink(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] == "demo":
            argv += ["--executor", "local"]  # this test must not depend on a SLURM cluster being up
        assert main(argv) == 0, f"`{command}` failed: {capsys.readouterr().err[-500:]}"
    out = capsys.readouterr().out
    assert "complete: every record is done or quarantined" in out
    assert (tmp_path / "zenodo-hpc-demo" / "by-language" / "datapackage.json").exists()
    assert (tmp_path / "zenodo-hpc-demo" / "single" / "zenodo_hpc" / "images_zenodo_hpc.h5").exists()


def test_the_architecture_page_lists_every_module_in_its_group() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "zenodo_hpc"
    groups = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    tree = page.split("```", 2)[1]  # the folder list under "The groups, and the direction of imports"
    assert [g for g in groups if f"  {g}/" not in tree] == []
    table = page.split("## The modules", 1)[1].split("## ", 1)[0]
    sections = dict(re.findall(r"^\| \*\*([a-z_]+)/\*\* \|(.*?)(?=^\| \*\*|\Z)", table, re.M | re.S))
    assert sorted(sections) == groups
    for group in groups:
        modules = sorted(p.name for p in (package / group).glob("*.py") if p.name != "__init__.py")
        listed = sections[group] if group != "report" else table  # report/ is one row naming its modules
        assert [m for m in modules if f"`{m}`" not in listed] == [], group


def test_no_page_or_docstring_points_outside_the_repository() -> None:
    """The product contract lives beside the project, not in it: a reader of the repository cannot follow
    a reference to it, so the rules are said where they are used."""
    texts = list(PAGES) + list((ROOT / "zenodo_hpc").rglob("*.py")) + list((ROOT / "tests").glob("*.py"))
    outside = re.compile(r"SPEC(?:\.md| section)|\.\./shared/")
    here = Path(__file__).resolve()
    assert [str(p.relative_to(ROOT)) for p in texts if p.resolve() != here and outside.search(p.read_text())] == []


def test_the_source_block_of_the_metadata_is_documented_key_for_key() -> None:
    from zenodo_hpc.zenodo.fetch import FetchedFile, FetchedRecord, Source

    page = (ROOT / "docs" / "formats.md").read_text()
    table = page.split("### The source", 1)[1].split("###", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    archive = FetchedFile(Path("x.zip"), Source("zenodo", "x.zip", "https://zenodo.org/x"), "verified")
    written = FetchedRecord(archives=[archive], loose=[], not_fetched=[], fallback_reason=None).source_info()
    assert documented == set(written)
    archive_keys = re.search(r"^\| `archives` \|(.*)$", table, re.M).group(1)
    assert [k for k in archive.info() if f"`{k}`" not in archive_keys] == []

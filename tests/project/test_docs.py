"""The docs and the command line agree: every command, flag, config file and config key the docs name
exists (tests/project/test_doc_commands*.py run the commands and recipes they show)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from zenodo_hpc import __version__
from zenodo_hpc.cli import build_parser
from zenodo_hpc.core.config import Config

ROOT = Path(__file__).resolve().parents[2]
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


CONFIG_FILE = re.compile(r"\bconfigs/[\w.-]*[\w-]\.ya?ml\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_config_file_a_page_names_exists(page: Path) -> None:
    named = sorted(set(CONFIG_FILE.findall(page.read_text())))
    assert [name for name in named if not (ROOT / name).is_file()] == [], f"{page.name} names missing config files"


def config_tree(cls: type = Config) -> dict[str, object]:
    """The config's keys as nested dicts, from the dataclasses: a section is a dict, a key None, and a free-form
    mapping (``executor.slurm.additional``) ANY, under which every key exists."""
    hints = typing.get_type_hints(cls)
    return {f.name: config_tree(hints[f.name]) if dataclasses.is_dataclass(hints[f.name])
            else ANY if typing.get_origin(hints[f.name]) is dict else None for f in dataclasses.fields(cls)}


ANY = "any key"
MISSING = "missing"
TREE = config_tree()


def node_at(key: str) -> object:
    """What the dotted ``key`` is in :data:`TREE`: a section (dict), a key (None), ANY, or MISSING."""
    node: object = TREE
    for part in key.split("."):
        if node == ANY:
            return ANY
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


SECTIONS = "|".join(TREE)
# `section.key[.key]` anywhere in a page's text; not a file (pack.py, run.yaml), a host (zenodo.org) or part of a
# longer dotted name (zenodo_hpc.dataset.pack, cfg.fetch.offline: a Python attribute, not what a user writes)
DOTTED_KEY = re.compile(rf"(?<![\w/.$-])(?:{SECTIONS})(?:\.[a-z_][a-z0-9_]*)+(?![\w-]|\.\w)")
NOT_KEYS = {"py", "md", "yaml", "yml", "json", "jsonl", "sqsh", "org", "com", "txt", "html", "png", "csv", "sh",
            "sbatch", "h5", "pkl", "toml", "gz"}
SECTION_HEADING = re.compile(r"^## `([a-z_]+):`", re.M)
TABLE_KEY = re.compile(r"^\| `([a-z0-9_.]+)` \|", re.M)


def keys_in_prose(markdown: str) -> list[str]:
    """Dotted config keys named anywhere but in Python blocks (``run.data`` there is an attribute), in the key
    column of a table (relative to its section: keys_in_tables) and in a quoted ``unknown key`` error."""
    text = re.sub(r"```python\n.*?```", "", markdown, flags=re.S)
    text = TABLE_KEY.sub("|", text)
    return [m.group(0) for m in DOTTED_KEY.finditer(text)
            if m.group(0).split(".")[1] not in NOT_KEYS and not text.startswith(": unknown key", m.end())]


def keys_in_tables(markdown: str) -> list[str]:
    """The keys of the tables under a section's heading (``## `fetch:` ``), made absolute (``fetch.offline``)."""
    parts = SECTION_HEADING.split(markdown)
    return [f"{section}.{key}" for section, body in zip(parts[1::2], parts[2::2], strict=True)
            for key in TABLE_KEY.findall(body.split("\n## ", 1)[0])]


def keys_in_yaml_blocks(markdown: str) -> list[str]:
    """Every key of a YAML block that configures something (a top-level key is a config section), at any depth
    down to a key (the values of a free-form mapping are not keys)."""
    keys: list[str] = []

    def walk(mapping: dict[object, object], prefix: str) -> None:
        for key, value in mapping.items():
            keys.append(f"{prefix}{key}")
            if isinstance(value, dict) and isinstance(node_at(f"{prefix}{key}"), dict):
                walk(value, f"{prefix}{key}.")

    for block in re.findall(r"```yaml\n(.*?)```", markdown, re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and set(data) & set(TREE):
            walk(data, "")
    return keys


def unknown_keys(markdown: str) -> list[str]:
    named = keys_in_prose(markdown) + keys_in_tables(markdown) + keys_in_yaml_blocks(markdown)
    return sorted({key for key in named if node_at(key) == MISSING})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_config_key_a_page_names_exists(page: Path) -> None:
    """``fetch.offline`` in a sentence, ``offline`` in the ``fetch:`` table, ``offline: true`` under ``fetch:`` in a
    YAML block: each must be a key of zenodo_hpc/core/config.py's dataclasses."""
    assert unknown_keys(page.read_text()) == [], f"{page.name} names keys that zenodo_hpc/core/config.py lacks"


def test_the_key_checks_catch_what_they_are_for() -> None:
    page = """Set `fetch.offline: true` (fetch.ofline would be a typo), not `run.yaml` or zenodo.org or pack.py.

## `fetch:`

| key | default |
|---|---|
| `offline` | `false` |
| `offlne` | `false` |

```yaml
executor:
  slurm:
    setup: []
    additional: {account: mylab}
    setpu: []
```

```python
run.data / "figures"
```
"""
    assert unknown_keys(page) == ["executor.slurm.setpu", "fetch.offlne", "fetch.ofline"]
    named = keys_in_prose(page) + keys_in_tables(page) + keys_in_yaml_blocks(page)
    assert {"fetch.offline", "executor.slurm.additional", "executor.slurm.setup"} <= set(named)
    assert not {"run.yaml", "zenodo.org", "pack.py", "run.data"} & set(named)
    assert CONFIG_FILE.findall("see configs/sherlock-offline.yaml.") == ["configs/sherlock-offline.yaml"]


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
    texts = list(PAGES) + list((ROOT / "zenodo_hpc").rglob("*.py")) + list((ROOT / "tests").rglob("*.py"))
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


# --- installing: zenodo-hpc is not on PyPI; its extras' packages are ---------------------------------------

PIP_INSTALL = re.compile(r"pip3? install ([^\n`#]+)")


def install_arguments(text: str) -> list[list[str]]:
    """The arguments of each `pip install` in a text (to the end of its line, a comment or a code span's end)."""
    commands = []
    for command in PIP_INSTALL.findall(text):
        try:
            commands.append(shlex.split(command))
        except ValueError:  # quotes that close outside: a Python string around the command
            commands.append(command.split())
    return commands


def extras() -> dict[str, list[str]]:
    """pyproject.toml's optional dependencies: extra -> its requirements, as pinned there."""
    toml = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's: pyproject.toml is read with it")
    return toml.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


DEVELOPERS = ("test", "bench")  # extras of the clone's own venv (make install), not what a user is told to add


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def texts_that_tell_how_to_install() -> dict[str, str]:
    """Every text a user reads: the pages, the package's messages, --help and the dataset card (its source), the
    configs, the Makefile and the SLURM scripts."""
    files = [*PAGES, *(ROOT / "zenodo_hpc").rglob("*.py"), *(ROOT / "configs").glob("*.yaml"), ROOT / "Makefile",
             *(ROOT / "slurm").glob("*.sbatch")]
    return {str(p.relative_to(ROOT)): p.read_text() for p in files}


def from_pypi(text: str) -> list[str]:
    return [arg for args in install_arguments(text) for arg in args if requirement_name(arg) == "zenodo-hpc"]


def test_nothing_says_to_install_zenodo_hpc_from_pypi() -> None:
    """`pip install 'zenodo-hpc[image]'` finds no distribution: the package is installed from a clone or a wheel."""
    said = {name: from_pypi(text) for name, text in texts_that_tell_how_to_install().items()}
    assert {name: found for name, found in said.items() if found} == {}
    assert from_pypi("`pip install 'zenodo-hpc[report]'` or\n pip install -U zenodo_hpc") == ["zenodo-hpc[report]",
                                                                                             "zenodo_hpc"]
    assert from_pypi("""pip install '.[image]' dist/zenodo_hpc-0.1.0-py3-none-any.whl "$(ls dist/*.whl)[report]"
HINT = "pip install 'kaggle' six"  # the kaggle extra, from PyPI (zenodo-hpc is not there)""") == []


def test_the_install_hints_name_their_extras_packages() -> None:
    """Each error that says what to install names the packages of its extra, pinned as pyproject.toml pins them."""
    from zenodo_hpc.dataset.hub import INSTALL_HINT as HUB_HINT
    from zenodo_hpc.dataset.image import INSTALL_HINT as IMAGE_HINT
    from zenodo_hpc.dataset.publish import INSTALL_HINT as KAGGLE_HINT
    from zenodo_hpc.record.store import HDF5PLUGIN_HINT
    from zenodo_hpc.report.figures import MPL_HINT

    pins = extras()
    for extra, hint in (("image", IMAGE_HINT), ("kaggle", KAGGLE_HINT), ("hdf5plugin", HDF5PLUGIN_HINT),
                        ("report", MPL_HINT),
                        ("huggingface", HUB_HINT)):
        command = hint.split("pip install ", 1)[1]
        assert sorted(shlex.split(command)) == sorted(pins[extra]), extra


def test_every_package_a_text_says_to_install_is_pinned_as_its_extra() -> None:
    """`pip install 'matplotlib>=3.6'` in a page is what the report extra holds (or the bare name, which gets the
    newest): the texts never contradict pyproject.toml's pins."""
    pinned = {requirement_name(r): r for extra, requirements in extras().items() if extra not in DEVELOPERS
              for r in requirements}
    wrong = [f"{name}: {arg}" for name, text in texts_that_tell_how_to_install().items()
             for args in install_arguments(text) for arg in args
             if requirement_name(arg) in pinned and arg.replace(" ", "") not in (pinned[requirement_name(arg)],
                                                                                 requirement_name(arg))]
    assert wrong == []


def install_section() -> str:
    guide = (ROOT / "docs" / "cluster-guide.md").read_text()
    return guide.split("## Install once", 1)[1].split("\n## ", 1)[0]


def extras_the_guide_installs() -> list[set[str]]:
    """The extras of each `pip install` of the cluster guide's install section (from the clone, from a wheel)."""
    lines = re.findall(r"""pip install ['"][^'"\n]*\[([a-z0-9,]+)\]['"]""", install_section())
    return [set(line.split(",")) for line in lines]


def test_the_cluster_guide_installs_what_a_cluster_needs() -> None:
    """Images read without mounting (image) and the report and the card's figures (report), on every path."""
    installs = extras_the_guide_installs()
    assert len(installs) >= 2  # from the clone, and from a wheel
    for chosen in installs:
        assert {"image", "report"} <= chosen <= set(extras())
    assert "make dist" in install_section() and "kaggle" in install_section()


@pytest.mark.registry
def test_make_dist_builds_a_wheel_that_installs_as_the_cluster_guide_says(tmp_path: Path) -> None:
    """`make dist` in a copy of the sources (any build output stays there), then the guide's own line installs
    the wheel with its extras into a throwaway venv, where zenodo-hpc and every package of those extras work."""
    from registry_venv import run_from_registry, source_copy, throwaway_venv, venv_environment

    if shutil.which("make") is None:
        pytest.skip("make not on PATH")
    source = source_copy(tmp_path / "clone")
    shutil.copy(ROOT / "Makefile", source / "Makefile")
    run_from_registry(["make", "-s", "dist", f"VENV={sys.prefix}"], what="setuptools (to build the wheel)", cwd=source)
    wheels = sorted((source / "dist").glob("zenodo_hpc-*.whl"))
    assert [w.name for w in wheels] == [f"zenodo_hpc-{__version__}-py3-none-any.whl"]
    python = throwaway_venv(tmp_path / "venv", pip=True)
    line = next(line.strip() for line in install_section().splitlines() if "whl)[" in line)
    chosen = set(re.search(r"\[([a-z0-9,]+)\]", line).group(1).split(","))
    run_from_registry(line, what=f"the wheel's dependencies and extras {sorted(chosen)}", cwd=source,
                      env=venv_environment(python))
    packages = sorted({requirement_name(r) for extra in chosen for r in extras()[extra]})
    check = ("import importlib.metadata as m, json, zenodo_hpc\n"
             "from zenodo_hpc.report.figures import require_matplotlib\n"
             "from zenodo_hpc.dataset.image import SquashImage\n"
             "require_matplotlib()\n"
             "print(json.dumps([zenodo_hpc.__file__] + [m.version(name) for name in json.loads(input())]))")
    done = subprocess.run([str(python), "-c", check], input=json.dumps(packages), capture_output=True, text=True,
                          cwd=tmp_path, env=venv_environment(python), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where, *versions = json.loads(done.stdout)
    assert Path(where).is_relative_to(tmp_path / "venv") and len(versions) == len(packages)
    version = subprocess.run([str(python.parent / "zenodo-hpc"), "--version"], capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.split() == ["zenodo-hpc", __version__]

"""`zenodo-hpc demo`: the whole pipeline offline on the built-in sample, to a verified image; its summary, its
next steps, and the README's copy of its output.

The demo runs once for this file (``demo``), as the README's set-up runs it: the venv's ``zenodo-hpc`` by path
with the venv not on PATH, ``--out build/demo``, from a folder standing for the clone's root."""

from __future__ import annotations

import csv
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from doubles import ZenodoDouble
from registry_venv import PIP_QUIET, run_from_registry, source_copy

from zenodo_hpc.cli import main
from zenodo_hpc.core.state import RunDir, ids_in, read_failure
from zenodo_hpc.demo.demo import FIRST_ID, DemoResult, load_sample, next_steps, publish_sample, slurm_answers

ROOT = Path(__file__).resolve().parents[2]
NEEDS_MKSQUASHFS = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                      reason="mksquashfs not on PATH (apt-get install squashfs-tools)")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", re.M)


def script(name: str) -> ModuleType:
    """A script of scripts/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


update = script("update_demo_output")
build_sample = script("build_demo_sample")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs not on PATH (apt-get install squashfs-tools)")
    run = update.run_demo(tmp_path_factory.mktemp("clone"))
    assert run.returncode == 0, run.stderr[-3000:]
    yield run


def try_next(stdout: str) -> list[str]:
    """The commands under "Try next" in the demo's output."""
    lines = stdout.split("Try next", 1)[1].splitlines()[1:]
    return [line.strip() for line in lines if line.startswith("  ")]


@NEEDS_MKSQUASHFS
def test_demo_runs_offline_to_a_verified_image(demo: update.DemoRun) -> None:
    run = RunDir(demo.out / "run")
    assert (run.root / "zenodo-ml.sqsh").exists() and (run.root / "zenodo-ml.sqsh.md5").exists()
    assert "verified" in demo.stdout and "complete: every record is done or quarantined" in demo.stdout
    done = ids_in(run, "done")
    assert len(done) == 28
    assert read_failure(run, "7000031").reason == "no_archive"  # the record with only a PDF
    assert read_failure(run, "7000035").reason == "restricted"
    from zenodo_hpc.dataset.load import load_metadata

    kinds = {load_metadata(run.data / i)["source"]["kind"] for i in done}
    assert kinds == {"zenodo", "github"}  # archives, and releases through the codeload fallback
    organized = re.search(r"^organize: .*\((py \d+, h \d+, txt \d+, html \d+)\)", demo.stdout, re.M)
    assert organized, demo.stdout  # four languages: the sample's Python, C headers, IDLE's text and HTML


@NEEDS_MKSQUASHFS
def test_the_demos_export_states_the_records_mit_license(demo: update.DemoRun) -> None:
    """The sample's 28 records are all MIT (the loopback Zenodo gives every record ``{"id": "mit"}``): the export
    says so, and Kaggle, which lists no MIT, gets "other" with the reason in the description."""
    export = demo.out / "export"
    package = json.loads((export / "datapackage.json").read_text(encoding="utf-8"))
    assert package["licenses"] == [{"name": "mit", "title": "MIT License", "path": "https://opensource.org/licenses/MIT"}]
    assert package["zenodo_hpc"]["kaggle_license"] == "other"
    assert ("Kaggle takes one license per dataset: `other`: every record here has the license `mit` (MIT License), "
            "which Kaggle does not list.") in package["description"]
    with open(export / "index.csv", encoding="utf-8", newline="") as handle:
        assert {row["license"] for row in csv.DictReader(handle)} == {"mit"}
    assert "; licenses: mit 28;" in demo.stdout


@NEEDS_MKSQUASHFS
def test_each_stage_prints_its_line_once(demo: update.DemoRun) -> None:
    out = demo.stdout
    assert out.count("harvest: ") == 1  # not again from the pipeline, which the demo has harvested for
    assert out.count("pack: ") == 1  # not again in the status's "rounds:" line
    assert out.count("fetch: ") == 1 and out.count("organize: ") == 1
    assert re.search(r"holds 28 records, \d+ entries,", out)  # the image's members are entries; files are code


@NEEDS_MKSQUASHFS
def test_log_lines_go_to_the_log_not_to_the_summary(demo: update.DemoRun) -> None:
    assert LOG_LINE.findall(demo.stdout) == []
    assert [line for line in demo.stderr.splitlines() if " INFO " in line] == []  # only warnings on stderr
    log = (demo.out / "run" / "logs" / "demo.log").read_text()
    assert "INFO harvest:" in log and "INFO packing 28 records" in log
    assert "build/demo/run/logs/demo.log" in demo.stdout  # and the summary says where it is


@NEEDS_MKSQUASHFS
def test_the_next_steps_run_as_printed(demo: update.DemoRun) -> None:
    """From the folder the demo ran in, with the venv not active, as after `make demo`."""
    commands = try_next(demo.stdout)
    assert len(commands) == 2, demo.stdout
    env = {"PATH": update.path_without(demo.scripts), "HOME": str(demo.where)}
    results = [subprocess.run(["bash", "-c", c], cwd=demo.where, env=env, capture_output=True, text=True,
                              timeout=300) for c in commands]
    assert [(r.returncode, r.stderr[-300:]) for r in results] == [(0, "")] * len(commands), commands
    assert "complete: every record is done or quarantined" in results[0].stdout
    assert f"'python-demo-__phello__-{FIRST_ID % 10_000_000:07x}/spam.py': (1, 80, 80)" in results[1].stdout


def test_the_next_steps_use_plain_names_in_an_active_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    result = DemoResult(tmp_path / "demo", tmp_path / "demo" / "run", None, None, "local")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", update.path_without(scripts))
    assert try_next(next_steps(result))[0] == f"{scripts}/zenodo-hpc status demo/run"
    monkeypatch.setenv("PATH", f"{scripts}:{update.path_without(scripts)}")
    assert try_next(next_steps(result))[0] == "zenodo-hpc status demo/run"


@NEEDS_MKSQUASHFS
def test_the_readme_shows_what_the_demo_prints(demo: update.DemoRun) -> None:
    block = update.sample_block(demo)
    pages = update.pages_with_blocks()
    assert ROOT / "README.md" in pages
    for page in pages:
        diff = update.stale(page, block)
        assert not diff, (f"{page.name}'s demo output is stale: run `.venv/bin/python scripts/update_demo_output.py`"
                          f"\n{diff}")


def test_a_block_that_differs_only_in_what_varies_is_not_stale(tmp_path: Path) -> None:
    shown = "x at http://127.0.0.1:41234/api\npack: a (0.9 MB), 1.3 MB/s; md5 " + "a" * 32 + "; in 0.4 s\n"
    now = "x at http://127.0.0.1:39001/api\npack: a (0.9 MB), 0.2 MB/s; md5 " + "b" * 32 + "; in 12 s\n"
    page = tmp_path / "page.md"
    page.write_text(f"text\n{update.BEGIN}\n```\n{shown}```\n{update.END}\nmore\n")
    assert update.stale(page, now) == ""
    assert "(1.0 MB)" in update.stale(page, now.replace("(0.9 MB)", "(1.0 MB)"))  # a size is not a timing
    update.rewrite(page, now)
    assert page.read_text() == f"text\n{update.BEGIN}\n```\n{now}```\n{update.END}\nmore\n"


def test_the_sample_comes_with_the_package_not_from_this_python(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """A Python without IDLE and C headers (Debian's, without idle-python3.x and python3-dev) has the same
    sample: the demo reads none of the installation's own files."""
    (tmp_path / "stdlib").mkdir()
    paths = dict(sysconfig.get_paths(), stdlib=str(tmp_path / "stdlib"), include=str(tmp_path / "no-include"))
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: paths)
    load_sample.cache_clear()
    with ZenodoDouble() as double:
        assert publish_sample(double) == 31
    sample = load_sample()
    assert len(sample.packages) == 26 and len(sample.headers) == 25 and "help.html" in sample.idle_docs
    assert sample.python == "3.11.7"


def test_the_sample_carries_its_licence_and_sources() -> None:
    import tarfile

    with tarfile.open(ROOT / "zenodo_hpc" / "demo" / "sample.tar.gz") as tf:
        names = tf.getnames()
        sources = tf.extractfile("cpython-3.11.7/SOURCES.txt").read().decode()
        licence = tf.extractfile("cpython-3.11.7/LICENSE.txt").read().decode()
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in licence and "PSF-2.0" in sources
    code = [n for n in names if not n.endswith(("/SOURCES.txt", "/LICENSE.txt"))]
    assert [n for n in code if f"{n.split('/', 1)[1]} <- " not in sources] == []  # each file says where it is from
    assert (ROOT / "zenodo_hpc" / "demo" / "sample.tar.gz").stat().st_size < 600_000


def test_the_committed_sample_rebuilds_byte_for_byte(tmp_path: Path) -> None:
    prefix = Path(sys.base_prefix)
    if platform.python_implementation() != "CPython" or platform.python_version() != "3.11.7":
        pytest.skip(f"the sample was built from CPython 3.11.7; this is {platform.python_version()}")
    if not (prefix / "include" / "python3.11" / "Python.h").is_file() or not (
            prefix / "lib" / "python3.11" / "idlelib").is_dir():
        pytest.skip(f"{prefix} lacks the C headers or IDLE the sample takes")
    out = tmp_path / "sample.tar.gz"
    assert build_sample.main([str(prefix), "--out", str(out)]) == 0
    assert out.read_bytes() == (ROOT / "zenodo_hpc" / "demo" / "sample.tar.gz").read_bytes()


def test_building_the_sample_from_a_partial_python_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "lib" / "python3.11").mkdir(parents=True)
    (tmp_path / "lib" / "python3.11" / "os.py").write_text("")
    with pytest.raises(SystemExit, match="not a full CPython installation"):
        build_sample.main([str(tmp_path), "--out", str(tmp_path / "s.tar.gz")])
    assert not (tmp_path / "s.tar.gz").exists()


@NEEDS_MKSQUASHFS
def test_demo_picks_up_where_it_stands(demo: update.DemoRun) -> None:
    again = update.run_demo(demo.where)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "+0 new" in again.stdout and "nothing to submit" in again.stdout and "verified" in again.stdout


@pytest.mark.slurm
@NEEDS_MKSQUASHFS
def test_demo_on_slurm_names_the_image_its_finishing_job_packed(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """`make demo` where a cluster answers: the arrays and the finishing job (which packs) on SLURM."""
    if not slurm_answers():
        pytest.skip("no SLURM cluster answers (sbatch or sinfo missing or failing): slurm/dev-cluster/up.sh")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "executor: slurm" in out and out.count("pack: ") == 1 and out.count("harvest: ") == 1
    image = tmp_path / "demo" / "run" / "zenodo-ml.sqsh"
    assert image.is_file() and f"{image}   the packed, verified image" in out
    assert len(ids_in(RunDir(tmp_path / "demo" / "run"), "done")) == 28


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.registry
@NEEDS_MKSQUASHFS
def test_the_readme_setup_holds_on_the_system_python(tmp_path: Path) -> None:
    """Debian's and Ubuntu's own python3 (no IDLE, perhaps no C headers): a venv made with it, the package
    installed from a copy of the sources (a wheel: the sample must be in it), the demo to a verified image, the
    same output as the README shows, and its next steps run as printed."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} does not exist here")
    if SYSTEM_PYTHON.resolve() == Path(sys.executable).resolve():
        pytest.skip(f"{SYSTEM_PYTHON} runs this test suite: the other tests of this file cover it")
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info >= (3, 10))"],
                             capture_output=True, text=True, timeout=60)
    if version.stdout.strip() != "True":
        pytest.skip(f"{SYSTEM_PYTHON} is older than 3.10, which the package does not accept")
    source = source_copy(tmp_path / "clone")
    venv = subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(source / ".venv")], capture_output=True, text=True,
                          timeout=300)
    if venv.returncode != 0 and "ensurepip" in venv.stdout + venv.stderr:
        pytest.skip(f"{SYSTEM_PYTHON} cannot make a venv: python3-venv is not installed")
    assert venv.returncode == 0, venv.stderr
    run_from_registry([str(source / ".venv" / "bin" / "python"), "-m", "pip", "install", *PIP_QUIET,
                       f"{source}[report,export]"], what=f"the package with {SYSTEM_PYTHON}")
    shutil.rmtree(source / "zenodo_hpc")  # the installed package only, as from a wheel
    run = update.run_demo(source, source / ".venv" / "bin")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (source / "build" / "demo" / "run" / "zenodo-ml.sqsh").is_file() and "verified" in run.stdout
    assert update.stale(ROOT / "README.md", update.sample_block(run)) == ""  # the same output as on this Python
    env = {"PATH": update.path_without(run.scripts), "HOME": str(tmp_path)}
    for command in try_next(run.stdout):
        assert command.startswith(".venv/bin/"), command
        done = subprocess.run(["bash", "-c", command], cwd=source, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{command}: {done.stderr[-500:]}"
    assert f"'python-demo-__phello__-{FIRST_ID % 10_000_000:07x}/spam.py'" in done.stdout


def test_the_pipeline_names_zenodo_hpc_as_it_can_be_typed_here(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """The hints inside the run's own lines ("See `zenodo-hpc status ...`") run as printed too."""
    from zenodo_hpc.core.config import config_from_dict
    from zenodo_hpc.drivers.pipeline import interrupted_message

    scripts = Path(sysconfig.get_path("scripts"))
    cfg = config_from_dict({"run": {"scratch": str(tmp_path), "name": "r"}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", update.path_without(scripts))
    assert f"`{scripts}/zenodo-hpc status {tmp_path / 'r'}`" in interrupted_message(cfg, None)
    monkeypatch.setenv("PATH", f"{scripts}:{update.path_without(scripts)}")
    assert "`zenodo-hpc status " in interrupted_message(cfg, None)


def test_without_the_export_extra_the_demo_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A pip install without the export extra: the demo leaves the Parquet export out in one line naming what to
    install, writes no folder for it, and the list of what it made does not name one."""
    from zenodo_hpc.demo import demo as demo_module

    monkeypatch.setitem(sys.modules, "datasketch", None)  # `import datasketch` fails, as where it is not installed
    with pytest.raises(ImportError):
        import datasketch  # noqa: F401
    assert demo_module._parquet(tmp_path / "run", tmp_path / "parquet", False) is None
    assert capsys.readouterr().out == ("export: the Parquet export was left out: it needs python -m pip install "
                                       "'pyarrow>=14' 'datasketch>=2.0,<3' (the export extra)\n")
    assert not (tmp_path / "parquet").exists()
    result = DemoResult(tmp_path, tmp_path / "run", None, None, "local", None, None)
    assert "Parquet" not in next_steps(result)

"""The scenes of tests/project/test_doc_commands*.py: session fixtures, each a prepared folder and terminal standing
for where a page's reader stands (test_doc_commands.py's docstring lists them), shared by those files so that each
scene is made once; and the order their tests run in. The rules that send commands to them are in tests/doc_rules.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from doc_commands import ROOT
from doc_rules import CLUSTER_PROBLEM, DEMO_RUN, SNIPPETS, open_session
from doc_sessions import (
    Outcome,
    Session,
    base_environment,
    cancel_jobs_under,
    copy_configs,
    kaggle_hook,
    module_stub,
    prepend_path,
    repository_copy,
    repository_view,
    stand_in_venv,
    stand_in_zenodo,
    unmount_all,
    without_slurm,
)
from published_2018 import write_folder_2018


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The pages' commands run in the pages' order, whichever of the files holds them: a scene is shared, and a
    check looks at what its command left before the scene's later commands change it. (A file run alone needs
    no such order: a test first runs its scene's earlier commands.)"""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items)
             if item.path.parent == here and getattr(item, "originalname", "") == "test_runs_as_written"]
    ordered = sorted((items[i] for i in slots), key=lambda item: SNIPPETS.index(item.callspec.params["snippet"]))
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


@pytest.fixture(scope="session")
def reader_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a venv with zenodo-hpc in it, as the reader's (tests/doc_sessions.py)."""
    return stand_in_venv(tmp_path_factory.mktemp("reader") / "venv")


@pytest.fixture(scope="session")
def kaggle_double() -> Iterator[object]:
    from doubles import KaggleDouble

    with KaggleDouble(users={"alice": "alice-key-0123456789", "me": "me-key-0123456789"}) as double:
        yield double


def reader_environment(base: Path, venv_bin: Path, kaggle: object | None = None, user: str = "") -> dict[str, str]:
    """A reader's terminal: ``HOME`` in ``base``, zenodo-hpc's venv active, the Kaggle double for the client."""
    for folder in ("home", "tmp"):
        (base / folder).mkdir(exist_ok=True)
    env = prepend_path(base_environment(base / "home", VIRTUAL_ENV=str(venv_bin.parent), TMPDIR=str(base / "tmp")),
                       venv_bin, Path(sys.prefix) / "bin")  # then the tests' venv: its tools (frictionless, ...)
    if kaggle is not None:
        env.update(PYTHONPATH=str(kaggle_hook(base / "hook")), ZHPC_TEST_KAGGLE_ENDPOINT=kaggle.url,
                   KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_CONFIG_DIR=str(base / "home" / ".kaggle"),
                   KAGGLE_USERNAME=user, KAGGLE_KEY=kaggle.users[user])
    return env


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Session:
    base = tmp_path_factory.mktemp("system")
    return open_session("system", base, prepend_path(base_environment(base), module_stub(base / "modules")))


@pytest.fixture(scope="session")
def doubles(tmp_path_factory: pytest.TempPathFactory, reader_venv: Path) -> Session:
    base = tmp_path_factory.mktemp("doubles")
    (base / "work").mkdir()
    env = {**reader_environment(base, reader_venv), "PYTHONPATH": str(ROOT / "tests")}  # as the page says
    return open_session("doubles", base / "work", env)


@pytest.fixture(scope="session")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Session:
    base = tmp_path_factory.mktemp("clone")
    ours = (str(ROOT), sys.prefix)  # nothing of the work tree's or the tests' venv: a new machine
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not p.startswith(ours)]
    env = without_slurm(base_environment(base / "home", PATH=os.pathsep.join(path), SCRATCH=str(base / "SCRATCH")),
                        base / "no-slurm")
    (base / "home").mkdir()
    return open_session("clone", repository_copy(base / "zenodo-hpc"), prepend_path(env, module_stub(base / "modules")))


def needs_mksquashfs() -> None:
    """The scenes that pack an image (the demo, the runs) skip where mksquashfs is missing, saying so."""
    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs not on PATH (apt-get install squashfs-tools): this scene packs an image")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, reader_venv: Path, kaggle_double: object) -> Iterator[Session]:
    needs_mksquashfs()
    base = tmp_path_factory.mktemp("demo")
    with stand_in_zenodo() as zenodo:
        root = repository_view(base / "zenodo-hpc")
        copy_configs(root, zenodo)
        env = without_slurm(reader_environment(base, reader_venv, kaggle_double, "alice"), base / "no-slurm")
        yield open_session("demo", root, env, zenodo=zenodo, kaggle=kaggle_double)


def demo_step(session: Session, pattern: str) -> Outcome:
    """The outcome of the demo scene's command matching ``pattern`` (run now if it has not run yet)."""
    snippet = next((s for s in session.steps if re.fullmatch(pattern, s.command)), None)
    if snippet is None:
        pytest.fail(f"no page shows a command matching {pattern!r} any more: this scene is made from it")
    outcome = session.outcome_of(snippet)
    assert outcome.returncode == 0, outcome.describe()
    return outcome


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory, demo: Session, reader_venv: Path) -> Session:
    demo_step(demo, r"zenodo-hpc demo --out zenodo-hpc-demo")
    base = tmp_path_factory.mktemp("scratch")
    root = repository_view(base / "zenodo-hpc")
    copy_configs(root, demo.store["zenodo"])
    shutil.copytree(demo.root / DEMO_RUN, root / "scratch" / "zenodo-ml", symlinks=True)
    session = open_session("scratch", root, without_slurm(reader_environment(base, reader_venv), base / "no-slurm"))
    versions = [m[1] for s in session.steps if (m := re.fullmatch(r"cd scratch/zenodo-ml/releases/(\S+)", s.command))]
    for version in versions:
        release_dated(root / "scratch" / "zenodo-ml", version)
    return session


def release_dated(run_dir: Path, version: str) -> None:
    """Make the run's next release as ``update`` makes it (pack, verify, release folder), on the day ``version``
    names (``2026.12.01``): the release a page's example checks."""
    from unittest import mock

    from zenodo_hpc.core.state import load_run
    from zenodo_hpc.dataset import release
    from zenodo_hpc.drivers.releasing import release_now

    day = datetime.strptime(version[:10], "%Y.%m.%d").replace(tzinfo=timezone.utc)
    dated = release.next_version
    with mock.patch.object(release, "next_version", lambda run, today=None: dated(run, day)):
        made = release_now(*load_run(run_dir))
    assert made is not None and made.version == version, made


@pytest.fixture(scope="session")
def from_2018(tmp_path_factory: pytest.TempPathFactory, reader_venv: Path) -> Iterator[Session]:
    """A mounted 2018 image (``zenodo-ml/1065022``, written as the 2018 code wrote it) and the image itself."""
    needs_mksquashfs()
    base = tmp_path_factory.mktemp("from2018")
    root = repository_view(base / "zenodo-hpc")
    with pytest.MonkeyPatch.context() as monkeypatch:
        write_folder_2018(root / "zenodo-ml" / "1065022", monkeypatch)
    subprocess.run(["mksquashfs", str(root / "zenodo-ml"), str(root / "zenodo-ml.sqsh"), "-quiet", "-noappend"],
                   check=True, capture_output=True)
    with stand_in_zenodo() as zenodo:
        copy_configs(root, zenodo)
        yield open_session("from_2018", root, without_slurm(reader_environment(base, reader_venv), base / "no-slurm"))


def image_folder(tmp_path_factory: pytest.TempPathFactory, demo: Session, name: str) -> Path:
    """A folder holding an image of the stand-in's records (1065022, 7000001, ...) and its checksums, as
    downloaded: the one ``zenodo-hpc run -c configs/local.yaml`` of the quickstart packed."""
    demo_step(demo, r"zenodo-hpc run -c configs/local\.yaml( --limit \d+)?")
    folder = tmp_path_factory.mktemp(name) / "download"
    folder.mkdir()
    for suffix in ("", ".md5", ".sha256"):
        shutil.copy(demo.root / "scratch" / "zenodo-ml-local" / f"zenodo-ml.sqsh{suffix}", folder)
    return folder


@pytest.fixture(scope="session")
def readme_image(tmp_path_factory: pytest.TempPathFactory, demo: Session, reader_venv: Path) -> Iterator[Session]:
    folder = image_folder(tmp_path_factory, demo, "readme-image")
    yield open_session("readme_image", folder, reader_environment(folder.parent, reader_venv))
    unmount_all(folder)


@pytest.fixture(scope="session")
def image_md(tmp_path_factory: pytest.TempPathFactory, demo: Session, reader_venv: Path) -> Iterator[Session]:
    folder = image_folder(tmp_path_factory, demo, "image-md")
    yield open_session("image_md", folder, reader_environment(folder.parent, reader_venv))
    unmount_all(folder)


def cluster_scene(scene: str, tmp_path_factory: pytest.TempPathFactory, kaggle: object | None = None,
                  user: str = "") -> Iterator[Session]:
    """A login node of the dev cluster: the repository's folder (configs pointed at a Zenodo double of its
    own), ``$SCRATCH``, the venv ``configs/sherlock.yaml``'s setup sources, active, and ``module``."""
    if CLUSTER_PROBLEM:
        pytest.skip(CLUSTER_PROBLEM)
    base = tmp_path_factory.mktemp(scene.replace("_", "-"))
    venv_bin = stand_in_venv(base / "home" / "zenodo-hpc" / "venv")  # where configs/sherlock.yaml's setup sources it
    with stand_in_zenodo() as zenodo:
        root = repository_view(base / "zenodo-hpc")
        copy_configs(root, zenodo)
        env = prepend_path(reader_environment(base, venv_bin, kaggle, user), module_stub(base / "modules"))
        env["SCRATCH"] = str(base / "SCRATCH")
        session = open_session(scene, root, env, zenodo=zenodo, kaggle=kaggle)
        try:
            yield session
        finally:
            if any(s.command.startswith("zenodo-hpc schedule") for s in session.steps):
                session.probe("zenodo-hpc schedule -c configs/sherlock.yaml --remove")
            cancel_jobs_under(base)


@pytest.fixture(scope="session")
def cluster_run(tmp_path_factory: pytest.TempPathFactory, kaggle_double: object) -> Iterator[Session]:
    yield from cluster_scene("cluster_run", tmp_path_factory, kaggle_double, "me")


@pytest.fixture(scope="session")
def cluster_nowait(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_nowait", tmp_path_factory)


@pytest.fixture(scope="session")
def cluster_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_driver", tmp_path_factory)


@pytest.fixture(scope="session")
def cluster_stages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_stages", tmp_path_factory)


@pytest.fixture(scope="session")
def cluster_preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_preview", tmp_path_factory)


@pytest.fixture(scope="session")
def cluster_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_offline", tmp_path_factory)


@pytest.fixture(scope="session")
def cluster_updating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_updating", tmp_path_factory)


@pytest.fixture(scope="session")
def cluster_tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    yield from cluster_scene("cluster_tools", tmp_path_factory)


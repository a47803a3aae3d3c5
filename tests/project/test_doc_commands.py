"""Every command and every Python recipe the pages show (README.md, docs/*.md) runs as written.

The commands are read from the pages when the tests are collected (tests/doc_commands.py says what counts
as a command, as a usage line, as sample output), so a page's new command is run, or fails
:func:`test_every_command_and_recipe_has_a_runner` until it gets a rule here. The Python recipes of
docs/formats.md and docs/image.md, and the dataset card's, are run by tests/project/test_recipes.py (under numpy 1
and 2), not here; their pages' shell commands are run here.

How a command runs. Each :class:`Rule` sends commands to a *scene*: a prepared folder standing for where
the page's reader stands, with a terminal (tests/doc_sessions.py: ``bash``, the working directory and the
exports carried from one command to the next). A scene's commands run in the pages' order, each as written
(same words, same folder); a test that runs alone first runs its scene's earlier commands. Then the rule's
check says what the command must have done: its exit status, and what it wrote or printed.

The scenes (fixtures below):

- ``clone`` (marked ``registry``: it installs from the package index): a fresh copy of the work tree (its
  tracked and new files), no SLURM, nothing installed: ``make demo``, the venv's activation, every
  ``pip install`` from the clone or its wheel (``make dist``), the cluster guide's venv in ``$HOME``;
- ``system``: the machine itself, for ``apt-get install`` (run only where it is a no-op: root, and the
  package there; it would install or prompt otherwise) and ``module load``;
- ``demo``: a laptop: the repository's folder (its entries linked; ``configs/`` pointed at a Zenodo double),
  a venv with zenodo-hpc active, no SLURM: docs/quickstart.md's demo and what follows it, docs/report.md's
  and docs/publishing.md's commands on the demo's run (the real kaggle client against the Kaggle double),
  the dry run of docs/commands.md, adding an extra's packages to the venv;
- ``scratch``: the same, with the demo's run where the pages' ``scratch/zenodo-ml`` is, and the release
  docs/updating.md checks (made with the date the page names);
- ``from_2018``: a record of the 2018 dataset mounted (``zenodo-ml/1065022``) and its image beside it;
- ``doubles``: an empty folder, for docs/doubles.md's recipes, the clone's ``tests/`` on ``PYTHONPATH`` (as it says);
- ``readme_image``, ``image_md``: a folder holding a packed image and its checksums, as downloaded;
- ``cluster_*`` (marked ``slurm``): the dev SLURM cluster, ``$SCRATCH`` a tmp folder, a venv with zenodo-hpc
  on it where ``configs/sherlock.yaml``'s ``setup`` sources it, ``module`` a no-op: each of the README's ways
  to run on a cluster gets its own fresh run (one command; queue and leave; the driver as a job; stage by
  stage), the cluster guide's offline nodes theirs, docs/updating.md's releases theirs. The dev cluster has
  the ``normal`` partition ``configs/sherlock.yaml`` names, and nodes that fit its 8 GB pack job
  (slurm/dev-cluster/slurm.conf.in, up.sh).

What stands in for the outside world is listed in tests/doc_sessions.py. Commands that must never run get a
reason in :data:`NEVER` (shown as skips); commands that fail as written today are in :data:`KNOWN_BROKEN`
with the failure they show and why (an expected failure, which fails the test once the command works).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import slurm_dev
from doc_commands import ROOT, Snippet, all_snippets
from doc_sessions import (
    STAND_IN_IDS,
    Outcome,
    Session,
    add_record,
    base_environment,
    cancel_jobs_under,
    copy_configs,
    jobs_under,
    kaggle_hook,
    module_stub,
    prepend_path,
    repository_copy,
    repository_view,
    set_config_key,
    settled,
    shape,
    stand_in_venv,
    stand_in_zenodo,
    unmount_all,
    wait_for,
    without_slurm,
)

Check = Callable[[Outcome, Session], None]
Hook = Callable[[Session, Snippet], None]
#: Pages whose recipes another test runs (docs/formats.md's and docs/image.md's, with the card's).
RECIPES_ELSEWHERE = ("docs/formats.md", "docs/image.md")
#: How long a SLURM run of the stand-in's few records may take before the wait gives up (a safety net).
CLUSTER_WAIT_S = 600


# --- checks --------------------------------------------------------------------------------------------

def ok(*more: Check) -> Check:
    """Exit status 0, then every check of ``more``."""
    def check(outcome: Outcome, session: Session) -> None:
        assert outcome.returncode == 0, outcome.describe()
        for each in more:
            each(outcome, session)
    return check


def prints(pattern: str) -> Check:
    """The output (stdout and stderr) has a line matching ``pattern``."""
    def check(outcome: Outcome, session: Session) -> None:
        assert re.search(pattern, outcome.output, re.M), f"no line matches {pattern!r}\n{outcome.describe()}"
    return check


def writes(*paths: str) -> Check:
    """Each of ``paths`` (from where the command ran, ``$VARIABLES`` expanded) exists afterwards."""
    def check(outcome: Outcome, session: Session) -> None:
        missing = [p for p in paths if not outcome.path(p).exists()]
        assert not missing, f"not written: {missing}\n{outcome.describe()}"
    return check


def probe(script: str, expect: str = "") -> Check:
    """``script`` succeeds in the command's terminal afterwards (and prints ``expect``)."""
    def check(outcome: Outcome, session: Session) -> None:
        out = session.probe(script, outcome)
        assert out.returncode == 0 and re.search(expect, out.stdout + out.stderr, re.M), \
            f"after the command, `{script}` gave {out.returncode}: {out.stdout}{out.stderr}\n{outcome.describe()}"
    return check


def as_shown(outcome: Outcome, session: Session) -> None:
    """A command of a transcript (``$ ...`` and what it printed): the same lines, but for what changes from
    run to run (times, numbers, file names, URLs), and an error exit exactly when the page shows an error."""
    shown = [line for line in outcome.snippet.shown if line.strip()]
    printed = {shape(line) for line in outcome.output.splitlines()}
    assert (outcome.returncode != 0) == any(": error: " in line for line in shown), outcome.describe()
    missing = [line for line in shown if shape(line) not in printed]
    assert not missing, f"the page shows lines this run did not print: {missing}\n{outcome.describe()}"


EXTRA_MODULES = {"image": "PySquashfsImage", "report": "matplotlib", "kaggle": "kaggle", "hdf5plugin": "hdf5plugin",
                 "test": "pytest"}


def installs_what_it_names(outcome: Outcome, session: Session) -> None:
    """A ``pip install``: the active venv then imports what it names: zenodo-hpc and the module of each extra
    (``'.[image,report]'``, a wheel's ``[...]``), or the packages named (``'kaggle>=2.2.5,<3' six``)."""
    words = shlex.split(outcome.snippet.command)
    modules = []
    for target in (w for w in words[words.index("install") + 1:] if not w.startswith("-")):
        name, _, extras = target.partition("[")
        if extras:
            modules += ["zenodo_hpc", *(EXTRA_MODULES[e] for e in extras.rstrip("]").split(","))]
        else:
            modules.append(re.split(r"[<>=!~]", name)[0])
    probe(f"python -c 'import {', '.join(modules)}'")(outcome, session)


def writes_nothing(*paths: str) -> Check:
    """A dry run: none of ``paths`` exists afterwards."""
    def check(outcome: Outcome, session: Session) -> None:
        made = [p for p in paths if outcome.path(p).exists()]
        assert not made, f"a dry run wrote {made}\n{outcome.describe()}"
    return check


def image_verified(image: str) -> Check:
    """``image`` exists and its ``.md5`` checks out (``md5sum -c`` from its folder)."""
    def check(outcome: Outcome, session: Session) -> None:
        path = outcome.path(image)
        assert path.exists(), outcome.describe()
        out = subprocess.run(["md5sum", "-c", f"{path.name}.md5"], cwd=path.parent, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    return check


def status_json(outcome: Outcome, session: Session) -> None:
    """``status --json``: JSON whose ``done`` is the run's count of done markers."""
    run = outcome.path(outcome.snippet.command.split()[2])
    assert json.loads(outcome.stdout)["done"] == len(list((run / "state" / "done").glob("*.json"))) > 0


def kept_off_scratch(outcome: Outcome, session: Session) -> None:
    """docs/operations.md's copy after an update: every release's folder (release.json, changelog, checksums),
    records.jsonl, run.yaml and the markers, and no image."""
    kept, run = outcome.path("kept/zenodo-ml"), outcome.path("scratch/zenodo-ml")
    releases = [p.relative_to(run) for p in (run / "releases").glob("*/release.json")]
    assert releases and all((kept / r).is_file() for r in releases), outcome.describe()
    assert (kept / "records.jsonl").read_bytes() == (run / "records.jsonl").read_bytes()
    assert (kept / "run.yaml").is_file() and len(list((kept / "state" / "done").glob("*.json"))) > 0
    assert not list(kept.rglob("*.sqsh")), "an image was copied"


def purge_a_marker(session: Session, snippet: Snippet) -> None:
    """Before docs/operations.md's putting back: a purge took a done marker, and the copy's run.yaml is older than
    the run directory's (an update ran since the copy)."""
    done = sorted((session.cwd / "scratch/zenodo-ml/state/done").glob("*.json"))[0]
    session.store["purged"] = (done, done.read_bytes())
    done.unlink()
    older = session.cwd / "kept/zenodo-ml/run.yaml"
    older.write_text(older.read_text() + "# an older copy\n")


def put_back(outcome: Outcome, session: Session) -> None:
    """The purged marker is back as it was; the run directory's newer run.yaml is not written over."""
    done, payload = session.store["purged"]
    assert done.read_bytes() == payload, outcome.describe()
    assert "# an older copy" not in outcome.path("scratch/zenodo-ml/run.yaml").read_text()


def moved_whole(outcome: Outcome, session: Session) -> None:
    """docs/operations.md's move: every file there, and each release's image still one file (hard links kept)."""
    old, new = outcome.path("scratch/zenodo-ml"), outcome.path("moved/zenodo-ml")
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == sorted(p.relative_to(new) for p in new.rglob("*"))
    images = [p for p in new.glob("releases/*/*.sqsh") if not p.is_symlink()]
    assert images and all(p.stat().st_nlink >= 2 for p in images), "a release's image was copied twice"


def same_status_as(run: str) -> Check:
    """``status`` of the moved run counts what ``status`` of ``run`` counts."""
    def check(outcome: Outcome, session: Session) -> None:
        counts = [json.loads(session.probe(f"zenodo-hpc status --json {r}", outcome).stdout)
                  for r in (run, outcome.snippet.command.split()[2])]
        keys = ("records", "done", "failed", "quarantined", "pending")
        assert [[c[k] for k in keys] for c in counts][0] == [[c[k] for k in keys] for c in counts][1], counts
    return check


def nothing_queued(outcome: Outcome, session: Session) -> None:
    """A dry run: no plan written, no job queued."""
    run = Path(session.env["SCRATCH"]) / "zenodo-hpc" / "zenodo-ml"
    assert not list((run / "plans").glob("*.json")), f"a dry run wrote a plan\n{outcome.describe()}"
    assert not jobs_under(session.root.parent), outcome.describe()


def then_settles(*more: Check) -> Check:
    """After a command that queues work on SLURM: the run's chain of rounds ends (a wait with a safety net),
    then ``more``."""
    def check(outcome: Outcome, session: Session) -> None:
        wait_until_settled(session)
        for each in more:
            each(outcome, session)
    return check


def released(count: int) -> Check:
    """The run has made ``count`` releases, each with its changelog and checksums."""
    def check(outcome: Outcome, session: Session) -> None:
        releases = sorted(p for p in (run_dir(session) / "releases").glob("*") if p.is_dir())
        assert len(releases) == count, f"{[p.name for p in releases]}\n{outcome.describe()}"
        assert all((p / "CHANGELOG.md").exists() and list(p.glob("*.md5")) for p in releases)
    return check


def job_waits(outcome: Outcome, session: Session) -> None:
    assert jobs_under(session.root.parent), f"no job of this run is queued\n{outcome.describe()}"


def unscheduled(outcome: Outcome, session: Session) -> None:
    """Once checked, the schedule is taken out again (the page leaves it; a test must not leave a job queued)."""
    out = session.probe("zenodo-hpc schedule -c configs/sherlock.yaml --remove")
    assert out.returncode == 0, out.stdout + out.stderr
    no_job_left(outcome, session)


def no_job_left(outcome: Outcome, session: Session) -> None:
    wait_for(lambda: not jobs_under(session.root.parent), 60, "the scheduled job to be cancelled")


def driver_job_finishes(outcome: Outcome, session: Session) -> None:
    """The driver job ran the whole pipeline: it ends COMPLETED, and the image is there, verified."""
    job = re.search(r"Submitted batch job (\d+)", outcome.stdout)
    assert job, outcome.describe()
    wait_for(lambda: slurm_dev.job_state(job[1]) in slurm_dev.FINISHED, CLUSTER_WAIT_S, f"driver job {job[1]}")
    log = "".join(p.read_text() for p in session.root.glob(f"*{job[1]}*.out"))
    assert slurm_dev.job_state(job[1]) == "COMPLETED", f"driver job {job[1]}: {log[-3000:]}"
    image_verified("$SCRATCH/zenodo-hpc/zenodo-ml/zenodo-ml.sqsh")(outcome, session)


def published_on_kaggle(owner: str) -> Check:
    """The Kaggle double holds a dataset of ``owner`` with every file its export (the command's ``DIR``) lists
    in its ``datapackage.json``, byte for byte."""
    def check(outcome: Outcome, session: Session) -> None:
        kaggle = session.store["kaggle"]
        refs = [ref for ref in kaggle.datasets if ref.startswith(f"{owner}/")]
        assert len(refs) == 1, outcome.describe()
        export = outcome.path(outcome.snippet.command.split()[3])
        listed = [r["path"] for r in json.loads((export / "datapackage.json").read_text())["resources"]]
        assert kaggle.files_of(refs[0]) == {name: (export / name).read_bytes() for name in listed}
    return check


def offline_tasks(outcome: Outcome, session: Session) -> None:
    """Fetch-first: once submitted, the tasks never asked the Zenodo double for a file."""
    wait_until_settled(session)
    image_verified("$SCRATCH/zenodo-hpc/zenodo-ml/zenodo-ml.sqsh")(outcome, session)
    asked = [r.path for r in session.store["zenodo"].requests if "/files/" in r.path or "codeload" in r.path]
    assert not asked, f"offline tasks downloaded {asked}"


def same_image_again(outcome: Outcome, session: Session) -> None:
    """Packing by hand gives the image the finishing job packed, byte for byte (same md5)."""
    image = run_dir(session) / "zenodo-ml.sqsh"
    assert (image.parent / "zenodo-ml.sqsh.md5").read_text().split()[0] == session.store["md5 before pack"]


# --- hooks: what the page says happens before a command -----------------------------------------------

def run_dir(session: Session) -> Path:
    return Path(session.env["SCRATCH"]) / "zenodo-hpc" / "zenodo-ml"


def wait_until_settled(session: Session, *_: object) -> None:
    """Until the run's chain of rounds has ended and none of this scene's jobs is left (a safety net)."""
    wait_for(lambda: settled(run_dir(session), session.root.parent), CLUSTER_WAIT_S,
             f"the SLURM jobs of {run_dir(session)} to end")


def wait_then_remember_md5(session: Session, snippet: Snippet) -> None:
    wait_until_settled(session)
    session.store["md5 before pack"] = (run_dir(session) / "zenodo-ml.sqsh.md5").read_text().split()[0]


def offline_config(session: Session, snippet: Snippet) -> None:
    """The guide's "set fetch.offline: true in the config", done as a reader does it, before the stages."""
    set_config_key(session.root / "configs" / "sherlock.yaml", "fetch.offline", True)


def forget_requests(session: Session, snippet: Snippet) -> None:
    """So that the tasks' requests can be told apart, the Zenodo double forgets what it served so far."""
    session.store["zenodo"].reset_log()


def harvested(session: Session, snippet: Snippet) -> None:
    """"After the harvest": the run is harvested first (the page's harvest command)."""
    out = session.run("zenodo-hpc harvest -c configs/sherlock.yaml")
    assert out.returncode == 0, out.describe()


def zenodo_grew(session: Session, snippet: Snippet) -> None:
    """"Every month after": the first release is made, and Zenodo has gained a record since."""
    if session.occurrence(snippet):
        wait_until_settled(session)
        add_record(session.store["zenodo"], 7000005, created=datetime.now(timezone.utc).strftime("%Y-%m-%d"))


def upload_fails_once(session: Session, snippet: Snippet) -> None:
    """docs/publishing.md: "the first run failed because the storage PUT of the third file answered 500": the
    run whose shown output is that failure gets it."""
    if any("Upload unsuccessful" in line for line in snippet.shown):
        session.store["kaggle"].fail("PUT", 500, after=2)


# --- the rules -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    scene: str  # the fixture of the scene (its folder and terminal)
    pattern: str  # what it runs (see shows())
    check: Check  # what the command must have done
    page: str = ""  # only on this page ("": any page)
    before: Hook | None = None  # run just before the command (what the page says happens first)
    once: bool = False  # shown again in the same scene, it is not run again: the first run's outcome holds
    needs: tuple[str, ...] = ()  # what the machine must have (see REQUIREMENTS), else the test skips
    probe: str = ""  # a recipe: Python run after it, in its namespace (asserts on what it made)
    timeout: float = 900

    def matches(self, snippet: Snippet) -> bool:
        return self.page in ("", snippet.page) and shows(snippet, self.pattern)


def shows(snippet: Snippet, pattern: str) -> bool:
    """``pattern`` is ``snippet``: a regular expression matching all of a command (without its comment), or
    ``recipe:<text>``, a piece of a recipe's code."""
    if snippet.kind == "python":
        return pattern.startswith("recipe:") and pattern[7:] in snippet.text
    return not pattern.startswith("recipe:") and re.fullmatch(pattern, snippet.command) is not None


DEMO_RUN = "zenodo-hpc-demo/run"
SHERLOCK_RUN = "$SCRATCH/zenodo-hpc/zenodo-ml"
RULES: list[Rule] = [
    # the set-up: a fresh clone, a new machine
    Rule("clone", r"make demo( PYTHON=\S+)?", ok(prints(r"^pack: .* verified"), writes(
        "build/demo/run/zenodo-ml.sqsh", ".venv/bin/zenodo-hpc")), once=True, timeout=1800, needs=("make",)),
    Rule("clone", r"source \.venv/bin/activate", ok(probe("command -v zenodo-hpc", r"/\.venv/bin/zenodo-hpc$"))),
    Rule("clone", r"(python -m )?pip install (-e )?'\.\[[\w,]+\]'", ok(installs_what_it_names)),
    Rule("clone", r"make dist", ok(probe("ls dist/zenodo_hpc-*-py3-none-any.whl")), once=True, needs=("make",)),
    Rule("clone", r'pip install "\$\(ls dist/zenodo_hpc-\*\.whl\)\[[\w,]+\]"', ok(installs_what_it_names)),
    Rule("clone", r"module load python/3\.\d+", ok(), page="docs/cluster-guide.md"),
    Rule("clone", r"python3 -m venv \$HOME/zenodo-hpc/venv", ok(writes("$HOME/zenodo-hpc/venv/bin/activate"))),
    Rule("clone", r"source \$HOME/zenodo-hpc/venv/bin/activate",
         ok(probe('test "$VIRTUAL_ENV" = "$HOME/zenodo-hpc/venv"'))),
    Rule("system", r"apt-get install (squashfs-tools|squashfuse)", ok(prints("already the newest version")),
         needs=("apt-installed",)),
    Rule("system", r"module load python/3\.\d+", ok(), page="docs/configuration.md"),
    # docs/quickstart.md, then the pages that work on the demo's run
    Rule("demo", r"zenodo-hpc demo --out zenodo-hpc-demo", ok(
        prints(r"^pack: .* verified"), prints("^complete: every record is done or quarantined"),
        writes(f"{DEMO_RUN}/zenodo-ml.sqsh", "zenodo-hpc-demo/export/datapackage.json"))),
    Rule("demo", rf"zenodo-hpc status {DEMO_RUN}", ok(prints(rf"^run {DEMO_RUN}: \d+ records"), prints("^  done"))),
    Rule("demo", rf"zenodo-hpc status {DEMO_RUN} --json", ok(status_json)),
    Rule("demo", rf"zenodo-hpc resume {DEMO_RUN} --dry-run", ok(prints("^nothing to submit"))),
    Rule("demo", "recipe:zenodo-hpc-demo/run/data/7000001", ok(), probe=(
        "assert images and all(a.ndim == 3 and a.shape[1:] == (80, 80) for a in images.values())\n"
        "assert sorted(same) == sorted(images) and all((same[k] == images[k]).all() for k in images)\n"
        "assert {'hit', 'tree', 'source', 'stats', 'tool'} <= set(meta)\n")),
    Rule("demo", rf"zenodo-hpc organize {DEMO_RUN} --out zenodo-hpc-demo/by-language", ok(
        prints(r"^organize: \d+ PNGs"), writes("zenodo-hpc-demo/by-language/datapackage.json",
                                               "zenodo-hpc-demo/by-language/index.csv"))),
    Rule("demo", r"zenodo-hpc process zenodo_hpc --out zenodo-hpc-demo/single --id zenodo_hpc", ok(
        prints(r"^record zenodo_hpc: \d+ files seen, \d+ rasterized"),
        writes("zenodo-hpc-demo/single/zenodo_hpc/images_zenodo_hpc.h5",
               "zenodo-hpc-demo/single/zenodo_hpc/metadata_zenodo_hpc.json"))),
    Rule("demo", r"zenodo-hpc run -c configs/local\.yaml( --limit \d+)?", ok(
        prints(r"^pack: .* verified"), image_verified("scratch/zenodo-ml-local/zenodo-ml.sqsh"))),
    Rule("demo", rf"zenodo-hpc report {DEMO_RUN}", ok(prints("^report: "), writes(f"{DEMO_RUN}/report.html")),
         needs=("matplotlib",)),
    Rule("demo", r"zenodo-hpc publish kaggle zenodo-hpc-demo/export .*", as_shown, page="docs/publishing.md",
         before=upload_fails_once, needs=("kaggle",)),
    Rule("demo", r"python -m pip install ('[\w<>=.,]+' ?)+( six)?", ok(installs_what_it_names), once=True),
    Rule("demo", r"SCRATCH=\S+ zenodo-hpc submit -c configs/sherlock\.yaml --dry-run --records \d+",
         lambda o, s: (as_shown(o, s), writes_nothing("/scratch/users/me")(o, s))),
    # a run at scratch/zenodo-ml (docs/operations.md, docs/organize.md, docs/report.md)
    Rule("scratch", r"zenodo-hpc status scratch/zenodo-ml", ok(prints(r"^run scratch/zenodo-ml: \d+ records"))),
    Rule("scratch", 'recipe:organize("scratch/zenodo-ml", "export"', ok(writes("export/datapackage.json")),
         probe="assert result and format_summary(result).startswith('organize: ')\n"),
    Rule("scratch", 'recipe:csv.DictReader(open("export/index.csv"', ok()),
    Rule("scratch", r"pip install frictionless", ok(probe("python -c 'import frictionless'"))),
    Rule("scratch", r"frictionless validate export/datapackage\.json", ok(prints("VALID"))),
    Rule("scratch", 'recipe:build_report("scratch/zenodo-ml", "report.html")', ok(writes("report.html"))),
    Rule("scratch", "recipe:write_report_figures(run, run.data", ok(), probe="assert figures and card_section\n"),
    Rule("scratch", "recipe:pack(run, cfg, figures=card_figures)", ok()),
    # docs/operations.md's scratch purges: a copy off scratch, putting back what a purge took, moving the run
    Rule("scratch", r"mkdir -p (kept/zenodo-ml|moved)", ok(), page="docs/operations.md"),
    Rule("scratch", r"rsync -a --exclude '\*\.sqsh' scratch/zenodo-ml/releases scratch/zenodo-ml/records\.jsonl "
         r"scratch/zenodo-ml/run\.yaml scratch/zenodo-ml/state kept/zenodo-ml/", ok(kept_off_scratch),
         page="docs/operations.md", needs=("rsync",)),
    Rule("scratch", r"rsync -a --ignore-existing kept/zenodo-ml/ scratch/zenodo-ml/", ok(put_back),
         page="docs/operations.md", before=purge_a_marker, needs=("rsync",)),
    Rule("scratch", r"rsync -aH scratch/zenodo-ml/ moved/zenodo-ml/", ok(moved_whole), page="docs/operations.md",
         needs=("rsync",)),
    Rule("scratch", r"zenodo-hpc status moved/zenodo-ml", ok(prints(r"^run moved/zenodo-ml: \d+ records"),
                                                             same_status_as("scratch/zenodo-ml"))),
    Rule("scratch", r"cd scratch/zenodo-ml/releases/[\d.]+", ok(probe("test -f CHANGELOG.md"))),
    Rule("scratch", r"(md5|sha256)sum -c zenodo-ml-[\d.]+\.sqsh\.(md5|sha256)",
         ok(prints(r"^zenodo-ml-[\d.]+\.sqsh: OK$")), page="docs/updating.md"),
    # docs/doubles.md: the recipes, in a folder of their own
    Rule("doubles", "recipe:def test_harvest(tmp_path):", ok(),
         probe="import pathlib, tempfile\ntest_harvest(pathlib.Path(tempfile.mkdtemp(dir='.')))\n"),
    Rule("doubles", "recipe:>>> z = ZenodoDouble().start()", ok()),
    Rule("doubles", "recipe:HeaderRecorder(b\"...\") as elsewhere", ok()),
    # docs/from-2018.md
    Rule("from_2018", 'recipe:load_images("zenodo-ml/1065022")', ok(), probe=(
        "assert images and all(a.shape[1:] == (80, 80) for a in images.values())\n"
        "assert meta['tree']['type'] == 'dir' and meta['hit']['id'] == 1065022\n")),
    Rule("from_2018", r"zenodo-hpc run -c configs/zenodo-ml-2018\.yaml", ok(
        prints(r"^pack: .* verified"), probe("ls scratch/zenodo-ml-2018/data/*/images_*.pkl"))),
    Rule("from_2018", "recipe:write_images_pkl(", ok(), probe=(
        "import pickle, numpy as np\n"
        "data = Path('scratch/zenodo-ml-2018/data')\n"
        "made = sorted(p.name for p in out.iterdir())\n"
        "assert made and made == sorted(f.name for f in data.iterdir() if f.name.isdigit())\n"
        "for name in made:\n"
        "    with open(out / name / f'images_{name}.pkl', 'rb') as handle:\n"
        "        again = pickle.load(handle)\n"
        "    first = load_images(data / name)\n"
        "    assert sorted(again) == sorted(first)\n"
        "    assert all((np.asarray(again[k]) == first[k]).all() for k in first)\n")),
    # a downloaded image: the README's and docs/image.md's commands
    Rule("readme_image", r"md5sum -c zenodo-ml\.sqsh\.md5", ok(prints(r"^zenodo-ml\.sqsh: OK$")), page="README.md"),
    Rule("readme_image", r"(mkdir -p zenodo-ml && )?squashfuse zenodo-ml\.sqsh zenodo-ml/",
         ok(writes("zenodo-ml/manifest.jsonl")),
         needs=("fuse",)),
    Rule("readme_image", "recipe:zenodo-ml/7000001", ok(), page="README.md", needs=("fuse",), probe=(
        "assert images and all(a.shape[1:] == (80, 80) for a in images.values())\n"
        "assert {'hit', 'tree', 'source', 'stats', 'tool'} <= set(meta)\n")),
    Rule("readme_image", r"unsquashfs -cat zenodo-ml\.sqsh README\.md", ok(prints(r"^# .*Zenodo-ML"))),
    Rule("image_md", r"md5sum -c zenodo-ml\.sqsh\.md5", ok(prints(r"^zenodo-ml\.sqsh: OK$")), page="docs/image.md"),
    Rule("image_md", r"sha256sum -c zenodo-ml\.sqsh\.sha256", ok(prints(r"^zenodo-ml\.sqsh: OK$"))),
    Rule("image_md", r"mkdir -p mnt", ok(writes("mnt")), page="docs/image.md"),
    Rule("image_md", r"squashfuse zenodo-ml\.sqsh mnt/", ok(writes("mnt/manifest.jsonl", "mnt/1065022")),
         needs=("fuse",)),
    Rule("image_md", r"fusermount3? -u mnt/", ok(probe("! mountpoint -q mnt")), needs=("fuse",),
         before=lambda s, snip: s.run("mountpoint -q mnt || squashfuse zenodo-ml.sqsh mnt/")),
    Rule("image_md", r"unsquashfs -d mnt zenodo-ml\.sqsh 1065022", ok(writes("mnt/1065022/images_1065022.h5"))),
    # on a cluster: one fresh run for each way the README gives, the cluster guide's and updating's own
    Rule("cluster_run", r"zenodo-hpc run -c configs/sherlock\.yaml", ok(
        prints(r"pack: .* verified"), image_verified(f"{SHERLOCK_RUN}/zenodo-ml.sqsh"))),
    Rule("cluster_run", r"zenodo-hpc update -c configs/sherlock\.yaml", ok(then_settles(released(1))),
         page="README.md"),
    Rule("cluster_run", r"zenodo-hpc schedule -c configs/sherlock\.yaml --every month",
         ok(prints("^scheduled"), job_waits, unscheduled), page="README.md"),
    Rule("cluster_run", rf"zenodo-hpc organize {re.escape(SHERLOCK_RUN)} --out by-language",
         ok(prints(r"^organize: \d+ PNGs"), writes("by-language/datapackage.json"))),
    Rule("cluster_run", r'zenodo-hpc publish kaggle by-language --username me --title "[^"]+"',
         ok(prints(r"kaggle\.com/datasets/me/"), published_on_kaggle("me")), needs=("kaggle",)),
    Rule("cluster_nowait", r"zenodo-hpc run -c configs/sherlock\.yaml --no-wait", ok(
        prints("queued"), then_settles(image_verified(f"{SHERLOCK_RUN}/zenodo-ml.sqsh")))),
    Rule("cluster_driver", r"sbatch --export=ALL,CONFIG=configs/sherlock\.yaml slurm/driver\.sbatch",
         ok(driver_job_finishes), once=True),
    Rule("cluster_stages", r"zenodo-hpc harvest -c configs/sherlock\.yaml", ok(
        prints(r"^harvest: \d+ records in .*records\.jsonl"), writes(f"{SHERLOCK_RUN}/records.jsonl")),
         page="README.md"),
    Rule("cluster_stages", rf"zenodo-hpc fetch {re.escape(SHERLOCK_RUN)}",
         ok(prints(r"^fetch: \d+ records downloaded"), writes(f"{SHERLOCK_RUN}/cache")), page="README.md"),
    Rule("cluster_stages", r"zenodo-hpc submit -c configs/sherlock\.yaml --dry-run",
         ok(prints("^#SBATCH"), nothing_queued), page="README.md"),
    Rule("cluster_stages", r"zenodo-hpc submit -c configs/sherlock\.yaml", ok(
        prints("queued"), writes(f"{SHERLOCK_RUN}/state/submissions/0001.json")), page="README.md"),
    Rule("cluster_stages", rf"zenodo-hpc status {re.escape(SHERLOCK_RUN)}", ok(prints(r"^run .*: \d+ records"))),
    Rule("cluster_stages", rf"zenodo-hpc resume {re.escape(SHERLOCK_RUN)}",
         ok(prints(r"^(nothing to submit|plan \d+: )"))),
    Rule("cluster_stages", rf"zenodo-hpc pack {re.escape(SHERLOCK_RUN)}", ok(
        prints(r"^pack: .* verified"), image_verified(f"{SHERLOCK_RUN}/zenodo-ml.sqsh"), same_image_again),
         before=wait_then_remember_md5),
    Rule("cluster_offline", r"zenodo-hpc harvest -c configs/sherlock\.yaml",
         ok(writes(f"{SHERLOCK_RUN}/records.jsonl")), page="docs/cluster-guide.md", before=offline_config),
    Rule("cluster_offline", rf"zenodo-hpc fetch {re.escape(SHERLOCK_RUN)}",
         ok(prints(r"^fetch: \d+ records downloaded")), page="docs/cluster-guide.md"),
    Rule("cluster_offline", r"zenodo-hpc submit -c configs/sherlock\.yaml", ok(prints("queued"), offline_tasks),
         page="docs/cluster-guide.md", before=forget_requests),
    Rule("cluster_preview", r"zenodo-hpc submit -c configs/sherlock\.yaml --dry-run", ok(
        prints("^#SBATCH"), prints(rf"^plan \d+: {len(STAND_IN_IDS)} records"), nothing_queued),
         page="docs/cluster-guide.md", before=harvested),
    Rule("cluster_offline", rf"du -sh {re.escape(SHERLOCK_RUN)}/cache", ok(prints(r"^\S+\s+.*/cache$"))),
    Rule("cluster_updating", r"zenodo-hpc update -c configs/sherlock\.yaml", page="docs/updating.md",
         before=zenodo_grew, check=ok(then_settles(lambda o, s: released(s.occurrence(o.snippet) + 1)(o, s)))),
    Rule("cluster_updating", r"zenodo-hpc schedule -c configs/sherlock\.yaml --every month",
         ok(prints("^scheduled"), job_waits), page="docs/updating.md"),
    Rule("cluster_updating", r"zenodo-hpc schedule -c configs/sherlock\.yaml --remove", ok(no_job_left)),
    Rule("cluster_updating", r"squeue --me", ok(prints("JOBID"))),
    Rule("cluster_tools", r"scontrol show config", ok(prints(r"^MaxArraySize\s*=")), once=True),
    Rule("cluster_tools", r"squeue -r --me", ok(prints("JOBID"))),
    Rule("cluster_tools", r"zenodo-hpc submit -c configs/sherlock\.yaml --dry-run --records \d+", ok(
        prints("^#SBATCH"), prints(r"MaxArraySize \d+ \(read from scontrol\)"),
        writes_nothing(SHERLOCK_RUN))),
    Rule("cluster_tools", r"source /tmp/zenodo-hpc-slurm/env\.sh", ok(probe('test -f "$SLURM_CONF"')),
         needs=("dev-cluster-default",)),
]

#: Commands never run, and why (a test lists each as a skip with its reason).
NEVER: dict[str, str] = {
    r"make test": "the test suite itself: CI runs it (.ci/run), and here it would run this test again",
    r"make bench": "the benchmarks: many minutes of both cores, for timings no test asserts (benchmarks/RESULTS.md)",
    r"(sudo )?mount -t squashfs .*|(sudo )?umount \S+|sudo mkdir -p /mnt/\S+":
        "the kernel's own squashfs mount: needs root and a loop device, and changes the machine's mounts; "
        "squashfuse mounts the same image in the test's folder",
    r"crontab -e": "opens an editor on this user's crontab: interactive, and it would change the machine's crontab",
    r"kaggle auth login": "an interactive login on kaggle.com: needs the internet and an account",
    r"unsquashfs -cat|unsquashfs -pf|sbatch --begin(=.*)?|sbatch --test-only|squeue -r|chmod 600":
        "an option named in prose, not a command line",
    r"python tests/doubles/kaggle_api\.py child SPEC\.json": "the child process tests/dataset/test_publish.py "
                                                            "starts, with the spec file it writes (SPEC.json "
                                                            "stands for it)",
}


@dataclass(frozen=True)
class Broken:
    """A command (or recipe) that fails as written today: where, what it shows, and why."""

    page: str
    pattern: str  # which command or recipe (see shows())
    failure: str  # the failure it shows today (found in its output or in the check's message)
    reason: str


KNOWN_BROKEN: list[Broken] = []


# --- which rule, which scene, which marks --------------------------------------------------------------

SNIPPETS = [s for s in all_snippets() if s.kind == "command" or
            (s.kind == "python" and s.page not in RECIPES_ELSEWHERE)]


def never_reason(snippet: Snippet) -> str | None:
    return next((why for pattern, why in NEVER.items()
                 if snippet.kind == "command" and re.fullmatch(pattern, snippet.command)), None)


def rules_of(snippet: Snippet) -> list[Rule]:
    return [rule for rule in RULES if rule.matches(snippet)]


def broken_entry(snippet: Snippet) -> Broken | None:
    return next((b for b in KNOWN_BROKEN if b.page in ("*", snippet.page) and shows(snippet, b.pattern)), None)


def _cluster_problem() -> str | None:
    problem = slurm_dev.cluster_problem()
    return problem or (None if shutil.which("mksquashfs") else "mksquashfs not on PATH: the runs pack an image")


def _fuse_problem() -> str | None:
    if shutil.which("squashfuse") is None:
        return "squashfuse not on PATH (apt-get install squashfuse)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine: FUSE mounts are not possible here"
    return None


def _apt_problem(snippet: Snippet) -> str | None:
    package = snippet.command.split()[-1]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "apt-get install needs root and apt-get"
    if subprocess.run(["dpkg", "-s", package], capture_output=True).returncode != 0:
        return f"{package} is not installed: apt-get install would install it (it runs only as a no-op here)"
    return None


def _module_problem(name: str, extra: str) -> str | None:
    return None if importlib.util.find_spec(name) else f"{name} is not installed (the {extra} extra)"


def _make_problem(snippet: Snippet) -> str | None:
    """``make`` is there, and so is the Python a ``PYTHON=`` names (Debian's own, say)."""
    if shutil.which("make") is None:
        return "make not on PATH (apt-get install make)"
    given = re.search(r"PYTHON=(\S+)", snippet.command)
    return f"{given[1]} does not exist here" if given and not os.access(given[1], os.X_OK) else None


REQUIREMENTS: dict[str, Callable[[Snippet], str | None]] = {
    "make": _make_problem,
    "kaggle": lambda s: _module_problem("kaggle", "kaggle"),
    "matplotlib": lambda s: _module_problem("matplotlib", "report"),
    "fuse": lambda s: _fuse_problem(),
    "rsync": lambda s: None if shutil.which("rsync") else "rsync is not installed (Debian: apt-get install rsync)",
    "apt-installed": _apt_problem,
    "dev-cluster-default": lambda s: None if Path("/tmp/zenodo-hpc-slurm/env.sh").exists() else
    "the dev cluster's env.sh is not at its default place (ZHPC_SLURM_DIR elsewhere)",
}
CLUSTER_PROBLEM = _cluster_problem()


def scene_marks(scene: str) -> list[pytest.MarkDecorator]:
    if scene.startswith("cluster_"):
        return [pytest.mark.slurm, pytest.mark.skipif(CLUSTER_PROBLEM is not None, reason=CLUSTER_PROBLEM or "")]
    if scene == "clone":
        return [pytest.mark.registry]
    return []


def _param(snippet: Snippet) -> object:
    ident = f"{snippet.page}:{snippet.line}:{snippet.command if snippet.kind == 'command' else 'recipe'}"
    why = never_reason(snippet)
    if why:
        return pytest.param(snippet, id=ident, marks=pytest.mark.skip(reason=f"never run here: {why}"))
    rules = rules_of(snippet)
    return pytest.param(snippet, id=ident, marks=scene_marks(rules[0].scene) if len(rules) == 1 else [])


# --- the tests -----------------------------------------------------------------------------------------

def test_every_command_and_recipe_has_a_runner() -> None:
    """A command or recipe a page shows is run by exactly one rule, or never run for a stated reason."""
    uncovered = [s.id for s in SNIPPETS if not never_reason(s) and not rules_of(s)]
    assert not uncovered, "these commands/recipes of the pages are run by no test: add a Rule (or a NEVER " \
                          "reason) in tests/project/test_doc_commands.py:\n  " + "\n  ".join(uncovered)
    ambiguous = [s.id for s in SNIPPETS if len(rules_of(s)) > 1 or (never_reason(s) and rules_of(s))]
    assert not ambiguous, f"more than one rule for: {ambiguous}"


def test_every_list_entry_still_names_a_command() -> None:
    """NEVER, KNOWN_BROKEN and the rules name commands the pages still show (none is kept for nothing)."""
    commands = [s for s in SNIPPETS if s.kind == "command"]
    assert [p for p in NEVER if not any(re.fullmatch(p, s.command) for s in commands)] == []
    assert [b for b in KNOWN_BROKEN if not any(broken_entry(s) is b for s in SNIPPETS)] == []
    assert [r.pattern for r in RULES if not any(r.matches(s) for s in SNIPPETS)] == []


def test_the_pages_show_commands_of_each_kind() -> None:
    """The collection itself works: it finds the README's set-up, the quickstart's demo, a recipe, a sample
    output and a usage line, where they are today."""
    found = {(s.page, s.kind, s.command if s.kind != "python" else "") for s in all_snippets()}
    assert ("README.md", "command", "make demo") in found
    assert ("docs/quickstart.md", "command", "zenodo-hpc demo --out zenodo-hpc-demo") in found
    assert any(page == "docs/quickstart.md" and kind == "python" for page, kind, _ in found)
    assert any(kind == "output" and text.startswith("zenodo-hpc pack: error:") for _, kind, text in found)
    assert any(kind == "usage" and text.startswith("zenodo-hpc status RUN_DIR") for _, kind, text in found)


@pytest.mark.parametrize("snippet", [_param(s) for s in SNIPPETS if never_reason(s) or len(rules_of(s)) == 1])
def test_runs_as_written(snippet: Snippet, request: pytest.FixtureRequest) -> None:
    (rule,) = rules_of(snippet)
    for need in rule.needs:
        problem = REQUIREMENTS[need](snippet)
        if problem:
            pytest.skip(problem)
    session: Session = request.getfixturevalue(rule.scene)
    outcome = session.outcome_of(snippet)
    if rule.scene == "clone" and re.search(r"NewConnectionError|Temporary failure in name|Network is "
                                                      r"unreachable|ProxyError", outcome.output):
        pytest.skip("the package index cannot be reached")
    broken = broken_entry(snippet)
    try:
        rule.check(outcome, session)
    except AssertionError as failure:
        if broken and re.search(broken.failure, f"{outcome.output}\n{failure}"):
            pytest.xfail(f"known broken ({broken.page}): {broken.reason}")
        raise
    assert broken is None, f"{snippet.id} works now: remove it from KNOWN_BROKEN ({broken.reason})"


# --- the scenes ----------------------------------------------------------------------------------------

def steps_of(scene: str) -> list[tuple[Snippet, Rule]]:
    """The commands and recipes a scene runs, in the pages' order."""
    return [(s, rules_of(s)[0]) for s in SNIPPETS
            if not never_reason(s) and len(rules_of(s)) == 1 and rules_of(s)[0].scene == scene]


def open_session(scene: str, root: Path, env: dict[str, str], **store: object) -> Session:
    steps = steps_of(scene)
    session = Session(scene, root, env, steps=[s for s, _ in steps], store=dict(store))
    for index, (_, rule) in enumerate(steps):
        if rule.before:
            session.before[index] = rule.before
        if rule.once:
            session.once.add(index)
        if rule.probe:
            session.probes[index] = rule.probe
        session.timeouts[index] = rule.timeout
    return session


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
    from test_load import write_folder_2018

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


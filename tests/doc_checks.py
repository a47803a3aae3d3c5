"""What a page's command must have done, and what the page says happens before it: the checks and hooks of the
rules in tests/doc_rules.py (tests/project/test_doc_commands*.py run the commands). Not a test file.

A check takes the command's :class:`~doc_sessions.Outcome` and its scene's :class:`~doc_sessions.Session` and
asserts (its exit status, what it wrote or printed); a hook runs just before the command.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import slurm_dev
from doc_commands import Snippet
from doc_sessions import Outcome, Session, add_record, jobs_under, set_config_key, settled, shape, wait_for

Check = Callable[[Outcome, Session], None]
Hook = Callable[[Session, Snippet], None]
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
                 "test": "pytest", "huggingface": "huggingface_hub", "export": "datasketch"}


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


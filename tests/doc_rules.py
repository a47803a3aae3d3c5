"""Which command of the pages runs where, and what it must do: the rules (a scene, a pattern, a check), the
commands never run, the ones known broken, what the machine must have, and which test file runs which page.
tests/project/test_doc_commands*.py run the commands; the scenes are fixtures in tests/project/conftest.py, the
checks and hooks in tests/doc_checks.py. Not a test file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import slurm_dev
from doc_checks import (
    Check,
    Hook,
    as_shown,
    driver_job_finishes,
    forget_requests,
    harvested,
    image_verified,
    installs_what_it_names,
    job_waits,
    kept_off_scratch,
    moved_whole,
    no_job_left,
    nothing_queued,
    offline_config,
    offline_tasks,
    ok,
    prints,
    probe,
    published_on_kaggle,
    purge_a_marker,
    put_back,
    released,
    same_image_again,
    same_status_as,
    status_json,
    then_settles,
    unscheduled,
    upload_fails_once,
    wait_then_remember_md5,
    writes,
    writes_nothing,
    zenodo_grew,
)
from doc_commands import Snippet, all_snippets
from doc_sessions import STAND_IN_IDS, Session

#: Pages whose recipes another test runs (docs/formats.md's and docs/image.md's, with the card's).
RECIPES_ELSEWHERE = ("docs/formats.md", "docs/image.md")


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
    Rule("demo", r"zenodo-hpc export zenodo-hpc-demo/run --out zenodo-hpc-demo/parquet", ok(
        prints(r"^export: \d+ rows of \d+ records from run directory run"), prints(r"^deduplication: "),
        writes("zenodo-hpc-demo/parquet/README.md", "zenodo-hpc-demo/parquet/data/train-00000-of-00001.parquet")),
         once=True),
    Rule("demo", 'recipe:ds = load_dataset("zenodo-hpc-demo/parquet")', ok(), probe=(
        "assert set(ds) == {'train', 'validation', 'test'} and ds['train'].num_rows > 0\n"
        "assert row['license'] == 'mit' and row['n_images'] == len(row['images'])\n")),
    Rule("demo", 'recipe:row = load_dataset("zenodo-hpc-demo/parquet", split="train")[0]', ok(), probe=(
        "assert images.ndim == 3 and images.shape[1:] == (80, 80) and images.dtype == np.uint32\n")),
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
    Rule("cluster_run", rf"zenodo-hpc export {re.escape(SHERLOCK_RUN)} --out zenodo-ml-parquet",
         ok(prints(r"^export: \d+ rows"), writes("zenodo-ml-parquet/README.md"))),
    Rule("cluster_run", 'recipe:ds = load_dataset("zenodo-ml-parquet")', ok(),
         probe="assert ds and all(split in ('train', 'validation', 'test') for split in ds)\n"),
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


# --- which test file runs which page -------------------------------------------------------------------

#: Which test file runs the commands and recipes of which pages (each page in exactly one).
PAGES_RUN_BY: dict[str, tuple[str, ...]] = {
    "test_doc_commands.py": ("README.md", "docs/quickstart.md"),
    "test_doc_commands_cluster.py": ("docs/cluster-guide.md", "docs/operations.md", "docs/updating.md"),
    "test_doc_commands_data.py": ("docs/formats.md", "docs/from-2018.md", "docs/image.md", "docs/organize.md",
                                  "docs/publishing.md", "docs/report.md", "docs/splits-and-dedup.md",
                                  "docs/export-and-hub.md"),
    "test_doc_commands_reference.py": ("docs/architecture.md", "docs/commands.md", "docs/configuration.md",
                                       "docs/doubles.md", "docs/extract.md", "docs/fetch.md"),
}


def params_run_by(test_file: str) -> list[object]:
    """The parameters of ``test_file``'s ``test_runs_as_written``: its pages' commands and recipes that one rule
    runs or that are never run (a command of no rule, or of two, fails test_every_command_and_recipe_has_a_runner)."""
    pages = PAGES_RUN_BY[Path(test_file).name]
    return [_param(s) for s in SNIPPETS if s.page in pages and (never_reason(s) or len(rules_of(s)) == 1)]


def run_as_written(snippet: Snippet, request: pytest.FixtureRequest) -> None:
    """``snippet`` runs in its rule's scene (after the scene's earlier commands), and its rule's check holds."""
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


# --- a scene's terminal, from its rules (the scenes' fixtures are in tests/project/conftest.py) ---------

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

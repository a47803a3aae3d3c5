"""The terminal the pages' commands run in (tests/project/test_doc_commands*.py), and the environments prepared
for them. Not a test file.

A :class:`Session` is one terminal: its commands run one after the other through ``bash`` from a working
directory, and what a command changes in it (``cd``, ``source .venv/bin/activate``, ``export``) holds for the
next one, as when a reader types them. Python recipes run as files with the ``python`` that is first on the
session's ``PATH`` (a ``>>>`` session through ``doctest``, so what it shows is checked too).

What stands in for the world outside (each said where it is made):

- :func:`stand_in_venv`: a virtual environment where zenodo-hpc is installed, as a reader's own: a venv whose
  ``site-packages`` reads this repository's ``.venv`` (a ``.pth`` file), with ``pip`` run by its own interpreter
  (so that a ``pip install`` lands in it, never in the repository's venv) and ``zenodo-hpc`` in its ``bin/``;
- :func:`stand_in_zenodo`: the Zenodo double (tests/doubles/zenodo.py) serving a few records of real code,
  for the configs' ``https://zenodo.org/api``;
- :func:`copy_configs`: ``configs/*.yaml`` as they are, but for the Zenodo and GitHub URLs, pointed at the
  double, and the request budgets, raised (a double has no budget to protect): nothing else changes;
- :func:`kaggle_hook`: a ``sitecustomize`` that points the official kaggle client at the Kaggle double
  (tests/doubles/kaggle_api.py), as tests/dataset/test_publish.py does, when ``ZHPC_TEST_KAGGLE_ENDPOINT`` is set;
- :func:`module_stub`: ``module``, the environment-modules command of a cluster (``module load python/3.11``),
  which this machine does not have: it does nothing, as ``module load`` of a Python already there would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from doc_commands import ROOT, Snippet
from slurm_dev import wait_for

#: Environment variables that belong to the test run, not to a reader's terminal.
TEST_VARIABLES = ("PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")


@dataclass
class Outcome:
    """What one command (or recipe) did: its exit status and output, and the terminal it left."""

    snippet: Snippet
    returncode: int
    stdout: str
    stderr: str
    cwd: Path  # the working directory after the command
    env: dict[str, str]  # the exported variables after the command

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def path(self, relative: str) -> Path:
        """``relative`` from where the command ran, with ``$VARIABLES`` of its terminal expanded."""
        expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), m.group(0)), relative)
        return self.cwd / expanded

    def describe(self) -> str:
        return (f"`{self.snippet.text.strip()[:200]}` ({self.snippet.page}:{self.snippet.line}) exited "
                f"{self.returncode} in {self.cwd}\n--- stdout\n{self.stdout[-3000:]}\n"
                f"--- stderr\n{self.stderr[-3000:]}")


@dataclass
class Session:
    """One terminal in a prepared folder: ``root`` (also where it starts), ``env`` (what it exports)."""

    name: str
    root: Path
    env: dict[str, str]
    steps: list[Snippet] = field(default_factory=list)  # the commands and recipes of the scene, in page order
    before: dict[int, Callable[[Session, Snippet], None]] = field(default_factory=dict)  # index -> hook
    once: set[int] = field(default_factory=set)  # indexes whose command, shown again, is not run again
    probes: dict[int, str] = field(default_factory=dict)  # index -> code appended to a recipe
    timeouts: dict[int, float] = field(default_factory=dict)
    cwd: Path | None = None
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)  # what the scene's fixture hands its hooks and checks

    def __post_init__(self) -> None:
        self.cwd = self.cwd or self.root
        self._state = self.root.parent / f".{self.root.name}.terminal"
        self._state.mkdir(parents=True, exist_ok=True)

    def outcome_of(self, snippet: Snippet) -> Outcome:
        """Run ``snippet`` after every step before it that has not run yet, as a reader going down the pages."""
        index = self.steps.index(snippet)
        for earlier in range(index + 1):
            if earlier not in self.outcomes:
                self.outcomes[earlier] = self._run_step(earlier)
        return self.outcomes[index]

    def occurrence(self, snippet: Snippet) -> int:
        """How many steps before ``snippet`` show the same command (0: it is the first)."""
        index = self.steps.index(snippet)
        return sum(1 for s in self.steps[:index] if s.command == snippet.command and s.kind == snippet.kind)

    def _run_step(self, index: int) -> Outcome:
        snippet = self.steps[index]
        if index in self.once:
            first = next(i for i, s in enumerate(self.steps) if s.command == snippet.command)
            if first != index and first in self.outcomes:
                return self.outcomes[first]
        if index in self.before:
            self.before[index](self, snippet)
        timeout = self.timeouts.get(index, 900)
        if snippet.kind == "python":
            return self._recipe(index, snippet, timeout)
        return self.run(snippet.text, snippet, timeout)

    def _recipe(self, index: int, snippet: Snippet, timeout: float) -> Outcome:
        if snippet.text.lstrip().startswith(">>>"):
            path = self._state / f"step-{index}.txt"
            path.write_text(snippet.text, encoding="utf-8")
            return self.run(f'python -m doctest -o ELLIPSIS -o NORMALIZE_WHITESPACE "{path}"', snippet, timeout)
        path = self._state / f"step-{index}.py"
        path.write_text(snippet.text + "\n" + self.probes.get(index, ""), encoding="utf-8")
        return self.run(f'python "{path}"', snippet, timeout)

    def run(self, text: str, snippet: Snippet | None = None, timeout: float = 900) -> Outcome:
        """``text`` through ``bash`` in this terminal; the terminal keeps its directory and exports."""
        env_file, pwd_file = self._state / "env", self._state / "pwd"
        script = f"trap 'env -0 > \"{env_file}\"; pwd > \"{pwd_file}\"' EXIT\n{text}\n"
        env_file.unlink(missing_ok=True)
        proc = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if env_file.exists():
            self.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
            self.cwd = Path(pwd_file.read_text().strip())
        return Outcome(snippet or Snippet("(test)", 0, "command", text, "fenced"), proc.returncode, proc.stdout,
                       proc.stderr, self.cwd, dict(self.env))

    def probe(self, text: str, after: Outcome | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``text`` where the terminal stood ``after`` a command (default: now), changing nothing (a check's)."""
        cwd, env = (after.cwd, after.env) if after else (self.cwd, self.env)
        return subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def base_environment(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment without what belongs to the test run, with ``HOME`` in a tmp folder."""
    env = {k: v for k, v in os.environ.items() if k not in TEST_VARIABLES}
    env.update(HOME=str(home), **extra)
    return env


SLURM_COMMANDS = frozenset({"sbatch", "srun", "salloc", "squeue", "sinfo", "scancel", "sacct", "scontrol", "sstat",
                            "scrontab", "sacctmgr", "sreport", "sprio", "sshare", "sattach", "sbcast", "strigger"})


def without_slurm(env: dict[str, str], shadows: Path) -> dict[str, str]:
    """A laptop's terminal: no SLURM. ``SLURM_CONF`` goes, and each ``PATH`` folder holding a SLURM command is
    replaced by a folder (under ``shadows``) linking to everything else it holds."""
    folders = []
    for n, folder in enumerate(env.get("PATH", "").split(os.pathsep)):
        if folder and any((Path(folder) / name).exists() for name in SLURM_COMMANDS):
            shadow = shadows / str(n)
            shadow.mkdir(parents=True, exist_ok=True)
            for entry in Path(folder).iterdir():
                if entry.name not in SLURM_COMMANDS and not (shadow / entry.name).exists():
                    (shadow / entry.name).symlink_to(entry)
            folder = str(shadow)
        folders.append(folder)
    return {**{k: v for k, v in env.items() if k != "SLURM_CONF"}, "PATH": os.pathsep.join(folders)}


def prepend_path(env: dict[str, str], *folders: Path) -> dict[str, str]:
    return {**env, "PATH": os.pathsep.join([*map(str, folders), env.get("PATH", "")])}


def repository_files() -> list[str]:
    """The work tree's files a fresh clone would have: tracked, and new ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (ROOT / name).is_file()]


def repository_view(root: Path) -> Path:
    """``root`` as a clone of this repository, cheaply: the clone's top-level entries linked to the work tree's
    (``configs/`` is left to :func:`copy_configs`)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in sorted({name.split("/", 1)[0] for name in repository_files()} - {"configs"}):
        (root / name).symlink_to(ROOT / name)
    return root


def repository_copy(root: Path) -> Path:
    """A fresh clone of the work tree as it is now: the files of :func:`repository_files`, copied."""
    for name in repository_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    return root


def stand_in_venv(folder: Path) -> Path:
    """A venv with zenodo-hpc installed in it, as a reader makes one; its ``bin/`` is returned (see above)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    site = Path(subprocess.run([str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], check=True, capture_output=True, text=True).stdout.strip())
    ours = sysconfig.get_path("purelib")
    (site / "zenodo_hpc_test_stand_in.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    python = folder / "bin" / "python"
    for name, body in (("pip", "exec \"$(dirname \"$0\")/python\" -m pip \"$@\""),
                       ("pip3", "exec \"$(dirname \"$0\")/python\" -m pip \"$@\""),
                       ("zenodo-hpc", "exec \"$(dirname \"$0\")/python\" -m zenodo_hpc \"$@\"")):
        script = folder / "bin" / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    assert python.exists()
    return folder / "bin"


def module_stub(folder: Path) -> Path:
    """A ``module`` command that does nothing (see above); the folder to put on ``PATH``."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "module"
    stub.write_text("#!/bin/sh\n# environment modules stand-in: the Python of `module load python/...` is there\n"
                    "exit 0\n")
    stub.chmod(0o755)
    return folder


def kaggle_hook(folder: Path) -> Path:
    """A ``sitecustomize`` pointing the kaggle client at ``$ZHPC_TEST_KAGGLE_ENDPOINT``; the folder for
    ``PYTHONPATH``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('ZHPC_TEST_KAGGLE_ENDPOINT'):  # tests/project/conftest.py: the Kaggle double\n"
        "    try:\n"
        "        from kagglesdk import kaggle_env\n"
        "    except ImportError:  # no kaggle client here: publishing says so itself\n"
        "        pass\n"
        "    else:\n"
        "        kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.LOCAL] = os.environ['ZHPC_TEST_KAGGLE_ENDPOINT']\n")
    return folder


#: The stand-in's record ids: the 2018 dataset's first record (the docs' example) and the demo's first ones.
STAND_IN_IDS = (1065022, 7000001, 7000002, 7000003, 7000004)


def stand_in_zenodo() -> Any:
    """A Zenodo double (start it with ``with``) serving a record of real code (a zip) per id of STAND_IN_IDS."""
    from doubles import ZenodoDouble, make_zip
    from helpers import stdlib_records

    double = ZenodoDouble()
    for n, (record_id, (top, files)) in enumerate(zip(STAND_IN_IDS, stdlib_records(len(STAND_IN_IDS)), strict=True)):
        double.add_record(ZenodoDouble.make_hit(record_id, created=f"2017-11-{n + 1:02d}", title=top),
                          {f"{top}.zip": make_zip(files)})
    return double


def add_record(double: Any, record_id: int, created: str) -> None:
    """One more record of real code on ``double``: Zenodo gained it since."""
    from doubles import ZenodoDouble, make_zip
    from helpers import stdlib_records

    top, files = stdlib_records(len(STAND_IN_IDS) + 1)[-1]
    double.add_record(ZenodoDouble.make_hit(record_id, created=created, title=top), {f"{top}.zip": make_zip(files)})


def copy_configs(root: Path, double: Any) -> Path:
    """``configs/`` of the repository into ``root/configs``, pointed at ``double`` (see above)."""
    target = root / "configs"
    target.mkdir(parents=True, exist_ok=True)
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        data = yaml.safe_load(config.read_text()) or {}
        data.setdefault("zenodo", {}).update(api_url=double.api_url, rate_limit_per_min=60_000,
                                             rate_limit_per_hour=3_600_000, search_rate_limit_per_min=60_000)
        data.setdefault("github", {})["codeload_url"] = double.codeload_url
        (target / config.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def set_config_key(config: Path, dotted: str, value: Any) -> None:
    """Change one key of a YAML config, as a reader edits it."""
    data = yaml.safe_load(config.read_text())
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def mounts_under(folder: Path) -> list[str]:
    """Mount points inside ``folder`` (FUSE mounts a test made), deepest first."""
    inside = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(str(folder.resolve()) + os.sep):
            inside.append(point)
    return sorted(inside, key=len, reverse=True)


def unmount_all(folder: Path) -> None:
    """Unmount what a test mounted under ``folder`` (``fusermount3 -u``, else ``umount``)."""
    for point in mounts_under(folder):
        for tool in (["fusermount3", "-u", "-z"], ["fusermount", "-u", "-z"], ["umount", "-l"]):
            if shutil.which(tool[0]) and subprocess.run([*tool, point], capture_output=True).returncode == 0:
                break


def jobs_under(folder: Path) -> list[str]:
    """SLURM jobs (queued or running) whose working directory is inside ``folder``."""
    if shutil.which("squeue") is None:
        return []
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True, check=False).stdout
    root = str(folder.resolve())
    jobs = [job.split("_")[0] for job, _, work in (line.partition("|") for line in out.splitlines())
            if work == root or work.startswith(root + os.sep)]
    return sorted(set(jobs))  # an array's tasks are one job to scancel


def cancel_jobs_under(folder: Path) -> None:
    """Cancel every job a test queued from ``folder``, and wait until SLURM has let them go."""
    jobs = jobs_under(folder)
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)
        wait_for(lambda: not jobs_under(folder), 120, f"jobs {', '.join(jobs)} to leave the queue")




def chain_state(run_dir: Path) -> str | None:
    """How the run's chain of rounds stands (``running``, ``packed``, ``stopped``), from ``state/chain.json``."""
    from zenodo_hpc.core.state import load_run
    from zenodo_hpc.orchestrate.chain import load_chain

    if not (run_dir / "run.yaml").exists():
        return None
    chain = load_chain(load_run(run_dir)[0])
    return chain.state if chain else None


def settled(run_dir: Path, folder: Path) -> bool:
    """The run's chain has ended and no job queued from ``folder`` is left."""
    return chain_state(run_dir) != "running" and not jobs_under(folder)


def shape(text: str) -> str:
    """A line of output with what changes from run to run masked: times, URLs, file names, sizes, numbers."""
    text = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", text.strip())
    text = re.sub(r"\bhttps?://\S+", "URL", text)
    text = re.sub(r"\b[\w.-]+\.(?:tar\.gz|csv|json)\b", "FILE", text)
    text = re.sub(r"\b\d+(?:[.,]\d+)* ?(?:bytes|B|kB|KB|MB|GB|TB)\b", "SIZE", text)
    return re.sub(r"\d+(?:[.,]\d+)*", "N", text)

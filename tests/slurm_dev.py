"""Helpers for tests that run against the dev SLURM cluster (slurm/dev-cluster/); not a test file.

The cluster is real: several ``slurmd`` on this machine, cgroup memory enforcement where the host
allows it, a ``low``/``high`` partition pair for preemption and a ``limited`` QOS. The helpers ask it
questions (``nodes``, ``node_of``, ``sacct_steps``), break it for real (``crash_node`` kills a node's
``slurmd`` and every process of its jobs, ``revive_node`` brings it back), and wait for what it does
(``wait_for``: a bounded poll whose timeout is a safety net, not the assertion).

``cluster_problem()`` / ``enforcement_problem()`` / ``crash_problem()`` return the reason to skip, or
None. Everything reads the environment that ``up.sh`` prints (``SLURM_CONF``, ``ZHPC_SLURM_DIR``,
``ZHPC_SLURM_NO_ENFORCEMENT``), which ``with-cluster.sh`` exports for ``make test``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from zenodo_hpc.core.config import Config, config_from_dict

T = TypeVar("T")
SCRIPTS = Path(__file__).resolve().parent.parent / "slurm" / "dev-cluster"
#: States after which a job (or step) does nothing more, as sacct spells them.
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "REQUEUED"}
SACCT_FIELDS = ("JobID", "State", "ExitCode", "MaxRSS", "NodeList", "Partition", "Start", "End")


def run(args: list[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command (or a dev-cluster script); raise with its stderr if it fails and ``check``."""
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {out.returncode}: {out.stderr.strip()[-500:]}")
    return out


def cluster_problem() -> str | None:
    """Why no SLURM cluster can be used here (the skip reason), or None when one answers."""
    if shutil.which("sbatch") is None:
        return "sbatch not on PATH (bring a cluster up with slurm/dev-cluster/up.sh and source its env.sh)"
    try:
        out = run(["sinfo", "-h"], timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"no SLURM controller answers: {out.stderr.strip()[:200]}"
    return None


def cluster_up() -> bool:
    """A SLURM cluster answers (see ``cluster_problem`` for why not)."""
    return cluster_problem() is None


def state_dir() -> Path:
    """The dev cluster's state folder: ``ZHPC_SLURM_DIR``, else the one ``SLURM_CONF`` lives in."""
    if os.environ.get("ZHPC_SLURM_DIR"):
        return Path(os.environ["ZHPC_SLURM_DIR"])
    conf = os.environ.get("SLURM_CONF")
    return Path(conf).parent.parent if conf else Path("/tmp/zenodo-hpc-slurm")


def config() -> dict[str, str]:
    """``scontrol show config`` as a dict (``{"TaskPlugin": "task/cgroup", ...}``)."""
    pairs = (line.split("=", 1) for line in run(["scontrol", "show", "config"]).stdout.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def enforcement_problem() -> str | None:
    """Why jobs are not held to their ``--mem`` (the skip reason), or None when cgroups enforce it."""
    problem = cluster_problem()
    if problem:
        return problem
    if os.environ.get("ZHPC_SLURM_NO_ENFORCEMENT"):
        return f"the dev cluster has no memory enforcement: {os.environ['ZHPC_SLURM_NO_ENFORCEMENT']}"
    conf = config()
    if "cgroup" not in conf.get("TaskPlugin", "") or "cgroup" not in conf.get("ProctrackType", ""):
        return f"the cluster does not contain jobs in cgroups (TaskPlugin={conf.get('TaskPlugin')})"
    return None


def enforcement_available() -> bool:
    """A job over its ``--mem`` is killed and ends OUT_OF_MEMORY on this cluster."""
    return enforcement_problem() is None


def nodes() -> list[str]:
    """The cluster's node names, sorted (``["node1", "node2", "node3"]``)."""
    out = run(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split()
    return sorted(set(out), key=lambda name: (len(name), name))


def node_state(name: str) -> str:
    """What sinfo says of node ``name``: ``idle``, ``mixed``, ``down*``, ..."""
    # (Not `sinfo -n NAME`: in 22.05 that answered "mixed*" for a node the full listing showed "down*".)
    rows = (line.split() for line in run(["sinfo", "-h", "-N", "-o", "%N %T"]).stdout.splitlines())
    return next((row[1] for row in rows if len(row) == 2 and row[0] == name), "unknown")


def node_cpus(name: str) -> int:
    """How many CPUs node ``name`` declares."""
    rows = (line.split() for line in run(["sinfo", "-h", "-N", "-o", "%N %c"]).stdout.splitlines())
    return next(int(row[1]) for row in rows if len(row) == 2 and row[0] == name)


def crash_problem() -> str | None:
    """Why ``crash_node`` cannot be used here (the skip reason), or None."""
    problem = cluster_problem()
    if problem:
        return problem
    if os.geteuid() != 0:
        return "crashing a node needs root (it kills slurmd and the node's job processes)"
    conf = state_dir() / "etc" / "slurm.conf"
    if not conf.exists() or Path(os.environ.get("SLURM_CONF", "")).resolve() != conf.resolve():
        return f"the cluster in use is not the dev cluster of {state_dir()} (slurm/dev-cluster/up.sh)"
    if len(nodes()) < 2:
        return "the dev cluster has one node only (ZHPC_SLURM_NODES, or a Slurm without multiple-slurmd)"
    return None


def _script(name: str, node: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZHPC_SLURM_DIR": str(state_dir())}
    out = subprocess.run(["bash", str(SCRIPTS / name), node], capture_output=True, text=True, timeout=120,
                         env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} {node} exited {out.returncode}: {out.stderr.strip()[-800:]}")
    return out


def crash_node(name: str) -> list[str]:
    """Crash node ``name`` for real (its slurmd and all its job processes SIGKILLed); the job ids it ran.

    Slurm notices after ``SlurmdTimeout``: the node goes DOWN and its jobs end NODE_FAIL about 26-29 s
    later; a requeueable job runs again on another node some 6 s after that.
    """
    return _script("crash-node.sh", name).stdout.split()


def revive_node(name: str) -> None:
    """Start node ``name``'s slurmd again and wait until the node takes jobs (revive after NODE_FAIL)."""
    _script("revive-node.sh", name)


def sbatch(*args: str, cwd: Path) -> str:
    """Submit with ``sbatch --parsable ARGS`` from ``cwd``; the job id. Give ``-o`` under a tmp folder."""
    out = run(["sbatch", "--parsable", f"--chdir={cwd}", *args])
    return out.stdout.strip().split(";")[0]


def scancel(*job_ids: str) -> None:
    """Cancel jobs, ignoring those already gone."""
    if job_ids:
        run(["scancel", *job_ids], check=False)


def sacct_steps(job_id: str) -> list[dict[str, str]]:
    """Every sacct record of a job: the job and its steps, one row per run (``-D``: a requeued job's
    earlier runs too), oldest first, with the fields of ``SACCT_FIELDS``."""
    out = run(["sacct", "-n", "-P", "-D", "-j", job_id, "-o", ",".join(SACCT_FIELDS)])
    return [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.stdout.splitlines() if line]


def job_runs(job_id: str) -> list[dict[str, str]]:
    """The job's own records (no steps), one per run, oldest first."""
    return [row for row in sacct_steps(job_id) if "." not in row["JobID"]]


def job_state(job_id: str) -> str:
    """The state of the job's latest run (``RUNNING``, ``NODE_FAIL``, ...); ``UNKNOWN`` before sacct has it."""
    runs = job_runs(job_id)
    return runs[-1]["State"].split()[0] if runs else "UNKNOWN"


def node_of(job_id: str) -> str:
    """The node the job's latest run is on (or was on); ``""`` while it has none."""
    out = run(["squeue", "-h", "-j", job_id, "-o", "%N"], check=False).stdout.strip()
    if out:
        return out
    runs = job_runs(job_id)
    node = runs[-1]["NodeList"] if runs else ""
    return "" if node.startswith("None") else node


def parse_size(text: str) -> int:
    """Bytes of a sacct size such as ``107272K`` or ``1.50G`` (``""`` and ``0`` are 0)."""
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", text.strip())
    if not match:
        return 0
    return int(float(match[1]) * 1024 ** " KMGT".index(match[2] or " "))


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    ``timeout`` is a safety net against a hung cluster, not a measurement: give it well above what the
    step normally takes. On timeout, raise ``TimeoutError`` naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def probing_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A second venv that sees this suite's packages, and whose every interpreter start appends its
    ``sys.executable`` to a probe file: (the venv, the probe). A job whose setup activates it shows which
    interpreter it really ran."""
    import site
    import venv

    folder, probe = tmp_path / "other-venv", tmp_path / "interpreters.txt"
    venv.EnvBuilder(with_pip=False).create(folder)
    packages = next(folder.glob("lib/python*/site-packages"))
    ours = next(p for p in site.getsitepackages() if Path(p).is_relative_to(sys.prefix))
    (packages / "zz_probe.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
        f"import sys; open({str(probe)!r}, 'a').write(sys.executable + '\\n')\n")
    return folder, probe


# --- what the dev cluster answered, replayed ---------------------------------------------------------------

QUEUE_LIMITS = Path(__file__).parent / "data" / "queue_limits_22.05.txt"


def recorded_answers() -> dict[str, str]:
    """Each command of tests/data/queue_limits_22.05.txt and its recorded output."""
    answers: dict[str, list[str]] = {}
    command = None
    for line in QUEUE_LIMITS.read_text().splitlines():
        if line.startswith("## $ "):
            command = line[5:]
            answers[command] = []
        elif command is not None:
            answers[command].append(line)
    return {command: "\n".join(lines) + "\n" for command, lines in answers.items()}


def limited_config(**additional: str) -> Config:
    """A config whose jobs run in the dev cluster's ``debug`` partition with these sbatch options (qos, account)."""
    return config_from_dict({"executor": {"slurm": {"partition": "debug", "additional": additional}}})


def replay_recorded_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SLURM commands answer what the dev cluster answered (any other command fails the test); the commands
    asked, in order. The cluster's limits and the room in its queue are read through ``accounting.run_command``."""
    from zenodo_hpc.orchestrate import accounting

    answers, asked = recorded_answers(), []

    def replay(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = " ".join(args)
        asked.append(command)
        assert command in answers, f"not recorded: {command}"
        return subprocess.CompletedProcess(args, 0, answers[command], "")

    monkeypatch.setattr(accounting, "run_command", replay)
    monkeypatch.setattr(accounting.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    return asked

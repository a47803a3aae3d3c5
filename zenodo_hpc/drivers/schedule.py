"""``schedule``: run ``update`` on a schedule, so that a release comes every month (or week, or day).

Three ways, the first the machine offers:

1. ``scrontab``, SLURM's own cron (SLURM 20.11 and later, where the site enables it with
   ``ScronParameters=enable``): a block of three lines, marked with the config's path, added to your
   scrontab; ``--remove`` takes the block out again. Nothing else in your scrontab is touched.
2. A job that puts itself back in the queue: ``sbatch --begin=<next time>`` runs ``update`` then queues
   itself for the next time (for SLURM builds without ``scrontab``, Debian's among them). ``--remove``
   cancels the queued one: the run's own, known by its run directory in the job's comment (another run of
   the same name, in another scratch folder, has its own). Its log is ``<run>/logs/schedule-<job>.out``.
3. Without SLURM: the crontab line to add (``crontab -e``) is printed, for you to install.

Either way the job runs ``python -m zenodo_hpc update -c <config>`` from the folder ``schedule`` was
called in; ``update`` makes no release when nothing is new. Which Python: as the array tasks do, a SLURM job
(1, 2) first runs the config's ``executor.slurm.setup`` lines and then ``python3`` of the environment they make
on the node (a path of this machine may mean nothing there); without setup lines, and for the crontab line
(3, this machine), the Python that called ``schedule``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..core.config import Config, load_config
from ..core.errors import UserError
from ..core.state import RunDir

EVERY = ("day", "week", "month")
CRON_SPEC = {"day": "0 3 * * *", "week": "0 3 * * 1", "month": "0 3 1 * *"}  # 03:00: a quiet hour
MARK = "# zenodo-hpc update -c"


@dataclass
class ScheduleResult:
    how: str  # "scrontab", "sbatch", "crontab" (printed only), "removed", "nothing to remove"
    message: str
    lines: list[str]
    job_id: str | None = None


def job_name(cfg: Config) -> str:
    return f"zenodo-hpc-update-{cfg.run.name}"


def job_comment(cfg: Config) -> str:
    """What tells this run's queued update from another run's of the same name (another scratch folder): its
    run directory, in the job's comment (``squeue -o %k``)."""
    return f"zenodo-hpc schedule {cfg.run_dir.resolve()}"


def update_command(config: Path, cfg: Config | None = None) -> str:
    """The command the schedule runs: in this folder, the config's absolute path; ``cfg`` given, as a SLURM
    job of that config runs it (:func:`in_job_environment`), else with this Python."""
    arguments = f"-m zenodo_hpc update -c {shlex.quote(str(config.resolve()))}"
    command = in_job_environment(cfg, arguments) if cfg is not None else f"{shlex.quote(sys.executable)} {arguments}"
    return f"cd {shlex.quote(str(Path.cwd()))} && {command}"


def in_job_environment(cfg: Config, arguments: str) -> str:
    """``python arguments`` as a SLURM job runs it: after the ``executor.slurm.setup`` lines, with ``python3`` of
    the environment they make (one bash command, as a crontab line or ``--wrap`` needs); without setup lines,
    with this Python, whose environment the job inherits."""
    setup = cfg.executor.slurm.setup
    if not setup:
        return f"{shlex.quote(sys.executable)} {arguments}"
    return "bash -c " + shlex.quote("; ".join([*setup, f"python3 {arguments}"]))


def next_time(every: str, now: datetime | None = None) -> datetime:
    """The next 03:00 of the next day, Monday or first of the month (local time, as cron counts)."""
    now = now or datetime.now()
    base = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if every == "day":
        return base + timedelta(days=1) if base <= now else base
    if every == "week":
        days = (7 - base.weekday()) % 7 or (7 if base <= now else 0)
        return base + timedelta(days=days)
    first = base.replace(day=1)
    if first > now:
        return first
    return (first.replace(year=first.year + 1, month=1) if first.month == 12
            else first.replace(month=first.month + 1))


def schedule(config: Path, every: str, *, remove: bool = False) -> ScheduleResult:
    """Install (or remove) the recurring update of ``config``'s run; see the module doc for how."""
    if every not in EVERY:
        raise UserError(f"--every {every!r}: choose day, week or month")
    cfg = load_config(config)
    if shutil.which("scrontab") and _scrontab_enabled():
        return _remove_scrontab(config) if remove else _install_scrontab(cfg, config, every)
    if shutil.which("sbatch"):
        return _cancel_queued(cfg) if remove else _queue_next(cfg, config, every)
    line = f"{CRON_SPEC[every]} {update_command(config)}"
    if remove:
        return ScheduleResult("crontab", "no SLURM here: remove this line from your crontab (crontab -e)", [line])
    return ScheduleResult("crontab", "no SLURM here: add this line to your crontab (crontab -e)", [line])


# --- scrontab -------------------------------------------------------------------------------------------


def _scrontab_enabled() -> bool:
    out = _run(["scrontab", "-l"])
    return "disabled" not in (out.stderr + out.stdout).lower()


def _current_scrontab() -> list[str]:
    out = _run(["scrontab", "-l"])
    return out.stdout.splitlines() if out.returncode == 0 else []


def _block(cfg: Config, config: Path, every: str) -> list[str]:
    pack = cfg.pack
    partition = f" --partition={cfg.executor.slurm.partition}" if cfg.executor.slurm.partition else ""
    return [f"{MARK} {config.resolve()} (every {every}; remove with `zenodo-hpc schedule -c {config} --remove`)",
            f"#SCRON --job-name={job_name(cfg)} --time={pack.time_min} --mem={int(pack.mem_gb * 1024)}M{partition}",
            f"{CRON_SPEC[every]} {update_command(config, cfg)}"]


def _without_block(lines: list[str], config: Path) -> list[str]:
    """The scrontab without the block of ``config`` (its marked line and the two after it)."""
    out, skip = [], 0
    for line in lines:
        if line.startswith(f"{MARK} {config.resolve()} "):
            skip = 3
        if skip:
            skip -= 1
            continue
        out.append(line)
    return out


def _write_scrontab(lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".scrontab", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    try:
        out = _run(["scrontab", handle.name])
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if out.returncode != 0:
        raise UserError(f"scrontab refused the schedule: {(out.stderr or out.stdout).strip().splitlines()[-1]}")


def _install_scrontab(cfg: Config, config: Path, every: str) -> ScheduleResult:
    block = _block(cfg, config, every)
    _write_scrontab(_without_block(_current_scrontab(), config) + block)
    return ScheduleResult("scrontab", f"installed in your scrontab (every {every}, next at 03:00):", block)


def _remove_scrontab(config: Path) -> ScheduleResult:
    lines = _current_scrontab()
    kept = _without_block(lines, config)
    if kept == lines:
        return ScheduleResult("nothing to remove", f"your scrontab holds no update of {config}", [])
    _write_scrontab(kept)
    return ScheduleResult("removed", f"removed the update of {config} from your scrontab", [])


# --- a job that queues itself again ---------------------------------------------------------------------


def _queue_next(cfg: Config, config: Path, every: str, *, log_dir: Path | None = None) -> ScheduleResult:
    queued = _queued_jobs(cfg)
    if queued:
        return ScheduleResult("sbatch", f"already scheduled: job {', '.join(queued)} ({job_name(cfg)})", [],
                              queued[0])
    when = next_time(every)
    logs = log_dir or RunDir(cfg.run_dir).logs
    logs.mkdir(parents=True, exist_ok=True)
    tick = in_job_environment(cfg, f"-m zenodo_hpc.drivers.schedule tick -c {shlex.quote(str(config.resolve()))} "
                                   f"--every {every}")
    args = ["sbatch", "--parsable", f"--job-name={job_name(cfg)}", f"--comment={job_comment(cfg)}",
            f"--begin={when:%Y-%m-%dT%H:%M:%S}",
            f"--time={cfg.pack.time_min}", f"--mem={int(cfg.pack.mem_gb * 1024)}M",
            f"--output={logs / 'schedule-%j.out'}", f"--chdir={Path.cwd()}", "--wrap", tick]
    if cfg.executor.slurm.partition:
        args.insert(2, f"--partition={cfg.executor.slurm.partition}")
    out = _run(args)
    if out.returncode != 0:
        raise UserError(f"sbatch refused the scheduled update: {(out.stderr or out.stdout).strip()[-300:]}")
    job = out.stdout.strip().split(";")[0]
    return ScheduleResult("sbatch", f"scheduled: job {job} runs the update at {when:%Y-%m-%d %H:%M} and queues "
                                    f"itself again every {every} (this SLURM has no scrontab)", [" ".join(args)],
                          job)


def _queued_jobs(cfg: Config) -> list[str]:
    """This run's scheduled update waiting in the queue (not the running one), by name and comment."""
    out = _run(["squeue", "-h", "--me", "-t", "PENDING", "-n", job_name(cfg), "-o", "%i|%k"])
    if out.returncode != 0:
        return []
    mine = job_comment(cfg)
    return [job for job, _, comment in (line.partition("|") for line in out.stdout.splitlines()) if comment == mine]


def _cancel_queued(cfg: Config) -> ScheduleResult:
    queued = _queued_jobs(cfg)
    if not queued:
        return ScheduleResult("nothing to remove", f"no scheduled update of {cfg.run.name} is queued", [])
    _run(["scancel", *queued])
    return ScheduleResult("removed", f"cancelled the scheduled update: job {', '.join(queued)}", [])


def tick(config: Path, every: str) -> int:
    """The scheduled job (``python -m zenodo_hpc.drivers.schedule tick -c CONFIG --every E``, the command line's
    internal ``tick``): the update, then the next one queued (whatever the update's outcome)."""
    from .update import update

    cfg = load_config(config)
    try:
        outcome = update(cfg)
        print(outcome.message, flush=True)
        status = 0
    except UserError as exc:
        print(f"zenodo-hpc update: error: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        _queue_next(cfg, config, every)
    return status


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(args, 1, "", str(exc))


def format_result(result: ScheduleResult) -> str:
    return "\n".join([result.message, *[f"  {line}" for line in result.lines]])


if __name__ == "__main__":  # the queued job's command, here and in jobs queued by earlier versions: the CLI's `tick`
    import runpy

    runpy.run_module("zenodo_hpc", run_name="__main__", alter_sys=True)

"""submitit behind one door: the sbatch script it writes for a job, and the queueing of calls as jobs.

The SLURM plugin (slurm.py) and the feasibility check reach submitit through this module only. Queueing uses
its public API (an executor, ``batch()``, ``submit``); the script of a job made without SLURM (``--dry-run`` on a
laptop, ``sbatch --test-only``, where submitit's executor refuses to exist without ``srun``) needs two private
parts, its script writer and its command line, named in ``PRIVATE_API``. pyproject.toml pins submitit to the
versions that were tested with them, and tests/orchestrate/test_submitit_adapter.py fails when an installed
submitit lacks one, so that a release that drops them fails in the test suite, not on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# submitit's private names this module uses (module, attribute path): nothing else in the package uses any.
PRIVATE_API = (("submitit.slurm.slurm", "_make_sbatch_string"),
               ("submitit.slurm.slurm", "SlurmExecutor._submitit_command_str"))
MAX_NUM_TIMEOUT = 3  # requeues after a timeout (the tasks are Checkpointable) before submitit gives up

Call = tuple[Callable[..., Any], tuple[Any, ...]]


def sbatch_script(folder: Path, python: str, parameters: dict[str, Any], tasks: int) -> str:
    """The sbatch script submitit writes for a job (an array when ``tasks`` > 1) with these parameters, made
    without SLURM: what ``queue`` would hand to sbatch, byte for byte (tests/orchestrate/test_slurm_cluster.py
    compares)."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    folder = Path(folder).expanduser().absolute()  # as submitit's executor holds it
    command = SlurmExecutor._submitit_command_str.fget(  # type: ignore[attr-defined]
        SimpleNamespace(python=python, folder=folder))
    return str(_make_sbatch_string(command=command, folder=folder, map_count=tasks if tasks > 1 else None,
                                   **parameters))


def queue(folder: Path, python: str, parameters: dict[str, Any], calls: Sequence[Call]) -> list[str]:
    """Queue each ``fn(*args)`` of ``calls`` with these parameters, as one array (one plain job for one call); the
    job ids, ``<array>_<i>`` or the plain id. submitit's refusals are raised as ``submission_errors()``."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_NUM_TIMEOUT, python=python)
    executor.update_parameters(**parameters)
    with executor.batch():
        jobs = [executor.submit(fn, *args) for fn, args in calls]
    return [str(job.job_id) for job in jobs]


def submission_errors() -> tuple[type[BaseException], ...]:
    """What ``queue`` raises when sbatch refuses or cannot be run."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    return FailedJobError, FailedSubmissionError, OSError

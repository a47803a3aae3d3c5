"""``submit`` and ``resume``: start a chain of rounds, and walk away.

The first round is planned and queued here: :func:`~zenodo_hpc.drivers.finish.submit_round` plans what is not
complete and hands it to the executor (``orchestrate/submit.py``), and on SLURM starts the chain whose
finishing jobs queue the rounds after it and the pack job (``drivers/finish.py``).
"""

from __future__ import annotations

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import RunDir, check_config, open_run
from ..orchestrate.submit import SubmitResult
from .finish import submit_round


def submit(cfg: Config, *, kind: str | None = None, dry_run: bool = False,
           records: int | None = None) -> tuple[RunDir, SubmitResult]:
    """``zenodo-hpc submit``: the run directory and what was queued. A dry run creates no run directory (it
    checks the config against one that exists); ``records``: preview that many records instead of the harvest."""
    check_preview(records, dry_run=dry_run)
    if dry_run:
        run = RunDir(cfg.run_dir)
        check_config(run, cfg)
    else:
        run = open_run(cfg)
    return run, submit_round(run, cfg, kind=kind, dry_run=dry_run, what="submit", stated_records=records)


def check_preview(records: int | None, *, dry_run: bool) -> None:
    """A number of records stands for a harvest only in a preview: queuing made-up records is refused."""
    if records is not None and not dry_run:
        raise UserError("--records N is for a preview only: use it with --dry-run")


def resume(run: RunDir, cfg: Config, *, dry_run: bool = False) -> SubmitResult:
    """``zenodo-hpc resume``: a new chain for what is neither complete, quarantined nor still queued, with the
    executor the run's frozen config names."""
    return submit_round(run, cfg, dry_run=dry_run, what="resume")

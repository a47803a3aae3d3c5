"""The chain of rounds of a run (``<run>/state/chain.json``): which round, what is queued next, how it ended.

Written by ``submit``/``resume``/``run`` when they queue a round on SLURM and by each finishing job
(zenodo_hpc/drivers/finish.py); read by ``status`` and by ``run`` while it follows the chain.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UserError
from ..core.state import RunDir, atomic_write_json, read_json

log = logging.getLogger(__name__)

CHAIN = "chain.json"


@dataclass
class Chain:
    """The rounds one ``submit``/``resume`` started, and what is queued next."""

    started_by: str  # "submit", "resume", "run"
    rounds: int = 0  # rounds (generations) queued by this chain
    max_rounds: int = 3
    generations: list[int] = field(default_factory=list)
    finishing_job: str | None = None  # SLURM: the job that decides after the current round (or the pack job)
    pack_job: str | None = None  # SLURM: the pack job the last finishing job queued, with the pack's resources
    state: str = "running"  # running, packed, stopped
    message: str = ""  # the last decision, in words

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chain:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def chain_path(run: RunDir) -> os.PathLike[str]:
    return run.state / CHAIN


def load_chain(run: RunDir) -> Chain | None:
    """The run's current chain, or None (never submitted on SLURM, or an unreadable file: logged)."""
    try:
        data = read_json(chain_path(run))
    except UserError as exc:
        log.warning("%s; a new chain starts with the next submit or resume", exc)
        return None
    return Chain.from_json(data) if isinstance(data, dict) else None


def save_chain(run: RunDir, chain: Chain) -> None:
    atomic_write_json(chain_path(run), chain.to_json())

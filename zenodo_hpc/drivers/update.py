"""``update``: the next release of a living dataset — what Zenodo gained since the last one, and only that.

1. Harvest what Zenodo gained or changed since the last release (its harvest's start, minus a day of
   overlap; records are deduplicated by id, so the overlap costs nothing but a few searches).
2. Process what is not done, with the same shards, markers, SLURM arrays and walk-away finishing job as
   ``submit``: records already done are never redone and their outputs never rewritten.
3. Once every record is done or quarantined (:mod:`zenodo_hpc.drivers.releasing`): plan the release, pack and
   verify its image (the dataset card says which release it is and what changed; records superseded by a
   newer version stay in the run directory, outside the image), make the release, publish it where its
   users are (a new version of the Kaggle dataset, a commit and tag of the Hugging Face dataset, a new
   version of the Zenodo record) and say so (the webhook; the feed is part of the release).

With nothing new since the last release, ``update`` says so and makes no release. On SLURM step 3 is taken
by the finishing job of the last round, so ``update`` (like ``submit``) returns once the work is queued;
locally it runs to the end. A publication or notice that fails is logged and tried again by the next
``update`` (its first step, for the latest release); it never undoes the release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..core.config import Config
from ..core.state import RunDir, atomic_write_json, open_run
from ..dataset.release import (
    Release,
    latest_release,
)
from ..dataset.verify import verify_run
from ..orchestrate.chain import Chain
from ..orchestrate.executor import resolve_kind
from .releasing import release_now, release_summary, resend_notices, utc_now

log = logging.getLogger(__name__)

OVERLAP = timedelta(days=1)


@dataclass
class UpdateOutcome:
    run: RunDir
    release: Release | None
    message: str
    waiting: bool = False  # SLURM: the finishing job will make the release


def update(cfg: Config, *, kind: str | None = None, progress: bool | None = None,
           keep_withdrawn: bool | None = None) -> UpdateOutcome:
    """Harvest what is new since the last release, process it, and make the next release (see module doc).
    ``keep_withdrawn`` (default ``dataset.keep_withdrawn``) keeps the folders of records Zenodo withdrew."""
    from ..zenodo.harvest import format_summary, harvest
    from .finish import advance_rounds, submit_round

    kind = resolve_kind(kind or cfg.executor.kind)
    run = open_run(cfg)
    resend_notices(run, cfg)
    previous = latest_release(run)
    started = utc_now()
    since = _since(run, cfg, previous)
    result = harvest(cfg, since=since, progress=progress)
    log.info("%s", format_summary(result))
    keep = cfg.dataset.keep_withdrawn if keep_withdrawn is None else keep_withdrawn
    checked = reconcile(run, cfg, previous, keep_outputs=keep)
    atomic_write_json(run.pending_update, {"harvest_started": started.isoformat(),
                                          "harvested_since": since.isoformat() if since else None})
    verify_run(run, cfg)  # a purged scratch: records found damaged are made again by the rounds below
    if kind == "slurm":
        submitted = submit_round(run, cfg, kind="slurm", what="update")
        if submitted.submission is not None:
            return UpdateOutcome(run, None, f"{format_summary(result)}{checked}; the new records are queued: the "
                                            "finishing job makes the release when they are done", waiting=True)
        release = release_now(run, cfg)
    else:  # rounds here, and the release at their end (the same decision as the finishing job's)
        advance_rounds(run, cfg, kind=kind, chain=Chain(started_by="update", max_rounds=cfg.executor.max_attempts))
        newest = latest_release(run)
        release = newest if newest and (previous is None or newest.version != previous.version) else None
    if release is None:
        last = f" since release {previous.version}" if previous else ""
        return UpdateOutcome(run, None, f"{format_summary(result)}{checked}; nothing new{last}: no release made")
    return UpdateOutcome(run, release, release_summary(run, release))


def _since(run: RunDir, cfg: Config, previous: Release | None) -> datetime | None:
    """Where this update's harvest starts: the last release's harvest, or (the first update of a run made by
    ``run`` or ``submit``) the run's own complete harvest, each minus a day of overlap; None: everything."""
    from ..zenodo.harvest import harvest_began

    if previous is None:
        began = harvest_began(run, cfg)
        return began - OVERLAP if began else None
    if not previous.harvest_started:
        return None
    return datetime.fromisoformat(previous.harvest_started) - OVERLAP


def reconcile(run: RunDir, cfg: Config, previous: Release | None, *, keep_outputs: bool) -> str:
    """The previous release's records that Zenodo no longer shares (deleted, restricted) leave the dataset
    (:mod:`zenodo_hpc.dataset.removals`); a record whose lookup failed stays. ``; reconcile: ...``, or nothing."""
    from ..dataset.removals import left_out, withdraw
    from ..zenodo.withdrawn import format_lookup, look_up

    if previous is None:
        return ""
    gone = left_out(run, cfg)
    candidates = [i for i in previous.records if i not in gone]
    lookup = look_up(cfg, candidates)
    withdraw(run, lookup.removed, keep_outputs=keep_outputs)
    for record_id, why in sorted(lookup.unresolved.items()):
        log.warning("record %s stays: its lookup on Zenodo failed (%s); the next update asks again", record_id, why)
    line = format_lookup(lookup, len(candidates))
    log.info("%s", line)
    return f"; {line}"

"""``update``: the next release of a living dataset — what Zenodo gained since the last one, and only that.

1. Harvest what Zenodo gained or changed since the last release (its harvest's start, minus a day of
   overlap; records are deduplicated by id, so the overlap costs nothing but a few searches).
2. Process what is not done, with the same shards, markers, SLURM arrays and walk-away finishing job as
   ``submit``: records already done are never redone and their outputs never rewritten.
3. Once every record is done or quarantined: plan the release (:mod:`zenodo_hpc.release`), pack and
   verify its image (the dataset card says which release it is and what changed; records superseded by a
   newer version stay in the run directory, outside the image), make the release, publish it where its
   users are (a new version of the Kaggle dataset, a new version of the Zenodo record) and say so (the
   webhook; the feed is part of the release).

With nothing new since the last release, ``update`` says so and makes no release. On SLURM step 3 is taken
by the finishing job of the last round, so ``update`` (like ``submit``) returns once the work is queued;
locally it runs to the end. A publication or notice that fails is logged and tried again by the next
``update``; it never undoes the release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .chain import Chain
from .config import Config
from .errors import UserError
from .executor import resolve_kind
from .release import (
    Release,
    ReleasePlan,
    card_lines,
    latest_release,
    list_releases,
    make_release,
    plan_release,
    save_release,
    summary_line,
    write_feed,
)
from .state import RunDir, atomic_write_json, open_run, read_json

log = logging.getLogger(__name__)

OVERLAP = timedelta(days=1)
PENDING_UPDATE = "update.json"  # state/update.json: the harvest that feeds the release being made


@dataclass
class UpdateOutcome:
    run: RunDir
    release: Release | None
    message: str
    waiting: bool = False  # SLURM: the finishing job will make the release


def update(cfg: Config, *, kind: str | None = None, progress: bool | None = None) -> UpdateOutcome:
    """Harvest what is new since the last release, process it, and make the next release (see module doc)."""
    from .finish import advance_rounds, submit_round
    from .harvest import format_summary, harvest

    kind = resolve_kind(kind or cfg.executor.kind)
    run = open_run(cfg)
    resend_notices(run, cfg)
    previous = latest_release(run)
    started = _now()
    since = _since(previous)
    result = harvest(cfg, since=since, progress=progress)
    log.info("%s", format_summary(result))
    atomic_write_json(run.state / PENDING_UPDATE, {"harvest_started": started.isoformat(),
                                                   "harvested_since": since.isoformat() if since else None})
    if kind == "slurm":
        submitted = submit_round(run, cfg, kind="slurm", what="update")
        if submitted.submission is not None:
            return UpdateOutcome(run, None, f"{format_summary(result)}; the new records are queued: the finishing "
                                            "job makes the release when they are done", waiting=True)
        release = release_now(run, cfg)
    else:  # rounds here, and the release at their end (the same decision as the finishing job's)
        advance_rounds(run, cfg, kind=kind, chain=Chain(started_by="update", max_rounds=cfg.executor.max_attempts))
        newest = latest_release(run)
        release = newest if newest and (previous is None or newest.version != previous.version) else None
    if release is None:
        last = f" since release {previous.version}" if previous else ""
        return UpdateOutcome(run, None, f"{format_summary(result)}; nothing new{last}: no release made")
    return UpdateOutcome(run, release, release_summary(run, release))


def _since(previous: Release | None) -> datetime | None:
    if previous is None or not previous.harvest_started:
        return None
    return datetime.fromisoformat(previous.harvest_started) - OVERLAP


def release_now(run: RunDir, cfg: Config) -> Release | None:
    """Plan, pack, verify and make the next release, publish it and send the notice; None when nothing
    changed since the last release. Called by ``update`` and by the finishing job of an update's chain."""
    from .pack import pack
    from .report import card_figures

    plan = plan_release(run, cfg)
    if plan.previous is not None and not plan.changed:
        return None
    if not plan.records:
        raise UserError(f"{run.root}: no record is done yet: nothing to release")
    packed = pack(run, cfg, progress=False, card_extra=card_lines(plan), exclude=plan.excluded, figures=card_figures)
    pending = read_json(run.state / PENDING_UPDATE, default={}) or {}
    release = make_release(run, cfg, plan, packed.image, harvested_since=pending.get("harvested_since"),
                           harvest_started=pending.get("harvest_started") or _now().isoformat())
    publish_release(run, cfg, release, plan)
    notify_release(run, cfg, release)
    return release


def publish_release(run: RunDir, cfg: Config, release: Release, plan: ReleasePlan) -> None:
    """Kaggle and Zenodo, each when configured; a failure is logged and kept for the next update."""
    for target, publish in (("kaggle", _publish_kaggle), ("zenodo", _publish_zenodo)):
        if not _configured(cfg, target) or (release.published.get(target) or {}).get("ok"):
            continue
        try:
            release.published[target] = {"ok": True, **publish(run, cfg, release)}
        except UserError as exc:
            log.warning("release %s: publishing on %s failed: %s (the next update tries again)", release.version,
                        target, exc)
            release.published[target] = {"ok": False, "error": str(exc)}
        save_release(run, release)
    write_feed(run, cfg)


def _configured(cfg: Config, target: str) -> bool:
    publish = cfg.publish
    return bool(publish.kaggle.username) if target == "kaggle" else bool(publish.zenodo.api_url)


def _publish_kaggle(run: RunDir, cfg: Config, release: Release) -> dict[str, Any]:
    """The by-language export of the released image, as a new version of the Kaggle dataset."""
    from .organize import organize
    from .publish import publish_kaggle

    k = cfg.publish.kaggle
    out = run.root / "export" / release.version
    organize(run.root / release.image, out, username=k.username, name=k.name or "zenodo-ml-code-images",
             title=k.title, progress=False)
    result = publish_kaggle(out, username=k.username, title=k.title, name=k.name or "zenodo-ml-code-images",
                            keywords=list(k.keywords) or None, public=k.public, version_notes=summary_line(release))
    return {"ref": result.ref, "url": result.url, "created": result.created}


def _publish_zenodo(run: RunDir, cfg: Config, release: Release) -> dict[str, Any]:
    """The released image and its checksums, as a new version of the Zenodo record (a DOI per release)."""
    from .deposit import publish_release_on_zenodo

    z = cfg.publish.zenodo
    folder = run.root / "releases" / release.version
    files = [run.root / release.image, folder / f"{release.image}.md5", folder / f"{release.image}.sha256",
             folder / "CHANGELOG.md"]
    earlier = [r.published.get("zenodo", {}).get("concept_id") for r in list_releases(run)
               if r.version != release.version and (r.published.get("zenodo") or {}).get("ok")]
    return publish_release_on_zenodo(files, release=release, settings=z, run_name=cfg.run.name,
                                     concept_id=next((c for c in reversed(earlier) if c), None))


def notify_release(run: RunDir, cfg: Config, release: Release) -> bool:
    """The webhook's notice of one release; True when it was accepted (or none is configured)."""
    from .notify import notice, send_notice

    url = cfg.notify.webhook_url
    if not url or release.notified:
        return True
    figures = {"version": release.version, "records": len(release.records), "added": len(release.added),
               "superseded": len(release.superseded), "newly_quarantined": len(release.newly_quarantined),
               "image": release.image, "md5": release.md5, "doi": (release.published.get("zenodo") or {}).get("doi"),
               "kaggle": (release.published.get("kaggle") or {}).get("url")}
    problem = send_notice(url, notice(summary_line(release), figures))
    if problem:
        log.warning("release %s: notice not sent: %s (the next update sends it again)", release.version, problem)
        return False
    release.notified = True
    save_release(run, release)
    return True


def resend_notices(run: RunDir, cfg: Config) -> None:
    """Notices and publications that failed for earlier releases, tried again first."""
    for release in list_releases(run):
        if cfg.notify.webhook_url and not release.notified:
            notify_release(run, cfg, release)


def release_summary(run: RunDir, release: Release) -> str:
    where = ", ".join(f"{k}: {v.get('url') or v.get('doi') or 'published'}" if v.get("ok") else f"{k}: failed"
                      for k, v in release.published.items())
    return (f"{summary_line(release)}; image {Path(run.root / release.image)}, md5 {release.md5}; changelog "
            f"{run.root / 'releases' / release.version / 'CHANGELOG.md'}{f'; {where}' if where else ''}")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)

"""Make a release once its records are done: plan it, pack and verify its image, record it, publish it where its
users are (a new version of the Kaggle dataset, a commit and tag of the Hugging Face dataset, a new version of
the Zenodo record) and say so (the webhook; the Atom feed is part of the release).

Called by ``update`` (locally, after its rounds) and by the finishing job of an update's chain on SLURM
(``finish``), which is why it is a module of its own: both import it, neither imports the other. A
publication or notice that fails is logged and tried again by the next ``update``; it never undoes the
release.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import RunDir, read_json
from ..dataset.release import (
    Release,
    ReleasePlan,
    card_lines,
    latest_release,
    link_changelog,
    list_releases,
    make_release,
    place_release_images,
    plan_release,
    release_image_name,
    save_release,
    summary_line,
    write_feed,
)

log = logging.getLogger(__name__)



def release_now(run: RunDir, cfg: Config) -> Release | None:
    """Plan, pack, verify and make the next release, publish it and send the notice; None when nothing
    changed since the last release. Called by ``update`` and by the finishing job of an update's chain."""
    from ..dataset.pack import pack
    from ..report import card_figures

    place_release_images(run)  # releases made before their folder held their image get it
    plan = plan_release(run, cfg)
    if plan.previous is not None and not plan.changed:
        return None
    if not plan.records:
        raise UserError(f"{run.root}: no record is done yet: nothing to release")
    packed = pack(run, cfg, progress=False, card_extra=card_lines(plan), exclude=plan.excluded, figures=card_figures,
                  image_name=release_image_name(cfg, plan.version))
    pending = read_json(run.pending_update, default={}) or {}
    release = make_release(run, cfg, plan, packed.image, harvested_since=pending.get("harvested_since"),
                           harvest_started=pending.get("harvest_started") or utc_now().isoformat())
    publish_release(run, cfg, release, plan)
    notify_release(run, cfg, release)
    return release


def publish_release(run: RunDir, cfg: Config, release: Release, plan: ReleasePlan | None = None) -> None:
    """Kaggle, the Hugging Face Hub and Zenodo, each when configured and not done yet; a failure is logged and
    kept for the next update. The changelog names each place as it succeeds (the Hub before Zenodo, which uploads
    the changelog). ``plan`` is not needed: kept for the callers that pass it."""
    publishers = {"kaggle": _publish_kaggle, "huggingface": _publish_huggingface, "zenodo": _publish_zenodo}
    for target, publish in publishers.items():
        if not _configured(cfg, target) or (release.published.get(target) or {}).get("ok"):
            continue
        try:
            release.published[target] = {"ok": True, **publish(run, cfg, release)}
        except (UserError, OSError) as exc:  # OSError: the disk, while exporting; either way the release stands
            log.warning("release %s: publishing on %s failed: %s (the next update tries again)", release.version,
                        target, exc)
            release.published[target] = {"ok": False, "error": str(exc)}
        save_release(run, release)
        link_changelog(run, release)
    write_feed(run, cfg)


def _configured(cfg: Config, target: str) -> bool:
    publish = cfg.publish
    return bool({"kaggle": publish.kaggle.username, "huggingface": publish.huggingface.repo,
                 "zenodo": publish.zenodo.api_url}[target])


def _publish_kaggle(run: RunDir, cfg: Config, release: Release) -> dict[str, Any]:
    """The by-language export of the released image, as a new version of the Kaggle dataset."""
    from ..dataset.organize import organize
    from ..dataset.publish import publish_kaggle

    k = cfg.publish.kaggle
    username = k.username
    assert username, "publish_release publishes to Kaggle only when publish.kaggle.username is set"
    out = run.export(release.version)
    organize(run.image(release.image), out, username=username, name=k.name or "zenodo-ml-code-images",
             title=k.title, progress=False, license_categories=cfg.export.license_categories)
    result = publish_kaggle(out, username=username, title=k.title, name=k.name or "zenodo-ml-code-images",
                            keywords=list(k.keywords) or None, public=k.public, version_notes=summary_line(release))
    return {"ref": result.ref, "url": result.url, "created": result.created}


def _publish_huggingface(run: RunDir, cfg: Config, release: Release) -> dict[str, Any]:
    """The released image's Parquet export (shards and dataset card, in ``export/huggingface/<version>/``) as one
    commit of the Hub dataset ``publish.huggingface.repo``, tagged with the release's version. An export an
    earlier try left (written whole or not at all) is published as it is: a retry sends only what the Hub lacks."""
    import importlib.util

    from ..dataset.export import export_dataset
    from ..dataset.hub import CARD, INSTALL_HINT, publish_huggingface

    hub = cfg.publish.huggingface
    assert hub.repo, "publish_release publishes on the Hub only when publish.huggingface.repo is set"
    if importlib.util.find_spec("huggingface_hub") is None:  # before the export, not after it
        raise UserError(f"publish.huggingface needs huggingface_hub: {INSTALL_HINT}")
    folder = run.hub_export(release.version)
    if not (folder / CARD).is_file():
        export_dataset(run.image(release.image), folder, settings=cfg.export, progress=False)
    result = publish_huggingface(folder, hub.repo, public=hub.public, tag=release.version,
                                 message=summary_line(release))
    _remove_older_hub_exports(run, release)
    return {"repo": result.repo, "url": result.url, "tag": result.tag, "commit": result.commit,
            "created": result.created}


def _remove_older_hub_exports(run: RunDir, published: Release) -> None:
    """Once a release is on the Hub, the exports of earlier releases (the Hub keeps them at their tags) leave the
    scratch: a Parquet copy of the whole dataset each. Only folders named by a release are touched."""
    import shutil

    for release in list_releases(run):
        folder = run.hub_export(release.version)
        if release.version == published.version or not folder.is_dir():
            continue
        try:
            shutil.rmtree(folder)
        except OSError as exc:  # the release is published all the same: the folder is only in the way
            log.warning("release %s: %s not removed: %s; remove it by hand", published.version, folder, exc)
            continue
        log.info("release %s: %s removed (the Hub holds it at the tag %s)", published.version, folder,
                 release.version)


def _publish_zenodo(run: RunDir, cfg: Config, release: Release) -> dict[str, Any]:
    """The released image, its checksums and its changelog, as a new version of the Zenodo record (a DOI per
    release): the files of its release folder, which a downloader puts in one folder, where the checksums check."""
    from ..zenodo.deposit import publish_release_on_zenodo

    z = cfg.publish.zenodo
    files = [run.release_file(release.version, name)
             for name in (release.image, f"{release.image}.md5", f"{release.image}.sha256")]
    files.append(run.changelog(release.version))
    earlier = [r.published.get("zenodo", {}).get("concept_id") for r in list_releases(run)
               if r.version != release.version and (r.published.get("zenodo") or {}).get("ok")]
    return publish_release_on_zenodo(files, release=release, settings=z, run_name=cfg.run.name,
                                     concept_id=next((c for c in reversed(earlier) if c), None))


def notify_release(run: RunDir, cfg: Config, release: Release) -> bool:
    """The webhook's notice of one release; True when it was accepted (or none is configured)."""
    from ..dataset.notify import notice, send_notice

    url = cfg.notify.webhook_url
    if not url or release.notified:
        return True
    figures = {"version": release.version, "records": len(release.records), "added": len(release.added),
               "superseded": len(release.superseded), "newly_quarantined": len(release.newly_quarantined),
               "removed": len(release.removed),
               "image": release.image, "md5": release.md5, "doi": (release.published.get("zenodo") or {}).get("doi"),
               "kaggle": (release.published.get("kaggle") or {}).get("url"),
               "huggingface": (release.published.get("huggingface") or {}).get("url")}
    problem = send_notice(url, notice(summary_line(release), figures))
    if problem:
        log.warning("release %s: notice not sent: %s (the next update sends it again)", release.version, problem)
        return False
    release.notified = True
    save_release(run, release)
    return True


def resend_notices(run: RunDir, cfg: Config) -> None:
    """Notices and publications that failed for earlier releases, tried again first (by ``update``).

    Only the latest release's publications are tried again: an older one published after a newer would
    become the newest version on Kaggle, the Hub's ``main`` and Zenodo, with older data.
    """
    latest = latest_release(run)
    if latest is not None and any(not (v or {}).get("ok") for v in latest.published.values()):
        publish_release(run, cfg, latest)
    for release in list_releases(run):
        if cfg.notify.webhook_url and not release.notified:
            notify_release(run, cfg, release)


def release_summary(run: RunDir, release: Release) -> str:
    where = ", ".join(f"{k}: {v.get('url') or v.get('doi') or 'published'}" if v.get("ok") else f"{k}: failed"
                      for k, v in release.published.items())
    return (f"{summary_line(release)}; image {run.image(release.image)}, md5 {release.md5}; changelog "
            f"{run.changelog(release.version)}{f'; {where}' if where else ''}")


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)

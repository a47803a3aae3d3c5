"""Releases of the dataset: each a verified image with a version in its name, its manifest, checksums and
changelog, and an Atom feed of them all.

``<run>/releases/<version>/`` holds ``release.json`` (what the release is: counts, ids added, superseded
and newly quarantined, the image's checksums, where it was published), ``manifest.jsonl`` (one line per
record in the release), ``CHANGELOG.md``, the image ``<image stem>-<version>.sqsh`` and its ``.md5``/``.sha256``,
which name it by its bare name: they check from that folder, as from any folder the published files are
downloaded into. The image is a hard link to the verified image ``pack`` wrote (so a later pack never changes
a released image), in the folder and as ``<run>/<image stem>-<version>.sqsh``; ``releases.keep`` says how many
released images stay on disk (their folders always stay, with the checksums). ``<run>/releases/feed.xml`` is
an Atom feed anyone can subscribe to.

A release is planned before the image is packed (:func:`plan_release`: its version, which records, what
changed, the lines the dataset card shows), then made once the image is verified (:func:`make_release`).
When ``zenodo.all_versions`` is false, a newer version of a software concept (same ``conceptrecid``)
supersedes the older one: the older one's folder stays in the run directory, outside the release.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import (
    DONE,
    FAILED,
    RELEASE_JSON,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    ids_in,
    iter_records,
    read_failure,
    read_json,
)

log = logging.getLogger(__name__)



@dataclass
class Release:
    """What one release is; ``release.json``."""

    version: str
    created: str  # ISO time the release was made
    image: str  # the released image's file name, in the run directory and in its release folder
    md5: str = ""
    sha256: str = ""
    size: int = 0
    records: list[str] = field(default_factory=list)  # ids in the release
    added: list[str] = field(default_factory=list)
    superseded: list[dict[str, str]] = field(default_factory=list)  # {"id", "by"}
    quarantined: list[str] = field(default_factory=list)  # every quarantined id at release time
    newly_quarantined: list[str] = field(default_factory=list)
    removed: list[dict[str, str]] = field(default_factory=list)  # {"id", "reason"}: left since the previous release
    previous: str | None = None
    harvested_since: str | None = None  # the `updated` bound of the harvest that fed it (None: everything)
    harvest_started: str = ""  # when that harvest started: the next update harvests from here (with overlap)
    published: dict[str, Any] = field(default_factory=dict)  # {"kaggle": {...}, "zenodo": {"doi": ...}}
    notified: bool = False  # the webhook got it (retried by the next update when not)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def list_releases(run: RunDir) -> list[Release]:
    """Every release of the run, oldest first (a folder without a readable release.json is skipped, logged)."""
    found = []
    folder = run.releases
    for path in sorted(folder.glob("*/" + RELEASE_JSON)) if folder.is_dir() else []:
        try:
            data = read_json(path)
        except UserError as exc:
            log.warning("%s; that release is left out of the feed and the changelog", exc)
            continue
        if isinstance(data, dict) and data.get("version") == path.parent.name:
            found.append(Release.from_json(data))
    return sorted(found, key=lambda r: (r.created, r.version))


def latest_release(run: RunDir) -> Release | None:
    releases = list_releases(run)
    return releases[-1] if releases else None


def save_release(run: RunDir, release: Release) -> None:
    atomic_write_json(run.release_json(release.version), release.to_json())


# --- planning -------------------------------------------------------------------------------------------


@dataclass
class ReleasePlan:
    """What the next release will be, known before its image is packed (the card inside says it)."""

    version: str
    previous: Release | None
    records: list[str]  # ids in the release, in manifest order
    added: list[str]
    superseded: list[dict[str, str]]
    quarantined: list[str]
    newly_quarantined: list[str]
    excluded: list[str]  # done records left out of the image (superseded, or named by dataset.exclude)
    titles: dict[str, tuple[str, str]]  # id -> (doi, title)
    removed: list[dict[str, str]] = field(default_factory=list)  # {"id", "reason"}: withdrawn or excluded since

    @property
    def changed(self) -> bool:
        return bool(self.added or self.superseded or self.removed or self.previous is None)


def next_version(run: RunDir, today: datetime | None = None) -> str:
    """``2026.11.29``, or ``2026.11.29.2`` for a second release the same day."""
    day = (today or datetime.now(timezone.utc)).strftime("%Y.%m.%d")
    taken = {p.name for p in run.releases.iterdir()} if run.releases.is_dir() else set()
    if day not in taken:
        return day
    n = 2
    while f"{day}.{n}" in taken:
        n += 1
    return f"{day}.{n}"


def plan_release(run: RunDir, cfg: Config, *, today: datetime | None = None) -> ReleasePlan:
    """The next release from what is done now: newest version of each concept, unless ``all_versions``; never a
    record withdrawn from Zenodo or named by ``dataset.exclude`` (:mod:`zenodo_hpc.dataset.removals`)."""
    from .removals import left_out

    previous = latest_release(run)
    gone = left_out(run, cfg)
    done, set_aside = ids_in(run, DONE), _quarantined(run)
    wanted = done | set(gone) | set_aside
    named = [hit for hit in iter_records(run.records) if str(hit["id"]) in wanted]
    every = [hit for hit in named if str(hit["id"]) in done or str(hit["id"]) in gone]
    hits = [hit for hit in every if str(hit["id"]) not in gone]
    keep, superseded = _newest_versions(hits, cfg.zenodo.all_versions)
    titles = {str(h["id"]): (str(h.get("doi") or ""), _title(h)) for h in named}  # the changelog names each
    quarantined = sorted(set_aside - set(gone), key=_id_order)
    before = set(previous.records) if previous else set()
    before_q = set(previous.quarantined) if previous else set()
    return ReleasePlan(
        version=next_version(run, today), previous=previous, records=keep,
        added=[i for i in keep if i not in before],
        superseded=[s for s in superseded if s["id"] in before or previous is None],
        quarantined=quarantined, newly_quarantined=[i for i in quarantined if i not in before_q],
        excluded=sorted({s["id"] for s in superseded} | (set(gone) & done), key=_id_order), titles=titles,
        removed=[{"id": i, "reason": gone[i]} for i in sorted(before & set(gone), key=_id_order)])


def _newest_versions(hits: list[dict[str, Any]], all_versions: bool) -> tuple[list[str], list[dict[str, str]]]:
    """(ids kept, [{"id": older, "by": newer}]): the highest id of each ``conceptrecid`` wins."""
    ids = [str(h["id"]) for h in hits]
    if all_versions:
        return ids, []
    newest: dict[str, str] = {}
    for hit in hits:
        concept = str(hit.get("conceptrecid") or f"id:{hit['id']}")
        rid = str(hit["id"])
        if concept not in newest or _id_order(rid) > _id_order(newest[concept]):
            newest[concept] = rid
    winners = set(newest.values())
    superseded = [{"id": str(h["id"]), "by": newest[str(h.get("conceptrecid") or f"id:{h['id']}")]}
                  for h in hits if str(h["id"]) not in winners]
    return [i for i in ids if i in winners], superseded


def _quarantined(run: RunDir) -> set[str]:
    out = set()
    for record_id in ids_in(run, FAILED):
        try:
            failure = read_failure(run, record_id)
        except UserError:
            continue
        if failure and failure.quarantined:
            out.add(record_id)
    return out - ids_in(run, DONE)


def _id_order(record_id: str) -> tuple[int, str]:
    return (int(record_id), "") if record_id.isdigit() else (0, record_id)


def _title(hit: dict[str, Any]) -> str:
    metadata = hit.get("metadata")
    title = metadata.get("title") if isinstance(metadata, dict) else None
    return " ".join(str(title or "").split())[:200]


def card_lines(plan: ReleasePlan) -> str:
    """What the dataset card inside the image says of its release (markdown)."""
    since = f" since release {plan.previous.version}" if plan.previous else ""
    lines = [f"## Release {plan.version}", "",
             f"{len(plan.records)} records; {len(plan.added)} added{since}, {len(plan.superseded)} superseded by a "
             f"newer version, {len(plan.removed)} removed, {len(plan.newly_quarantined)} newly quarantined. Every "
             f"change, with ids and DOIs: `CHANGELOG.md` of release {plan.version}, published with the image on "
             f"Zenodo (and in `releases/{plan.version}/` of the run directory that made it).", "",
             "Records deleted or restricted on Zenodo leave the dataset at the next release. An author who wants a "
             "record left out asks whoever publishes this dataset (the owner of its Kaggle dataset or Zenodo "
             "record) to add its id, DOI or concept DOI to their exclude list: it leaves every later release."]
    return "\n".join(lines) + "\n"


# --- making it ------------------------------------------------------------------------------------------


def release_image_name(cfg: Config, version: str) -> str:
    """``zenodo-ml-2026.12.01.sqsh``: the name of a release's image, in the run directory, in its release folder
    and wherever it is published (the dataset card inside it names it so)."""
    image = Path(cfg.pack.image)
    return f"{image.stem}-{version}{image.suffix}"


def make_release(run: RunDir, cfg: Config, plan: ReleasePlan, image: Path, *, harvested_since: str | None,
                 harvest_started: str) -> Release:
    """The verified ``image`` becomes release ``plan.version``: a hard link with the version in its name, in the
    run directory and in its folder (with release.json, manifest, changelog and checksums, which therefore check
    from there), the feed; old images pruned."""
    md5, sha256 = _checksums_of(image)
    versioned = run.image(release_image_name(cfg, plan.version))
    _link_or_copy(image, versioned)
    folder = run.release(plan.version)
    folder.mkdir(parents=True, exist_ok=True)
    _place_in_folder(versioned, folder)
    atomic_write_text(run.release_file(plan.version, f"{versioned.name}.md5"), f"{md5}  {versioned.name}\n")
    atomic_write_text(run.release_file(plan.version, f"{versioned.name}.sha256"), f"{sha256}  {versioned.name}\n")
    atomic_write_text(run.release_manifest(plan.version), "".join(
        json.dumps({"id": i, "doi": plan.titles.get(i, ("", ""))[0], "title": plan.titles.get(i, ("", ""))[1]},
                   ensure_ascii=False, sort_keys=True) + "\n" for i in plan.records))
    release = Release(version=plan.version, created=_now(), image=versioned.name, md5=md5, sha256=sha256,
                      size=versioned.stat().st_size, records=plan.records, added=plan.added,
                      superseded=plan.superseded, quarantined=plan.quarantined,
                      newly_quarantined=plan.newly_quarantined, removed=plan.removed,
                      previous=plan.previous.version if plan.previous else None,
                      harvested_since=harvested_since, harvest_started=harvest_started)
    atomic_write_text(run.changelog(plan.version), changelog(release, plan))
    save_release(run, release)  # release.json last: a folder without it is not a release
    write_feed(run, cfg)
    prune_images(run, cfg.releases.keep)
    return release


def _checksums_of(image: Path) -> tuple[str, str]:
    """The checksums pack wrote beside the image (it verified them), read back from its ``.md5``/``.sha256``."""
    try:
        md5 = image.with_name(image.name + ".md5").read_text().split()[0]
        sha256 = image.with_name(image.name + ".sha256").read_text().split()[0]
    except (OSError, IndexError):
        raise UserError(f"{image} has no checksum files: pack it (and verify it) before releasing it") from None
    return md5, sha256


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy on scratch); a copy where links are not allowed. Never half a file."""
    _link_or(source, target, shutil.copyfile)


def _place_in_folder(image: Path, folder: Path) -> None:
    """The release's image in its release folder too, beside its checksum files, which name it by its bare name
    (``md5sum -c`` then works there, as it does in the folder a downloader puts the published files in): a hard
    link, no second copy; a relative symbolic link where hard links are not allowed."""
    _link_or(image, folder / image.name, lambda source, tmp: os.symlink(os.path.relpath(source, folder), tmp))


def _link_or(source: Path, target: Path, otherwise: Callable[[Path, Path], Any]) -> None:
    """``target`` a hard link of ``source``, made under a temporary name and renamed; ``otherwise(source, tmp)``
    where linking fails."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        otherwise(source, tmp)
    os.replace(tmp, target)


def place_release_images(run: RunDir) -> None:
    """Releases made before their folder held their image (their checksums did not check from there) get it,
    while the run directory still has it."""
    for release in list_releases(run):
        image, folder = run.image(release.image), run.release(release.version)
        if image.is_file() and not os.path.lexists(run.release_file(release.version, release.image)):
            _place_in_folder(image, folder)


def changelog(release: Release, plan: ReleasePlan) -> str:
    """``CHANGELOG.md`` of a release: what was added, superseded and newly quarantined, with ids and DOIs."""
    def line(record_id: str) -> str:
        doi, title = plan.titles.get(record_id, ("", ""))
        link = f"[{doi}](https://doi.org/{doi})" if doi else "no DOI"
        return f"- {record_id} {link} {title}".rstrip()

    since = f" (previous release: {release.previous})" if release.previous else " (the first release)"
    parts = [f"# Zenodo-ML release {release.version}", "",
             f"Made {release.created}{since}. Image `{release.image}`, md5 `{release.md5}`.", "",
             "| | records |", "|---|---|", f"| in this release | {len(release.records)} |",
             f"| added | {len(release.added)} |", f"| superseded by a newer version | {len(release.superseded)} |",
             f"| removed (withdrawn from Zenodo, or excluded) | {len(release.removed)} |",
             f"| newly quarantined | {len(release.newly_quarantined)} |",
             f"| quarantined in all | {len(release.quarantined)} |", "",
             f"## Added ({len(release.added)})", ""]
    parts += [line(i) for i in release.added] or ["(none)"]
    parts += ["", f"## Superseded by a newer version ({len(release.superseded)})", ""]
    parts += [f"- {s['id']} by {s['by']}" for s in release.superseded] or ["(none)"]
    parts += ["", f"## Removed ({len(release.removed)})", ""]
    parts += [f"{line(r['id'])}: removed, {r['reason']}" for r in release.removed] or ["(none)"]
    parts += ["", f"## Newly quarantined ({len(release.newly_quarantined)})", ""]
    parts += [line(i) for i in release.newly_quarantined] or ["(none)"]
    return "\n".join(parts) + "\n"


PUBLISHED_HEADING = "## Published"  # the changelog's last section, written again as publications succeed


def published_lines(release: Release) -> list[str]:
    """Where the release's data can be had besides its DOI, one line each: what the changelog's last section
    and the feed entry's text say (``Kaggle: <url>``, ``Hugging Face: <url> (tag <tag>)``)."""
    kaggle, hub = (release.published.get(target) or {} for target in ("kaggle", "huggingface"))
    lines = [f"Kaggle: {kaggle['url']}"] if kaggle.get("ok") and kaggle.get("url") else []
    if hub.get("ok") and hub.get("url"):
        lines.append(f"Hugging Face: {hub['url']} (tag {hub.get('tag') or release.version})")
    return lines


def link_changelog(run: RunDir, release: Release) -> None:
    """The release's ``CHANGELOG.md`` ends with a ``## Published`` section naming where it was published
    (:func:`published_lines`), rewritten as each publication succeeds; before Zenodo's, which uploads it."""
    path = run.changelog(release.version)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("release %s: %s not updated with where it was published: %s", release.version, path, exc)
        return
    body = text.partition(f"\n{PUBLISHED_HEADING}\n")[0].rstrip("\n") + "\n"
    lines = published_lines(release)
    new = body + (f"\n{PUBLISHED_HEADING}\n\n" + "".join(f"- {line}\n" for line in lines) if lines else "")
    if new != text:
        atomic_write_text(path, new)


def summary_line(release: Release) -> str:
    """One line for people: the webhook's text, the feed entry's title, version notes."""
    return (f"Zenodo-ML release {release.version}: {len(release.records)} records (+{len(release.added)} added, "
            f"{len(release.superseded)} superseded, {len(release.newly_quarantined)} newly quarantined"
            f"{f', {len(release.removed)} removed' if release.removed else ''})")


def prune_images(run: RunDir, keep: int) -> list[Path]:
    """Remove released images beyond the ``keep`` newest, from the run directory and from their release folders
    (which stay, with their checksums and changelog); the ones removed."""
    releases = list_releases(run)
    removed = []
    for release in releases[:-keep] if keep > 0 else releases:
        path = run.image(release.image)
        run.release_file(release.version, release.image).unlink(missing_ok=True)
        if path.exists():
            path.unlink()
            removed.append(path)
            log.info("release %s: image %s removed (releases.keep is %d)", release.version, path.name, keep)
    return removed


# --- the feed -------------------------------------------------------------------------------------------


def write_feed(run: RunDir, cfg: Config) -> Path:
    """``releases/feed.xml``: an Atom feed (RFC 4287) with one entry per release, newest first.

    Its ``rel="self"`` link is the file's own ``file:`` URI: the only address of the feed the run knows (a copy
    served elsewhere is another feed). Each entry holds its text in ``<content>`` (so an unpublished release is a
    valid entry too); the release's DOI is its one ``rel="alternate"`` link, Kaggle and the Hugging Face dataset
    ``rel="related"`` ones.
    """
    releases = list(reversed(list_releases(run)))
    path = run.feed
    updated = releases[0].created if releases else _now()
    entries = [_feed_entry(cfg, r) for r in releases]
    text = ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n'
            f"  <title>Zenodo-ML releases ({escape(cfg.run.name)})</title>\n  <id>{_feed_id(cfg)}</id>\n"
            f"  <updated>{updated}</updated>\n  <author><name>zenodo-hpc</name></author>\n"
            f"  {_link('self', path.absolute().as_uri(), 'application/atom+xml')}\n"
            + "".join(entries) + "</feed>\n")
    atomic_write_text(path, text)
    return path


def _feed_id(cfg: Config, *parts: str) -> str:
    """A permanent IRI for the feed (or, with its version, for a release): the run's name, percent-encoded."""
    return ":".join(["urn:zenodo-hpc", *(quote(part, safe="") for part in (cfg.run.name, *parts))])


def _link(rel: str, href: str, kind: str) -> str:
    return f'<link rel="{rel}" type="{kind}" href="{escape(href, {chr(34): "&quot;"})}"/>'


def _feed_entry(cfg: Config, release: Release) -> str:
    doi = (release.published.get("zenodo") or {}).get("doi")
    related = [(release.published.get(target) or {}) for target in ("kaggle", "huggingface")]
    links = ([_link("alternate", f"https://doi.org/{doi}", "text/html")] if doi else []) + [
        _link("related", where["url"], "text/html") for where in related if where.get("ok") and where.get("url")]
    where = [f"DOI: https://doi.org/{doi}"] if doi else ["Not published: the files are in the run directory's "
                                                         f"releases/{release.version}/ folder"]
    where += published_lines(release)
    content = "\n".join([f"{summary_line(release)}.", f"Image {release.image}, {release.size} bytes.",
                         f"md5 {release.md5}", f"sha256 {release.sha256}", *where,
                         f"Changelog: releases/{release.version}/CHANGELOG.md"])
    return (f"  <entry>\n    <title>{escape(summary_line(release))}</title>\n"
            f"    <id>{_feed_id(cfg, release.version)}</id>\n    <updated>{release.created}</updated>\n"
            + "".join(f"    {link}\n" for link in links)
            + f"    <summary>{escape(summary_line(release))}</summary>\n"
            f'    <content type="text">{escape(content)}</content>\n  </entry>\n')


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


__all__ = ["Release", "ReleasePlan", "card_lines", "changelog", "latest_release", "link_changelog", "list_releases",
           "make_release", "next_version", "place_release_images", "plan_release", "prune_images", "published_lines",
           "release_image_name", "summary_line", "write_feed"]

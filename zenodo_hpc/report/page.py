"""The report as one self-contained HTML page: inline CSS, figures as ``data:`` PNGs, no script.

A Content-Security-Policy in the page itself forbids every load but ``data:`` images and the inline
style, so the page cannot reach the network even if something in it tried; it opens from a laptop's
disk with no connection at all.
"""

from __future__ import annotations

import base64
import html
import struct
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..orchestrate.status import efficiency_parts
from ..zenodo.client import read_token, run_budget
from .collect import Facts, RoundFacts, overall_rate_per_min

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
       max-width: 960px; margin: 0 auto; padding: 1em 1.5em 3em; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.1em; } h2 { border-bottom: 2px solid #ddd; margin-top: 2em; }
h3 { margin: 1.4em 0 0.3em; font-size: 1.05em; }
nav a { margin-right: 1em; } code { font: 0.92em ui-monospace, "DejaVu Sans Mono", monospace; }
.meta, figcaption, .note { color: #555; font-size: 0.9em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 1.6em; } figure img.plot { max-width: 100%; height: auto; display: block; }
.tiles { display: flex; gap: 0.8em; flex-wrap: wrap; margin: 0.8em 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: 0.4em 0.9em; min-width: 7em; }
.tile b { display: block; font-size: 1.4em; }
.done b { color: #2ca02c; } .failed b { color: #ff7f0e; } .quarantined b { color: #d62728; }
.pending b { color: #777; }
.gallery { display: grid; grid-template-columns: 4em repeat(4, 164px); gap: 6px 10px; align-items: center; }
.gallery img { width: 160px; height: 160px; image-rendering: pixelated; border: 2px solid #ccc; }
.gallery .lang { font-weight: bold; text-align: right; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR."""
    return struct.unpack(">II", data[16:24])


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def figure_html(name: str, title: str, caption: str, png: bytes | None, empty: str) -> str:
    if png is None:
        return f'<h3>{esc(title)}</h3>\n<p class="note" data-missing="{esc(name)}">{esc(empty)}</p>'
    width, height = png_size(png)
    return (f'<figure id="fig-{esc(name)}">\n<img class="plot" data-figure="{esc(name)}" alt="{esc(title)}" '
            f'width="{width}" height="{height}" src="{data_uri(png)}">\n'
            f"<figcaption><b>{esc(title)}.</b> {esc(caption)}</figcaption>\n</figure>")


def tiles(facts: Facts) -> str:
    s = facts.status
    items = [("records", s.records, ""), ("done", s.done, "done"), ("failed", s.failed, "failed"),
             ("quarantined", s.quarantined, "quarantined"), ("pending", s.pending, "pending")]
    return '<div class="tiles">' + "".join(
        f'<div class="tile {cls}"><b>{n:,}</b>{esc(label)}</div>' for label, n, cls in items) + "</div>"


def reasons_text(facts: Facts) -> str:
    """Failures and quarantines by reason, and the records ``dataset.exclude`` leaves out, in words."""
    s = facts.status
    parts = []
    for label, reasons in (("Failed", s.failed_reasons), ("Quarantined", s.quarantined_reasons)):
        if reasons:
            listed = ", ".join(f"<code>{esc(k)}</code> {v:,}" for k, v in sorted(reasons.items(),
                                                                              key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{label} by reason: {listed}.")
    if s.excluded:
        parts.append(f"Left out of every release by <code>dataset.exclude</code>: {s.excluded:,}.")
    return f"<p>{' '.join(parts)}</p>" if parts else ""


def left_text(facts: Facts) -> str:
    """What is left and how long: the status line, in words."""
    s = facts.status
    if not s.records:
        return "Nothing harvested yet."
    if s.complete:
        return "Complete: every record is done or quarantined."
    left = s.pending + s.failed
    what = f"{left:,} records left ({s.pending:,} pending, {s.failed:,} failed that a resume tries again)"
    if s.rate_per_min and s.eta_seconds is not None:
        return f"{what}: at {s.rate_per_min:.1f} records/min (the last 15 minutes), about {duration(s.eta_seconds)}."
    average = overall_rate_per_min(facts)
    if average:
        return (f"{what}. No record finished in the last 15 minutes; at the run's average of {average:.1f} "
                f"records/min, about {duration(left / average * 60)} of work once tasks run again.")
    return f"{what}; how long is unknown: too few records are done to measure a rate."


def rounds_table(facts: Facts) -> str:
    if not facts.rounds:
        return ""
    counts = {g.generation: g for g in facts.status.generations}
    rows = []
    for r in facts.rounds:
        rows.append(_round_row(r, counts.get(r.generation)))
    head = ("<tr><th>plan</th><th>executor</th><th>submitted</th><th>records</th><th>shards (state now)</th>"
            "<th>escalated</th><th>planned again because</th></tr>")
    return "<table>\n" + head + "\n" + "\n".join(rows) + "\n</table>"


def _round_row(r: RoundFacts, counts: Any) -> str:
    if r.error:
        return f"<tr><td>{r.generation}</td><td>{esc(r.kind)}</td><td colspan=5>{esc(r.error)}</td></tr>"
    shards = f"{r.shards:,}"
    if counts is not None and not counts.error:
        parts = [f"{counts.done} done", f"{counts.running} running", f"{counts.pending} pending",
                 f"{counts.failed} failed"]
        if counts.failed_states:
            parts[-1] += " (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.failed_states.items())) + ")"
        if counts.unknown:
            parts.append(f"{counts.unknown} ended (no accounting to say how)")
        shards += ": " + ", ".join(parts)
    escalated = ", ".join(f"{n} × {what}" for what, n in sorted(r.escalations.items())) or "—"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"<tr><td>{r.generation}</td><td>{esc(r.kind)}</td><td>{esc(r.submitted_at or '—')}</td>"
            f'<td class="n">{r.records:,}</td><td>{esc(shards)}</td><td>{esc(escalated)}</td>'
            f"<td>{esc(reasons or '—')}</td></tr>")


def efficiency_lines(facts: Facts) -> list[str]:
    lines = []
    for g in facts.status.generations:
        for e in g.efficiency:
            parts = efficiency_parts(e)
            if parts:
                lines.append(f"plan {g.generation}, job {e['job_id']} ({e['tasks']} tasks ended): " + ", ".join(parts))
    return lines


def escalated_tasks(facts: Facts) -> str:
    tasks = [t for t in facts.tasks if t.escalated]
    if not tasks:
        return ""
    rows = []
    for t in tasks[:50]:
        used = t.used_s
        asked = ", ".join(p for p in (f"{t.mem_asked_gb:g} GB" if t.mem_asked_gb else "",
                                      f"{t.time_asked_min:g} min" if t.time_asked_min else "") if p)
        got = ", ".join(p for p in (f"{t.max_rss_gb:.2f} GB" if t.max_rss_gb is not None else "",
                                    duration(used) if used is not None else "") if p)
        rows.append(f"<tr><td>plan {t.generation}, shard {t.shard}</td><td>{esc(t.escalated)}</td>"
                    f"<td>{esc(asked or '—')}</td><td>{esc(got or '—')}</td><td>{esc(t.state or '—')}</td>"
                    f'<td class="n">{t.done}/{t.records}</td></tr>')
    more = f"<p class='meta'>and {len(tasks) - 50} more escalated tasks.</p>" if len(tasks) > 50 else ""
    return ("<h3>Escalated tasks</h3>\n<table>\n<tr><th>task</th><th>escalated</th><th>asked</th><th>used</th>"
            "<th>state</th><th>records done</th></tr>\n" + "\n".join(rows) + "\n</table>" + more)


def budget_text(facts: Facts) -> str:
    cfg, h = facts.cfg, facts.harvest
    total = sum(n for _, n in facts.downloads)
    budget = run_budget(cfg.zenodo)
    unset = [key for key in ("rate_limit_per_min", "rate_limit_per_hour") if getattr(cfg.zenodo, key) is None]
    published = (f" ({' and '.join(f'<code>{k}</code>' for k in unset)} unset: Zenodo's published limits for "
                 f"{'a token' if read_token(cfg.zenodo.token_env) else 'a guest'}, as this process sees it)"
                 if unset else "")
    parts = [f"Budget: {budget.per_minute:g} requests a minute and {budget.per_hour:,.0f} an hour for the whole run"
             f"{published}, shared by the workers running at once; <code>search_rate_limit_per_min</code> = "
             f"{cfg.zenodo.search_rate_limit_per_min:g} for the harvest's searches."]
    parts.append(f"Downloads recorded by the done records: {total:,}. Retries and the requests of failed records "
                 "are not recorded in the run directory, so the real use is somewhat higher.")
    if cfg.fetch.offline:
        parts.append("This run fetches first (<code>fetch.offline</code>): downloads were made by "
                     "<code>zenodo-hpc fetch</code> before the tasks ran, so their times here are when the records "
                     "were finished, not when they were downloaded.")
    if h.get("jobs"):
        requests = (f"{h['requests']:,} search requests" if h.get("requests") is not None
                    else "its number of search requests is not recorded in the run directory")
        parts.append(f"Harvest: {h['added']:,} records added, {h['excluded']:,} excluded, {h['duplicates']:,} "
                     f"duplicates skipped, {h['skipped']:,} hits that are not records; "
                     f"{'complete' if h['done'] else 'not finished'}; {requests}.")
    return "<p>" + " ".join(parts) + "</p>"


def dataset_text(facts: Facts) -> str:
    if not facts.done_read:
        return "<p>No record is done yet: the dataset figures appear as records finish.</p>"
    return (f"<p>{facts.done_read:,} records in the data, {facts.total_files:,} rasterized files giving "
            f"{facts.total_images:,} code images of 80x80, {len(facts.images_by_ext):,} file extensions.</p>")


def gallery_html(samples: list[tuple[str, list[tuple[str, str, bytes]]]], png: str) -> str:
    if not samples:
        return ""
    cells = []
    for extension, items in samples:
        cells.append(f'<div class="lang">.{esc(extension)}</div>')
        for record_id, path, data in items:
            cells.append(f'<img class="code-image" data-figure="gallery" width="160" height="160" '
                         f'alt="{esc(path)}" title="record {esc(record_id)}: {esc(path)}, first image" '
                         f'src="{data_uri(data)}">')
        cells += ["<div></div>"] * (4 - len(items))
    return ('<figure id="fig-gallery">\n<div class="gallery">\n' + "\n".join(cells) + "\n</div>\n"
            f"<figcaption><b>Sample code images.</b> The first image of a record's largest file, a few records per "
            "language, "
            f"the very PNGs <code>zenodo-hpc organize --png {esc(png)}</code> writes (80x80, shown at twice their "
            "size); hover for the record and file.</figcaption>\n</figure>")


def render_page(facts: Facts, figures: dict[str, bytes | None], specs: Any,
                samples: list[tuple[str, list[tuple[str, str, bytes]]]], png: str) -> str:
    run = facts.run
    shown = {spec.name: figure_html(spec.name, spec.title, spec.caption, figures.get(spec.name), spec.empty)
             for spec in specs}
    notes = "".join(f'<p class="note">{esc(n)}</p>\n' for n in facts.notes)
    accounting = ("" if facts.accounting == "sacct" else
                  f'<p class="note" id="accounting">Per-task memory and time: {esc(facts.accounting)}.</p>')
    efficiency = "".join(f"<li>{esc(line)}</li>" for line in efficiency_lines(facts))
    run_parts = [tiles(facts), f"<p><b>{esc(left_text(facts))}</b></p>", notes, shown["records"], reasons_text(facts),
                 "<h3>Rounds</h3>", rounds_table(facts) or "<p>Nothing planned yet.</p>", shown["rounds"],
                 accounting, shown["tasks"], f"<ul>{efficiency}</ul>" if efficiency else "", escalated_tasks(facts),
                 shown["throughput"], shown["budget"], budget_text(facts)]
    dataset_parts = [dataset_text(facts), *(shown[s.name] for s in specs if s.section == "dataset"),
                     gallery_html(samples, png)]
    releases = ""
    if len(facts.releases) >= 2:
        rows = "".join(f'<tr><td>{esc(v)}</td><td class="n">{n:,}</td><td class="n">{a:,}</td>'
                       f'<td class="n">{r:,}</td></tr>' for v, n, a, r in facts.releases)
        releases = ('<section id="releases">\n<h2>Releases</h2>\n' + shown["releases"]
                    + f"\n<table><tr><th>release</th><th>records</th><th>added</th><th>removed</th></tr>{rows}"
                    "</table>\n</section>")
    nav = '<nav><a href="#run">The run</a><a href="#dataset">The dataset</a>' + (
        '<a href="#releases">Releases</a>' if releases else "") + "</nav>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="zenodo-hpc {esc(__version__)}">
<link rel="icon" href="data:,">
<title>zenodo-hpc report: {esc(facts.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>Zenodo-ML report: <code>{esc(facts.name)}</code></h1>
<p class="meta">{esc(run.root)} · report made {esc(when(facts.generated_at))} by zenodo-hpc {esc(__version__)} from
the run directory{'' if facts.accounting != 'sacct' else ' and SLURM accounting'}</p>
{nav}
</header>
<section id="run">
<h2>The run</h2>
{chr(10).join(p for p in run_parts if p)}
</section>
<section id="dataset">
<h2>The dataset</h2>
{chr(10).join(p for p in dataset_parts if p)}
</section>
{releases}
<footer><p class="meta">Made with <code>zenodo-hpc report</code>. This page is one file with everything in it;
it loads nothing from anywhere.</p></footer>
</body>
</html>
"""

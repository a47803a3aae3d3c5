"""The report's figures, drawn with matplotlib (Agg, no pyplot: no global state, no display needed).

Each figure is a function of the :class:`~zenodo_hpc.report.collect.Facts` that returns a matplotlib
``Figure``, or ``None`` when there is nothing to draw yet (the page says so instead). PNG bytes are
written without a time stamp or software version, so the same facts give the same file (the figures
that go into the image must not make two packs of one run differ).
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..dataset.png import PALETTE_TABLE, clip_code_points
from ..zenodo.client import run_budget
from .collect import Facts

STATUS_COLOURS = {"done": "#2ca02c", "failed": "#ff7f0e", "quarantined": "#d62728", "pending": "#c7c7c7"}
STATUSES = tuple(STATUS_COLOURS)
BLUE, GREY, RED, ORANGE = "#1f77b4", "#7f7f7f", "#d62728", "#ff7f0e"
WIDTH = 9.0  # inches, at DPI: 900 pixels
DPI = 100
TOP = 20  # bars shown at most in a ranking
LOG_BELOW = 0.1  # the budget chart's y-axis is logarithmic when the busiest minute used less than this share
LOG_FLOOR = 0.5  # ... and starts at half a download a minute, so that a minute with one shows
MPL_HINT = "matplotlib is not installed: python -m pip install 'matplotlib>=3.6'"  # the report extra, from PyPI


def require_matplotlib() -> Any:
    """matplotlib with the Agg backend, or a one-line UserError saying how to install it."""
    from ..core.errors import UserError

    try:
        import matplotlib
    except ImportError:
        raise UserError(MPL_HINT) from None
    matplotlib.use("Agg", force=False)
    return matplotlib


def new_figure(height: float, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, **kwargs)
    return fig, axes


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes, the same for the same figure (no time stamp, no version)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buffer.getvalue()


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its file name (``<name>.png``), title, caption and when it is missing."""

    name: str
    section: str  # "run", "dataset" or "releases"
    title: str
    caption: str
    make: Callable[[Facts], Any]
    empty: str  # what the page says when make returns None
    in_image: bool  # written beside the dataset card (deterministic, about the data)


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def plain(text: Any, most: int = 50) -> str:
    """Text from the data (a title, a license, an extension) as matplotlib must show it: ``$`` escaped (it would
    start mathtext, and a title like ``$5 or $10`` would not draw), control characters dropped, cut at ``most``."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    text = text if len(text) <= most else text[:most - 1] + "…"
    return text.replace("$", "\\$")


def _barh(ax: Any, labels: list[str], values: Sequence[float], colours: Any = BLUE) -> None:
    """Horizontal bars, largest on top, each with its value at its end."""
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, [plain(label) for label in labels])
    top = max(values) if values else 1
    for yi, v in zip(y, values, strict=True):
        ax.text(v + top * 0.01, yi, _fmt(v), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 if top else 1)
    ax.xaxis.set_major_formatter(_thousands())
    ax.spines[["top", "right"]].set_visible(False)


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}" if value == int(value) else f"{value:,.1f}")


def _ranked(counter: Counter[str], top: int = TOP) -> tuple[list[str], list[int]]:
    """The ``top`` largest items (ties by name), then one bar for the rest."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    shown, rest = items[:top], items[top:]
    labels, values = [k for k, _ in shown], [v for _, v in shown]
    if rest:
        labels.append(f"{len(rest)} others")
        values.append(sum(v for _, v in rest))
    return labels, values


# --- the run ----------------------------------------------------------------------------------------------


def fig_records(facts: Facts) -> Any:
    s = facts.status
    if not s.records:
        return None
    rows: list[tuple[str, int, str]] = [("done", s.done, "done"), ("pending", s.pending, "pending")]
    for group, reasons in (("failed", s.failed_reasons), ("quarantined", s.quarantined_reasons)):
        rows += [(f"{group}: {r}", n, group) for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    fig, ax = new_figure(1.0 + 0.32 * len(rows))
    _barh(ax, [r[0] for r in rows], [r[1] for r in rows], [STATUS_COLOURS[r[2]] for r in rows])
    ax.set_xlabel("records")
    ax.set_title(f"{_fmt(s.records)} records harvested: {_fmt(s.done)} done, {_fmt(s.failed)} failed, "
                 f"{_fmt(s.quarantined)} quarantined, {_fmt(s.pending)} pending", fontsize=10)
    return fig


def fig_rounds(facts: Facts) -> Any:
    rounds = [r for r in facts.rounds if not r.error]
    if not rounds:
        return None
    fig, ax = new_figure(3.2)
    x = np.arange(len(rounds))
    bottom = np.zeros(len(rounds))
    for status in STATUSES:
        values = np.array([r.outcome.get(status, 0) for r in rounds], dtype=float)
        ax.bar(x, values, bottom=bottom, color=STATUS_COLOURS[status], label=f"{status} now", width=0.6)
        bottom += values
    top = max(bottom) if len(bottom) else 1
    for xi, r in zip(x, rounds, strict=True):
        escalated = sum(r.escalations.values())
        text = f"{r.shards} shards" + (f"\n{escalated} escalated" if escalated else "")
        ax.text(xi, r.records + top * 0.02, text, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"plan {r.generation}\n{plain(r.kind)}" for r in rounds])
    ax.set_xlim(-0.5 - 0.5 * max(0, 3 - len(rounds)), len(rounds) - 0.5 + 0.5 * max(0, 3 - len(rounds)))
    ax.set_ylim(0, top * 1.3 or 1)
    ax.set_ylabel("records planned")
    ax.legend(fontsize=8, loc="upper right", ncols=4)
    ax.set_title("Rounds: the records each plan held, by what became of them", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def fig_tasks(facts: Facts) -> Any:
    tasks = [t for t in facts.tasks if t.used_s is not None or t.max_rss_gb is not None]
    if not tasks:
        return None
    with_memory = any(t.max_rss_gb is not None for t in tasks)
    fig, axes = new_figure(3.4, 2 if with_memory else 1, squeeze=False)
    x = np.arange(len(tasks))
    escalated = np.array([bool(t.escalated) for t in tasks])
    longest = max([t.used_s or 0 for t in tasks] + [60 * (t.time_asked_min or 0) for t in tasks])
    unit, scale = ("seconds", 1) if longest < 180 else ("minutes", 60) if longest < 5 * 3600 else ("hours", 3600)
    panels = [("time", [t.used_s / scale if t.used_s is not None else np.nan for t in tasks],
               [t.time_asked_min * 60 / scale if t.time_asked_min else np.nan for t in tasks], unit)]
    if with_memory:
        panels.append(("memory", [t.max_rss_gb if t.max_rss_gb is not None else np.nan for t in tasks],
                       [t.mem_asked_gb if t.mem_asked_gb else np.nan for t in tasks], "GB"))
    for ax, (what, used, asked, unit) in zip(axes[0], panels, strict=True):
        used_a, asked_a = np.array(used, dtype=float), np.array(asked, dtype=float)
        if not np.isnan(asked_a).all():
            ax.scatter(x, asked_a, marker="_", s=120, color=GREY, label="asked", zorder=2)
        ax.scatter(x[~escalated], used_a[~escalated], s=12, color=BLUE, label="used", zorder=3)
        if escalated.any():
            ax.scatter(x[escalated], used_a[escalated], s=18, color=RED, marker="D", label="used (escalated)",
                       zorder=3)
        ax.set_ylabel(f"{what} ({unit})")
        ax.set_xlabel("task (plan by plan, shard by shard)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(f"{what} used per task" + (" against asked" if not np.isnan(asked_a).all() else ""),
                     fontsize=10)
    return fig


def _time_axis(ax: Any) -> None:
    """Dates on the x-axis, labelled: the times are UTC (the markers' epoch seconds)."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


_BIN_SIZES = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def _bins(times: list[float], most: int = 60) -> tuple[np.ndarray, int]:
    """Bin edges (epoch seconds) of a round width giving at most ``most`` bins."""
    low, high = min(times), max(times)
    width = next((w for w in _BIN_SIZES if (high - low) / w <= most), _BIN_SIZES[-1])
    start = math.floor(low / width) * width
    count = max(1, math.ceil((high - start) / width + 1e-9))
    return start + width * np.arange(count + 1), width


def _dates(epochs: Any) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), tz=timezone.utc) for t in epochs]


def _per(width: int) -> str:
    return {1: "second", 60: "minute", 3600: "hour", 86400: "day", 7 * 86400: "week"}.get(
        width, f"{width // 60} min" if width % 60 == 0 and width < 3600 else f"{width // 3600} h"
        if width % 3600 == 0 else f"{width} s")


def fig_throughput(facts: Facts) -> Any:
    if not facts.finished:
        return None
    edges, width = _bins(facts.finished)
    counts, _ = np.histogram(facts.finished, bins=edges)
    fig, ax = new_figure(3.2)
    ax.bar(_dates(edges[:-1]), counts, width=width / 86400, align="edge", color=BLUE, alpha=0.8,
           label=f"records done per {_per(width)}")
    ax.set_ylabel(f"records per {_per(width)}")
    cumulative = ax.twinx()
    times = sorted(facts.finished)
    cumulative.step(_dates(times), np.arange(1, len(times) + 1), where="post", color=STATUS_COLOURS["done"],
                    label="done so far")
    s = facts.status
    if not s.complete and s.rate_per_min:  # records finish now: the rest at this rate, from the last one done
        left = s.pending + s.failed
        cumulative.plot(_dates([times[-1], times[-1] + left / s.rate_per_min * 60]), [len(times), len(times) + left],
                        linestyle="--", color=GREY, label="the rest at the current rate")
    cumulative.set_ylabel("records done")
    cumulative.set_ylim(bottom=0)
    _time_axis(ax)
    lines = ax.get_legend_handles_labels()
    more = cumulative.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("Throughput: records done over time (UTC)", fontsize=10)
    return fig


def fig_budget(facts: Facts) -> Any:
    if not facts.downloads:
        return None
    times = [t for t, _ in facts.downloads]
    weights = [n for _, n in facts.downloads]
    low = math.floor(min(times) / 60) * 60
    count = max(1, math.ceil((max(times) - low) / 60 + 1e-9))
    edges = low + 60 * np.arange(count + 1)
    per_minute, _ = np.histogram(times, bins=edges, weights=weights)
    limit = facts.cfg.zenodo.rate_limit_per_min
    label = f"the budget: zenodo.rate_limit_per_min = {limit:g}" if limit is not None else ""
    if limit is None:  # unset: the published limit (guest or token) that this process's workers would use
        limit = run_budget(facts.cfg.zenodo).per_minute
        label = f"the budget: {limit:g} a minute (Zenodo's published limit)"
    peak = float(per_minute.max())
    top = max(limit, peak)
    log = peak < LOG_BELOW * limit  # on a linear axis the use would be a sliver under the limit's line
    floor = LOG_FLOOR if log else 0.0
    fig, ax = new_figure(3.0)
    if log:
        ax.set_yscale("log")
    ax.fill_between(_dates(edges), np.maximum(np.append(per_minute, per_minute[-1]), floor), floor, step="post",
                    color=BLUE, linewidth=0)
    ax.axhline(limit, color=RED, linestyle="--")
    ax.annotate(label, (1, limit), xycoords=("axes fraction", "data"),
                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", color=RED, fontsize=8)
    ax.set_xlim(_dates([edges[0] - 30, edges[-1] + 30]))
    ax.set_ylim(floor, top * (4 if log else 1.2))
    ax.set_ylabel("downloads per minute" + (" (log scale)" if log else ""))
    if log:
        ax.yaxis.set_major_formatter(_thousands())
    _time_axis(ax)
    ax.set_title(f"API budget: at most {peak:,.0f} downloads in a minute, {100 * peak / limit:.0f}% of the limit",
                 fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# --- the dataset ------------------------------------------------------------------------------------------


def fig_extensions(facts: Facts) -> Any:
    if not facts.images_by_ext:
        return None
    ranked = sorted(facts.images_by_ext, key=lambda e: (-facts.images_by_ext[e], -facts.files_by_ext[e], e))[:TOP]
    fig, (left, right) = new_figure(1.0 + 0.27 * len(ranked), 2, sharey=True)
    _barh(left, ranked, [facts.files_by_ext[e] for e in ranked])
    _barh(right, ranked, [facts.images_by_ext[e] for e in ranked], colours=ORANGE)
    left.set_xlabel("files")
    right.set_xlabel("code images (80x80)")
    left.set_title(f"files per extension (top {len(ranked)} of {len(facts.images_by_ext)})", fontsize=10)
    right.set_title("code images per extension", fontsize=10)
    return fig


def _log_bins(largest: int) -> np.ndarray:
    return np.unique(np.round(np.logspace(0, math.log10(max(largest, 1) + 1), 30)).astype(int)) - 0.5


def fig_segments(facts: Facts) -> Any:
    per_file = {k: v for k, v in facts.images_per_file.items() if k > 0}
    if not per_file or not facts.images_per_record:
        return None
    fig, (left, right) = new_figure(3.0, 2)
    values, weights = list(per_file), list(per_file.values())
    left.hist(values, bins=_log_bins(max(values)), weights=weights, color=BLUE)
    empty = facts.images_per_file.get(0, 0)
    left.set_title(f"code images per file (median {_weighted_median(values, weights):g})"
                   + (f"; {empty:,} empty files" if empty else ""), fontsize=10)
    left.set_xlabel("images")
    left.set_ylabel("files")
    records = [n for n in facts.images_per_record if n > 0]
    if records:
        right.hist(records, bins=_log_bins(max(records)), color=ORANGE)
    right.set_title(f"code images per record (median {float(np.median(records)) if records else 0:g})", fontsize=10)
    right.set_xlabel("images")
    right.set_ylabel("records")
    left.set_yscale("log")  # a long tail of large files; records are fewer: a plain count reads better
    for ax in (left, right):
        ax.set_xscale("log")
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def _weighted_median(values: list[int], weights: list[int]) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(np.array(weights)[order])
    return float(np.array(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def fig_skipped(facts: Facts) -> Any:
    if not facts.skipped:
        return None
    labels, values = _ranked(facts.skipped)
    fig, ax = new_figure(1.0 + 0.3 * len(labels))
    _barh(ax, labels, values, colours=GREY)
    ax.set_xlabel("files")
    ax.set_title(f"Files not rasterized, by reason ({_fmt(sum(facts.skipped.values()))} in all)", fontsize=10)
    return fig


def fig_licenses(facts: Facts) -> Any:
    if not facts.licenses:
        return None
    labels, values = _ranked(facts.licenses, 15)
    fig, ax = new_figure(1.0 + 0.3 * len(labels))
    _barh(ax, labels, values)
    ax.set_xlabel("records")
    ax.set_title(f"Licenses of the {_fmt(sum(facts.licenses.values()))} records in the dataset", fontsize=10)
    return fig


def fig_years(facts: Facts) -> Any:
    if not facts.years:
        return None
    years = sorted(facts.years)
    fig, ax = new_figure(3.0)
    bottom = np.zeros(len(years))
    for status in STATUSES:
        values = np.array([facts.years[y].get(status, 0) for y in years], dtype=float)
        if values.any():
            ax.bar(years, values, bottom=bottom, color=STATUS_COLOURS[status], label=status)
            bottom += values
    ax.set_ylabel("records")
    ax.set_title("Records by the year they were created on Zenodo", fontsize=10)
    ax.legend(fontsize=8)
    if len(years) > 12:
        ax.tick_params(axis="x", labelrotation=45)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def fig_largest(facts: Facts) -> Any:
    if not facts.largest:
        return None
    labels = [f"{rid}  {title}" for _, rid, title in facts.largest]
    fig, ax = new_figure(1.0 + 0.3 * len(labels))
    _barh(ax, labels, [n for n, _, _ in facts.largest], colours=ORANGE)
    ax.set_xlabel("code images")
    ax.set_title(f"The {len(labels)} largest records, by code images", fontsize=10)
    return fig


def fig_gallery(facts: Facts, samples: list[tuple[str, list[tuple[str, str, np.ndarray]]]] | None = None,
                png: str = "grey") -> Any:
    """Sample code images per language, the pixels the export writes (grey, or palette colours)."""
    if not samples:
        return None
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    cols = max(len(items) for _, items in samples)
    fig = Figure(figsize=(min(WIDTH, 1.6 * cols + 1.0), 1.6 * len(samples) + 0.5), dpi=DPI, layout="constrained")
    grid = fig.subplots(len(samples), cols, squeeze=False)
    cmap: ListedColormap | str
    if png == "palette":
        table = np.frombuffer(PALETTE_TABLE, dtype=np.uint8).reshape(256, 3) / 255
        cmap, kwargs = ListedColormap(table), {"vmin": -0.5, "vmax": 255.5}
    else:
        cmap, kwargs = "gray", {"vmin": 0, "vmax": 255}
    for row, (extension, items) in enumerate(samples):
        for col in range(cols):
            ax = grid[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(items):
                ax.axis("off")
                continue
            record_id, path, pixels = items[col]
            ax.imshow(clip_code_points(pixels), cmap=cmap, interpolation="nearest", **kwargs)
            ax.set_title(plain(record_id), fontsize=7)
            if col == 0:
                ax.set_ylabel(plain(f".{extension}", 12), fontsize=10, rotation=0, ha="right", va="center")
    fig.suptitle(f"Sample code images per language ({png} PNGs, as the export writes them)", fontsize=10)
    return fig


# --- releases ---------------------------------------------------------------------------------------------


def fig_releases(facts: Facts) -> Any:
    if len(facts.releases) < 2:
        return None
    names = [r[0] for r in facts.releases]
    fig, ax = new_figure(3.0)
    x = np.arange(len(names))
    ax.bar(x, [r[2] for r in facts.releases], color=STATUS_COLOURS["done"], label="records added")
    removed = [r[3] for r in facts.releases]
    if any(removed):
        ax.bar(x, [-n for n in removed], color=RED, label="records no longer in it")
    ax.set_xticks(x, [plain(name, 20) for name in names])
    ax.set_ylabel("records added")
    total = ax.twinx()
    total.plot(x, [r[1] for r in facts.releases], color=BLUE, marker="o", label="records in the release")
    total.set_ylabel("records in the release")
    total.set_ylim(bottom=0)
    lines, more = ax.get_legend_handles_labels(), total.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("Releases: records added per release", fontsize=10)
    return fig


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("records", "run", "Records", "Every harvested record by its status now; failures and quarantines by "
               "reason (docs/operations.md lists them).", fig_records, "No record has been harvested yet.", True),
    FigureSpec("rounds", "run", "Rounds", "Each plan (round) with the records it held, coloured by what became of "
               "them; escalated shards were given more memory or time after their task ran out of it.", fig_rounds,
               "Nothing has been planned yet.", False),
    FigureSpec("tasks", "run", "Time and memory per task", "Each array task's time (and, from SLURM accounting, "
               "memory) used against what it asked for, like seff; escalated tasks in red.", fig_tasks,
               "No task has started a record yet.", False),
    FigureSpec("throughput", "run", "Throughput", "Records done per interval and in all, from the done markers' "
               "times; dashed: the rest at the current rate.", fig_throughput, "No record is done yet.", False),
    FigureSpec("budget", "run", "API budget", "Downloads per minute, from what each done record fetched, against "
               "the run's request budget; on a log scale when the run used less than a tenth of it.", fig_budget,
               "No download is recorded yet.", False),
    FigureSpec("extensions", "dataset", "Files and code images per extension", "The first analysis of the 2018 "
               "Zenodo-ML page: rasterized files and their 80x80 code images, by file extension.", fig_extensions,
               "No record is done yet, so there is no data to count.", True),
    FigureSpec("segments", "dataset", "Code images per file and per record", "How many 80-line images each file "
               "and each record gave (images on a log scale, and the number of files too).", fig_segments,
               "No code image yet.", True),
    FigureSpec("skipped", "dataset", "Files skipped", "Files of the done records that were not rasterized, by "
               "reason; 'not downloaded' ones were left on Zenodo.", fig_skipped, "No file was skipped.", True),
    FigureSpec("licenses", "dataset", "Licenses", "The license each record's authors gave it on Zenodo.",
               fig_licenses, "No record is done yet.", True),
    FigureSpec("years", "dataset", "Records by year", "Harvested records by the year they were created, coloured "
               "by their status.", fig_years, "No record has been harvested yet.", True),
    FigureSpec("largest", "dataset", "The largest records", "The records with the most code images.", fig_largest,
               "No record is done yet.", True),
    FigureSpec("releases", "releases", "Records added per release", "Records in each release and how many are new "
               "since the one before.", fig_releases, "", True),
)
GALLERY = FigureSpec("gallery", "dataset", "Sample code images", "A few code images per language, rendered as "
                     "`zenodo-hpc organize` renders them.", fig_gallery, "No code image yet.", True)

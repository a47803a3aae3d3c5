"""``zenodo-hpc report RUN_DIR``: one self-contained HTML page of plots about a run and its dataset.

From the run directory alone (no driver, no cluster; SLURM accounting is asked when it is here): the run
(records by status and reason, rounds and what each planned again, time and memory per task against
what was asked, throughput, the API budget, what is left), the dataset (files and code images per
extension, images per file and per record, files skipped by reason, licenses, records by year, the
largest records, sample code images per language as the export renders them) and, when a run has two
releases or more, records added per release. Figures are drawn by matplotlib (the ``report`` extra) and
embedded as PNGs; the page loads nothing from anywhere.

:func:`write_report_figures` writes the figures about the data as PNG files beside the image's dataset
card (``README.md``), the same bytes for the same run, and :func:`card_markdown` links them from it.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.state import REPORT_HTML, RunDir, atomic_write_bytes, atomic_write_text
from .figures import FIGURES, GALLERY, MPL_HINT, FigureSpec, png_bytes, require_matplotlib

log = logging.getLogger(__name__)

DEFAULT_NAME = REPORT_HTML
LANGUAGES = 8  # languages in the gallery, the ones with the most code images
PNG_MODES = ("grey", "palette")

__all__ = ["DEFAULT_NAME", "MPL_HINT", "ReportResult", "build_report", "card_markdown", "format_summary",
           "write_report_figures"]


@dataclass
class ReportResult:
    out: Path
    figures: int  # figures drawn (the rest had nothing to show yet)
    missing: list[str]  # figures with nothing to show yet
    gallery: int  # sample code images
    size: int  # bytes of the page
    records: int
    done: int
    accounting: bool  # SLURM accounting answered
    seconds: float


def build_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 png: str = "grey", accounting: bool = True) -> ReportResult:
    """Write the report of ``run_dir`` to ``out`` (default ``<run_dir>/report.html``)."""
    from ..core.state import load_run
    from .collect import collect
    from .page import render_page

    started = time.monotonic()
    if png not in PNG_MODES:
        raise UserError(f"unknown PNG mode {png!r}: use grey or palette")
    require_matplotlib()
    run, cfg = load_run(run_dir)
    target = Path(out) if out is not None else run.report
    if target.is_dir():
        raise UserError(f"{target} is a folder: give --out a file name, e.g. {target / DEFAULT_NAME}")
    facts = collect(run, cfg, accounting=accounting)
    figures = draw(facts, FIGURES)
    samples = load_samples(facts)
    encoded = [(ext, [(rid, path, encode_png(pixels, png)) for rid, path, pixels in items]) for ext, items in samples]
    page = render_page(facts, figures, FIGURES, encoded, png)
    try:
        atomic_write_text(target, page)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    shown = [s for s in FIGURES if s.section != "releases" or len(facts.releases) >= 2]
    return ReportResult(target, sum(figures[s.name] is not None for s in shown),
                        [s.name for s in shown if figures[s.name] is None], sum(len(i) for _, i in samples),
                        len(page.encode()), facts.status.records, facts.status.done, facts.accounting == "sacct",
                        time.monotonic() - started)


def format_summary(result: ReportResult) -> str:
    """The one line ``report`` prints."""
    missing = (f", {len(result.missing)} with nothing to show yet ({', '.join(result.missing)})"
               if result.missing else "")
    return (f"report: {result.out} ({result.size / 1e6:.1f} MB): {result.figures} figures{missing}, "
            f"{result.gallery} sample code images; {result.done} of {result.records} records done; "
            f"{'with' if result.accounting else 'without'} SLURM accounting; in {result.seconds:.1f} s")


def draw(facts: Any, specs: tuple[FigureSpec, ...]) -> dict[str, bytes | None]:
    """Each figure's PNG bytes, or None when it has nothing to show."""
    out: dict[str, bytes | None] = {}
    with warnings.catch_warnings():  # a title in a script the font lacks (CJK) shows boxes, not a warning per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        for spec in specs:
            fig = spec.make(facts)
            out[spec.name] = png_bytes(fig) if fig is not None else None
    return out


def load_samples(facts: Any, languages: int = LANGUAGES) -> list[tuple[str, list[tuple[str, str, Any]]]]:
    """``[(extension, [(record id, file path, (80, 80) code points)])]`` for the languages with the most images:
    the first image of its largest file per record, from the first records (by id) that have such a file."""
    from ..dataset.load import load_images

    ranked = sorted(facts.samples, key=lambda e: (-facts.images_by_ext[e], e))[:languages]
    loaded: dict[str, dict[str, Any]] = {}
    out = []
    for extension in ranked:
        items = []
        for record_id, path in facts.samples[extension]:
            if record_id not in loaded:
                try:
                    loaded[record_id] = load_images(facts.run.record_folder(record_id))
                except (UserError, OSError) as exc:
                    log.warning("record %s: its images cannot be read for the gallery: %s", record_id, exc)
                    loaded[record_id] = {}
            images = loaded[record_id].get(path)
            if images is not None and len(images):
                items.append((record_id, path, images[0]))
        if items:
            out.append((extension, items))
    return out


def encode_png(pixels: Any, png: str) -> bytes:
    from ..dataset.png import encode

    return encode(pixels, png)


# --- the figures beside the dataset card ----------------------------------------------------------------------


def write_report_figures(run: RunDir, folder: str | os.PathLike[str], cfg: Any = None, *,
                         png: str = "grey") -> list[Path]:
    """Write the figures about the data (``records``, ``extensions``, ``segments``, ``skipped``, ``licenses``,
    ``years``, ``largest``, ``gallery``, and ``releases`` with two releases or more) as ``<folder>/<name>.png``;
    return their paths, in the order the card shows them.

    Made from the run directory alone (SLURM accounting is not asked), without time stamps: packing the same
    run twice writes the same bytes. A figure with nothing to show is not written, and an earlier file of that
    name is removed. Without matplotlib nothing is written (a warning says how to install it) and ``[]`` comes
    back: an image without figures is still an image.
    """
    from ..core.state import load_run
    from .collect import collect
    from .figures import fig_gallery

    try:
        require_matplotlib()
    except UserError:
        log.warning("no figures beside the dataset card: %s", MPL_HINT)
        return []
    if cfg is None:
        run, cfg = load_run(run.root)
    facts = collect(run, cfg, accounting=False, now=0.0)
    specs = [s for s in FIGURES if s.in_image]
    figures = draw(facts, tuple(specs))
    gallery = fig_gallery(facts, load_samples(facts), png)
    figures[GALLERY.name] = png_bytes(gallery) if gallery is not None else None
    target = Path(folder)
    written = []
    for spec in [*specs, GALLERY]:
        path = target / f"{spec.name}.png"
        data = figures.get(spec.name)
        if data is None or (spec.section == "releases" and len(facts.releases) < 2):
            path.unlink(missing_ok=True)
            continue
        atomic_write_bytes(path, data)
        written.append(path)
    return written


def card_figures(run: RunDir, folder: Path, cfg: Any = None) -> tuple[list[Path], str]:
    """What ``pack`` is handed to put figures beside the dataset card: :func:`write_report_figures` into
    ``folder`` (the image's ``figures/``) and the card's section linking them."""
    paths = write_report_figures(run, folder, cfg)
    return paths, card_markdown(paths, folder.parent)


def card_markdown(figures: list[Path], relative_to: str | os.PathLike[str]) -> str:
    """The dataset card's ``## Figures`` section linking ``figures`` (paths relative to the card's folder)."""
    if not figures:
        return ""
    titles = {s.name: s.title for s in (*FIGURES, GALLERY)}
    lines = ["## Figures", ""]
    for path in figures:
        link = Path(os.path.relpath(path, relative_to)).as_posix()
        lines.append(f"![{titles.get(path.stem, path.stem)}]({link})")
        lines.append("")
    return "\n".join(lines)

"""zenodo_hpc.report.page: the pieces of the report's HTML page (figures, tiles, reasons, what is left, the
title), called directly on facts collected from a run directory built here; the page in a browser is
test_report.py's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import append_records, mark_done, mark_failed, open_run
from zenodo_hpc.dataset.png import encode
from zenodo_hpc.report.collect import Facts, collect
from zenodo_hpc.report.page import data_uri, duration, figure_html, left_text, reasons_text, tiles, when


def config(tmp_path: Path) -> Config:
    return config_from_dict({"run": {"scratch": str(tmp_path), "name": "run"}})


def facts_of(tmp_path: Path, done: list[str], failed: dict[str, tuple[str, bool]], harvested: int) -> Facts:
    """Facts of a run with ``harvested`` records (ids 1...), ``done`` ones, ``failed``: id -> (reason, quarantined)."""
    cfg = config(tmp_path)
    run = open_run(cfg)
    append_records(run.records, [{"id": i, "created": "2018-01-01"} for i in range(1, harvested + 1)])
    for record_id in done:
        run.record_folder(record_id).mkdir()
        mark_done(run, record_id, {})
    for record_id, (reason, quarantined) in failed.items():
        mark_failed(run, record_id, reason=reason, message="x", attempt=1, task="g0001-s00000",
                    quarantined=quarantined)
    return collect(run, cfg, accounting=False)


def test_a_figure_is_an_inline_png_with_its_size_and_a_missing_one_says_why() -> None:
    png = encode(np.full((80, 80), 65, dtype=np.uint32), "palette")
    shown = figure_html("years", 'Records by year <"created">', "One bar a year & status.", png, "unused")
    assert '<img class="plot" data-figure="years" alt="Records by year &lt;&quot;created&quot;&gt;" width="80" ' \
           'height="80" src="data:image/png;base64,' in shown
    assert data_uri(png) in shown and "One bar a year &amp; status." in shown
    missing = figure_html("tasks", "Tasks", "unused", None, "No task has finished yet <yet>.")
    assert missing == '<h3>Tasks</h3>\n<p class="note" data-missing="tasks">No task has finished yet &lt;yet&gt;.</p>'


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0 s"), (89, "89 s"), (90, "2 min"), (5399, "90 min"),
                                                (5400, "1.5 h"), (3 * 86400 - 1, "72.0 h"), (3 * 86400, "3.0 days")])
def test_durations_are_shown_in_the_unit_that_reads_best(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_times_are_shown_in_utc() -> None:
    assert when(0) == "1970-01-01 00:00 UTC"
    assert when(1_764_446_360) == "2025-11-29 19:59 UTC"


def test_tiles_and_reasons_of_a_run_with_failures(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, done=["1", "2"], failed={"3": ("http_503", False), "4": ("<img src=x>", True),
                                                      "5": ("http_503", False)}, harvested=6)
    assert tiles(facts) == (
        '<div class="tiles"><div class="tile "><b>6</b>records</div><div class="tile done"><b>2</b>done</div>'
        '<div class="tile failed"><b>2</b>failed</div><div class="tile quarantined"><b>1</b>quarantined</div>'
        '<div class="tile pending"><b>1</b>pending</div></div>')
    assert reasons_text(facts) == ("<p>Failed by reason: <code>http_503</code> 2. Quarantined by reason: "
                                   "<code>&lt;img src=x&gt;</code> 1.</p>")  # a reason is escaped, never markup


def test_left_text_before_the_harvest_and_once_complete(tmp_path: Path) -> None:
    assert left_text(facts_of(tmp_path / "empty", [], {}, harvested=0)) == "Nothing harvested yet."
    complete = facts_of(tmp_path / "complete", ["1"], {"2": ("http_404", True)}, harvested=2)
    assert left_text(complete) == "Complete: every record is done or quarantined."
    assert reasons_text(facts_of(tmp_path / "clean", ["1"], {}, harvested=1)) == ""


def test_the_page_title_names_the_run_directory_with_its_parent(tmp_path: Path) -> None:
    """The demo's run directory is named `run`: the title said "Zenodo-ML run run"."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (python -m pip install 'matplotlib>=3.6')")
    from zenodo_hpc.core.config import config_from_dict
    from zenodo_hpc.core.state import open_run
    from zenodo_hpc.report import build_report

    run = open_run(config_from_dict({"run": {"scratch": str(tmp_path / "zenodo-hpc-demo"), "name": "run"}}))
    html = build_report(run.root, tmp_path / "report.html", accounting=False).out.read_text()
    heading = re.sub(r"<[^>]+>", "", re.search(r"<h1>(.*?)</h1>", html, re.S).group(1))
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert heading == "Zenodo-ML report: zenodo-hpc-demo/run"
    assert title == "zenodo-hpc report: zenodo-hpc-demo/run"
    assert not re.search(r"\b(\w+) \1\b", heading + " " + title)  # no word twice in a row

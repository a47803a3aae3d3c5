"""The report's figures (zenodo_hpc/report/figures.py): text from the data drawn as written, and what each chart
shows, read from matplotlib's own objects."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="matplotlib not installed (python -m pip install 'matplotlib>=3.6')")


def test_titles_from_the_data_are_drawn_as_text(recwarn: pytest.WarningsRecorder) -> None:
    """Record titles, licenses and extensions are shown as written: a `$` does not start mathtext (`$5 or $10`
    would not draw at all, `\\frac` would be a fraction), and a script the font lacks draws without a warning."""
    from collections import Counter
    from types import SimpleNamespace

    from zenodo_hpc.report import draw
    from zenodo_hpc.report.figures import FIGURES, plain

    assert plain("costs $5 or $10 \\frac{a}{b}") == "costs \\$5 or \\$10 \\frac{a}{b}"
    assert plain("tab\there\x00") == "tab here "
    facts = SimpleNamespace(largest=[(9, "1", "costs $5 or $10 \\frac{a}{b}"), (3, "2", "数据集 の コード"),
                                     (1, "3", "x" * 300)],
                            licenses=Counter({"$weird$ license": 2, "mit": 1}), skipped=Counter({"error": 1}))
    specs = tuple(s for s in FIGURES if s.name in ("largest", "licenses", "skipped"))
    figures = draw(facts, specs)
    assert all(png and png.startswith(b"\x89PNG") for png in figures.values())
    assert not [w for w in recwarn if "Glyph" in str(w.message)]


# --- what the figures show, read from matplotlib's own objects ---------------------------------------------


def _budget_facts(per_minute: int, limit: float) -> Any:
    from types import SimpleNamespace

    start = 60.0 * 29_333_333  # a whole minute: the downloads fall in one bin
    downloads = [(start + i, 1) for i in range(per_minute)]
    return SimpleNamespace(downloads=downloads, cfg=SimpleNamespace(zenodo=SimpleNamespace(rate_limit_per_min=limit)))


def _height_in_axes(ax: Any, y: float) -> float:
    """Where ``y`` (data) is drawn, from 0 (the bottom of the axes) to 1 (its top), whatever the scale."""
    return float(ax.transAxes.inverted().transform(ax.transData.transform((0, y)))[1])


@pytest.mark.parametrize(("used", "limit", "log"), [(39, 6000, True), (1, 6000, True), (50, 60, False)],
                         ids=["demo-1-percent", "one-download", "near-the-limit"])
def test_the_budget_chart_shows_the_use_and_the_limit(used: int, limit: float, log: bool) -> None:
    """39 downloads in a minute under a budget of 6,000 (the demo) must be seen, not a sliver at the bottom: the
    busiest minute reaches a visible height, the budget's line is inside the axes, and the axes say their scale."""
    from zenodo_hpc.report.figures import fig_budget

    ax = fig_budget(_budget_facts(used, limit)).axes[0]
    drawn = max(max(path.vertices[:, 1]) for path in ax.collections[0].get_paths())
    assert drawn == used
    assert _height_in_axes(ax, used) >= (0.05 if used == 1 else 0.3)
    assert 0.5 < _height_in_axes(ax, limit) < 0.97
    assert (ax.get_yscale() == "log") is log
    assert ax.get_ylabel() == "downloads per minute" + (" (log scale)" if log else "")
    assert ax.get_xlabel() == "time (UTC)"
    assert any(f"zenodo.rate_limit_per_min = {limit:g}" in t.get_text() for t in ax.texts)


def test_the_throughput_chart_labels_its_time_axis() -> None:
    from types import SimpleNamespace

    from zenodo_hpc.report.figures import fig_throughput

    status = SimpleNamespace(complete=False, rate_per_min=2.0, pending=3, failed=1)
    facts = SimpleNamespace(finished=[1_760_000_000.0 + 7 * i for i in range(20)], status=status)
    ax = fig_throughput(facts).axes[0]
    assert ax.get_xlabel() == "time (UTC)"
    assert ax.get_ylabel().startswith("records per ")

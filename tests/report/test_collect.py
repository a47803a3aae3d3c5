"""What the report gathers from a run (zenodo_hpc/report/collect.py): here, each record's license as the exports
name it."""

from __future__ import annotations

from helpers import licensed_hit

from zenodo_hpc.report.collect import license_name


def test_the_license_figure_counts_the_ids_the_exports_name() -> None:
    assert license_name(licensed_hit("7", "CC-BY-4.0")) == "cc-by-4.0"  # as recorded in 2021, in lower case
    assert license_name(licensed_hit("7", "gpl-3.0-only", "rdm")) == "gpl-3.0-only"  # InvenioRDM's rights
    assert license_name(licensed_hit("7", "MIT", "string")) == "mit"
    assert license_name(licensed_hit("7", None)) == "(none given)"
    assert license_name({"metadata": {"license": {"id": "<script>"}}}) == "unknown"

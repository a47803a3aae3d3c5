"""The commands and recipes of docs/formats.md, docs/from-2018.md, docs/image.md, docs/organize.md,
docs/publishing.md and docs/report.md run as written (the image, the 2018 data, organizing, reporting,
publishing; the rules and scenes: tests/project/test_doc_commands.py's docstring)."""

from __future__ import annotations

import pytest
from doc_commands import Snippet
from doc_rules import params_run_by, run_as_written


@pytest.mark.parametrize("snippet", params_run_by(__file__))
def test_runs_as_written(snippet: Snippet, request: pytest.FixtureRequest) -> None:
    run_as_written(snippet, request)

"""The commands and recipes of the reference pages (docs/architecture.md, commands.md, configuration.md, doubles.md,
extract.md, fetch.md) run as written (the rules and scenes: tests/project/test_doc_commands.py's docstring)."""

from __future__ import annotations

import pytest
from doc_commands import Snippet
from doc_rules import params_run_by, run_as_written


@pytest.mark.parametrize("snippet", params_run_by(__file__))
def test_runs_as_written(snippet: Snippet, request: pytest.FixtureRequest) -> None:
    run_as_written(snippet, request)

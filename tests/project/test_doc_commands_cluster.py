"""The commands of docs/cluster-guide.md, docs/operations.md and docs/updating.md run as written (running, keeping
and updating a run; the rules and scenes: tests/project/test_doc_commands.py's docstring)."""

from __future__ import annotations

import pytest
from doc_commands import Snippet
from doc_rules import params_run_by, run_as_written


@pytest.mark.parametrize("snippet", params_run_by(__file__))
def test_runs_as_written(snippet: Snippet, request: pytest.FixtureRequest) -> None:
    run_as_written(snippet, request)

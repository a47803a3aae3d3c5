"""Every command and every Python recipe the pages show (README.md, docs/*.md) runs as written; this file runs
the README's and docs/quickstart.md's, and checks that every page's command has a runner.

The commands are read from the pages when the tests are collected (tests/doc_commands.py says what counts
as a command, as a usage line, as sample output), so a page's new command is run, or fails
:func:`test_every_command_and_recipe_has_a_runner` until it gets a rule (tests/doc_rules.py). The Python recipes of
docs/formats.md and docs/image.md, and the dataset card's, are run by tests/project/test_recipes.py (under numpy 1
and 2), not here; their pages' shell commands are run here.

How a command runs. Each rule (``doc_rules.Rule``) sends commands to a *scene*: a prepared folder standing for where
the page's reader stands, with a terminal (tests/doc_sessions.py: ``bash``, the working directory and the
exports carried from one command to the next). A scene's commands run in the pages' order, each as written
(same words, same folder); a test that runs alone first runs its scene's earlier commands. Then the rule's
check says what the command must have done: its exit status, and what it wrote or printed.

The scenes (fixtures in tests/project/conftest.py, shared by the files that run the pages):

- ``clone`` (marked ``registry``: it installs from the package index): a fresh copy of the work tree (its
  tracked and new files), no SLURM, nothing installed: ``make demo``, the venv's activation, every
  ``pip install`` from the clone or its wheel (``make dist``), the cluster guide's venv in ``$HOME``;
- ``system``: the machine itself, for ``apt-get install`` (run only where it is a no-op: root, and the
  package there; it would install or prompt otherwise) and ``module load``;
- ``demo``: a laptop: the repository's folder (its entries linked; ``configs/`` pointed at a Zenodo double),
  a venv with zenodo-hpc active, no SLURM: docs/quickstart.md's demo and what follows it, docs/report.md's
  and docs/publishing.md's commands on the demo's run (the real kaggle client against the Kaggle double),
  the dry run of docs/commands.md, adding an extra's packages to the venv;
- ``scratch``: the same, with the demo's run where the pages' ``scratch/zenodo-ml`` is, and the release
  docs/updating.md checks (made with the date the page names);
- ``from_2018``: a record of the 2018 dataset mounted (``zenodo-ml/1065022``) and its image beside it;
- ``doubles``: an empty folder, for docs/doubles.md's recipes, the clone's ``tests/`` on ``PYTHONPATH`` (as it says);
- ``readme_image``, ``image_md``: a folder holding a packed image and its checksums, as downloaded;
- ``cluster_*`` (marked ``slurm``): the dev SLURM cluster, ``$SCRATCH`` a tmp folder, a venv with zenodo-hpc
  on it where ``configs/sherlock.yaml``'s ``setup`` sources it, ``module`` a no-op: each of the README's ways
  to run on a cluster gets its own fresh run (one command; queue and leave; the driver as a job; stage by
  stage), the cluster guide's offline nodes theirs, docs/updating.md's releases theirs. The dev cluster has
  the ``normal`` partition ``configs/sherlock.yaml`` names, and nodes that fit its 8 GB pack job
  (slurm/dev-cluster/slurm.conf.in, up.sh).

What stands in for the outside world is listed in tests/doc_sessions.py. Commands that must never run get a
reason in ``doc_rules.NEVER`` (shown as skips); commands that fail as written today are in
``doc_rules.KNOWN_BROKEN`` with the failure they show and why (an expected failure, which fails the test once the
command works). Which file runs which page is ``doc_rules.PAGES_RUN_BY``: this one, test_doc_commands_cluster.py
(running and keeping a run on a cluster), test_doc_commands_data.py (the image, the 2018 data, organizing,
reporting, publishing) and test_doc_commands_reference.py (the reference pages and the doubles' recipes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from doc_commands import PAGES, Snippet, all_snippets
from doc_rules import (
    KNOWN_BROKEN,
    NEVER,
    PAGES_RUN_BY,
    RULES,
    SNIPPETS,
    broken_entry,
    never_reason,
    params_run_by,
    rules_of,
    run_as_written,
)

# --- the tests -----------------------------------------------------------------------------------------

def test_every_command_and_recipe_has_a_runner() -> None:
    """A command or recipe a page shows is run by exactly one rule, or never run for a stated reason."""
    uncovered = [s.id for s in SNIPPETS if not never_reason(s) and not rules_of(s)]
    assert not uncovered, "these commands/recipes of the pages are run by no test: add a Rule (or a NEVER " \
                          "reason) in tests/doc_rules.py:\n  " + "\n  ".join(uncovered)
    ambiguous = [s.id for s in SNIPPETS if len(rules_of(s)) > 1 or (never_reason(s) and rules_of(s))]
    assert not ambiguous, f"more than one rule for: {ambiguous}"


def test_every_list_entry_still_names_a_command() -> None:
    """NEVER, KNOWN_BROKEN and the rules name commands the pages still show (none is kept for nothing)."""
    commands = [s for s in SNIPPETS if s.kind == "command"]
    assert [p for p in NEVER if not any(re.fullmatch(p, s.command) for s in commands)] == []
    assert [b for b in KNOWN_BROKEN if not any(broken_entry(s) is b for s in SNIPPETS)] == []
    assert [r.pattern for r in RULES if not any(r.matches(s) for s in SNIPPETS)] == []


def test_the_pages_show_commands_of_each_kind() -> None:
    """The collection itself works: it finds the README's set-up, the quickstart's demo, a recipe, a sample
    output and a usage line, where they are today."""
    found = {(s.page, s.kind, s.command if s.kind != "python" else "") for s in all_snippets()}
    assert ("README.md", "command", "make demo") in found
    assert ("docs/quickstart.md", "command", "zenodo-hpc demo --out zenodo-hpc-demo") in found
    assert any(page == "docs/quickstart.md" and kind == "python" for page, kind, _ in found)
    assert any(kind == "output" and text.startswith("zenodo-hpc pack: error:") for _, kind, text in found)
    assert any(kind == "usage" and text.startswith("zenodo-hpc status RUN_DIR") for _, kind, text in found)


def test_every_page_is_run_by_one_file() -> None:
    """doc_rules.PAGES_RUN_BY names each page once, and only pages and test files that exist: a new page's
    commands are run by no file until it is named there."""
    named = [page for pages in PAGES_RUN_BY.values() for page in pages]
    assert sorted(named) == sorted(PAGES), "name each page of doc_commands.PAGES once in doc_rules.PAGES_RUN_BY"
    assert sorted(PAGES_RUN_BY) == sorted(p.name for p in Path(__file__).parent.glob("test_doc_commands*.py"))


@pytest.mark.parametrize("snippet", params_run_by(__file__))
def test_runs_as_written(snippet: Snippet, request: pytest.FixtureRequest) -> None:
    run_as_written(snippet, request)

"""What the pages show: the shell commands and the Python recipes of README.md and docs/*.md, read from the
Markdown at test time (tests/project/test_doc_commands*.py run them). Not a test file.

Where code is found:

- fenced blocks (```` ``` ````, optionally indented, as inside a list item), with their language;
- indented blocks: lines indented by 4 spaces or more after a blank line, outside a list item (an indented
  line that continues a paragraph or a list item is prose);
- inline spans (`` `...` ``) anywhere else, headings and tables included (``\\|`` in a table is ``|``).

What is a command, line by line (a line ending in ``\\`` goes on with the next; a ``$ `` prompt is dropped):

- in a ```` ```bash ````, ```` ```sh ````, ```` ```shell ```` or ```` ```console ```` block: every line that is not
  blank or a comment;
- in an unlabeled fenced block or an indented block (mostly sample output): a line after a ``$ `` prompt, or a
  line whose first word is a program of :data:`PROGRAMS` (a page that shows a new program adds it there);
- inline: a span whose first word is a program of :data:`PROGRAMS`, with at least one argument. A program or
  subcommand named alone (`` `sacct` ``, `` `zenodo-hpc fetch` ``, `` `zenodo-hpc publish kaggle` ``) names it in
  prose: it is not a command line.

Among those, two kinds are not run, because they cannot be run as written:

- **output**: a line starting ``zenodo-hpc <command>:`` (``zenodo-hpc pack: error: ...``) is a message the
  command prints, shown as an example of its errors;
- **usage**: a synopsis with placeholders: a ``<name>`` (``<run>/cache``, quoted too), an upper-case word
  standing for a value (``RUN_DIR``, ``CONFIG``, ``U``; not a file name such as ``README.md``), an optional
  part in brackets (``[--dry-run]``) or an ellipsis (``...``). tests/project/test_docs.py checks that the commands
  and options they name exist.

Everything else is a **command**, which tests/project/test_doc_commands*.py run as written or tests/doc_rules.py
names in one of its explicit lists. ```` ```python ```` blocks are **recipes** (an interactive ``>>>`` session
is kept as shown: it runs through doctest, its shown results checked); ```` ```yaml ````, ```` ```json ```` and
other languages are configuration and data, not run here.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The pages whose commands and recipes are collected, in a reader's order: the README, the quickstart (which
#: makes the demo the other pages work on), then the rest.
PAGES = ("README.md", "docs/quickstart.md",
         *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md") if p.name != "quickstart.md"))
#: Programs whose name starts a command line in an unlabeled block, an indented block or an inline span.
PROGRAMS = frozenset({
    "zenodo-hpc", "make", "pip", "pip3", "python", "python3", "source", "cd", "mkdir", "module", "sudo",
    "apt-get", "md5sum", "sha256sum", "squashfuse", "fusermount", "fusermount3", "mount", "umount",
    "unsquashfs", "mksquashfs", "sbatch", "squeue", "scancel", "sacct", "sinfo", "scontrol", "scrontab",
    "crontab", "du", "frictionless", "kaggle", "lint-imports", "ruff", "pytest", "bash", "git", "chmod",
    "export", "seff", "ls", "cp", "rm", "tar", "curl",
})
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")
_LIST_ITEM = re.compile(r"^ *(?:[-*+]|\d+[.)])[ \t]")
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_OUTPUT = re.compile(r"^zenodo-hpc(?: [a-z]+)*: ")
#: Placeholders anywhere in a line (quoted too): <run>, <next 03:00>, an ellipsis.
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>'\"]*>|(?:^|\s|')(?:\.\.\.|…)(?:\s|$|')")
#: Placeholders outside quotes (a quoted title may have capitals): [--dry-run], RUN_DIR, U.
_BARE_PLACEHOLDER = re.compile(r"(?:^|\s)\[|(?:^|\s)[A-Z][A-Z0-9_]*(?=\s|$)")


@dataclass(frozen=True)
class Snippet:
    """One command line, or one recipe, as a page shows it."""

    page: str  # relative to the repository: "README.md", "docs/quickstart.md"
    line: int  # 1-based line of the page where it starts
    kind: str  # "command", "usage", "output" or "python"
    text: str  # the command line (prompt dropped, continuations joined) or the recipe's code
    where: str  # "fenced", "indented" or "inline"
    shown: tuple[str, ...] = ()  # after a ``$ `` prompt: the output the page shows, up to the next prompt

    @property
    def command(self) -> str:
        """The command line without its ``# comment`` and with single spaces: what the lists match."""
        return " ".join(_strip_comment(self.text).split())

    @property
    def program(self) -> str:
        return self.text.split()[0] if self.text.split() else ""

    @property
    def id(self) -> str:
        """A short, stable name for a test id: the page and the command (or the recipe's line)."""
        if self.kind == "python":
            return f"{self.page}:{self.line}"
        return f"{self.page}: {self.text}"


def classify(text: str, where: str, language: str = "", prompted: bool = False) -> str | None:
    """``command``, ``usage``, ``output``, or None when ``text`` is not a command line at all."""
    words = text.split()
    if not words or words[0].startswith("#"):
        return None
    if _OUTPUT.match(text):
        return "output"
    if where == "inline":
        if words[0] not in PROGRAMS or len(words) < 2 or (words[0] == "zenodo-hpc" and _names_a_command(words)):
            return None
    elif not (language in SHELL_LANGUAGES or prompted or words[0] in PROGRAMS):
        return None
    bare = _without_quotes_and_comment(text)
    return "usage" if _PLACEHOLDER.search(_strip_comment(text)) or _BARE_PLACEHOLDER.search(bare) else "command"


def _names_a_command(words: list[str]) -> bool:
    """``zenodo-hpc publish kaggle``: only the program and lower-case subcommand words, no argument."""
    return all(re.fullmatch(r"[a-z]+", w) for w in words[1:]) and len(words) <= 3


def _strip_comment(text: str) -> str:
    """``text`` up to its shell comment (a ``#`` that starts a word outside quotes)."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def _without_quotes_and_comment(text: str) -> str:
    """The line without its quoted strings and its ``# comment``: placeholders are looked for in the rest."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
        lexer.whitespace_split, lexer.commenters = True, "#"
        return " ".join(token for token in lexer if " " not in token)
    except ValueError:
        return text.split(" #", 1)[0]


def snippets(page: str) -> list[Snippet]:
    """Every command line, usage line, output line and recipe of ``page``, in the page's order."""
    return list(_scan(page, (ROOT / page).read_text(encoding="utf-8").splitlines()))


def _scan(page: str, lines: list[str]) -> Iterator[Snippet]:
    i, in_list, previous_blank = 0, False, True
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            end = _fence_end(lines, i, fence["fence"])
            yield from _block(page, i + 2, lines[i + 1:end], fence["lang"].lower(), "fenced", len(fence["indent"]))
            i, previous_blank = end + 1, False
            continue
        if _LIST_ITEM.match(line):
            in_list = True
        elif line.strip() and not line.startswith(" "):
            in_list = False
        if previous_blank and not in_list and line.startswith("    ") and line.strip():
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            yield from _block(page, i + 1, lines[i:end], "", "indented", 4)
            i, previous_blank = end, False
            continue
        if line.strip():
            end = i + 1
            while end < len(lines) and lines[end].strip() and not _FENCE.match(lines[end]):
                end += 1
            yield from _inline(page, i + 1, lines[i:end])
            i, previous_blank = end, False
            in_list = in_list or any(_LIST_ITEM.match(x) for x in lines[i - 1:end])
            continue
        previous_blank = True
        i += 1


def _fence_end(lines: list[str], start: int, fence: str) -> int:
    for j in range(start + 1, len(lines)):
        if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0]):
            return j
    return len(lines)


def _block(page: str, first: int, body: list[str], language: str, where: str, indent: int) -> Iterator[Snippet]:
    body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in body]
    if language == "python":
        yield Snippet(page, first, "python", _recipe(body), where)
        return
    if language and language not in SHELL_LANGUAGES:
        return
    n = 0
    while n < len(body):
        start, text = n, body[n].rstrip()
        while text.endswith("\\") and n + 1 < len(body):
            n += 1
            text = text[:-1].rstrip() + " " + body[n].strip()
        n += 1
        prompted = text.lstrip().startswith("$ ")
        text = text.strip()[2:].strip() if prompted else text.strip()
        kind = classify(text, where, language, prompted)
        shown: list[str] = []
        while prompted and n < len(body) and not body[n].lstrip().startswith("$ "):
            shown.append(body[n].rstrip())
            n += 1
        if kind:
            yield Snippet(page, first + start, kind, text, where, tuple(line for line in shown if line.strip()))


def _recipe(body: list[str]) -> str:
    """The code of a python block (an interactive ``>>>`` session as it is: it runs through doctest)."""
    return "\n".join(body).strip("\n") + "\n"


def _inline(page: str, number: int, paragraph: list[str]) -> Iterator[Snippet]:
    """The inline spans of a paragraph (a span may go on over a line break)."""
    text = "\n".join(paragraph)
    for match in _INLINE.finditer(text.replace("\n", " ")):
        span = match.group(2).strip().replace("\\|", "|")
        kind = classify(span, "inline")
        if kind:
            yield Snippet(page, number + text.count("\n", 0, match.start()), kind, span, "inline")


def all_snippets() -> list[Snippet]:
    """The snippets of every page of :data:`PAGES`."""
    return [s for page in PAGES for s in snippets(page)]

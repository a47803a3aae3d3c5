"""Credentials in a record's code, found with detect-secrets and masked before the file is rasterized.

Every published form of the dataset (the h5 files, the 2018 pickle, the squashfs image, the Kaggle PNGs,
the Parquet export) is made from the rasterized text, so masking the text once, here, keeps credentials out
of all of them. A credential's characters are replaced one for one by ``MASK`` (``*``): each line keeps its
length, so every image keeps its geometry and only the secret's pixels change (docs/formats.md).

The detector is Yelp's detect-secrets (pinned in pyproject.toml): its plugins' own patterns, called
directly (``plugin.analyze_string``) rather than through ``scan_line``/``transient_settings``, whose
settings are one global object of the process (not safe to change while another thread scans) and whose
``analyze_line`` would verify a match over the network when a verification filter is configured. Nothing
here reads or changes detect-secrets' settings, and nothing is ever sent anywhere.

The plugins (``PLUGINS``) are those that find real credentials, each by its provider's own format or by
a password-like name: cloud keys (AWS access key ids and secret keys, Azure storage account keys),
private key blocks (PEM, OpenSSH, PGP, SSH2, PuTTY), tokens of the big platforms (GitHub, GitLab,
Slack tokens and webhooks, Stripe, Twilio, OpenAI, PyPI, npm, SendGrid, Square, Mailchimp, Discord,
Telegram), JSON Web Tokens, user:password in URLs, and the keyword plugin (``password = "..."``,
``api_key: ...``, ``secret=...`` in code and config files). Left out:

- the two high-entropy plugins (Base64 and hex): they flag every hash, digest, UUID and test vector,
  which are what code is made of; masking them would deface a large part of the dataset;
- the IP address plugin: a public IP address is not a credential;
- Artifactory: its patterns (``AP`` or ``AKC`` then letters and digits) match ordinary identifiers;
- IBM's four (Cloudant, SoftLayer, IBM COS HMAC, IBM Cloud IAM): assignments of a value to a
  ``key``/``pass``/``token`` name, which the keyword plugin covers for every provider, at a high cost
  (their patterns run at a few MB/s).

detect-secrets' heuristic filters (templated values such as ``${PASSWORD}``, indirect references such as
``password = get_password()``, values without a letter, sequences, UUIDs, ``*_id`` names) are applied to
the keyword plugin's guesses only: they exist to prune the guesses of a name-based rule, while a value
in a provider's own format is a credential wherever it stands. Its allowlist pragma
(``# pragma: allowlist secret``) is not honoured: it is an author's note to their own CI, not consent to
publishing the value. The keyword plugin picks its patterns by file type; dotenv files (``.env``,
``.env.local``, ``prod.env``), which detect-secrets does not recognise, are read as config files.

Speed: the plugins' patterns are Python regular expressions run line by line, a few MB/s. A prefilter
finds the lines that can hold a match: every match of every plugin's patterns contains one of that plugin's
``HINTS`` (lower-case literals, ASCII case aside), or, for the three plugins without a literal
(``LONG_TOKEN_PLUGINS``), has a shape of letters and digits between ``:`` or ``.`` (``HYPERSCAN_SHAPES``);
only those lines are given to the plugin. Two engines find them, the same lines: Hyperscan, all patterns in
one pass, where its wheels exist (x86-64 Linux, the clusters: pyproject.toml installs it there), and elsewhere
an Aho-Corasick automaton over the ASCII-lower-cased bytes plus substring searches for the shapes in the
bytes translated into classes of characters. Matches never span lines, so no line the plugins would flag
is skipped (tests/record/test_secrets.py checks both engines against a scan of every line, and the patterns
the hints were read from). The four characters that Python's
case-insensitive matching takes for ASCII letters (U+212A KELVIN SIGN, U+017F LONG S, U+0130 and U+0131
dotted and dotless I) are made those letters before the hints are looked for.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, NamedTuple

import ahocorasick_rs
from detect_secrets.filters import heuristic
from detect_secrets.plugins import keyword
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from detect_secrets.util.filetype import FileType, determine_file_type

MASK = "*"  # ASCII: a masked file keeps its narrowest image type (uint8 for ASCII code), and it reads as "hidden"
KEEP = frozenset("\t\n\r")  # never masked: a tab is tab_width cells wide, a newline ends a line
PRIVATE_KEY = PrivateKeyDetector.secret_type

PLUGINS: tuple[type[BasePlugin], ...] = (
    AWSKeyDetector, AzureStorageKeyDetector, BasicAuthDetector, DiscordBotTokenDetector, GitHubTokenDetector,
    GitLabTokenDetector, JwtTokenDetector, keyword.KeywordDetector, MailchimpDetector, NpmDetector,
    OpenAIDetector, PrivateKeyDetector, PypiTokenDetector, SendGridDetector, SlackDetector, SquareOAuthDetector,
    StripeDetector, TelegramBotTokenDetector, TwilioKeyDetector,
)


def _keyword_hints() -> tuple[str, ...]:
    """Each of the keyword plugin's names (``api_?key`` is ``apikey`` or ``api_key``); ``contrase`` covers
    ``contraseña`` whatever the case of its ``ñ`` (bytes.lower() leaves non-ASCII alone)."""
    hints = []
    for word in keyword.DENYLIST:
        if word.startswith("contras"):
            hints.append("contrase")
        elif "_?" in word:
            hints += [word.replace("_?", ""), word.replace("_?", "_")]
        else:
            hints.append(word)
    return tuple(dict.fromkeys(hints))


# Per plugin, lower-case literals of which every match of its patterns holds one (ASCII case aside).
# Read from detect-secrets 1.5.0's patterns; tests/record/test_secrets.py fails when those patterns change.
HINTS: dict[type[BasePlugin], tuple[str, ...]] = {
    AWSKeyDetector: ("a3t", "abia", "acca", "akia", "asia", "aws"),
    AzureStorageKeyDetector: ("accountkey=",),
    BasicAuthDetector: ("://",),
    GitHubTokenDetector: ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    GitLabTokenDetector: ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "gr1348941", "glcbt-", "glimt-", "glptt-",
                          "glagent-", "gloas-"),
    JwtTokenDetector: ("eyj",),
    keyword.KeywordDetector: _keyword_hints(),
    MailchimpDetector: ("-us",),
    NpmDetector: ("_authtoken=",),
    OpenAIDetector: ("t3blbkfj",),
    PrivateKeyDetector: ("private key", "putty-user-key-file-2"),
    PypiTokenDetector: ("pypi-age",),
    SendGridDetector: ("sg.",),
    SlackDetector: ("xox", "hooks.slack.com"),
    SquareOAuthDetector: ("sq0csp-",),
    StripeDetector: ("k_live_",),
}
# The plugins without a literal of their own (Discord's, Telegram's and Twilio's patterns: letters and digits
# between ``.`` or ``:``), found by the shapes of their matches in classes of characters (:func:`_long_token_hits`).
LONG_TOKEN_PLUGINS: tuple[type[BasePlugin], ...] = (DiscordBotTokenDetector, TelegramBotTokenDetector,
                                                    TwilioKeyDetector)


def _classes(keep: bytes, *groups: tuple[bytes, bytes]) -> bytes:
    """A bytes.translate table: each byte of ``keep`` stays, each byte of a group's first part becomes its
    second, every other byte a space."""
    table = bytearray(b" " * 256)
    for members, cls in groups:
        for byte in members:
            table[byte] = cls[0]
    for byte in keep:
        table[byte] = byte
    return bytes(table)


_LETTERS_DIGITS = bytes(range(ord("a"), ord("z") + 1)) + bytes(range(ord("A"), ord("Z") + 1)) + b"0123456789"
_TOKEN_CLASSES = _classes(b":.\n", (_LETTERS_DIGITS + b"_-" + bytes(range(0xC0, 256)), b"a"))  # + UTF-8 lead bytes
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))  # deleted: a character is one byte (its lead byte)
_RUN = b"a" * 27  # the shortest run of token characters the three plugins' matches hold (Discord's last part)
_TELEGRAM_SHAPE = b":" + b"a" * 35
_DISCORD_SHAPE = b"." + b"a" * 6 + b"." + b"a" * 27
_TWILIO_CLASSES = _classes(b"ACSK", (bytes(range(ord("a"), ord("z") + 1)) + b"0123456789", b"b"))
_TWILIO_SHAPES = (b"AC" + b"b" * 32, b"SK" + b"b" * 32)
# The non-ASCII characters that re.IGNORECASE matches with an ASCII letter (all of them: a test checks).
UNICODE_CASE_ALIASES = {"\u212a": b"k", "\u017f": b"s", "\u0130": b"i", "\u0131": b"i"}
PRIVATE_KEY_END = re.compile(r"END[ A-Z0-9]*PRIVATE KEY( BLOCK)?|Private-MAC:[ \t]*[0-9A-Fa-f]*")
KEY_BLOCK_LINES = 1000  # how far a private key block's END marker is looked for
_KEY_LIKE = re.compile(r"""[\s"'`+,;\\]*(?:[A-Za-z0-9+/=]*(?:\\n)?|[A-Za-z-]+:.*)[\s"'`+,;\\]*""")
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]+")
_DOTENV = re.compile(r"(^|/)(\.env(\.[^/]*)?|[^/]*\.env|\.envrc)$")


class Finding(NamedTuple):
    """A credential: its kind (detect-secrets' ``secret_type``), its 1-based line, and its characters
    ``start:end`` in that line (the first line of a private key block). Never the value itself."""

    kind: str
    line: int
    start: int
    end: int


@lru_cache(maxsize=1)
def _plugins() -> tuple[BasePlugin, ...]:
    return tuple(plugin() for plugin in PLUGINS)


@lru_cache(maxsize=1)
def _automaton() -> tuple[Any, tuple[type[BasePlugin], ...]]:
    owners = [(hint.encode("utf-8"), plugin) for plugin, hints in HINTS.items() for hint in hints]
    return ahocorasick_rs.BytesAhoCorasick([hint for hint, _ in owners]), tuple(plugin for _, plugin in owners)


def keyword_patterns(path: str) -> dict[re.Pattern[str], int]:
    """The keyword plugin's patterns for this file, as detect-secrets picks them (dotenv files as config)."""
    if _DOTENV.search(path):
        return keyword.REGEX_BY_FILETYPE[FileType.CONFIG]
    return _keyword_patterns_of(os.path.splitext(path)[1])


@lru_cache(maxsize=256)
def _keyword_patterns_of(extension: str) -> dict[re.Pattern[str], int]:
    file_type = determine_file_type(f"file{extension}")  # detect-secrets looks at the extension only
    return keyword.REGEX_BY_FILETYPE.get(file_type, keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP)


def find_secrets(text: str, path: str = "") -> list[Finding]:
    """Every credential in ``text`` (the file at ``path``, whose name chooses the keyword patterns), every line
    scanned by every plugin: the reference :func:`mask_secrets`'s prefilter is tested against."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    plugins = _plugins()
    return _findings(lines, ((i, plugins) for i in range(len(lines))), path)


def mask_secrets(data: bytes, path: str = "") -> tuple[bytes, list[Finding]]:
    """``data`` with every credential's characters replaced by ``MASK``, and the findings.

    A file without credentials comes back as it is (the same object). A masked file comes back with ``\\r\\n``
    and ``\\r`` made ``\\n`` and invalid UTF-8 in its masked lines made U+FFFD, as the rasterizer makes them
    anyway: its code images differ from the unmasked file's exactly in the masked characters.
    """
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data
    candidates = _candidate_lines(text)
    if not candidates:
        return data, []
    decoded = {i: text[start:end].decode("utf-8", "replace") for i, (start, end, _) in candidates.items()}
    findings = _findings(decoded, ((i, plugins) for i, (_, _, plugins) in candidates.items()), path)
    if not findings:
        return data, []
    lines = text.split(b"\n")
    for i, line_spans in _spans(findings, _LazyLines(lines, decoded)).items():
        lines[i] = _masked(decoded[i], line_spans).encode("utf-8")
    return b"\n".join(lines), findings


def _candidate_lines(text: bytes) -> dict[int, tuple[int, int, tuple[BasePlugin, ...]]]:
    """The lines that can hold a match: 0-based index -> (first byte, end byte, the plugins to run on it)."""
    folded = _folded(text)  # the same lines: an alias and its letter are on the same line
    groups = _hits_hyperscan(folded) if prefilter_engine() == "hyperscan" else _hits_aho_corasick(text, folded)
    groups = [(coordinates, hits) for coordinates, hits in groups if hits]
    if not groups:
        return {}
    if all(len(coordinates) == len(text) for coordinates, _ in groups):  # ASCII, no alias: one set of positions
        bounds: dict[int, tuple[int, int]] = {}
        by_line = _plugins_by_line(text, [hit for _, hits in groups for hit in hits], bounds)
    else:  # positions differ between the texts: lines counted in each, then found in the text (rare)
        by_line = {}
        for coordinates, hits in groups:
            for i, wanted in _plugins_by_line(coordinates, hits).items():
                by_line.setdefault(i, set()).update(wanted)
        offsets = [0]
        for line in text.split(b"\n"):
            offsets.append(offsets[-1] + len(line) + 1)
        bounds = {i: (offsets[i], offsets[i + 1] - 1) for i in by_line}
    instances = _plugins()
    return {i: (*bounds[i], tuple(p for p in instances if type(p) in wanted)) for i, wanted in by_line.items()}


Hits = list[tuple[int, type[BasePlugin]]]  # (a byte of the match, its plugin)


def _hits_aho_corasick(text: bytes, folded: bytes) -> list[tuple[bytes, Hits]]:
    """The hints with one Aho-Corasick automaton over the lower-cased text; the shapes of the plugins without a
    literal by substring searches in the text translated into classes of characters. Each group of hits comes
    with the text its positions are in."""
    automaton, owners = _automaton()
    hinted = [(start, owners[index])
              for index, start, _ in automaton.find_matches_as_indexes(folded.lower(), overlapping=True)]
    groups = [(folded, hinted)]
    tokens = text.translate(_TOKEN_CLASSES, _CONTINUATION_BYTES)  # one byte a character: the same lines
    if _RUN in tokens:  # each of the three holds a run of 27 token characters (most files have none)
        groups += [(tokens, list(_long_token_hits(tokens))), (text, list(_twilio_hits(text)))]
    return groups


def _hits_hyperscan(folded: bytes) -> list[tuple[bytes, Hits]]:
    """The hints (caseless literals) and the shapes of the plugins without a literal, in one Hyperscan pass over
    the text: a match is reported by its end, whose last byte is on the match's line (no pattern crosses one)."""
    database, owners = _hyperscan_database()
    hits: Hits = []
    database.scan(folded, match_event_handler=lambda index, _start, end, _flags, _context: hits.append(
        (end - 1, owners[index])), scratch=_hyperscan_scratch(database))
    return [(folded, hits)]


def prefilter_engine() -> str:
    """``hyperscan`` where it is installed (pyproject.toml installs it on x86-64 Linux, the clusters), else
    ``aho-corasick``: the same lines either way (the tests check both)."""
    return "hyperscan" if _hyperscan() is not None else "aho-corasick"


@lru_cache(maxsize=1)
def _hyperscan() -> Any:
    try:
        return importlib.import_module("hyperscan")
    except ImportError:  # not on this platform: the Aho-Corasick prefilter
        return None


# The shapes of LONG_TOKEN_PLUGINS' matches as Hyperscan patterns over bytes: a non-ASCII byte counts as a token
# character, and Discord's 6 characters are 6 to 24 bytes (its \d takes any digit, up to 4 bytes in UTF-8).
_TOKEN = rb"[0-9A-Za-z_\x80-\xff-]"
HYPERSCAN_SHAPES: tuple[tuple[bytes, type[BasePlugin]], ...] = (
    (rb":" + _TOKEN + rb"{35}", TelegramBotTokenDetector),
    (rb"\." + _TOKEN + rb"{6,24}\." + _TOKEN + rb"{27}", DiscordBotTokenDetector),
    (rb"AC[a-z0-9]{32}", TwilioKeyDetector),
    (rb"SK[a-z0-9]{32}", TwilioKeyDetector),
)


@lru_cache(maxsize=1)
def _hyperscan_database() -> tuple[Any, tuple[type[BasePlugin], ...]]:
    hs = _hyperscan()
    literals = [(re.escape(hint).encode("ascii"), plugin) for plugin, hints in HINTS.items() for hint in hints]
    patterns = literals + list(HYPERSCAN_SHAPES)
    database = hs.Database(mode=hs.HS_MODE_BLOCK)
    database.compile(expressions=[p for p, _ in patterns], ids=list(range(len(patterns))), elements=len(patterns),
                     flags=[hs.HS_FLAG_CASELESS] * len(literals) + [0] * len(HYPERSCAN_SHAPES))
    return database, tuple(plugin for _, plugin in patterns)


_THREAD = threading.local()


def _hyperscan_scratch(database: Any) -> Any:
    """A scratch space per thread: Hyperscan refuses two scans at once in one."""
    scratch = getattr(_THREAD, "scratch", None)
    if scratch is None:
        scratch = _THREAD.scratch = database.scratch.clone()
    return scratch


def _plugins_by_line(text: bytes, hits: Hits,
                     bounds: dict[int, tuple[int, int]] | None = None) -> dict[int, set[type[BasePlugin]]]:
    """Each hit's line (the count of newlines before its position) and the plugins hinted there; with ``bounds``,
    each line's first and end byte too."""
    by_line: dict[int, set[type[BasePlugin]]] = {}
    hits.sort(key=lambda hit: hit[0])
    line, counted = 0, 0
    for position, plugin in hits:
        line += text.count(b"\n", counted, position)
        counted = position
        if line not in by_line:
            by_line[line] = set()
            if bounds is not None:
                end = text.find(b"\n", position)
                bounds[line] = (text.rfind(b"\n", 0, position) + 1, len(text) if end < 0 else end)
        by_line[line].add(plugin)
    return by_line


def _long_token_hits(tokens: bytes) -> Iterator[tuple[int, type[BasePlugin]]]:
    """Where Telegram's and Discord's patterns can match, as substrings of the text translated into classes of
    characters (one C-speed pass, no loop over the text's runs of letters): a Telegram token holds ``:`` and 35
    token characters, a Discord token ends with ``.``, 6 of them, ``.`` and 27. ``tokens`` has a byte a
    character: a non-ASCII character is one token character (Discord's ``\\d`` takes any digit)."""
    for shape, plugin in ((_TELEGRAM_SHAPE, TelegramBotTokenDetector), (_DISCORD_SHAPE, DiscordBotTokenDetector)):
        yield from ((at, plugin) for at in _finds(tokens, shape))


def _twilio_hits(text: bytes) -> Iterator[tuple[int, type[BasePlugin]]]:
    """Where Twilio's patterns match: ``AC`` or ``SK`` and 32 lower-case ASCII letters or digits."""
    classes = text.translate(_TWILIO_CLASSES)
    if b"AC" in classes or b"SK" in classes:
        for shape in _TWILIO_SHAPES:
            yield from ((at, TwilioKeyDetector) for at in _finds(classes, shape))


def _finds(text: bytes, sub: bytes) -> Iterator[int]:
    at = text.find(sub)
    while at >= 0:
        yield at
        at = text.find(sub, at + 1)


def _folded(text: bytes) -> bytes:
    """``text`` with the non-ASCII letters that case-insensitive matching takes for k, s or i made those letters."""
    if text.isascii():
        return text
    for alias, letter in UNICODE_CASE_ALIASES.items():
        text = text.replace(alias.encode("utf-8"), letter)
    return text


class _LazyLines:
    """The lines of a file as text, decoded when asked (a private key block reads lines the prefilter did not
    keep)."""

    def __init__(self, lines: list[bytes], decoded: dict[int, str]) -> None:
        self.lines, self.decoded = lines, decoded

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> str:
        if i not in self.decoded:
            self.decoded[i] = self.lines[i].decode("utf-8", "replace")
        return self.decoded[i]


def _findings(lines: Any, candidates: Iterable[tuple[int, tuple[BasePlugin, ...]]], path: str) -> list[Finding]:
    found: dict[Finding, None] = {}
    keyword_regexes = keyword_patterns(path)
    for i, plugins in candidates:
        line = lines[i]
        for plugin in plugins:
            for value in _values(plugin, line, keyword_regexes):
                for start in _occurrences(line, value):
                    found[Finding(plugin.secret_type, i + 1, start, _token_end(line, start + len(value)))] = None
    return sorted(found, key=lambda f: (f.line, f.start, f.kind))


def _values(plugin: BasePlugin, line: str, keyword_regexes: dict[re.Pattern[str], int]) -> Iterator[str]:
    """The secret values one plugin finds in one line (the keyword plugin's filtered as detect-secrets does)."""
    if isinstance(plugin, keyword.KeywordDetector):
        values = [v for v in plugin.analyze_string(line, denylist_regex_to_group=keyword_regexes)
                  if v and not _filtered_guess(v, line, plugin)]
        if values and not heuristic.is_indirect_reference(line):  # a filter of the line, but a slow one: last
            yield from values
        return
    yield from (value for value in plugin.analyze_string(line) if value)


def _filtered_guess(value: str, line: str, plugin: BasePlugin) -> bool:
    return (heuristic.is_templated_secret(value) or heuristic.is_prefixed_with_dollar_sign(value)
            or heuristic.is_not_alphanumeric_string(value) or heuristic.is_sequential_string(value)
            or heuristic.is_potential_uuid(value) or heuristic.is_likely_id_string(value, line, plugin))


def _token_end(line: str, end: int) -> int:
    """Where the token that ends a found value ends. A plugin's value can stop short of its credential: GitLab's
    patterns capture only the prefix (``glpat``), the JWT pattern's last part is lazy (header and payload,
    without the signature); the rest of the token is masked with it."""
    match = _TOKEN_TAIL.match(line, end)
    return match.end() if match else end


def _occurrences(line: str, value: str) -> Iterator[int]:
    start = line.find(value)
    while start >= 0:
        yield start
        start = line.find(value, start + len(value))


def _spans(findings: list[Finding], lines: Any) -> dict[int, list[tuple[int, int]]]:
    """Per 0-based line, the ``(start, end)`` characters to mask: each finding's, and for a private key the
    whole block after its BEGIN line's header, to its END marker."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for finding in findings:
        i = finding.line - 1
        if finding.kind != PRIVATE_KEY:
            spans.setdefault(i, []).append((finding.start, finding.end))
            continue
        for j, start, end in _key_block(lines, i, finding.end):
            spans.setdefault(j, []).append((start, end))
    return spans


def _key_block(lines: Any, first: int, after: int) -> Iterator[tuple[int, int, int]]:
    """The spans of a private key's body: from its header (``BEGIN RSA PRIVATE KEY-----``) to its END marker,
    on the same line (a key written in one string, ``\\n`` escaped) or on one of the KEY_BLOCK_LINES below;
    without an END marker, the rest of the line and the lines below as long as they look like key material
    (base64, ``Name: value`` headers, quoting)."""
    head = lines[first]
    after += len(head[after:]) - len(head[after:].lstrip("-"))
    last = min(len(lines), first + KEY_BLOCK_LINES)
    for j in range(first, last):
        line = lines[j]
        begin = after if j == first else 0
        marker = PRIVATE_KEY_END.search(line, begin)
        if marker:
            putty = marker.group().startswith("Private-MAC")  # PuTTY's last line is masked too
            stop = marker.end() if putty else len(line[:marker.start()].rstrip("-"))
            yield from ((k, after if k == first else 0, len(lines[k])) for k in range(first, j))
            yield j, begin, max(begin, stop)
            return
    yield first, after, len(head)
    for j in range(first + 1, len(lines)):
        if not _KEY_LIKE.fullmatch(lines[j]):  # blank lines too are key material (after PEM headers)
            return
        yield j, 0, len(lines[j])


def _masked(line: str, spans: list[tuple[int, int]]) -> str:
    chars = list(line)
    for start, end in spans:
        for k in range(start, min(end, len(chars))):
            if chars[k] not in KEEP:
                chars[k] = MASK
    return "".join(chars)

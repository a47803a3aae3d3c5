"""Credentials are found with detect-secrets' plugins and masked character for character (record/secrets.py).

The credentials are fake but real-shaped (tests/helpers.py, FAKE_CREDENTIALS: AWS's, Slack's and jwt.io's are
the providers' own documentation examples), planted in real-looking files (a .env, a config.yaml, a Python
module with an AWS key pair, a PEM key, a CI script with a GitHub token, a Slack notifier).
"""

from __future__ import annotations

import hashlib
import re
import string
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from helpers import FAKE_CREDENTIALS, plant_credentials

from zenodo_hpc.record import secrets
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.secrets import MASK, PLUGINS, Finding, find_secrets, mask_secrets

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# One value per plugin of PLUGINS, each in its provider's documented shape (Discord's is its documentation's
# example; Telegram's, one character longer, as its documented example is a character short of the pattern's 35),
# in a line of the kind that holds it.
PER_PLUGIN = {
    "AWS Access Key": 'key_id = "AKIAIOSFODNN7EXAMPLE"',
    "Azure Storage Account access key": "AccountKey=" + "a1B2" * 22,
    "Basic Auth Credentials": "url = 'https://user:pa55word@example.org/x'",
    "Discord Bot Token": "TOKEN = 'MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs'",
    "GitHub Token": "token: ghp_" + "aB3d" * 9,
    "GitLab Token": "GITLAB=glpat-" + "Xy7Kp2Qm9R" * 2,
    "JSON Web Token": "jwt = '" + FAKE_CREDENTIALS["JSON Web Token"][0] + "'",
    "Secret Keyword": 'db_password = "Zx9-qT4mLw2"',
    "Mailchimp Access Key": "MC = '" + "0123456789abcdef" * 2 + "-us12'",
    "NPM tokens": "//registry.npmjs.org/:_authToken=npm_" + "aB3dE5fG7h" * 3 + "abcdef",
    "OpenAI Token": "OPENAI = 'sk-" + "aB3dE5fG7hJ9kL1mN2pQ" + "T3BlbkFJ" + "aB3dE5fG7hJ9kL1mN2pQ'",
    "Private Key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB",
    "PyPI Token": "password = pypi-AgEIcHlwaS5vcmc" + "aB3dE5fG7h" * 7,
    "SendGrid API Key": "SG." + "aB3dE5fG7hJ9kL1mN2pQr4" + "." + "aB3dE5fG7hJ9kL1mN2pQr4" + "aB3dE5fG7hJ9kL1mN2pQr",
    "Slack Token": "SLACK = 'xoxb-123456789012-1234567890123-aB3dE5fG7hJ9kL1mN2pQr4sT'",
    "Square OAuth Secret": "SQ = 'sq0csp-" + "aB3dE5fG7hJ9kL1mN2pQr4sT6uV8wX0yZ1aB3dE5fG7'",
    "Stripe Access Key": "stripe.api_key = 'rk_live_" + "aB3dE5fG7hJ9kL1mN2pQr4sT'",
    "Telegram Bot Token": "BOT = '110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw7'",
    "Twilio API Key": "ACCOUNT = 'AC" + "0123456789abcdef" * 2 + "'",
}
# What detect-secrets 1.5.0's patterns of PLUGINS are (their sources and flags): HINTS and the shapes of
# LONG_TOKEN_PLUGINS were read
# from them. A release that changes a pattern fails here, until the hints are read again and this value updated.
PATTERNS_SHA256 = "5a001224a54e21f51749bcd721df149389b2f7df638705871988d6642871c5e9"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("planted")
    return root, plant_credentials(root)


def changed_cells(before: bytes, after: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The code images of both texts (same shape: the layout is unchanged) and the mask of the cells that differ."""
    old, new = rasterize(before), rasterize(after)
    assert old.shape == new.shape
    return new, old != new


def test_every_planted_credential_is_masked_and_the_layout_kept(planted: tuple[Path, dict[str, list[str]]]) -> None:
    root, values = planted
    for name, planted_values in values.items():
        data = (root / name).read_bytes()
        masked, findings = mask_secrets(data, name)
        text = masked.decode("utf-8")
        for value in planted_values:
            assert value in data.decode("utf-8") and value not in text, (name, value[:6])
        assert [len(line) for line in text.split("\n")] == [len(line) for line in data.decode().split("\n")]
        images, changed = changed_cells(data, masked)
        assert changed.any() and (images[changed] == ord(MASK)).all()  # only masked cells differ
        assert findings and all(f.line >= 1 for f in findings)


@pytest.mark.parametrize(("name", "kinds"), [
    (".env", [("Basic Auth Credentials", 1), ("Secret Keyword", 2)]),
    ("config.yaml", [("Secret Keyword", 4)]),
    ("upload/s3.py", [("AWS Access Key", 4), ("AWS Access Key", 5), ("Secret Keyword", 5)]),
    ("keys/deploy_key.pem", [("Private Key", 1)]),
    ("ci/release.sh", [("GitHub Token", 3)]),
    ("notify.py", [("Slack Token", 3)]),
    ("settings.py", [("Stripe Access Key", 1), ("GitLab Token", 2), ("Twilio API Key", 3), ("JSON Web Token", 4),
                     ("Azure Storage Account access key", 5)]),
])
def test_findings_name_kind_and_line_never_the_value(planted: tuple[Path, dict[str, list[str]]], name: str,
                                                    kinds: list[tuple[str, int]]) -> None:
    root, values = planted
    _, findings = mask_secrets((root / name).read_bytes(), name)
    assert [(f.kind, f.line) for f in findings] == kinds
    assert Finding._fields == ("kind", "line", "start", "end")
    assert not any(value in repr(findings) for value in values[name])


def test_a_private_key_block_is_masked_to_its_end_marker(planted: tuple[Path, dict[str, list[str]]]) -> None:
    root, _ = planted
    masked, _ = mask_secrets((root / "keys/deploy_key.pem").read_bytes(), "deploy_key.pem")
    lines = masked.decode().splitlines()
    assert lines[0] == "-----BEGIN RSA PRIVATE KEY-----" and lines[-1] == "-----END RSA PRIVATE KEY-----"
    assert all(set(line) == {MASK} for line in lines[1:-1])


@pytest.mark.parametrize("text", [
    # a key in one string of code, its newlines escaped
    'KEY = "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oowvuPGz\\n'
    '-----END EC PRIVATE KEY-----"\n',
    # a key in a list of strings
    'KEY = ("-----BEGIN PRIVATE KEY-----\\n"\n       "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oowvuPGz\\n"\n'
    '       "-----END PRIVATE KEY-----\\n")\n',
    # a key cut short: no END marker
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
    "c2gtZWQyNTUxOQAAACBMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oowvuPGz\n",
    # PuTTY's format: everything to its Private-MAC line
    "PuTTY-User-Key-File-2: ssh-ed25519\nEncryption: none\nComment: eddsa-key\nPublic-Lines: 2\n"
    "AAAAC3NzaC1lZDI1NTE5AAAAIDuDq0MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTB\nnVJk5oowvuPGz\nPrivate-Lines: 1\n"
    "AAAAIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oowvuPGzMHcCAQEEIBkg4LVWM9nuwNSk3\n"
    "Private-MAC: 6a6bc2f7f2a3e4b5c6d7e8f9a0b1c2d3e4f5a6b7\nafter the key\n",
])
def test_private_keys_in_code_or_cut_short_lose_every_line_of_their_body(text: str) -> None:
    body = re.findall(r"MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oowvuPGz|b3BlbnNzaC1rZXktdjEA|c2gtZWQyNTUxOQ|"
                      r"6a6bc2f7f2a3e4b5c6d7|AAAAIBkg4LVWM9nuw", text)
    assert body
    masked, findings = mask_secrets(text.encode(), "keys.py")
    assert [f.kind for f in findings] == ["Private Key"]
    assert not any(part in masked.decode() for part in body)
    assert "PRIVATE KEY" in masked.decode() or "PuTTY-User-Key-File-2" in masked.decode()  # the labels stay
    assert "after the key" in masked.decode() or "PuTTY" not in text


@pytest.mark.parametrize(("kind", "line"), sorted(PER_PLUGIN.items()))
def test_each_plugin_finds_and_masks_its_kind(kind: str, line: str, engine: str) -> None:
    masked, findings = mask_secrets(f"# config\n{line}\n".encode(), "app.cfg")
    assert (kind, 2) in [(f.kind, f.line) for f in findings]
    assert MASK in masked.decode().split("\n", 1)[1]


def test_the_plugins_are_those_of_the_module_docstring() -> None:
    assert {plugin.secret_type for plugin in PLUGINS} == set(PER_PLUGIN)
    assert not {"Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)"} & set(PER_PLUGIN)


def test_code_full_of_hashes_and_uuids_comes_back_untouched() -> None:
    data = (
        b"import hashlib, os, uuid\n\n"
        b"EXPECTED = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'  # sha256 of b''\n"
        b"COMMIT = '9fceb02d0ae598e95dc970b74767f19372d61af8'\n"
        b"RUN_ID = uuid.UUID('123e4567-e89b-12d3-a456-426614174000')\n"
        b"BLOB = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='\n"
        b"password = os.environ['DB_PASSWORD']\n"
        b"password = get_password()\n"
        b"secret: ${SECRET_FROM_VAULT}\n"
        b"api_key = '********'\n"
        b"url = 'https://example.org/path?q=1'\n"
    )
    masked, findings = mask_secrets(data, "settings.py")
    assert findings == [] and masked is data


@pytest.fixture(params=["aho-corasick", "hyperscan"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each prefilter in turn: Hyperscan where it is installed (x86-64 Linux), Aho-Corasick everywhere."""
    if request.param == "hyperscan" and secrets._hyperscan() is None:
        pytest.skip("hyperscan is not installed here (pyproject.toml installs it on x86-64 Linux only)")
    monkeypatch.setattr(secrets, "prefilter_engine", lambda: request.param)
    return str(request.param)


def test_the_prefilter_misses_nothing_a_scan_of_every_line_finds(planted: tuple[Path, dict[str, list[str]]],
                                                                 engine: str) -> None:
    """mask_secrets scans only the lines its prefilter keeps; find_secrets scans every line with every plugin."""
    root, values = planted
    corpus = [(name, (root / name).read_bytes()) for name in values]
    corpus += [(f"plugin{i}.cfg", f"x = 1\n{line}\n".encode()) for i, line in enumerate(PER_PLUGIN.values())]
    corpus += [(f"plugin{i}.py", f"x = 1\r\n  {line.upper()}\r\n".encode())
               for i, line in enumerate(PER_PLUGIN.values())]
    corpus += [("kelvin.py", 'API_\u212aEY = "Zx9-qT4mLw2"\n'.encode()),  # KELVIN SIGN: a K to re.IGNORECASE
               ("long_s.py", 'pa\u017f\u017fword = "Zx9-qT4mLw2"  # café\n'.encode()),
               ("dotless.yaml", "\u0130 am: here\nsecret\u0131: x\napi_key: r\u00e9sum\u00e9-9\n".encode()),
               # ARABIC-INDIC DIGIT ONE: a digit to Discord's \\d, two bytes in UTF-8, among other non-ASCII lines
               ("discord.py", "# caf\u00e9\nT = 'MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2F\u0661Q.ZnCjm1XVW7vRze4b7Cq4se7kKWs'\n"
                              "# na\u00efve \u00fcber\nBOT = '110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw7'\n"
                              "ACCOUNT = 'AC0123456789abcdef0123456789abcdef' # \u00e9\n".encode())]
    corpus += [(str(p.relative_to(STDLIB)), p.read_bytes()) for p in sorted(STDLIB.glob("*.py"))[:150]]
    corpus += [(str(p.relative_to(STDLIB)), p.read_bytes()) for p in sorted((STDLIB / "test").rglob("*.pem"))]
    found_somewhere = set()
    for name, data in corpus:
        text = data.decode("utf-8", "replace")
        reference = find_secrets(text, name)
        _, findings = mask_secrets(data, name)
        assert findings == reference, name
        found_somewhere |= {f.kind for f in findings}
    assert found_somewhere == set(PER_PLUGIN)  # every plugin's hints were exercised


def test_unicode_case_aliases_are_every_non_ascii_character_re_ignorecase_takes_for_a_letter() -> None:
    letter = re.compile("[a-z]", re.IGNORECASE)
    aliases = {chr(c) for c in range(128, 0x110000) if letter.fullmatch(chr(c))}
    assert aliases == set(secrets.UNICODE_CASE_ALIASES)
    assert all(re.fullmatch(secrets.UNICODE_CASE_ALIASES[a].decode(), a, re.IGNORECASE) for a in aliases)


def test_the_hints_were_read_from_these_patterns() -> None:
    sources = []
    for plugin in PLUGINS:
        patterns = getattr(plugin, "denylist", None)
        if patterns is None:  # the keyword plugin: its patterns by file type
            patterns = sorted({p for group in secrets.keyword.REGEX_BY_FILETYPE.values() for p in group}
                              | set(secrets.keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP), key=lambda p: p.pattern)
        sources += [f"{plugin.__name__} {p.flags} {p.pattern}" for p in patterns]
    digest = hashlib.sha256("\n".join(sources).encode()).hexdigest()
    assert digest == PATTERNS_SHA256, "detect-secrets' patterns changed: read HINTS again, then update the digest"
    every_hint = [h for hints in secrets.HINTS.values() for h in hints]
    assert all(h == h.lower() and h.isascii() for h in every_hint)
    assert set(secrets.HINTS) | set(secrets.LONG_TOKEN_PLUGINS) == set(PLUGINS)


def test_masking_keeps_crlf_tabs_and_non_ascii_in_place() -> None:
    token = FAKE_CREDENTIALS["GitHub Token"][0]
    data = f"# café\r\n\tTOKEN = '{token}'  # ünïcode 😀\r\nbad \xff byte\r\n".encode("utf-8", "surrogateescape")
    data = data.replace(b"\xc3\xbf", b"\xff")
    masked, findings = mask_secrets(data, "x.py")
    assert [f.kind for f in findings] == ["GitHub Token"]
    images, changed = changed_cells(data, masked)
    assert changed.sum() == len(token) and (images[changed] == ord(MASK)).all()


def test_a_masked_line_tells_nothing_of_the_value_but_its_length() -> None:
    masked, findings = mask_secrets(b'password = "correct horse battery staple"\n', "a.py")
    assert masked == b'password = "' + MASK.encode() * 28 + b'"\n'
    assert findings == [Finding("Secret Keyword", 1, 12, 40)]


def test_files_without_candidates_are_not_copied() -> None:
    data = "".join(string.ascii_letters[i % 52] for i in range(5000)).encode()
    assert mask_secrets(data, "letters.txt")[0] is data


def test_a_key_cut_short_is_masked_past_its_headers_and_up_to_the_code_after_it() -> None:
    body = "MIIEpAIBAAKCAQEA7bq98Yz3Xk2LmQwErTyMIIEpAIBAAKCAQEA7bq98Yz3Xk2LmQ"
    text = (f"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n"
            f"{body}\n{body[:40]}\n\nprint('done')\n")
    masked, findings = mask_secrets(text.encode(), "notes.txt")
    lines = masked.decode().split("\n")
    assert [f.kind for f in findings] == ["Private Key"] and body[:20] not in masked.decode()
    assert lines[0] == "-----BEGIN RSA PRIVATE KEY-----" and lines[-2] == "print('done')"

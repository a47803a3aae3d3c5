"""Helpers the tests share (plain functions, not fixtures): real code to work on, a run's config against a
double, an unprivileged user, and a byte-for-byte view of a run's output. Test files import them as
``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``: tests/conftest.py sits there)."""

from __future__ import annotations

import os
import pickle
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

NOBODY = 65534
T = TypeVar("T")


def stdlib_package(name: str) -> Path:
    """A package of the running Python's own standard library: real source code, always present."""
    return Path(sysconfig.get_paths()["stdlib"]) / name


def call_as_nobody(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` as an unprivileged user, so that permission checks really apply.

    CI runs as root, for whom no file is unreadable and no folder unwritable; a forked child that drops
    to ``nobody`` sees permissions as a cluster user does. (A subprocess cannot be used: the Python in
    ``/root`` is not executable by nobody.) Without root, ``fn`` is simply called.
    """
    if os.geteuid() != 0:
        return fn(*args, **kwargs)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, send back the result or the exception
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # everything goes back to the parent
            outcome = ("error", exc)
        try:
            payload = pickle.dumps(outcome)
        except Exception as exc:
            payload = pickle.dumps(("error", RuntimeError(repr(exc))))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(payload)
    if status == "error":
        raise value
    return value


def stdlib_records(count: int, files_per_record: int = 12) -> list[tuple[str, dict[str, bytes]]]:
    """``count`` records of real code: (name, {path: bytes}) from the standard library's packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    packages = [p for p in sorted(root.iterdir())
                if p.is_dir() and (p / "__init__.py").exists() and p.name not in {"test", "site-packages"}]
    records = []
    for i in range(count):
        package = packages[i % len(packages)]
        files = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)[:files_per_record]
        top = f"{package.name}-{i}"
        records.append((top, {f"{top}/{f.relative_to(package).as_posix()}": f.read_bytes() for f in files}))
    return records


def run_config(tmp_path: Path, double: Any, **executor: Any) -> Any:
    """A config for a run in ``tmp_path`` against ``double`` (fast rate limits, small shards)."""
    from zenodo_hpc.core.config import config_from_dict

    return config_from_dict({
        "run": {"scratch": str(tmp_path), "name": "run"},
        "zenodo": {"api_url": double.api_url, "rate_limit_per_min": 60_000, "rate_limit_per_hour": 3_600_000,
                   "search_rate_limit_per_min": 60_000, "retries": 1},
        "github": {"codeload_url": double.codeload_url},
        "fetch": {"attempts": 1},
        "executor": {"kind": "local", "records_per_shard": 3, "local": {"workers": 2}, **executor},
    })


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of every record folder under ``folder``, for comparing two runs' outputs byte by byte.

    Hidden staging folders and the image-root files a pack adds (manifest.jsonl, README.md, ...) are left out.
    """
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.glob("*/*")) if p.is_file() and not p.parent.name.startswith(".")}



def _fake(prefix: str, alphabet: str, length: int) -> str:
    """A credential-shaped value: ``prefix`` then ``length`` characters cycling through ``alphabet`` (fake)."""
    return prefix + (alphabet * (length // len(alphabet) + 1))[:length]


# Real-shaped, fake credentials, each in the form its provider documents (AWS's, Slack's and jwt.io's are
# their documentation's own examples), keyed by the kind detect-secrets 1.5.0 names them with.
FAKE_CREDENTIALS = {
    "AWS Access Key": ["AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
    "GitHub Token": [_fake("ghp_", "aZ3kQ9xW7mB2nV5c", 36)],
    "GitLab Token": [_fake("glpat-", "Xy7Kp2Qm9Rt4Lw", 20)],
    "Slack Token": ["https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"],
    "Stripe Access Key": [_fake("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc", 24)],
    "Basic Auth Credentials": ["s3cr3t-Passw0rd"],
    "JSON Web Token": ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwia"
                       "WF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"],
    "Secret Keyword": ["Zx9-qT4mLw2", "hunter2isweak"],
    "Twilio API Key": [_fake("SK", "0123456789abcdef", 32)],
    "Azure Storage Account access key": [_fake("", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsu", 86) + "=="],
}
PEM_BODY = [_fake("", "MIIEpAIBAAKCAQEA7bq98Yz3Xk2LmQwErTy", 64) for _ in range(5)] + ["Qk9hXW1zT2VwS2V5Cg=="]


def plant_credentials(root: Path) -> dict[str, list[str]]:
    """Write real-looking files holding fake credentials under ``root``; {file's path under root: its values}.

    A .env, a config.yaml with a password, a Python file with an AWS key pair, a PEM private key, a GitHub token
    in a CI script, a Slack webhook in a notifier, and more in a settings module."""
    c = FAKE_CREDENTIALS
    aws_id, aws_secret = c["AWS Access Key"]
    files = {
        ".env": (f"DATABASE_URL=postgres://app:{c['Basic Auth Credentials'][0]}@db.example.org:5432/app\n"
                 f"PASSWORD={c['Secret Keyword'][1]}\nDEBUG=false\n", [c["Basic Auth Credentials"][0],
                                                                        c["Secret Keyword"][1]]),
        "config.yaml": (f"database:\n  host: db.example.org\n  user: app\n  password: {c['Secret Keyword'][0]}\n"
                        "  pool: 5\n", [c["Secret Keyword"][0]]),
        "upload/s3.py": ('"""Upload results to S3."""\nimport boto3\n\n'
                         f'AWS_ACCESS_KEY_ID = "{aws_id}"\naws_secret_access_key = "{aws_secret}"\n\n\n'
                         "def client():\n    return boto3.client('s3')\n", [aws_id, aws_secret]),
        "keys/deploy_key.pem": ("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY)
                                + "\n-----END RSA PRIVATE KEY-----\n", PEM_BODY),
        "ci/release.sh": (f"#!/bin/sh\nset -e\ncurl -H 'Authorization: token {c['GitHub Token'][0]}' \\\n"
                          "    https://api.github.com/repos/o/r/releases\n", c["GitHub Token"]),
        "notify.py": (f'import requests\n\nWEBHOOK = "{c["Slack Token"][0]}"\n\n\ndef send(text):\n'
                      "    requests.post(WEBHOOK, json={'text': text})\n", c["Slack Token"]),
        "settings.py": (f'STRIPE = "{c["Stripe Access Key"][0]}"\nGITLAB = "{c["GitLab Token"][0]}"\n'
                        f'TWILIO = "{c["Twilio API Key"][0]}"\nTOKEN = "{c["JSON Web Token"][0]}"\n'
                        f'AZURE = "DefaultEndpointsProtocol=https;AccountName=acct;'
                        f'AccountKey={c["Azure Storage Account access key"][0]};EndpointSuffix=core.windows.net"\n',
                        [c["Stripe Access Key"][0], c["GitLab Token"][0], c["Twilio API Key"][0],
                         c["JSON Web Token"][0], c["Azure Storage Account access key"][0]]),
    }
    for name, (text, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return {name: values for name, (_, values) in files.items()}


def image_rows(images: Any) -> list[str]:
    """Every row of code images ((n, h, w) or (h, w) arrays of code points) as text, trailing pad dropped."""
    import numpy as np

    rows = np.asarray(images).reshape(-1, np.asarray(images).shape[-1])
    return ["".join(map(chr, row)).rstrip(" ") for row in rows.tolist()]


def leaked(texts: Iterable[str], values: Iterable[str], window: int = 12) -> list[str]:
    """The values of which some ``window`` characters (the whole value if shorter) appear in one of ``texts``:
    a row of an image holds at most its first 80 characters of a line, so a value is looked for piece by piece."""
    pieces = {v[i:i + window]: v for v in values for i in range(max(1, len(v) - window + 1))}
    found = {value for text in texts for piece, value in pieces.items() if piece in text}
    return sorted(v[:4] + "..." for v in found)  # never the whole value, even in a failing test's message

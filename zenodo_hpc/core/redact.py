"""One mask for every credential the package handles: the Zenodo deposit token, Kaggle's key or access token,
and a webhook URL (whose path is its secret).

Whatever a server, a client library or an exception says may be shown to the user or written to a log, so it
goes through a :class:`Redactor` first. A secret can appear raw, URL-quoted (in a query or a path), or inside
base64 text (an HTTP ``Basic`` credential ``user:secret``, whatever ``user`` is): every form is masked.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 4  # shorter "secrets" (an empty variable, a placeholder) would mask ordinary text


class Redactor:
    """Masks secrets in text: raw, URL-quoted, and inside any base64 (standard or URL-safe) text.

    A base64 text holds a secret's bytes in one of three alignments, depending on what comes before it (``user:``
    of an HTTP ``Basic`` credential, whatever ``user`` is). For each alignment the characters that depend only on the
    secret are masked, so the secret cannot be read back whatever surrounds it (one or two characters at each end,
    which also depend on the neighbouring bytes, may stay).
    """

    MASK = MASK

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LENGTH:
                forms.update(secret_forms(secret))
        ordered = sorted(forms, key=len, reverse=True)  # the longest first: a whole Basic credential before its key
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __call__(self, text: object) -> str:
        text = str(text)
        return self._pattern.sub(self.MASK, text) if self._pattern else text


def secret_forms(secret: str) -> set[str]:
    """The spellings of ``secret`` that a server or a log may show: raw, URL-quoted, and its base64 cores."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             urllib.parse.quote(secret)}
    raw = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw + b"\0\0").decode()
        core = encoded[-(-8 * offset // 6): 8 * (offset + len(raw)) // 6]  # the characters made of the secret alone
        if len(core) >= MIN_LENGTH:
            forms.add(core)
            forms.add(core.translate(str.maketrans("+/", "-_")))
    return {f for f in forms if f}


def kaggle_key_secrets(username: str, key: str) -> list[str]:
    """What Kaggle's API key makes secret: the key, and the HTTP ``Basic`` credential the client sends with it
    (whole, so that it is masked as one, not only around the key's characters)."""
    return [key, base64.b64encode(f"{username}:{key}".encode()).decode()]


def webhook_secrets(url: str) -> list[str]:
    """What a webhook URL makes secret: what follows its host (a Slack or Teams hook's path and query are its
    credential: anyone who has them can post), the whole URL with it, and a password in it. The scheme and host
    alone are no secret: messages name them (``https://hooks.slack.com/...``)."""
    parts = urllib.parse.urlsplit(url)
    after_host = urllib.parse.urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    secrets = [parts.password or ""]
    if after_host.strip("/"):
        secrets += [url, after_host]
    return [secret for secret in secrets if secret]

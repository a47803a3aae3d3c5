"""The one redactor (zenodo_hpc/core/redact.py): every credential the package handles, in every form it may take
in a message or a log, is masked; text without a secret passes unchanged."""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from zenodo_hpc.core.redact import Redactor, kaggle_key_secrets, webhook_secrets

ZENODO_TOKEN = "dep0sit+T0ken/with=odd&chars-0123456789abcdefXYZ"  # quoting and base64 both change it
KAGGLE_USER, KAGGLE_KEY = "jane-doe", "0123456789abcdef+/0123456789abcdef"
KAGGLE_ACCESS_TOKEN = "KGAT_0123456789abcdef0123456789abcdef"
WEBHOOK = "https://hooks.slack.com/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"
WEBHOOK_PATH = "/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def forms(secret: str) -> dict[str, str]:
    """The spellings a server, a client library or an exception may give a secret."""
    return {"raw": secret, "quoted": urllib.parse.quote(secret, safe=""),
            "quoted_plus": urllib.parse.quote_plus(secret), "quoted_path": urllib.parse.quote(secret),
            "base64": base64.b64encode(secret.encode()).decode(),
            "basic": base64.b64encode(f"zenodo-hpc:{secret}".encode()).decode(),
            "basic_urlsafe": base64.urlsafe_b64encode(f"user:{secret}".encode()).decode()}


CREDENTIALS = {
    "zenodo token": ([ZENODO_TOKEN], ZENODO_TOKEN),
    "kaggle key": (kaggle_key_secrets(KAGGLE_USER, KAGGLE_KEY), KAGGLE_KEY),
    "kaggle access token": ([KAGGLE_ACCESS_TOKEN], KAGGLE_ACCESS_TOKEN),
    "webhook url": (webhook_secrets(WEBHOOK), WEBHOOK),
    "webhook path": (webhook_secrets(WEBHOOK), WEBHOOK_PATH),
}


@pytest.mark.parametrize("form", list(forms("x" * 8)))
@pytest.mark.parametrize("credential", list(CREDENTIALS))
def test_every_form_of_every_credential_is_masked(credential: str, form: str) -> None:
    secrets, secret = CREDENTIALS[credential]
    shown = forms(secret)[form]
    masked = Redactor(secrets)(f"HTTP 401 for {shown}: check it")
    assert shown not in masked and "***" in masked, masked
    assert masked.startswith("HTTP 401 for ") and masked.endswith(": check it")


def test_the_kaggle_basic_credential_is_masked_whole() -> None:
    basic = base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode()).decode()
    assert Redactor(kaggle_key_secrets(KAGGLE_USER, KAGGLE_KEY))(f"Authorization: Basic {basic}") == (
        "Authorization: Basic ***")


def test_the_redactor_masks_base64_whatever_surrounds_the_secret() -> None:
    redact = Redactor([ZENODO_TOKEN, None, "abc"])  # None and short secrets are ignored
    for prefix in ("", "a", "ab", "user:", "zenodo-hpc:", "x" * 7):
        for suffix in ("", ":", "xy", "\n"):
            blob = (prefix + ZENODO_TOKEN + suffix).encode()
            for encoded in (base64.b64encode(blob).decode(), base64.urlsafe_b64encode(blob).decode()):
                masked = redact(f"Authorization: Basic {encoded}.")
                assert encoded not in masked and "***" in masked
    assert redact("nothing secret here: abc, 42") == "nothing secret here: abc, 42"
    assert Redactor([])("x") == "x"


def test_a_webhook_without_a_path_keeps_its_host_shown() -> None:
    """The scheme and host are what messages name (notify.shown_url); only a password in the URL is secret."""
    line = "the webhook at https://example.org/... answered HTTP 500"
    assert Redactor(webhook_secrets("https://example.org"))(line) == line
    assert Redactor(webhook_secrets("https://bot:s3cret-pass@example.org/"))("bot:s3cret-pass") == "bot:***"

"""Saying that a release happened: a webhook that chat tools accept, never failing the release.

``notify.webhook_url`` gets one JSON POST per release: ``{"text": "<one line>", "release": {<figures>}}``
(Slack, Mattermost, Rocket.Chat and Teams' incoming webhooks show ``text``; the rest is for scripts).
A failed notice is logged and the release stays marked as not notified, so the next ``update`` sends it
again; the release itself is never failed by it. The URL may hold a secret (a Slack hook's path does):
it is never printed in full.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import requests

from ..core.records import link_problem
from ..core.redact import Redactor, webhook_secrets
from ..zenodo.client import USER_AGENT

log = logging.getLogger(__name__)

TIMEOUT_S = (10.0, 30.0)


def notice(text: str, figures: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a notice."""
    return {"text": text, "release": figures}


def shown_url(url: str) -> str:
    """``https://hooks.slack.com/...``: the host only, since a webhook's path is its secret."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/..."


def send_notice(url: str, body: dict[str, Any], *, session: requests.Session | None = None) -> str | None:
    """POST the notice; None when it was accepted, else why not (one line, without the URL's secret: it names the
    host only, and passes through the package's redactor in case a message ever quotes more)."""
    problem = _post(url, body, session)
    return Redactor(webhook_secrets(url))(problem) if problem else None


def _post(url: str, body: dict[str, Any], session: requests.Session | None) -> str | None:
    problem = link_problem(url)
    if problem:
        return f"notify.webhook_url is not usable: {problem.split(':')[0]}"
    http = session or requests.Session()
    try:
        response = http.post(url, json=body, timeout=TIMEOUT_S, headers={"User-Agent": USER_AGENT},
                             allow_redirects=False)
    except requests.RequestException as exc:
        return f"the webhook at {shown_url(url)} could not be reached ({type(exc).__name__})"
    finally:
        if session is None:
            http.close()
    if not 200 <= response.status_code < 300:
        return f"the webhook at {shown_url(url)} answered HTTP {response.status_code}"
    return None

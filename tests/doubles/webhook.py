"""A chat tool's incoming webhook (Slack's, Mattermost's): it takes a JSON ``POST`` and answers ``200 ok``.

A plain request log is all the tests need (what ``notify.webhook_url`` was sent), so this is pytest-httpserver's
server with one expectation, not a server of our own.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_httpserver import HTTPServer

__all__ = ["Webhook"]

PATH = "/hooks/T000/B000/secret"  # the shape of a Slack incoming-webhook URL: the secret is in the path


class Webhook:
    """The webhook at :attr:`url` on ``server``; :attr:`bodies` are the JSON bodies it was sent, in order."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        server.expect_request(PATH, method="POST").respond_with_data("ok")
        self.url = server.url_for(PATH)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.get_data()) for request, _ in self.server.log]

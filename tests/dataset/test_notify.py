"""zenodo_hpc.dataset.notify: the notice a release sends to notify.webhook_url, against a webhook double
(tests/doubles/webhook.py); a failure is one line that never shows the URL's secret (its path, a password)."""

from __future__ import annotations

import json
import socket

import pytest
from doubles.webhook import PATH, Webhook
from pytest_httpserver import HTTPServer

from zenodo_hpc.dataset.notify import notice, send_notice, shown_url
from zenodo_hpc.zenodo.client import USER_AGENT

BODY = notice("zenodo-ml 2026.06: 12 records (+2, -1)", {"version": "2026.06", "records": 12, "removed": 1})


def test_the_notice_is_posted_once_as_json_and_accepted(httpserver: HTTPServer) -> None:
    webhook = Webhook(httpserver)
    assert send_notice(webhook.url, BODY) is None
    assert webhook.bodies == [{"text": "zenodo-ml 2026.06: 12 records (+2, -1)",
                               "release": {"version": "2026.06", "records": 12, "removed": 1}}]
    ((request, _),) = httpserver.log
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT


@pytest.mark.parametrize("status", [404, 500, 302])
def test_an_answer_that_is_not_2xx_is_one_line_naming_the_host_only(httpserver: HTTPServer, status: int) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(
        "no", status=status, headers={"Location": httpserver.url_for("/elsewhere")})
    url = httpserver.url_for(PATH).replace("://", "://bot:s3cret-pass@")
    problem = send_notice(url, BODY)
    assert problem == f"the webhook at http://{httpserver.host}/... answered HTTP {status}"
    assert [request.path for request, _ in httpserver.log] == [PATH]  # a redirect is not followed
    assert json.loads(httpserver.log[0][0].get_data()) == BODY


def test_a_webhook_that_cannot_be_reached_is_one_line() -> None:
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        problem = send_notice(f"http://127.0.0.1:{port}/hooks/T000/B000/secret", BODY)
    assert problem == "the webhook at http://127.0.0.1/... could not be reached (ConnectionError)"


@pytest.mark.parametrize(("url", "why"), [
    ("hooks.example.org/services/T000/B000/secret", "not an http(s) link"),
    ("ftp://hooks.example.org/services/secret", "not an http(s) link"),
    ("https://hooks.example.org/services/T000/B000/secret with space", "a URL with whitespace"),
    ("https:///services/secret", "a link without a host"),
])
def test_a_url_that_is_not_usable_is_refused_without_showing_it(url: str, why: str) -> None:
    problem = send_notice(url, BODY)
    assert problem == f"notify.webhook_url is not usable: {why}"


def test_shown_url_keeps_scheme_and_host_only() -> None:
    assert shown_url("https://hooks.slack.com/services/T000/B000/XXXX?token=y") == "https://hooks.slack.com/..."
    assert shown_url("https://bot:s3cret@chat.example.org:8443/hooks/abc") == "https://chat.example.org/..."

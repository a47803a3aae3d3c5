"""The deposit token (zenodo_hpc.zenodo.deposit, its HttpClient): never shown, even when Zenodo echoes it back,
and never sent to another origin or place than the API's own, against the Zenodo double's deposit API."""

from __future__ import annotations

import base64
import logging
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles import HeaderRecorder, ZenodoDouble
from helpers import DEPOSIT_IMAGE as IMAGE
from helpers import DEPOSIT_TOKEN as TOKEN
from helpers import deposit_publish as publish
from helpers import deposit_release as release
from helpers import one_line

from zenodo_hpc.zenodo.client import HttpClient
from zenodo_hpc.zenodo.deposit import DepositError, format_deposit_summary


@pytest.fixture
def zenodo() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as double:
        yield double


def all_forms(token: str) -> list[str]:
    return [token, urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token),
            base64.b64encode(f"zenodo-hpc:{token}".encode()).decode(), base64.b64encode(token.encode()).decode(),
            base64.urlsafe_b64encode(f"user:{token}".encode()).decode()]


def assert_nowhere(token: str, *texts: str, folder: Path | None = None) -> None:
    for text in texts:
        for form in all_forms(token):
            assert form not in text
    if folder is not None:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert all(form.encode() not in data for form in all_forms(token)), path


@pytest.mark.parametrize("where", ["list", "create", "upload", "publish"])
def test_the_token_never_shows_even_when_the_server_echoes_it(zenodo: ZenodoDouble, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             caplog: pytest.LogCaptureFixture, where: str) -> None:
    caplog.set_level(logging.DEBUG)
    image, files = release(tmp_path / "r1", "1")
    path = {"list": "/api/deposit/depositions", "create": "/api/deposit/depositions",
            "upload": f"/api/files/*/{IMAGE}", "publish": "/api/deposit/depositions/*/actions/publish"}[where]
    if where == "create":  # the list and the create share the path: the list passes, the create gets the echo
        zenodo.fail(path, "sleepy", status=200, headers={})
    zenodo.fail(path, "echo", status=400)
    with pytest.raises(DepositError) as error:
        publish(zenodo, image, files, None, token_env="ZENODO_DEPOSIT_TOKEN")
    echoed = [r for r in zenodo.requests if r.fault == "echo"]
    assert len(echoed) == 1 and echoed[0].status == 400
    message = one_line(error)
    assert "Request refused. Authorization: Bearer ***" in message and "query: access_token=***" in message
    assert re.search(r"forwarded as Basic [A-Za-z0-9+/]{0,16}\*\*\*[A-Za-z0-9+/=]{0,3};", message)
    out, err = capsys.readouterr()
    assert_nowhere(TOKEN, message, repr(error.value), out, err, caplog.text, folder=tmp_path)


def test_the_token_is_never_logged_on_a_whole_run(zenodo: ZenodoDouble, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    out, err = capsys.readouterr()
    assert "zenodo: uploading" in caplog.text
    assert_nowhere(TOKEN, caplog.text, out, err, repr(result), format_deposit_summary(result), folder=tmp_path)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_one_line_saying_what_to_do(tmp_path: Path, status: int) -> None:
    with ZenodoDouble(tokens=["another-token-entirely"], unauthorized_status=status) as zenodo, \
            pytest.raises(DepositError) as error:
        publish(zenodo, *release(tmp_path / "r1", "1"), None, token_env="ZENODO_DEPOSIT_TOKEN")
    message = one_line(error)
    assert f"Zenodo refused the deposit token (HTTP {status}: " in message
    assert "check that $ZENODO_DEPOSIT_TOKEN holds a personal access token with the deposit:write and " \
           "deposit:actions scopes" in message
    assert_nowhere(TOKEN, message)


@pytest.mark.parametrize("link", ["bucket", "publish", "self"])
def test_a_link_to_another_origin_gets_nothing_and_the_run_stops(zenodo: ZenodoDouble, tmp_path: Path,
                                                                 link: str) -> None:
    with HeaderRecorder(b"{}", content_type="application/json") as elsewhere:
        zenodo.override_deposit_links(**{link: f"{elsewhere.url}/api/files/0f0f-elsewhere"})
        with pytest.raises(DepositError) as error:
            publish(zenodo, *release(tmp_path / "r1", "1"), None)
        assert elsewhere.requests == []  # not even a request without the token
    message = one_line(error)
    assert f"points the {link} link to http://127.0.0.1:" in message
    assert "refusing to send the deposit token there; nothing was sent to it" in message
    assert not any(d["submitted"] for d in zenodo.depositions())


def test_a_new_versions_latest_draft_link_to_another_origin_is_refused(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    first = publish(zenodo, *release(tmp_path / "r1", "1"), None)
    zenodo.reset_log()
    with HeaderRecorder(b"{}", content_type="application/json") as elsewhere:
        zenodo.override_deposit_links(latest_draft=f"{elsewhere.url}/api/deposit/depositions/5")
        with pytest.raises(DepositError, match="points the latest_draft link to http://127.0.0.1:"):
            publish(zenodo, *release(tmp_path / "r2", "2"), first.concept_id)
        zenodo.override_deposit_links(bucket=f"{elsewhere.url}/api/files/0f0f")
        with pytest.raises(DepositError, match="points the bucket link to http://127.0.0.1:"):
            publish(zenodo, *release(tmp_path / "r2", "2"), first.concept_id)
        assert elsewhere.requests == []
    # the draft was left as Zenodo made it: the check comes before any change
    assert not any(r.method in ("PUT", "DELETE") for r in zenodo.requests)
    assert len(zenodo.deposition(first.record_id + 1)["files"]) == 3


def test_a_link_to_the_wrong_place_on_the_api_is_refused(zenodo: ZenodoDouble, tmp_path: Path) -> None:
    zenodo.override_deposit_links(bucket=f"{zenodo.api_url}/deposit/depositions/1/actions/publish")
    with pytest.raises(DepositError, match="points the bucket link to an unexpected place"):
        publish(zenodo, *release(tmp_path / "r1", "1"), None)
    assert not any(r.method == "PUT" for r in zenodo.requests)


def test_send_gives_the_token_only_to_its_own_origin_and_follows_no_redirect(zenodo: ZenodoDouble) -> None:
    with HeaderRecorder(b"{}") as elsewhere, HttpClient(per_minute=60_000, token=TOKEN,
                                                        token_url=zenodo.api_url) as http:
        http.send("PUT", f"{elsewhere.url}/api/files/x/y", body=lambda: open(__file__, "rb"))  # noqa: SIM115
        zenodo.fail("/api/deposit/depositions", "redirect", to=f"{elsewhere.url}/moved")
        moved = http.send("POST", f"{zenodo.api_url}/deposit/depositions", json_body={}, idempotent=False)
        assert moved.status_code == 302
        assert [(r.method, r.authorization) for r in elsewhere.requests] == [("PUT", False)]
        assert zenodo.requests[-1].authorization


def test_send_does_not_repeat_a_creation_the_server_may_have_done(zenodo: ZenodoDouble) -> None:
    with HttpClient(per_minute=60_000, token=TOKEN, token_url=zenodo.api_url, retries=3) as http:
        zenodo.fail("/api/deposit/depositions", "502")
        with pytest.raises(Exception, match="HTTP 502") as error:
            http.send("POST", f"{zenodo.api_url}/deposit/depositions", json_body={}, idempotent=False)
        assert error.value.reason == "http_502"
        zenodo.fail("/api/deposit/depositions", "sleepy", headers={"Retry-After": "0"})  # a 429: nothing was done
        created = http.send("POST", f"{zenodo.api_url}/deposit/depositions", json_body={}, idempotent=False)
        assert created.status_code == 201
    assert [r.status for r in zenodo.requests] == [502, 429, 201]

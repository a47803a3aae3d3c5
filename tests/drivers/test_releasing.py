"""Making a release once its records are done (zenodo_hpc/drivers/releasing.py): the release itself, its Zenodo
publication and webhook notice, each kept and tried again when it fails, and the summary line. In-process, on the
debug executor, against the loopback Zenodo double (with its deposit API) and a webhook; Kaggle, whose client must
run in a child process, is in tests/drivers/test_update.py with the whole monthly ``update``."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from doubles import ZenodoDouble, make_zip
from doubles.webhook import Webhook
from helpers import run_config, stdlib_records
from pytest_httpserver import HTTPServer

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, open_run
from zenodo_hpc.dataset.release import list_releases, plan_release, summary_line
from zenodo_hpc.drivers.releasing import notify_release, publish_release, release_now, release_summary, resend_notices
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH")
TOKEN_ENV, TOKEN = "TEST_RELEASING_TOKEN", "d3posit-t0ken-releasing"
IDS = ["301", "302", "303"]


@pytest.fixture
def zenodo() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(tokens=[TOKEN]) as double:
        for i, (top, files) in enumerate(stdlib_records(3, files_per_record=3), 1):
            double.add_record(ZenodoDouble.make_hit(300 + i, created=f"2017-05-{i:02d}", title=top),
                              {f"{top}.zip": make_zip(files)})
        yield double


def config(tmp_path: Path, zenodo: ZenodoDouble, **settings: Any) -> Config:
    """A run against ``zenodo``, with ``settings`` (publish, notify) on top."""
    return config_from_dict({**run_config(tmp_path, zenodo).to_dict(), **settings})


def processed(cfg: Config) -> RunDir:
    """The run of ``cfg``, every record done (debug executor), no release yet."""
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    return run


def on_zenodo(zenodo: ZenodoDouble) -> dict[str, Any]:
    return {"publish": {"zenodo": {"api_url": zenodo.api_url, "token_env": TOKEN_ENV,
                                   "creators": [{"name": "Doe, Jane", "affiliation": "Example University"}]}}}


def sent(server: HTTPServer, webhook: Webhook) -> list[dict[str, Any]]:
    """The bodies ``webhook`` was sent (not those another path of the same server was)."""
    path = urlsplit(webhook.url).path
    return [json.loads(request.get_data()) for request, _ in server.log if request.path == path]


def test_a_release_holds_every_done_record_and_none_follows_while_nothing_changed(tmp_path: Path,
                                                                                  zenodo: ZenodoDouble) -> None:
    cfg = config(tmp_path, zenodo)
    run = processed(cfg)
    release = release_now(run, cfg)
    assert release is not None and sorted(release.records) == IDS and sorted(release.added) == IDS
    assert run.image(release.image).is_file() and release.md5
    assert release.published == {}  # nothing configured: nothing published, nothing failed
    assert [r.version for r in list_releases(run)] == [release.version] and run.feed.is_file()
    assert release_now(run, cfg) is None


def test_a_run_with_no_record_done_has_nothing_to_release(tmp_path: Path, zenodo: ZenodoDouble) -> None:
    cfg = config(tmp_path, zenodo)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    with pytest.raises(UserError, match=r": no record is done yet: nothing to release$"):
        release_now(run, cfg)
    assert list_releases(run) == []


def test_a_failed_publication_is_kept_and_the_next_try_publishes_once(tmp_path: Path, zenodo: ZenodoDouble,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    cfg = config(tmp_path, zenodo, **on_zenodo(zenodo))
    run = processed(cfg)
    with caplog.at_level(logging.WARNING, logger="zenodo_hpc.drivers.releasing"):
        release = release_now(run, cfg)  # no token: Zenodo refuses, the release stands
    assert release is not None
    failed = release.published["zenodo"]
    assert failed["ok"] is False and f"set the environment variable {TOKEN_ENV}" in failed["error"]
    assert "publishing on zenodo failed" in caplog.text and "(the next update tries again)" in caplog.text
    assert list_releases(run)[-1].published == release.published  # kept for the next update
    assert release_summary(run, release).endswith("; zenodo: failed")

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    resend_notices(run, cfg)  # what the next update does first: the latest release's failed publications again
    published = list_releases(run)[-1].published["zenodo"]
    assert published["ok"] is True and published["doi"] and len(zenodo.depositions()) == 1
    release = list_releases(run)[-1]
    assert release_summary(run, release).endswith(f"; zenodo: {published['url'] or published['doi']}")
    publish_release(run, cfg, release, plan_release(run, cfg))  # published already: not again
    resend_notices(run, cfg)
    assert len(zenodo.depositions()) == 1


def test_the_summary_names_the_image_its_md5_and_the_changelog(tmp_path: Path, zenodo: ZenodoDouble) -> None:
    cfg = config(tmp_path, zenodo)
    run = processed(cfg)
    release = release_now(run, cfg)
    assert release is not None
    assert release_summary(run, release) == (f"{summary_line(release)}; image {run.image(release.image)}, md5 "
                                             f"{release.md5}; changelog {run.changelog(release.version)}")


def test_the_notice_names_the_release_and_is_sent_once(tmp_path: Path, zenodo: ZenodoDouble,
                                                       httpserver: HTTPServer) -> None:
    webhook = Webhook(httpserver)
    cfg = config(tmp_path, zenodo, notify={"webhook_url": webhook.url})
    run = processed(cfg)
    release = release_now(run, cfg)
    assert release is not None and release.notified and list_releases(run)[-1].notified
    (body,) = webhook.bodies
    assert body["text"] == summary_line(release)
    assert {k: body["release"][k] for k in ("version", "records", "md5", "doi", "kaggle")} == {
        "version": release.version, "records": 3, "md5": release.md5, "doi": None, "kaggle": None}
    assert notify_release(run, cfg, release) is True and len(webhook.bodies) == 1  # sent already
    resend_notices(run, cfg)
    assert len(webhook.bodies) == 1


def test_a_refused_notice_is_kept_and_sent_by_the_next_update(tmp_path: Path, zenodo: ZenodoDouble,
                                                              httpserver: HTTPServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    webhook = Webhook(httpserver)
    refusing = httpserver.url_for("/hooks/T000/B000/revoked")  # no handler there: HTTP 500
    cfg = config(tmp_path, zenodo, notify={"webhook_url": refusing})
    run = processed(cfg)
    with caplog.at_level(logging.WARNING, logger="zenodo_hpc.drivers.releasing"):
        release = release_now(run, cfg)
    assert release is not None and not release.notified and not list_releases(run)[-1].notified
    assert "notice not sent: the webhook at http://localhost/... answered HTTP 500" in caplog.text
    assert "revoked" not in caplog.text  # the URL's secret path is not logged
    assert sent(httpserver, webhook) == []
    fixed = config_from_dict({**cfg.to_dict(), "notify": {"webhook_url": webhook.url}})
    resend_notices(run, fixed)
    assert [b["release"]["version"] for b in sent(httpserver, webhook)] == [release.version]
    assert list_releases(run)[-1].notified

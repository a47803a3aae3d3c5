"""The other origin (tests/doubles/elsewhere.py): ``HeaderRecorder`` records whether a token reached it."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import urlsplit

import requests
from doubles import HeaderRecorder
from helpers import DOUBLE_TOKEN as TOKEN
from helpers import http_get as get

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_header_recorder_is_another_origin_that_records_authorization() -> None:
    with HeaderRecorder() as recorder:
        assert urlsplit(recorder.url).hostname == "127.0.0.1"
        plain = get(f"{recorder.url}/any/path/x.zip")
        assert zipfile.ZipFile(io.BytesIO(plain.content)).namelist() == ["elsewhere/README.md"]
        assert not recorder.authorization_seen
        get(f"{recorder.url}/other", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/zip"})
        assert recorder.authorization_seen
        assert [(r.path, r.authorization, r.accept) for r in recorder.requests][1] == (
            "/other", True, "application/zip")
        assert TOKEN not in repr(recorder.requests)


def test_the_header_recorder_records_uploads_too() -> None:
    with HeaderRecorder(b"{}") as recorder:
        requests.put(f"{recorder.url}/files/x/a.bin", data=b"abc", headers=AUTH, timeout=5)
        requests.post(f"{recorder.url}/actions/publish", timeout=5)
        requests.delete(f"{recorder.url}/files/x/a.bin", timeout=5)
    assert [(r.method, r.path, r.authorization) for r in recorder.requests] == [
        ("PUT", "/files/x/a.bin", True), ("POST", "/actions/publish", False), ("DELETE", "/files/x/a.bin", False)]

"""Fetch and process records from the Zenodo and codeload doubles: good, GitHub fallback, and broken ones."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from doubles import HeaderRecorder, ZenodoDouble, make_zip
from helpers import stdlib_package

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.records import parse_md5
from zenodo_hpc.core.state import RunDir, append_records, ids_in, open_run, read_failure
from zenodo_hpc.dataset.load import load_images, load_metadata
from zenodo_hpc.orchestrate.worker import make_client, process_record, process_records
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.zenodo.client import HttpClient
from zenodo_hpc.zenodo.fetch import FetchAllResult, fetch_all, github_source, zenodo_archives

JSON_FILES = {p.name: p.read_bytes() for p in sorted(stdlib_package("json").glob("*.py"))}


def test_fetch_fails_only_when_everything_it_tried_failed() -> None:
    """``zenodo-hpc fetch`` exits 1 when no archive is there for the workers: all it tried failed, none was cached."""
    assert FetchAllResult(failed={"http_404": 2}).everything_failed
    assert not FetchAllResult(cached=1, failed={"http_404": 2}).everything_failed
    assert not FetchAllResult(already=1, failed={"http_404": 1}).everything_failed
    assert not FetchAllResult().everything_failed


def repo_zip(top: str) -> bytes:
    return make_zip({f"{top}/{name}": data for name, data in JSON_FILES.items()})


def repo_tar_gz(top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in JSON_FILES.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble() as zenodo:
        yield zenodo


def make_cfg(tmp_path: Path, double: ZenodoDouble, **fetch: object) -> Config:
    return config_from_dict({
        "run": {"scratch": str(tmp_path), "name": "run"},
        "zenodo": {"api_url": double.api_url, "rate_limit_per_min": 60_000, "rate_limit_per_hour": 3_600_000,
                   "retries": 2},
        "github": {"codeload_url": double.codeload_url},
        "fetch": {"attempts": 2, **fetch},
    })


def add(double: ZenodoDouble, record_id: int, files: dict[str, bytes] | None = None, *,
        github: tuple[str, str, str] | None = None, legacy: bool = False,
        checksums: dict[str, str] | None = None) -> dict:
    return double.add_record(ZenodoDouble.make_hit(record_id, created="2019-01-01", github=github), files,
                             legacy=legacy, checksums=checksums)


def test_a_mix_of_good_fallback_and_broken_records(tmp_path: Path, double: ZenodoDouble) -> None:
    good = add(double, 1, {"owner/json-v1.0.zip": repo_zip("owner-json-abc1234")})
    legacy = add(double, 2, {"json-2.0.tar.gz": repo_tar_gz("json-2.0")}, legacy=True)
    double.add_codeload("owner", "gh", "v3.0", repo_zip("gh-v3.0"))
    fallback = add(double, 3, github=("owner", "gh", "v3.0"))  # no files: the release tag from GitHub
    double.add_codeload("owner", "gh4", "v4", repo_zip("gh4-v4"))
    broken_then_github = add(double, 4, {"x.zip": repo_zip("x")}, github=("owner", "gh4", "v4"))
    double.fail("/api/records/4/files/x.zip/content", "404", times=50)
    no_archive = add(double, 5, {"paper.pdf": b"%PDF-1.4", "figure.png": b"\x89PNG"})
    mismatch = add(double, 6, {"m.zip": repo_zip("m")}, checksums={"m.zip": "md5:" + "0" * 32})
    gone = add(double, 7, {"g.zip": repo_zip("g")})
    double.fail("/api/records/7/files/g.zip/content", "404", times=50)
    not_archive = add(double, 8, {"fake.zip": b"<html>this is no zip</html>"})
    looping = add(double, 9, {"l.zip": repo_zip("l")})
    double.fail("/api/records/9/files/l.zip/content", "redirect_loop")
    flaky = add(double, 10, {"f.zip": repo_zip("f")})
    double.fail("/api/records/10/files/f.zip/content", "503", times=2)
    double.fail("/api/records/10/files/f.zip/content", "truncate", times=1)

    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    hits = [good, legacy, fallback, broken_then_github, no_archive, mismatch, gone, not_archive, looping, flaky]
    outcomes = {o.record_id: o for o in process_records(hits, run, cfg)}

    assert {k for k, o in outcomes.items() if o.status == "done"} == {"1", "2", "3", "4", "10"}
    assert ids_in(run, "done") == {"1", "2", "3", "4", "10"}
    reasons = {k: read_failure(run, k).reason for k in ("5", "6", "7", "8", "9")}
    assert reasons == {"5": "no_archive", "6": "checksum_mismatch", "7": "http_404", "8": "bad_archive",
                       "9": "redirect_loop"}
    assert not (run.data / "5").exists() and not (run.data / "6").exists()

    images = load_images(run.data / "1")
    for name, data in JSON_FILES.items():
        if len(data) <= 100_000:
            np.testing.assert_array_equal(images[f"owner-json-abc1234/{name}"], rasterize(data))
    assert "json-2.0/decoder.py" in load_images(run.data / "2")
    meta3 = load_metadata(run.data / "3")
    assert meta3["source"]["kind"] == "github" and meta3["source"]["fallback_reason"] == "no_files"
    assert meta3["source"]["url"].endswith("/owner/gh/zip/refs/tags/v3.0")
    assert meta3["hit"]["id"] == 3
    meta4 = load_metadata(run.data / "4")
    assert meta4["source"]["kind"] == "github" and meta4["source"]["fallback_reason"] == "http_404"
    meta1 = load_metadata(run.data / "1")
    assert meta1["source"]["archives"][0]["checksum"] == "verified"
    assert meta1["source"]["archives"][0]["md5"] == good["files"][0]["checksum"].removeprefix("md5:")


def test_several_archives_are_all_kept_under_their_names(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 11, {"v1.zip": repo_zip("pkg"), "v1.tar.gz": repo_tar_gz("pkg"), "notes.txt": b"x"})
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    assert process_record(record, run, cfg, _client(cfg)).status == "done"
    keys = set(load_images(run.data / "11"))
    assert "v1.zip/pkg/decoder.py" in keys and "v1.tar.gz/pkg/decoder.py" in keys
    assert [a["name"] for a in load_metadata(run.data / "11")["source"]["archives"]] == ["v1.tar.gz", "v1.zip"]


def _client(cfg: Config) -> HttpClient | None:
    return make_client(cfg)


def test_download_over_the_size_cap_is_too_large(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 12, {"big.zip": repo_zip("big")})
    cfg = make_cfg(tmp_path, double, max_bytes=1000)
    run = open_run(cfg)
    outcome = process_record(record, run, cfg, _client(cfg))
    assert outcome.status == "quarantined" and outcome.reason == "too_large"  # the same next time: at once
    lying = dict(record, files=[dict(record["files"][0], size=10)])  # the record understates the size
    run2 = RunDir(tmp_path / "other")
    open_run(config_from_dict({**cfg.to_dict(), "run": {"scratch": str(tmp_path), "name": "other"}}))
    assert process_record(lying, run2, cfg, _client(cfg)).reason == "too_large"


def test_repeated_failures_quarantine_the_record(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 13, {"q.zip": repo_zip("q")})
    double.fail("/api/records/13/files/q.zip/content", "503", times=100)  # transient: retried, then a round
    cfg = config_from_dict({**make_cfg(tmp_path, double).to_dict(), "executor": {"max_attempts": 2}})
    run = open_run(cfg)
    client = _client(cfg)
    assert process_record(record, run, cfg, client).status == "failed"
    assert process_record(record, run, cfg, client).status == "quarantined"
    assert read_failure(run, "13").quarantined is True
    before = len(double.requests)
    assert process_record(record, run, cfg, client).status == "quarantined"
    assert len(double.requests) == before  # never tried again


def test_fetch_first_then_process_offline(tmp_path: Path) -> None:
    with ZenodoDouble() as double:
        records = [add(double, 20 + i, {f"r{i}.zip": repo_zip(f"r{i}")}) for i in range(3)]
        missing = add(double, 30, {"m.zip": repo_zip("m")})
        double.fail("/api/records/30/files/m.zip/content", "404", times=50)
        cfg = make_cfg(tmp_path, double, cache=True)
        run = open_run(cfg)
        append_records(run.records, [*records, missing])
        result = fetch_all(run, cfg, progress=False)
        assert result.cached == 3 and result.failed == {"http_404": 1}
        assert fetch_all(run, cfg, progress=False).already == 3  # nothing downloaded twice
    # the double is gone: no network at all from here on
    offline = config_from_dict({**cfg.to_dict(), "fetch": {**cfg.to_dict()["fetch"], "offline": True}})
    outcomes = process_records([*records, missing], run, offline)
    assert [o.status for o in outcomes] == ["done", "done", "done", "quarantined"]
    assert outcomes[-1].reason == "http_404"  # the real reason, not just "not cached"


def test_record_shapes_old_and_new(double: ZenodoDouble) -> None:
    new = add(double, 40, {"a.zip": b"1", "b.txt": b"2", "c.tar.gz": b"3"})
    old = add(double, 41, {"a.zip": b"1"}, legacy=True)
    assert [s.name for s in zenodo_archives(new)] == ["a.zip", "c.tar.gz"]
    (source,) = zenodo_archives(old)
    assert source.md5 == parse_md5(old["files"][0]["checksum"]) and "/files/" in source.url
    assert parse_md5("MD5:" + "A" * 32) == "a" * 32 and parse_md5("sha256:00") is None and parse_md5(None) is None
    assert zenodo_archives({"id": 1}) == []
    hit_ = ZenodoDouble.make_hit(42, created="2019-01-01", github=("o", "r", "v1.2"))
    assert github_source(hit_, "https://codeload.github.com").url == \
        "https://codeload.github.com/o/r/zip/refs/tags/v1.2"
    assert github_source(ZenodoDouble.make_hit(43, created="2019-01-01"), "x") is None


# --- the real service's shapes, and what a hostile answer may not do ------------------------------------


def outside_files(root: Path) -> set[str]:
    """Every path under ``root`` (to show that nothing appeared outside a run directory)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_token_never_leaves_the_api_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZENODO_TOKEN", "s3cret-token")
    served_elsewhere = repo_zip("b")  # what the other origin serves at any path
    with ZenodoDouble(tokens=["s3cret-token"]) as double, HeaderRecorder(served_elsewhere) as elsewhere:
        on_zenodo = add(double, 60, {"a.zip": repo_zip("a")})
        linked_away = double.add_record(ZenodoDouble.make_hit(61, created="2019-01-01"),
                                        {"b.zip": served_elsewhere}, file_links={"b.zip": f"{elsewhere.url}/b.zip"})
        redirected = add(double, 62, {"c.zip": served_elsewhere})
        double.fail("/api/records/62/files/c.zip/content", "redirect", to=f"{elsewhere.url}/c.zip")
        on_github = add(double, 63, github=("owner", "gh", "v1"))
        cfg = config_from_dict({**make_cfg(tmp_path, double).to_dict(), "github": {"codeload_url": elsewhere.url}})
        run = open_run(cfg)
        outcomes = process_records([on_zenodo, linked_away, redirected, on_github], run, cfg)
        assert [o.status for o in outcomes] == ["done"] * 4
        assert {r.path for r in elsewhere.requests} == {"/b.zip", "/c.zip", "/owner/gh/zip/refs/tags/v1"}
        assert not elsewhere.authorization_seen  # not on a link, not after a redirect, not to GitHub
        assert all(r.authenticated for r in double.requests)  # while every request home carried it
    for path in run.root.rglob("*"):
        if path.is_file():
            assert b"s3cret-token" not in path.read_bytes(), path


def test_restricted_records_are_fetched_from_nowhere(tmp_path: Path, double: ZenodoDouble) -> None:
    double.add_codeload("owner", "secret", "v1", repo_zip("secret-v1"))
    hits = [double.add_record(ZenodoDouble.make_hit(70 + i, created="2019-01-01", access_right=access,
                                                    github=("owner", "secret", "v1")), {"code.zip": repo_zip("s")})
            for i, access in enumerate(("restricted", "embargoed", "closed"))]
    assert all(hit["files"] == [] for hit in hits)  # as Zenodo serves them
    native = dict(ZenodoDouble.make_hit(73, created="2019-01-01", github=("owner", "secret", "v1")),
                  access={"record": "public", "files": "restricted"})
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    double.reset_log()
    outcomes = process_records([*hits, native], run, cfg)
    assert [(o.status, o.reason) for o in outcomes] == [("quarantined", "restricted")] * 4
    assert double.requests == []  # nothing downloaded, GitHub included
    assert read_failure(run, "70").quarantined and read_failure(run, "70").attempts == 1
    assert process_record(hits[0], run, cfg, make_client(cfg)).status == "quarantined"
    assert double.requests == []  # and never tried again


def test_loose_files_are_rasterized_and_binaries_not_downloaded(tmp_path: Path, double: ZenodoDouble) -> None:
    analysis, model = b"import numpy\nprint(numpy.pi)\n", b"fit <- lm(y ~ x)\nsummary(fit)\n"
    record = add(double, 80, {"analysis.py": analysis, "src/model.R": model, "paper.pdf": b"%PDF-1.4\n" * 100,
                              "Figure.PNG": b"\x89PNG" * 10, "data.csv": b"a,b\n" * 40_000,
                              "notes.bin.txt": b"\x00\x01binary"})
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    double.reset_log()
    assert process_record(record, run, cfg, make_client(cfg)).status == "done"
    images = load_images(run.data / "80")
    assert set(images) == {"analysis.py", "src/model.R"}
    np.testing.assert_array_equal(images["src/model.R"], rasterize(model))
    tree = load_metadata(run.data / "80")["tree"]["children"]
    assert tree["paper.pdf"]["skipped"] == "binary_type" and tree["Figure.PNG"]["skipped"] == "binary_type"
    assert tree["data.csv"]["skipped"] == "too_large"  # declared 160,000 bytes: not downloaded either
    assert tree["notes.bin.txt"]["skipped"] == "binary"  # downloaded, then judged by its content
    fetched = {r.path.rsplit("/files/", 1)[1] for r in double.requests}
    assert fetched == {"analysis.py/content", "src/model.R/content", "notes.bin.txt/content"}


def test_a_record_with_nothing_to_rasterize_fails_no_archive(tmp_path: Path, double: ZenodoDouble) -> None:
    ipbes = dict(ZenodoDouble.make_hit(81, created="2019-01-01", related=[{
        "identifier": "https://github.com/IPBES-Data/IPBES_LOD/tree/main/Global%20Assessment%201",
        "relation": "isIdenticalTo", "scheme": "url"}]))
    record = double.add_record(ipbes, {"paper.pdf": b"%PDF"})
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    double.reset_log()
    outcome = process_record(record, run, cfg, make_client(cfg))
    assert outcome.reason == "no_archive"
    assert "paper.pdf (binary_type)" in outcome.message and ".zenodo.json" in outcome.message
    assert double.requests == []  # neither the PDF nor the branch was fetched


@pytest.mark.parametrize("shape", ["legacy", "2023", "native"])
def test_every_shape_downloads_the_content(tmp_path: Path, double: ZenodoDouble, shape: str) -> None:
    record = double.add_record(ZenodoDouble.make_hit(90, created="2019-01-01"), {"pkg.zip": repo_zip("pkg")},
                               shape=shape)
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    double.reset_log()
    assert process_record(record, run, cfg, make_client(cfg)).status == "done"
    assert len(double.requests) == 1 and double.requests[0].status == 200  # one download, never the metadata
    assert load_metadata(run.data / "90")["source"]["archives"][0]["checksum"] == "verified"
    assert "pkg/decoder.py" in load_images(run.data / "90")


def test_keys_that_look_alike_never_overwrite_each_other(tmp_path: Path, double: ZenodoDouble) -> None:
    first, second = make_zip({"one/a.py": b"first = 1\n"}), make_zip({"one/a.py": b"second = 2\n"})
    record = add(double, 91, {"x/y.zip": first, "x_y.zip": second})
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    assert process_record(record, run, cfg, make_client(cfg)).status == "done"
    images = load_images(run.data / "91")
    np.testing.assert_array_equal(images["x/y.zip/one/a.py"], rasterize(b"first = 1\n"))
    np.testing.assert_array_equal(images["x_y.zip/one/a.py"], rasterize(b"second = 2\n"))
    archives = load_metadata(run.data / "91")["source"]["archives"]
    assert [a["checksum"] for a in archives] == ["verified", "verified"]


def test_hostile_ids_and_fields_cost_only_their_own_record(tmp_path: Path, double: ZenodoDouble) -> None:
    good = [add(double, 100 + i, {f"g{i}.zip": repo_zip(f"g{i}")}) for i in range(2)]
    hostile = [{"id": bad, "metadata": {}, "files": [{"key": "x.zip", "links": {"self": good[0]["files"][0]["links"]
                                                                                ["self"]}}]}
               for bad in ("../../x", "/tmp/abs", "1/../../x", "abc$", "9" * 300)]
    hostile += [{"id": 110, "metadata": "a string"}, {"id": 111, "files": [{"key": "a.zip", "size": float("inf")}]}]
    links = double.add_record(ZenodoDouble.make_hit(112, created="2019-01-01"),
                              {"a.zip": b"1", "b.zip": b"2", "c.zip": b"3"},
                              file_links={"a.zip": "file:///etc/passwd", "b.zip": "relative/b.zip",
                                          "c.zip": "http://[invalid"})
    cfg = make_cfg(tmp_path / "runs", double)
    run = open_run(cfg)
    before = outside_files(tmp_path)
    append_records(run.records, [good[0], *hostile, links, good[1]])
    outcomes = process_records([good[0], *hostile, links, good[1]], run, cfg)
    assert [o.status for o in outcomes] == ["done"] + ["invalid"] * 7 + ["quarantined", "done"]
    assert outcomes[8].reason == "bad_link"
    created = outside_files(tmp_path) - before
    assert all(path.startswith("runs/run/") for path in created), sorted(created)
    assert ids_in(run, "done") == {"100", "101"} and ids_in(run, "failed") == {"112"}
    # the plan leaves them out, so a shard never stops on them
    from zenodo_hpc.orchestrate.plan import scan_records
    assert [ref.id for ref in scan_records(run.records)] == ["100", "112", "101"]
    assert fetch_all(run, cfg, progress=False).failed == {"bad_link": 1}


def test_a_slow_server_is_cut_off_at_the_deadline(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 120, {"slow.zip": repo_zip("slow")})
    double.fail("/api/records/120/files/slow.zip/content", "trickle", times=5, seconds=0.5)
    cfg = make_cfg(tmp_path, double, deadline_s=2, attempts=1)
    run = open_run(cfg)
    outcome = process_record(record, run, cfg, make_client(cfg))
    assert outcome.reason == "timeout" and "fetch.deadline_s (2 s" in outcome.message


def _bytes_arrived(message: str) -> int:
    match = re.search(r"(\d+) bytes arrived|no data within fetch\.timeout_s after (\d+) bytes", message)
    assert match, message
    return int(match.group(1) or match.group(2))


def test_a_slowloris_is_cut_off_counting_every_byte_it_sent(tmp_path: Path, double: ZenodoDouble) -> None:
    """One byte every 0.3 s: the deadline cuts it, and the message says how much came (it said 0: the bytes of a
    chunk not yet whole were lost with the cut read)."""
    record = add(double, 122, {"slow.zip": repo_zip("slow")})
    double.fail("/api/records/122/files/slow.zip/content", "trickle", times=1, seconds=0.3)
    cfg = make_cfg(tmp_path, double, deadline_s=1.5, attempts=1)
    outcome = process_record(record, open_run(cfg), cfg, make_client(cfg))
    assert outcome.reason == "timeout" and "fetch.deadline_s (1.5 s;" in outcome.message
    sent = [r for r in double.requests if r.path.endswith("/122/files/slow.zip/content")]
    assert len(sent) == 1 and _bytes_arrived(outcome.message) >= 1  # the first byte is sent at once


def test_a_hang_is_a_timeout_that_says_how_much_came(tmp_path: Path, double: ZenodoDouble) -> None:
    """A server that sends a byte and then nothing: a read time-out, named so, not 'cut short after 0 bytes'."""
    record = add(double, 123, {"hang.zip": repo_zip("hang")})
    double.fail("/api/records/123/files/hang.zip/content", "trickle", times=1, seconds=600)
    cfg = make_cfg(tmp_path, double, timeout_s=0.5, attempts=1)
    outcome = process_record(record, open_run(cfg), cfg, make_client(cfg))
    assert outcome.reason == "timeout" and "cut short" not in outcome.message
    assert "no data within fetch.timeout_s after 1 bytes: the server stopped sending" in outcome.message


def test_the_deadline_cuts_the_connection_and_leaves_closing_to_the_reader(double: ZenodoDouble) -> None:
    """The timer shuts the socket down (the blocked read wakes with the end of the stream) but does not close the
    response from its own thread: http.client's close racing with a read in progress made the read fail with an
    AttributeError, and the record end as an 'error' instead of 'timeout' (seen on a busy CI machine)."""
    import requests

    from zenodo_hpc.zenodo.fetch import _Deadline

    add(double, 121, {"slow.zip": repo_zip("slow")})
    double.fail("/api/records/121/files/slow.zip/content", "trickle", times=1, seconds=0.5)
    response = requests.get(f"{double.api_url}/records/121/files/slow.zip/content", stream=True, timeout=30)
    with response, _Deadline(response, 0.2) as deadline:
        deadline._timer.join(30)  # the timer thread has fired and done all it does
        assert deadline.expired
        assert response.raw._fp.fp is not None  # still open: only the reading thread closes it
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # the read ends: the socket was shut down
            b"".join(response.iter_content(1024))


@pytest.mark.parametrize("headers", [{"Retry-After": "1000000000"}, {"Retry-After": "Thu, 01 Jan 2099 00:00:00 GMT"},
                                     {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4102444800"}])
def test_a_server_asking_for_a_long_wait_fails_the_record_at_once(tmp_path: Path, double: ZenodoDouble,
                                                                  headers: dict[str, str]) -> None:
    records = [add(double, 130 + i, {f"w{i}.zip": repo_zip(f"w{i}")}) for i in range(2)]
    status = 200 if "X-RateLimit-Reset" in headers else 429
    double.fail("/api/records/130/files/w0.zip/content", "sleepy", headers=headers, status=status)
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    outcomes = process_records(records, run, cfg)
    if status == 429:  # the answer itself asks for the wait: this record fails, not counted against it
        assert outcomes[0].reason == "rate_limited" and "zenodo.max_wait_s" in outcomes[0].message
        assert read_failure(run, "130").attempts == 0
    else:  # the quota is gone until 2100: the next request is refused before it is sent
        assert outcomes[0].status == "done" and outcomes[1].reason == "rate_limited"


def test_what_no_retry_can_change_is_quarantined_at_once(tmp_path: Path, double: ZenodoDouble) -> None:
    gone = add(double, 140, {"g.zip": repo_zip("g")})
    double.fail("/api/records/140/files/g.zip/content", "404", times=10)
    not_an_archive = add(double, 141, {"page.zip": b"<html>Service unavailable</html>"})
    nothing = add(double, 142, {"paper.pdf": b"%PDF"})
    flaky = add(double, 143, {"f.zip": repo_zip("f")})
    double.fail("/api/records/143/files/f.zip/content", "503", times=10)
    cfg = config_from_dict({**make_cfg(tmp_path, double).to_dict(), "zenodo": {
        "api_url": double.api_url, "rate_limit_per_min": 60_000, "rate_limit_per_hour": 3_600_000, "retries": 0}})
    run = open_run(cfg)
    outcomes = {o.record_id: (o.status, o.reason) for o in process_records([gone, not_an_archive, nothing, flaky],
                                                                           run, cfg)}
    assert outcomes == {"140": ("quarantined", "http_404"), "141": ("quarantined", "bad_archive"),
                        "142": ("quarantined", "no_archive"), "143": ("failed", "http_503")}
    assert all(read_failure(run, i).attempts == 1 for i in ("140", "141", "142"))

"""`zenodo-hpc report`: one self-contained HTML page of figures about a run and its dataset.

The demo run's report is opened in headless Chromium, driven through the DevTools protocol: the page must
load nothing but itself and its ``data:`` images, show every figure (drawn, not blank) and log no error.
Runs in progress and runs with failures are reported too, with and without SLURM accounting (a stand-in
``sacct`` printing output recorded on the dev cluster).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_config, stdlib_records

from zenodo_hpc.cli import main
from zenodo_hpc.core.state import RunDir

pytest.importorskip("matplotlib", reason="matplotlib not installed (python -m pip install 'matplotlib>=3.6')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-port=0"]
RUN_FIGURES = {"records", "rounds", "tasks", "throughput", "budget"}
DATASET_FIGURES = {"extensions", "segments", "skipped", "licenses", "years", "largest"}
RECORDED_SACCT = Path(__file__).parents[1] / "data" / "sacct_oom_22.05.txt"
CAT = shutil.which("cat") or "/bin/cat"  # resolved before a test narrows PATH to its stand-ins
needs_mksquashfs = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                      reason="mksquashfs not on PATH (apt-get install squashfs-tools)")


# --- headless Chromium through the DevTools protocol ------------------------------------------------------


class DevTools:
    """A minimal DevTools-protocol client over one websocket: commands in order, events kept."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, deadline: float) -> None:
        while not any(e.get("method") == method for e in self.events):
            assert time.monotonic() < deadline, f"Chromium sent no {method}"
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        self.ws.close()


def _devtools_port(profile: Path, proc: subprocess.Popen, log: Path, deadline: float) -> int:
    """The port Chromium chose (``--remote-debugging-port=0`` writes it into the profile's DevToolsActivePort)."""
    active = profile / "DevToolsActivePort"
    while not (active.exists() and active.read_text().strip()):
        assert proc.poll() is None, f"chromium exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}"
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.1)
    return int(active.read_text().split()[0])


# Each image that is a figure: decoded, its size, its size on the page, and the share of pixels that are not
# white (a figure that is drawn, not an empty frame). Evaluated by DevTools, which the page's CSP does not bind.
INSPECT = """JSON.stringify(Array.from(document.querySelectorAll('img[data-figure]')).map(img => {
  let ink = 0;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (img.complete && img.naturalWidth) {
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245) ink++;
  }
  const r = img.getBoundingClientRect();
  return {figure: img.dataset.figure, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
          shown: r.width * r.height, ink: ink / Math.max(1, c.width * c.height)};
}))"""


def open_in_chromium(page: Path, profile: Path) -> dict[str, Any]:
    """Load ``page`` in headless Chromium; what it requested, what it logged as errors, and its figures."""
    assert CHROMIUM is not None
    profile.mkdir()
    log = profile.parent / f"{profile.name}.log"  # chromium's own messages (a pipe nobody reads could fill up)
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 60  # a guard against a hang, not a measure
    try:
        port = _devtools_port(profile, proc, log, deadline)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        while True:
            targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            assert time.monotonic() < deadline, "chromium opened no page"
            time.sleep(0.1)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Network", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.events.clear()
            url = page.resolve().as_uri()
            tools.call("Page.navigate", url=url)
            tools.wait_for("Page.loadEventFired", deadline)
            time.sleep(0.5)  # late console messages, if any, arrive now
            figures = json.loads(tools.call("Runtime.evaluate", expression=INSPECT, returnByValue=True)
                                 ["result"]["value"])
            tools.call("Runtime.evaluate", expression="1")  # collects the events sent meanwhile
        finally:
            tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    requests = [e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"]
    errors = [e["params"] for e in tools.events
              if e.get("method") == "Runtime.exceptionThrown"
              or e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert")
              or e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"]
    return {"url": url, "requests": requests, "errors": errors, "figures": figures}


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not on PATH (apt-get install chromium)")


@needs_chromium
def test_the_browser_check_sees_external_loads_and_console_errors(tmp_path: Path) -> None:
    """The check itself can fail: a page that loads from the network and logs an error is caught."""
    pytest.importorskip("websocket", reason="websocket-client not installed (pip install -e '.[test]' in the clone)")
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                   '<img data-figure="x" src="http://192.0.2.1/x.png"><script>console.error("boom")</script>'
                   "</body></html>")
    seen = open_in_chromium(bad, tmp_path / "profile")
    assert any(u.startswith("http://192.0.2.1/") for u in seen["requests"])
    assert any("boom" in json.dumps(e) for e in seen["errors"])
    assert seen["figures"] and seen["figures"][0]["width"] == 0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from zenodo_hpc.demo.demo import run_demo

    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs not on PATH (apt-get install squashfs-tools): the demo packs an image")
    result = run_demo(tmp_path_factory.mktemp("demo") / "demo", executor="local", progress=False)
    yield result.run_dir


@needs_mksquashfs
@needs_chromium
def test_the_demo_report_shows_every_figure_loads_nothing_and_logs_no_error(
        demo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("websocket", reason="websocket-client not installed (pip install -e '.[test]' in the clone)")
    page = tmp_path / "report.html"
    capsys.readouterr()
    assert main(["report", str(demo_run), "--out", str(page)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"report: {page}") and "28 of 30 records done" in line, line
    assert "nothing to show" not in line, line
    seen = open_in_chromium(page, tmp_path / "profile")
    assert all(u == seen["url"] or u.startswith("data:") for u in seen["requests"]), seen["requests"]
    assert seen["errors"] == []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for figure in seen["figures"]:
        by_name.setdefault(figure["figure"], []).append(figure)
    assert set(by_name) == RUN_FIGURES | DATASET_FIGURES | {"gallery"}  # no releases: the demo has none
    for name, shown in by_name.items():
        for figure in shown:
            assert figure["complete"] and figure["width"] > 0 and figure["height"] > 0, (name, figure)
            assert figure["shown"] > 0, (name, figure)
            assert figure["ink"] > 0.005, (name, figure)  # drawn, not a blank frame
    assert len(by_name["gallery"]) >= 4  # a few code images per language: py, h, txt, html at least
    assert {f["width"] for f in by_name["gallery"]} == {80}  # the export's own 80x80 PNGs
    html = page.read_text()
    assert "http://" not in html.replace('http://www.w3.org', '') and "https://" not in html
    assert "Complete: every record is done or quarantined." in html
    assert "no_archive" in html and "restricted" in html


@needs_mksquashfs
def test_gallery_images_are_the_exports_pngs(demo_run: Path, tmp_path: Path) -> None:
    """The sample code images are byte for byte the PNGs `organize` writes for the same image."""
    from zenodo_hpc.dataset.load import load_images
    from zenodo_hpc.dataset.png import encode

    page = tmp_path / "report.html"
    assert main(["report", str(demo_run), "--out", str(page), "--png", "palette"]) == 0
    html = page.read_text()
    found = re.findall(r'data-figure="gallery"[^>]*title="record (\d+): ([^"]+), first image" '
                       r'src="data:image/png;base64,([^"]+)"', html)
    assert found
    for record_id, path, data in found:
        images = load_images(demo_run / "data" / record_id)[path]
        assert base64.b64decode(data) == encode(images[0], "palette")


# --- runs in progress, failures, accounting ---------------------------------------------------------------


def _stand_ins(folder: Path, *, sacct: bool) -> str:
    """A PATH with `squeue` (nothing queued) and, when asked, `sacct` printing the recorded output."""
    folder.mkdir()
    (folder / "squeue").write_text("#!/bin/sh\nexit 0\n")
    if sacct:
        lines = [line for line in RECORDED_SACCT.read_text().splitlines() if not line.startswith("#")]
        (folder / "sacct.txt").write_text("\n".join(lines) + "\n")
        (folder / "sacct").write_text(f"#!/bin/sh\nexec {CAT} {folder / 'sacct.txt'}\n")
    for script in folder.iterdir():
        script.chmod(0o755)
    return str(folder)


def _figures_in(html: str) -> dict[str, tuple[int, int]]:
    """Figure name -> (width, height) of each PNG in the page, read from the PNG itself."""
    out = {}
    for name, data in re.findall(r'<img class="plot" data-figure="([a-z]+)"[^>]*src="data:image/png;base64,([^"]+)"',
                                 html):
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        out[name] = struct.unpack(">II", png[16:24])
    return out


def _tile(html: str, label: str) -> int:
    match = re.search(rf"<b>([\d,]+)</b>{label}</div>", html)
    assert match, label
    return int(match.group(1).replace(",", ""))


def test_report_of_a_run_in_progress_with_failures(tmp_path: Path, zenodo_with_records,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    import requests
    from doubles import ZenodoDouble, make_zip

    from zenodo_hpc.orchestrate.executor import Submission, save_submission
    from zenodo_hpc.orchestrate.plan import Plan, Shard, scan_records, write_plan
    from zenodo_hpc.report import build_report

    double = zenodo_with_records
    hits = {h["id"]: h for h in requests.get(f"{double.api_url}/records", params={"size": 25}).json()["hits"]["hits"]}
    double.fail(f"/api/records/103/files/{hits[103]['files'][0]['key']}/content", "503", times=1000)
    double.fail(f"/api/records/110/files/{hits[110]['files'][0]['key']}/content", "404", times=1000)
    cfg = run_config(tmp_path, double, max_attempts=3)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    run = RunDir(cfg.run_dir)
    monkeypatch.setenv("PATH", _stand_ins(tmp_path / "no-sacct", sacct=False))  # SLURM without accounting here

    # harvested, nothing run yet: every figure about the data waits for its records
    assert main(["harvest", "-c", str(config)]) == 0
    early = build_report(run.root)
    assert early.out == run.root / "report.html" and early.done == 0 and early.records == 12
    html = early.out.read_text()
    assert _tile(html, "pending") == 12 and "No record is done yet" in html
    assert set(_figures_in(html)) == {"records", "years"}
    assert {"extensions", "segments", "licenses", "largest", "throughput", "tasks"} <= set(early.missing)

    # round 1 (local): 10 done, 103 failed (503, tried again), 110 quarantined (404: never again)
    assert main(["submit", "-c", str(config), "--executor", "local"]) == 0
    for i, (top, files) in enumerate(stdlib_records(3, files_per_record=3), 13):  # 3 more harvested since
        double.add_record(ZenodoDouble.make_hit(100 + i, created=f"2017-05-{i:02d}", title=f"new {top}"),
                          {f"{top}.zip": make_zip(files)})
    assert main(["harvest", "-c", str(config), "--since", "2017-05-01"]) == 0
    # round 2 on SLURM: 103 with twice the time, 114 with more memory after an OUT_OF_MEMORY; 115 not planned
    offsets = {ref.id: ref.offset for ref in scan_records(run.records)}
    write_plan(run, Plan(2, [Shard(0, ["103"], [offsets["103"]], time_min=120), Shard(1, ["113"], [offsets["113"]]),
                             Shard(2, ["114"], [offsets["114"]], mem_gb=8)]))
    save_submission(run, Submission(2, "slurm", 3, submitted_at="2026-11-29T10:00:00+0000", arrays=[
        {"job_id": "87", "task_ids": ["87_0", "87_1", "87_10"], "shards": [0, 1, 2],
         "resources": {"mem_gb": 4, "time_min": 60}}]))
    capsys.readouterr()

    assert main(["report", str(run.root)]) == 0
    line = capsys.readouterr().out.strip()
    assert "10 of 15 records done" in line and "without SLURM accounting" in line, line
    html = (run.root / "report.html").read_text()
    assert (_tile(html, "done"), _tile(html, "failed"), _tile(html, "quarantined"), _tile(html, "pending")) == (
        10, 1, 1, 3)
    assert "http_503" in html and "http_404" in html
    assert "4 records left (3 pending, 1 failed that a resume tries again)" in html
    assert "no sacct on this machine" in html  # the page says why memory per task is missing
    figures = _figures_in(html)
    assert set(figures) >= RUN_FIGURES | DATASET_FIGURES and "releases" not in figures
    assert all(w > 0 and h > 0 for w, h in figures.values())
    rounds = re.search(r"<h3>Rounds</h3>\n<table>.*?</table>", html, re.S).group(0)
    assert "time 120 min" in rounds and "memory 8 GB" in rounds  # the escalations of round 2
    assert "http_503 1" in rounds  # why 103 is planned again: its failure in round 1
    assert "Escalated tasks" in html

    # the same run where SLURM accounting answers (sacct output recorded on the dev cluster): memory per task
    monkeypatch.setenv("PATH", _stand_ins(tmp_path / "sacct", sacct=True))
    with_sacct = build_report(run.root, tmp_path / "with-sacct.html")
    assert with_sacct.accounting and with_sacct.missing == []
    html = with_sacct.out.read_text()
    assert 'id="accounting"' not in html and "OUT_OF_MEMORY" in html
    assert "memory up to 0.28 of 4 GB asked" in html  # MaxRSS 293456K of the killed task
    tasks = _figures_in(html)["tasks"]
    assert tasks[0] > _figures_in((run.root / "report.html").read_text())["tasks"][0] * 0.9  # two panels now

    # two releases: records added per release
    for version, ids in (("2026.11.01", ["101", "102"]), ("2026.11.29", ["101", "102", "104", "105"])):
        folder = run.root / "releases" / version
        folder.mkdir(parents=True)
        (folder / "manifest.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
        (folder / "CHANGELOG.md").write_text(f"# {version}\n")
    with_releases = build_report(run.root, tmp_path / "releases.html")
    html = with_releases.out.read_text()
    assert "releases" in _figures_in(html) and '<section id="releases">' in html
    assert re.search(r"<td>2026.11.29</td><td class=\"n\">4</td><td class=\"n\">2</td>", html)


def test_figures_beside_the_dataset_card_are_reproducible(tmp_path: Path, zenodo_with_records) -> None:
    from zenodo_hpc.report import card_markdown, write_report_figures

    cfg = run_config(tmp_path, zenodo_with_records)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["harvest", "-c", str(config)]) == 0
    assert main(["submit", "-c", str(config), "--executor", "local"]) == 0
    run = RunDir(cfg.run_dir)
    folder = run.data / "figures"
    (folder).mkdir()
    (folder / "releases.png").write_bytes(b"stale")  # from an earlier pack, when the run had releases
    written = write_report_figures(run, folder)
    names = [p.stem for p in written]
    assert names == ["records", "extensions", "segments", "skipped", "licenses", "years", "largest", "gallery"]
    assert not (folder / "releases.png").exists()
    first = {p.name: p.read_bytes() for p in written}
    assert all(data.startswith(b"\x89PNG") for data in first.values())
    again = write_report_figures(run, folder)
    assert {p.name: p.read_bytes() for p in again} == first  # the same run: the same bytes
    card = card_markdown(written, run.data)
    assert card.startswith("## Figures\n") and "![Files and code images per extension](figures/extensions.png)" in card

    # `zenodo-hpc pack` hands these figures to the packer: they are in the image, beside the card that links them
    from zenodo_hpc.dataset.image import SquashImage

    assert main(["pack", str(run.root)]) == 0
    with SquashImage(run.root / cfg.pack.image) as image:
        assert sorted(image.listdir("figures")) == sorted(first)
        assert image.read_bytes("figures/extensions.png") == first["extensions.png"]
        card_in_image = image.read_bytes("README.md").decode()
    assert "![Files and code images per extension](figures/extensions.png)" in card_in_image


def test_without_matplotlib_report_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "zenodo-hpc report: error: matplotlib is not installed: python -m pip install 'matplotlib>=3.6'"


def test_report_of_a_folder_that_is_no_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "is not a run directory" in capsys.readouterr().err


def test_report_help_does_not_import_plotting(tmp_path: Path) -> None:
    code = ("import sys; from zenodo_hpc.cli import main\n"
            "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('matplotlib', 'numpy', 'h5py') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "120"}).stdout
    assert "--out FILE" in out and "RUN_DIR" in out
    assert out.strip().splitlines()[-1] == "[]"

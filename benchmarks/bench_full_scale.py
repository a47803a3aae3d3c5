"""A campaign at Zenodo's full scale on this machine: 300,000 software records from the harvest to the image.

Stages, each in a fresh process of its own so that its peak memory (ru_maxrss; the pack's also of its
mksquashfs and unsquashfs children) is its own, on one run directory:

- harvest: 300,000 records through the harvest's windows on ``created``, from a loopback search at full
  speed (every search is counted: at Zenodo's 30 searches a minute the harvest takes searches / 30 minutes),
  with pages of 25 (a guest) and of 100 (a token). The search double answers ``created:[lo TO hi}`` by
  bisection over 300,000 records created like Zenodo's (few in 2014, many in 2025), in Zenodo's answer shape,
  and refuses what Zenodo refuses (pages past 10,000 results, pages over 25 without a token, over 100 with);
- planning: the snapshot of the run (every record's offset and size) and its plan of shards, written;
- (setup, not a stage: every record made done: a folder with a copy of one real tiny record's h5, its own
  metadata JSON and pickle, and a done marker with each file's size and sha256, as a worker writes them)
- status: ``gather_status`` and the lines ``zenodo-hpc status`` prints, cold (records.jsonl read) and warm (a new
  process, records.jsonl unchanged), each followed by the same process's next look (a waiting ``run``'s poll);
- report: the report's collect step (``zenodo_hpc.report.collect.collect``: every done record's metadata read);
- pack: ``pack`` of the 300,000 record folders (900,000 files) with the real mksquashfs, every record checked
  against its done marker before, every file of the image read back and verified after.

Then the campaign's floor on paper: at least one download per record, at Zenodo's hourly budget (guest
2,000 requests an hour, a token 5,000), plus the harvest's searches at 30 a minute.

    python benchmarks/bench_full_scale.py [--records 300000] [--stages harvest plan status report pack] [--dir DIR]
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
import pickle
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from _common import machine_line

STAGES = ("harvest", "plan", "status", "report", "pack")
PER_SHARD = 50
WINDOW = 10_000  # Zenodo's result window
CAPS = {False: 25, True: 100}  # Zenodo's page caps: guest, token
SEARCHES_PER_MIN = 30
BUDGETS = {"guest": 2_000, "token": 5_000}  # requests an hour (developers.zenodo.org, November 2025)
START = datetime(2014, 1, 1, tzinfo=timezone.utc)
END = datetime(2026, 1, 1, tzinfo=timezone.utc)
RANGE = re.compile(r"created:\[(\S+) TO (\S+?)([\]}])")
TOKEN = "bench-token"


# --- the search double ---------------------------------------------------------------------------------------


def creation_times(count: int, rng: random.Random) -> list[datetime]:
    """Creation times growing exponentially over the years, as Zenodo's software records did (bench_harvest)."""
    span = (END - START).total_seconds()
    return sorted(START + timedelta(seconds=span * math.log1p(rng.random() * (math.e ** 4 - 1)) / 4)
                  for _ in range(count))


DESCRIPTION = "<p>A research software release: the code of a paper, its data loaders and its figures.</p> "


def make_hit(record_id: int, created: datetime, rng: random.Random) -> dict[str, Any]:
    """A search hit in Zenodo's shape (the fields the pipeline reads), with a description of varied length.

    The lengths vary as real ones do (the recorded hits in tests/fixtures/zenodo hold descriptions of 29 to 353
    characters, hits of 2.1 to 15.7 KB): mksquashfs looks for duplicates among the files of one size, so record
    folders whose metadata files all had one of 7 sizes made the pack quadratic (1.7% of it in 30 minutes),
    which real records do not."""
    key = f"project-{record_id}-v1.0.zip"
    description = (DESCRIPTION * 400)[:min(20_000, int(rng.lognormvariate(5.7, 1.2)))]
    url = f"https://zenodo.org/api/records/{record_id}/files/{key}/content"
    return {"id": record_id, "conceptrecid": str(record_id - 1), "doi": f"10.5281/zenodo.{record_id}",
            "created": created.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
            "updated": created.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
            "metadata": {"title": f"project {record_id}: a research software release", "description": description,
                         "resource_type": {"type": "software", "title": "Software"},
                         "access_right": "open", "license": {"id": "mit"},
                         "creators": [{"name": "Doe, Jane", "affiliation": "A University"}],
                         "related_identifiers": [{"identifier": f"https://github.com/lab/project-{record_id}/tree/v1.0",
                                                  "relation": "isSupplementTo", "scheme": "url"}]},
            "files": [{"key": key, "size": int(rng.lognormvariate(12, 1.5)), "checksum": "md5:" + "0" * 32,
                       "links": {"self": url}}]}


class SearchIndex:
    """The records sorted by ``created``; a query's window found by bisection, its page served from bytes."""

    def __init__(self, n: int) -> None:
        rng = random.Random(20)
        times = creation_times(n, rng)
        self.keys = [t.strftime("%Y-%m-%dT%H:%M:%S") for t in times]
        self.hits = [json.dumps(make_hit(1_000_000 + i, t, rng), separators=(",", ":")).encode()
                     for i, t in enumerate(times)]
        self.searches = 0
        self.lock = threading.Lock()

    def answer(self, query: dict[str, str], token: bool) -> tuple[int, bytes]:
        with self.lock:
            self.searches += 1
        size, page = int(query.get("size", "10")), int(query.get("page", "1"))
        if size > CAPS[token]:
            return 400, b'{"status": 400, "message": "A validation error occurred."}'
        if (page - 1) * size >= WINDOW:
            return 400, b'{"status": 400, "message": "Invalid querystring parameters."}'
        match = RANGE.search(query.get("q", ""))
        low, high = (match.group(1), match.group(2)) if match else ("*", "*")
        first = 0 if low == "*" else bisect.bisect_left(self.keys, low)
        last = len(self.keys) if high == "*" else bisect.bisect_left(self.keys, high)
        total = max(0, last - first)
        start = first + (page - 1) * size
        page_hits = self.hits[start:min(start + size, last)] if start < last else []
        return 200, (b'{"hits":{"hits":[' + b",".join(page_hits) + b'],"total":' + str(total).encode() + b"}}")


def serve(index: SearchIndex) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait for a delayed ACK

        def do_GET(self) -> None:  # http.server's name
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if parts.path != "/api/records":
                status, body = 404, b'{"status": 404}'
            else:
                status, body = index.answer(query, self.headers.get("Authorization") == f"Bearer {TOKEN}")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # http.server's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the stages (each in its own process) --------------------------------------------------------------------


def config(root: Path, api_url: str = "http://127.0.0.1:9/api", limit: int = 0):
    from zenodo_hpc.core.config import config_from_dict

    return config_from_dict({"run": {"scratch": str(root), "name": "bench"},
                             "zenodo": {"api_url": api_url, "limit": max(limit, 1), "exclude": []},
                             "executor": {"kind": "local", "records_per_shard": PER_SHARD}})


def stage_harvest(root: Path, records: int, api_url: str, token: bool) -> dict[str, Any]:
    from zenodo_hpc.zenodo.client import HttpClient
    from zenodo_hpc.zenodo.harvest import harvest

    cfg = config(root, api_url, records)
    client = HttpClient(per_minute=1e9, token=TOKEN if token else None, token_url=api_url, retries=0)
    started = time.perf_counter()
    result = harvest(cfg, progress=False, client=client)
    return {"seconds": time.perf_counter() - started, "records": result.total, "searches": result.requests,
            "complete": result.complete}


def stage_plan(root: Path) -> dict[str, Any]:
    from zenodo_hpc.core.state import open_run
    from zenodo_hpc.orchestrate.plan import write_plan
    from zenodo_hpc.orchestrate.submit import plan_groups, take_snapshot

    cfg = config(root)
    run = open_run(cfg)
    started = time.perf_counter()
    snapshot = take_snapshot(run, cfg)
    plan, _groups = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    write_plan(run, plan)
    return {"seconds": time.perf_counter() - started, "shards": len(plan.shards),
            "records": sum(len(s.ids) for s in plan.shards)}


def template_record(tmp: Path) -> tuple[bytes, dict[str, Any]]:
    """One real tiny record made by the pipeline: its h5's bytes and its metadata."""
    from zenodo_hpc.core.config import config_from_dict
    from zenodo_hpc.record.process import process_sources
    from zenodo_hpc.record.store import images_h5_name, metadata_json_name

    source = tmp / "template-src" / "project"
    source.mkdir(parents=True)
    (source / "main.py").write_text('def main() -> None:\n    print("hello, Zenodo")\n')
    (source / "README.md").write_text("# project\n\nA research software release.\n")
    written = process_sources("0", [(source.parent, "")], tmp / "template", config_from_dict({}),
                              hit={"id": 0}, source_info={"kind": "zenodo"}).written.folder
    return (written / images_h5_name("0")).read_bytes(), json.loads((written / metadata_json_name("0")).read_text())


def make_done(root: Path) -> dict[str, Any]:
    """Every harvested record done, as a worker leaves it (not a stage: the setup of the next ones)."""
    from zenodo_hpc.core.state import iter_records, open_run
    from zenodo_hpc.orchestrate.executor import Submission, save_submission
    from zenodo_hpc.orchestrate.plan import generations, load_plan
    from zenodo_hpc.record.store import images_h5_name, metadata_json_name, metadata_pkl_name, metadata_to_json

    started = time.perf_counter()
    run = open_run(config(root))
    h5, meta = template_record(root / "template")
    h5_digest = {"size": len(h5), "sha256": hashlib.sha256(h5).hexdigest()}
    finished = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z")
    done_dir = run.state / "done"
    done_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for hit in iter_records(run.records):
        record_id = str(hit["id"])
        folder = run.record_folder(record_id)
        folder.mkdir(parents=True, exist_ok=True)
        record_meta = {**meta, "hit": hit, "source": {"kind": "zenodo", "url": hit["files"][0]["links"]["self"]}}
        files = {images_h5_name(record_id): h5, metadata_json_name(record_id): metadata_to_json(record_meta).encode(),
                 metadata_pkl_name(record_id): pickle.dumps(record_meta, protocol=4)}
        outputs = {}
        for name, data in files.items():
            (folder / name).write_bytes(data)
            outputs[name] = h5_digest if data is h5 else {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        marker = {"id": record_id, "finished": finished, "attempts": 1, "task": "g0001-s00000", "seconds": 1.0,
                  "source": "zenodo", "bytes_written": sum(len(d) for d in files.values()), **meta["stats"],
                  "outputs": dict(sorted(outputs.items()))}
        (done_dir / f"{record_id}.json").write_text(json.dumps(marker, separators=(",", ":")))
        count += 1
    shards = load_plan(run, generations(run)[-1]).shards if generations(run) else []
    save_submission(run, Submission(1, "local", 2, tasks={str(s.index): {"state": "COMPLETED", "exit": 0}
                                                          for s in shards}))
    return {"seconds": time.perf_counter() - started, "records": count}


def stage_status(root: Path, cold: bool) -> dict[str, Any]:
    """One ``status`` (cold: records.jsonl read, its ids kept in state/records.count.json removed first; warm: a
    new process, records.jsonl unchanged), then the same process's next look, as a waiting ``run`` polls."""
    from zenodo_hpc.core.state import RECORDS_COUNT, RunDir
    from zenodo_hpc.orchestrate.status import format_status, gather_status

    run = RunDir(config(root).run_dir)
    if cold:
        (run.state / RECORDS_COUNT).unlink(missing_ok=True)
    started = time.perf_counter()
    lines = format_status(status := gather_status(run))
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    format_status(gather_status(run))
    return {"seconds": seconds, "again_s": time.perf_counter() - started, "done": status.done,
            "first_line": lines.splitlines()[0]}


def stage_report(root: Path) -> dict[str, Any]:
    from zenodo_hpc.core.state import load_run
    from zenodo_hpc.report.collect import collect

    run, cfg = load_run(config(root).run_dir)
    started = time.perf_counter()
    facts = collect(run, cfg, accounting=False)
    return {"seconds": time.perf_counter() - started, "read": facts.done_read}


def stage_pack(root: Path) -> dict[str, Any]:
    from zenodo_hpc.core.state import load_run
    from zenodo_hpc.dataset.pack import pack

    run, cfg = load_run(config(root).run_dir)
    started = time.perf_counter()
    result = pack(run, cfg, progress=False)
    return {"seconds": time.perf_counter() - started, "records": result.records, "files": result.files,
            "image_mb": result.image_bytes / 1e6, "verify_s": result.verify_seconds}


def child(stage: str, root: Path, records: int, api_url: str, token: bool) -> None:
    work = {"harvest": lambda: stage_harvest(root, records, api_url, token), "plan": lambda: stage_plan(root),
            "make_done": lambda: make_done(root), "status": lambda: stage_status(root, cold=True),
            "status_warm": lambda: stage_status(root, cold=False),
            "report": lambda: stage_report(root), "pack": lambda: stage_pack(root)}[stage]
    out = work()
    out["peak_mb"] = peak_rss_mb()
    out["children_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM): ru_maxrss would count the parent's memory it forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(stage: str, root: Path, records: int, api_url: str = "", token: bool = False) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", stage, "--dir", str(root), "--records", str(records),
               "--api-url", api_url] + (["--token"] if token else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the campaign --------------------------------------------------------------------------------------------


def row(name: str, r: dict[str, Any], what: str) -> str:
    children = f" (its commands {r['children_peak_mb']:.0f} MB)" if name.startswith("pack") else ""
    return f"{name:<28} {r['seconds']:>8.1f} s  peak {r['peak_mb']:>6.0f} MB{children}  {what}"


def hours(requests: int, per_hour: float) -> str:
    return f"{requests / per_hour:,.0f} h ({requests / per_hour / 24:.1f} days)"


def campaign(root: Path, records: int, stages: list[str]) -> None:
    print(machine_line())
    print(f"{records:,} records; stages {', '.join(stages)}; run directory {root}")
    searches: dict[str, int] = {}
    if "harvest" in stages:
        started = time.perf_counter()
        index = SearchIndex(records)
        server = serve(index)
        api = f"http://127.0.0.1:{server.server_address[1]}/api"
        print(f"search double: {records:,} records indexed in {time.perf_counter() - started:.1f} s")
        for who, token in (("guest", False), ("token", True)):
            r = in_child("harvest", root / who if token else root, records, api, token)
            searches[who] = r["searches"]
            floor = -(-records // CAPS[token])
            print(row(f"harvest, pages of {CAPS[token]} ({who})", r,
                      f"{r['records']:,} records, {r['searches']:,} searches ({r['searches'] / floor:.2f}x the "
                      f"floor of {floor:,}); at {SEARCHES_PER_MIN}/min: {r['searches'] / SEARCHES_PER_MIN / 60:.1f} h"
                      f"{'' if r['complete'] else '; NOT COMPLETE'}"))
        server.shutdown()
        del index, server  # the stages after it fork from this process: keep it small
        subprocess.run(["rm", "-rf", str(root / "token")], check=False)
    if "plan" in stages:
        r = in_child("plan", root, records)
        print(row("planning", r, f"{r['records']:,} records in {r['shards']:,} shards"))
    if {"status", "report", "pack"} & set(stages):
        r = in_child("make_done", root, records)
        print(row("(setup: every record done)", r, f"{r['records']:,} record folders and done markers"))
    if "status" in stages:
        for stage, name in (("status", "status, cold"), ("status_warm", "status, warm")):
            r = in_child(stage, root, records)
            print(row(name, r, f"{r['first_line']}; the next look of the same process (a waiting run): "
                               f"{r['again_s']:.1f} s"))
    if "report" in stages:
        r = in_child("report", root, records)
        print(row("report (collect)", r, f"{r['read']:,} metadata files read"))
    if "pack" in stages:
        r = in_child("pack", root, records)
        print(row("pack (mksquashfs, verified)", r, f"{r['records']:,} records, {r['files']:,} files, image "
                                                    f"{r['image_mb']:,.0f} MB, verification {r['verify_s']:.0f} s"))
    print(f"floor on paper, one download per record: guest ({BUDGETS['guest']:,}/h) "
          f"{hours(records, BUDGETS['guest'])}, token ({BUDGETS['token']:,}/h) {hours(records, BUDGETS['token'])}")
    for who, count in searches.items():
        print(f"  plus the harvest's {count:,} searches at {SEARCHES_PER_MIN}/min ({who}): "
              f"{count / SEARCHES_PER_MIN / 60:.1f} h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--dir", type=Path, help="where the run directory goes (default: a temporary folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--token", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.records, args.api_url, args.token)
        return
    if args.dir:
        campaign(args.dir, args.records, args.stages)
        return
    with tempfile.TemporaryDirectory(prefix="bench-full-scale-") as tmp:
        campaign(Path(tmp), args.records, args.stages)


if __name__ == "__main__":
    main()

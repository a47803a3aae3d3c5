"""What ``publish huggingface`` costs above the bytes it has to send, against the Hub double on loopback.

A dataset folder (``README.md`` and ``--files`` incompressible shards of ``--mb`` MB under ``data/``) is published
to :class:`doubles.hf_hub.HubDouble` with the real ``huggingface_hub`` client, then published again unchanged.
Measured in the same run:

- floor: what any LFS upload of the folder does at the least: read each file, hash it (sha256, which the LFS
  batch API asks for), and ``PUT`` its bytes to the double's storage with ``http.client``, one request a file;
- publish: ``publish_huggingface`` of the folder to a new repository (create, refs, tree, preupload, batch,
  uploads, verify, commit, tag, the check of the tag's files, whose hashes are computed again);
- re-run: the same command once the release is there (nothing uploaded, nothing committed).

Target: publish within 3x the floor (the client hashes each file, the check hashes it again, and the double is a
Python server), and a re-run a fraction of it.

    python benchmarks/bench_hub.py [--files 16] [--mb 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from _common import machine_line
from doubles.hf_hub import HubDouble

from zenodo_hpc.dataset.hub import publish_huggingface

TOKEN = "hf_benchmarkTokenNotReal0123456789"


def make_folder(root: Path, files: int, size: int) -> Path:
    rng = random.Random(22)
    folder = root / "hf"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: other\n---\n# benchmark\n")
    for i in range(files):
        (folder / "data" / f"train-{i:05d}.parquet").write_bytes(rng.randbytes(size))
    return folder


def floor(folder: Path, url: str) -> float:
    parts = urlsplit(url)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    for path in sorted((folder / "data").iterdir()):
        data = path.read_bytes()
        oid = hashlib.sha256(data).hexdigest()
        connection.request("PUT", f"/storage/{oid}", body=data)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    connection.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    logging.disable(logging.WARNING)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HOME"] = str(Path(tmp) / "hf-home")
        folder = make_folder(Path(tmp), args.files, size)
        total = args.files * size
        runs: dict[str, list[float]] = {"floor": [], "publish": [], "rerun": []}
        for _ in range(args.runs):  # interleaved, each on a fresh double: a busy machine slows all three alike
            with HubDouble(TOKEN) as hub:
                runs["floor"].append(floor(folder, hub.url))
            with HubDouble(TOKEN) as hub:
                started = time.perf_counter()
                publish_huggingface(folder, "bench/zenodo-ml", endpoint=hub.url, token=TOKEN, tag="v1")
                runs["publish"].append(time.perf_counter() - started)
                started = time.perf_counter()
                again = publish_huggingface(folder, "bench/zenodo-ml", endpoint=hub.url, token=TOKEN)
                runs["rerun"].append(time.perf_counter() - started)
                assert not again.committed and len(hub.puts) == args.files
        base, publish_time, rerun = (min(runs[k]) for k in ("floor", "publish", "rerun"))
    mb = total / 1e6
    print(machine_line())
    print(f"{args.files} files, {mb:.0f} MB; best of {args.runs}, wall clock")
    print(f"  floor (read + sha256 + one PUT a file)  {base:6.2f} s = 1.00x  ({mb / base:6.1f} MB/s)")
    print(f"  publish huggingface, first release      {publish_time:6.2f} s = {publish_time / base:.2f}x  "
          f"({mb / publish_time:6.1f} MB/s)")
    print(f"  re-run, nothing to send                 {rerun:6.2f} s = {rerun / base:.2f}x")
    verdict = "PASS" if publish_time <= 3 * base else "FAIL"
    print(f"target: publish within 3x the floor: {verdict} ({publish_time / base:.2f}x)")


if __name__ == "__main__":
    main()

"""Where an archive is extracted: a RAM-backed folder when its footprint fits, else node-local disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    BIG,
    MB,
    extract,
    reg,
    save,
    tar_bytes,
    zip_bytes,
)

from zenodo_hpc.core.errors import ExtractError
from zenodo_hpc.record import extract as extract_module
from zenodo_hpc.record.extract import (
    COMPRESSED_TAR_FACTOR,
    ENTRY_OVERHEAD,
    PAGE_SIZE,
    RAM_FILESYSTEMS,
    SHARED_FILESYSTEMS,
    TAR_PAGE_FACTOR,
    OverFootprint,
    choose_memory_root,
    expected_footprint,
    extract_archive,
    filesystem_type,
    free_bytes,
    memory_left,
    memory_roots,
)

# --- where to extract: a RAM-backed folder when the archive fits, else node-local disk -----------------------------

GiB = 1 << 30
FAKE_MOUNTS = "\n".join([
    "22 27 0:21 / /proc rw,relatime - proc proc rw",
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
    "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=1024k",
    "40 27 0:50 / /scratch rw - lustre 10.0.0.1@tcp:/fs rw",
    "41 40 0:51 / /scratch/local\\040disk rw - xfs /dev/sdb rw",
    "42 24 0:52 / /dev/shm rw - ramfs ramfs rw",  # mounted over the tmpfs: it is what /dev/shm is now
    "43 27 0:53 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
    "44 27 0:54 / /cgv1/memory rw - cgroup cgroup rw,memory",
]) + "\n"


@pytest.fixture
def ram_dir() -> Path:
    """A folder of this machine's /dev/shm (a tmpfs), removed afterwards; skipped where there is none."""
    if not (Path("/dev/shm").is_dir() and filesystem_type("/dev/shm") in RAM_FILESYSTEMS):
        pytest.skip("no tmpfs at /dev/shm")
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="test-ram-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, cgroup: str = "", meminfo: str = "") -> Path:
    """Point the mount table, /proc/self/cgroup and /proc/meminfo at files of ours; cgroup files go under the
    returned folder (mounted, for the table, at /sys/fs/cgroup and /cgv1/memory)."""
    root = tmp_path / "proc"
    root.mkdir()
    mounts = FAKE_MOUNTS.replace(" /sys/fs/cgroup ", f" {root}/v2 ").replace(" /cgv1/memory ", f" {root}/v1 ")
    for name, text in (("mountinfo", mounts), ("cgroup", cgroup), ("meminfo", meminfo)):
        (root / name).write_text(text)
    monkeypatch.setattr(extract_module, "_MOUNTINFO", str(root / "mountinfo"))
    monkeypatch.setattr(extract_module, "_CGROUP", str(root / "cgroup"))
    monkeypatch.setattr(extract_module, "_MEMINFO", str(root / "meminfo"))
    for name in ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    return root


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_file_system_types_come_from_the_deepest_and_latest_mount(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_proc(tmp_path, monkeypatch)
    assert filesystem_type("/home/me") == "ext4"
    assert filesystem_type("/scratch/users/me") == "lustre" and "lustre" in SHARED_FILESYSTEMS
    assert filesystem_type("/scratch/local disk/x") == "xfs"  # \040 in the table is a space
    assert filesystem_type("/scratch/local") == "lustre"  # a prefix of a mount point is not inside it
    assert filesystem_type("/dev/shm/x") == "ramfs"  # the later mount over /dev/shm hides the first
    monkeypatch.setattr(extract_module, "_MOUNTINFO", str(tmp_path / "no-such-file"))
    assert filesystem_type("/dev/shm") is None


def test_memory_roots_are_the_job_tmpdirs_on_a_tmpfs_then_dev_shm(ram_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if filesystem_type(tmp_path) in RAM_FILESYSTEMS:
        pytest.skip("pytest's own temporary folder is on a tmpfs here")
    job_tmp = ram_dir / "job-1234"
    job_tmp.mkdir()
    monkeypatch.setenv("SLURM_TMPDIR", str(job_tmp))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # node-local disk: not RAM
    assert memory_roots() == [job_tmp, Path("/dev/shm")]
    monkeypatch.setenv("SLURM_TMPDIR", str(ram_dir / "gone"))  # set, but missing
    monkeypatch.setenv("TMPDIR", "/dev/shm")  # the same folder as /dev/shm: listed once
    assert memory_roots() == [Path("/dev/shm")]
    monkeypatch.setattr(extract_module, "SHM", tmp_path / "no-shm")
    monkeypatch.delenv("TMPDIR")
    assert memory_roots() == []


def test_memory_left_is_the_least_room_of_every_cgroup_slurm_and_the_machine(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_proc(tmp_path, monkeypatch, cgroup="0::/job_1/step_0\n", meminfo="MemAvailable:  67108864 kB\n")
    write_files(root / "v2", {"job_1/memory.max": f"{4 * GiB}\n", "job_1/memory.current": f"{GiB}\n",
                              "job_1/step_0/memory.max": "max\n", "job_1/step_0/memory.current": f"{GiB // 2}\n"})
    assert memory_left() == 3 * GiB  # the job's limit, set one level up, less what the job uses
    (root / "meminfo").write_text(f"MemAvailable:  {GiB // 1024} kB\n")
    assert memory_left() == GiB  # the machine has less left than the job could take
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "16")  # MiB: less than this process already holds
    assert memory_left() == 0


def test_memory_left_reads_cgroup_v1_and_the_slurm_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_proc(tmp_path, monkeypatch, cgroup="5:cpuacct:/x\n4:memory:/slurm/uid_0/job_5\n")
    write_files(root / "v1", {"slurm/uid_0/job_5/memory.limit_in_bytes": f"{2 * GiB}\n",
                              "slurm/uid_0/job_5/memory.usage_in_bytes": f"{GiB // 2}\n",
                              "slurm/memory.limit_in_bytes": "9223372036854771712\n",  # no limit
                              "slurm/memory.usage_in_bytes": f"{8 * GiB}\n"})
    assert memory_left() == GiB + GiB // 2
    (root / "cgroup").write_text("")
    assert memory_left() is None  # nothing to go by: no cgroup, no SLURM, no meminfo
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "100000")  # MiB per CPU, 2 CPUs
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    left = memory_left()
    assert left is not None and 2 * 100_000 * MB - 4 * GiB < left < 2 * 100_000 * MB  # less this process's RSS


def test_a_zip_footprint_is_exact_from_its_central_directory(dest: Path) -> None:
    path = save(dest, "f.zip", zip_bytes([("p/", b""), ("p/empty", b""), ("p/one", b"x"),
                                          ("p/page", bytes(PAGE_SIZE)), ("p/more", bytes(PAGE_SIZE + 1))]))
    expected = 0 + PAGE_SIZE + PAGE_SIZE + 2 * PAGE_SIZE + 5 * ENTRY_OVERHEAD
    assert expected_footprint(path) == expected
    assert extract(path, dest).footprint == expected  # what the extraction counts as it writes


def test_a_tar_footprint_is_estimated_from_what_the_file_says(dest: Path) -> None:
    text = b"".join(b"line %d of some source code\n" % i for i in range(20_000))
    entries = [reg("p/a.py", text), reg("p/b.py", text[:5000])]
    plain = save(dest, "f.tar", tar_bytes(entries))
    assert expected_footprint(plain) == int(plain.stat().st_size * TAR_PAGE_FACTOR)
    gz = save(dest, "f.tar.gz", tar_bytes(entries, "gz"))
    assert gz.stat().st_size < plain.stat().st_size // 5
    assert expected_footprint(gz) == int(plain.stat().st_size * TAR_PAGE_FACTOR)  # gzip's trailer: the tar's size
    xz = save(dest, "f.tar.xz", tar_bytes(entries, "xz"))
    assert expected_footprint(xz) == int(xz.stat().st_size * COMPRESSED_TAR_FACTOR * TAR_PAGE_FACTOR)
    assert expected_footprint(save(dest, "page.zip", b"<html>not found</html>")) is None


def test_extraction_stops_at_its_footprint_limit_and_not_as_a_failure(dest: Path) -> None:
    data = [("p/a.py", b"a" * 10_000), ("p/b.py", b"b" * 10_000), ("p/c.py", b"c" * 10_000)]
    path = save(dest, "f.zip", zip_bytes(data))
    need = expected_footprint(path)
    assert need is not None
    with pytest.raises(OverFootprint) as caught:
        extract_archive(path, dest, max_bytes=BIG, max_members=100, footprint_limit=need - 1)
    assert not isinstance(caught.value, ExtractError)  # no fault of the archive: it goes elsewhere
    assert not (dest / "p/c.py").exists()  # stopped before the file that would pass the limit
    other = dest.parent / "dest-2"
    other.mkdir()
    assert extract_archive(path, other, max_bytes=BIG, max_members=100, footprint_limit=need).files == 3


def test_a_tar_member_over_the_footprint_limit_is_stopped_before_it_is_written(dest: Path) -> None:
    path = save(dest, "f.tar", tar_bytes([reg("p/small", b"x"), reg("p/big", bytes(2 * MB))]))
    with pytest.raises(OverFootprint):
        extract_archive(path, dest, max_bytes=BIG, max_members=100, footprint_limit=MB)
    assert (dest / "p/small").exists() and not (dest / "p/big").exists()


def test_an_archive_goes_to_ram_when_it_fits_budget_memory_and_free_space(
        dest: Path, ram_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(dest, "f.zip", zip_bytes([("p/a.py", b"a" * 100_000)]))
    need = expected_footprint(path)
    assert need is not None
    fits = choose_memory_root(path, 100 * MB, roots=[ram_dir], memory=GiB)
    assert fits.root == ram_dir and fits.allowance == min(100 * MB, GiB // 2, free_bytes(ram_dir))
    for budget, memory, words in [(need - 1, GiB, "budget"), (100 * MB, 2 * need - 2, "memory"),
                                  (0, GiB, "no RAM budget left")]:
        placed = choose_memory_root(path, budget, roots=[ram_dir], memory=memory)
        assert placed.root is None and placed.allowance == 0 and words in placed.why, placed
    assert choose_memory_root(path, 100 * MB, roots=[], memory=GiB).root is None
    # the first folder full: the next one that has room
    second = ram_dir / "second"
    second.mkdir()
    monkeypatch.setattr(extract_module, "free_bytes", lambda root: 0 if root == ram_dir else GiB)
    placed = choose_memory_root(path, 100 * MB, roots=[ram_dir, second], memory=GiB)
    assert placed.root == second
    unknown = save(dest, "unknown.zip", b"PK\x03\x04 not really")  # no estimate: tried, and capped there
    assert choose_memory_root(unknown, 100 * MB, roots=[second], memory=GiB).root == second

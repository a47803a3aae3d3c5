"""Safe extraction refuses what escapes its folder: absolute and ``..`` names, symlinks, hard links."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from helpers import (
    assert_nothing_outside,
    extract,
    mode_of,
    refused,
    reg,
    save,
    tar_bytes,
    tdir,
    tlink,
    tspecial,
    zip_bytes,
    zsym,
)

# --- unsafe names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../outside/pwned", "path escapes the extraction folder"),
        ("proj/../../outside/pwned", "path escapes the extraction folder"),
        ("proj/../inside-but-dotdot", "path escapes the extraction folder"),
        ("{outside}/pwned", "path is absolute"),  # the test's own outside/ folder, by its absolute path
    ],
    ids=["../outside/pwned", "proj/../../outside/pwned", "proj/../inside-but-dotdot", "absolute"],
)
def test_tar_dotdot_or_absolute_entry_is_refused(dest: Path, name: str, why: str) -> None:
    name = name.format(outside=dest.parent / "outside")
    path = save(dest, "evil.tar", tar_bytes([reg("proj/ok.txt", b"ok"), reg(name, b"pwned")]))
    message = refused(path, dest, "unsafe_archive")
    assert message == f"unsafe entry '{name}' in evil.tar: {why}"
    assert_nothing_outside(dest)


@pytest.mark.parametrize("name", ["/etc/pwned", "C:\\pwned.txt", "c:pwned.txt", "\\pwned.txt", "..\\pwned.txt"])
def test_zip_absolute_or_dotdot_entry_is_refused(dest: Path, name: str) -> None:
    path = save(dest, "evil.zip", zip_bytes([(name, b"pwned")]))
    message = refused(path, dest, "unsafe_archive")
    assert "evil.zip" in message and repr(name) in message
    assert_nothing_outside(dest)
    assert os.listdir(dest) == []


def test_unsafe_special_entry_name_is_refused_too(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tspecial("../outside/fifo", tarfile.FIFOTYPE)]))
    refused(path, dest, "unsafe_archive")
    assert_nothing_outside(dest)


# --- links ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "target", "why"),
    [
        ("proj/etc", "/etc", "is absolute"),
        ("proj/out", "../../outside", "points outside the extraction folder"),
    ],
    ids=["absolute", "relative-escaping"],
)
def test_tar_symlink_with_absolute_or_escaping_target_is_refused(dest: Path, link: str, target: str,
                                                                  why: str) -> None:
    path = save(dest, "evil.tar", tar_bytes([tlink(link, target)]))
    message = refused(path, dest, "unsafe_archive")
    assert message == f"unsafe entry '{link}' in evil.tar: symlink target '{target}' {why}"
    assert not (dest / link).is_symlink()


@pytest.mark.parametrize("target", ["/tmp", "../../outside", "../.."])
def test_zip_symlink_to_outside_is_refused(dest: Path, target: str) -> None:
    path = save(dest, "evil.zip", zip_bytes([zsym("proj/out", target)]))
    refused(path, dest, "unsafe_archive")
    assert not (dest / "proj/out").is_symlink()


def test_symlink_then_write_through_it_is_refused(dest: Path) -> None:
    """The classic: ``link -> /somewhere`` then ``link/x`` would write to /somewhere/x."""
    outside = str(dest.parent / "outside")
    path = save(dest, "evil.tar", tar_bytes([tlink("link", outside), reg("link/pwned", b"pwned")]))
    refused(path, dest, "unsafe_archive")
    assert_nothing_outside(dest)


def test_write_through_an_inside_symlink_is_refused(dest: Path) -> None:
    entries = [tdir("proj/sub"), tlink("proj/link", "sub"), reg("proj/link/x", b"x")]
    path = save(dest, "evil.tar", tar_bytes(entries))
    message = refused(path, dest, "unsafe_archive")
    assert message == "unsafe entry 'proj/link/x' in evil.tar: path goes through symlink 'proj/link'"
    assert not (dest / "proj/sub/x").exists()


def test_symlink_chain_escaping_only_for_real_is_refused(dest: Path) -> None:
    """``proj/a -> ..`` is the root and ``proj/b -> a/..`` looks like ``proj``, but really is the parent."""
    entries = [tlink("proj/a", ".."), tlink("proj/b", "a/..")]
    path = save(dest, "chain.tar", tar_bytes(entries))
    message = refused(path, dest, "unsafe_archive")
    assert "'proj/b'" in message and "through other symlinks" in message


def test_symlink_chain_then_write_through_it_writes_nothing_outside(dest: Path) -> None:
    entries = [tlink("proj/a", ".."), tlink("proj/b", "a/.."), reg("proj/b/outside/pwned", b"pwned")]
    path = save(dest, "chain.tar", tar_bytes(entries))
    refused(path, dest, "unsafe_archive")
    assert_nothing_outside(dest)


def test_inside_symlinks_are_created_as_symlinks(dest: Path) -> None:
    tar = save(dest, "ok.tar", tar_bytes([reg("proj/src/main.py", b"x"), tlink("proj/latest", "src/main.py")]))
    stats = extract(tar, dest)
    link = dest / "proj/latest"
    assert link.is_symlink() and os.readlink(link) == "src/main.py"
    assert link.read_bytes() == b"x"
    assert stats.symlinks == 1 and stats.files == 1


def test_zip_inside_symlink_is_created_as_symlink(dest: Path) -> None:
    path = save(dest, "ok.zip", zip_bytes([("proj/docs/a.md", b"doc"), zsym("proj/up", "docs/../docs/a.md")]))
    stats = extract(path, dest)
    assert os.readlink(dest / "proj/up") == "docs/../docs/a.md"
    assert stats.symlinks == 1 and stats.bytes == 3


def test_dangling_inside_symlink_is_kept(dest: Path) -> None:
    path = save(dest, "ok.tar", tar_bytes([tlink("proj/missing", "not/there")]))
    extract(path, dest)
    assert os.readlink(dest / "proj/missing") == "not/there"


def test_tar_hard_link_to_outside_is_refused(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tlink("proj/passwd", "../outside/secret", hard=True)]))
    message = refused(path, dest, "unsafe_archive")
    assert "hard link target '../outside/secret' escapes the extraction folder" in message
    assert_nothing_outside(dest)


@pytest.mark.parametrize("target", ["/etc/passwd", "proj/never-extracted", "proj/link", "proj"])
def test_tar_hard_link_must_name_an_earlier_regular_file(dest: Path, target: str) -> None:
    entries = [reg("proj/later.txt", b"x"), tlink("proj/link", "later.txt"), tlink("proj/h", target, hard=True)]
    path = save(dest, "evil.tar", tar_bytes(entries))
    refused(path, dest, "unsafe_archive")
    assert not (dest / "proj/h").exists()


def test_tar_hard_link_is_materialised_as_a_copy(dest: Path) -> None:
    entries = [reg("proj/run.sh", b"echo hi\n", 0o755), tlink("proj/again.sh", "proj/run.sh", hard=True)]
    path = save(dest, "ok.tar", tar_bytes(entries))
    stats = extract(path, dest)
    original, copy = dest / "proj/run.sh", dest / "proj/again.sh"
    assert copy.read_bytes() == b"echo hi\n" and not copy.is_symlink()
    assert os.stat(original).st_ino != os.stat(copy).st_ino
    assert mode_of(copy) == 0o755
    assert stats.files == 2 and stats.bytes == 16

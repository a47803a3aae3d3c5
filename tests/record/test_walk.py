"""The walk (docs/formats.md, "Code images"): what is rasterized, what is skipped and why, in which order."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
from pathlib import Path

from helpers import call_as_nobody

from zenodo_hpc.record.extract import MAX_DEPTH
from zenodo_hpc.record.walk import (
    MAX_TREE_DEPTH,
    WalkedFile,
    add_dir,
    add_file,
    classify,
    is_binary,
    iter_tree_files,
    list_entries,
    new_tree,
    path_is_free,
    sort_tree,
    walk,
)


def by_key(root: Path, **kwargs: object) -> dict[str, WalkedFile]:
    return {entry.key: entry for entry in walk(root, **kwargs)}


def test_git_directory_is_excluded_but_gitignore_and_github_are_not(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "config").write_text("[core]\n")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (tmp_path / ".gitignore").write_text("*.o\n")
    (tmp_path / "my.git").mkdir()  # the 2018 code matched ".git" as a substring and lost this
    (tmp_path / "my.git" / "x.py").write_text("x = 1\n")
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    (tmp_path / "sub" / ".git" / "HEAD").write_text("ref\n")
    (tmp_path / "sub" / "a.gitx").write_text("kept\n")
    keys = set(by_key(tmp_path))
    assert keys == {".github/workflows/ci.yml", ".gitignore", "my.git/x.py", "sub/a.gitx"}
    dirs = {key for key, _ in list_entries(tmp_path)[0]}
    assert ".git" not in dirs and "sub/.git" not in dirs and ".github" in dirs


def test_size_limit_is_inclusive(tmp_path: Path) -> None:
    (tmp_path / "exact.txt").write_bytes(b"a" * 99_999 + b"\n")
    (tmp_path / "over.txt").write_bytes(b"a" * 100_001)
    entries = by_key(tmp_path, max_file_bytes=100_000)
    assert entries["exact.txt"].skipped is None and len(entries["exact.txt"].data) == 100_000
    over = entries["over.txt"]
    assert over.skipped == "too_large" and over.data is None and over.size == 100_001
    assert over.sha256 == hashlib.sha256(b"a" * 100_001).hexdigest()


def test_binary_is_a_nul_in_the_first_8000_bytes(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"a" * 7999 + b"\x00")
    (tmp_path / "late-nul.txt").write_bytes(b"a" * 8000 + b"\x00")
    entries = by_key(tmp_path)
    assert entries["bin"].skipped == "binary" and entries["bin"].data is None
    assert entries["late-nul.txt"].skipped is None
    assert by_key(tmp_path, skip_binary=False)["bin"].skipped is None
    assert is_binary(b"\x00") and not is_binary(b"")


def test_symlinks_are_recorded_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.py").write_text("a = 1\n")
    os.symlink("real", tmp_path / "linkdir")
    os.symlink("/etc/passwd", tmp_path / "outside")
    os.symlink("missing", tmp_path / "dangling")
    entries = by_key(tmp_path)
    assert set(entries) == {"dangling", "linkdir", "outside", "real/a.py"}
    assert entries["outside"].skipped == "symlink" and entries["outside"].target == "/etc/passwd"
    assert entries["linkdir"].kind == "symlink" and entries["linkdir"].data is None


def test_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert by_key(tmp_path)["pipe"].skipped == "not_regular"


def test_keys_are_sorted_posix_paths_with_prefix(tmp_path: Path) -> None:
    for name in ["b/z.py", "a.txt", "a/b.py", "B.md", "a/a/c.py"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    keys = [entry.key for entry in walk(tmp_path, prefix="top/")]
    assert keys == sorted(keys)
    assert keys == ["top/B.md", "top/a.txt", "top/a/a/c.py", "top/a/b.py", "top/b/z.py"]


def test_content_and_hash_are_read_once_and_match(tmp_path: Path) -> None:
    payload = "héllo\n".encode()
    (tmp_path / "h.txt").write_bytes(payload)
    entry = by_key(tmp_path)["h.txt"]
    assert entry.data == payload and entry.size == len(payload)
    assert entry.sha256 == hashlib.sha256(payload).hexdigest()


def test_unreadable_file_and_folder_are_recorded(shared_tmp: Path) -> None:
    root = shared_tmp / "rec"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "inner.py").write_text("x\n")
    (root / "secret.py").write_text("x = 1\n")
    (root / "ok.py").write_text("y = 2\n")
    (root / "secret.py").chmod(0)
    (root / "locked").chmod(0)
    root.chmod(0o755)

    def walk_it() -> tuple[dict[str, str | None], list[tuple[str, str | None]]]:
        return ({e.key: e.skipped for e in walk(root)}, list_entries(root)[0])

    files, dirs = call_as_nobody(walk_it)
    assert files == {"ok.py": None, "secret.py": "unreadable"}
    assert dirs == [("locked", "unreadable")]


# --- odd names and deep folders on disk ----------------------------------------------------------------------


def test_names_that_are_not_utf8_are_skipped_not_fatal(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    with open(root + b"/caf\xe9.py", "wb") as handle:
        handle.write(b"x = 1\n")
    os.mkdir(root + b"/d\xff")
    with open(root + b"/d\xff/inside.py", "wb") as handle:
        handle.write(b"y = 2\n")
    os.symlink(b"target\xfe", root + b"/link")
    (tmp_path / "ok.py").write_text("z = 3\n")
    entries = by_key(tmp_path)
    assert set(entries) == {"caf\ufffd.py", "link", "ok.py"}
    assert entries["caf\ufffd.py"].skipped == "bad_name" and entries["caf\ufffd.py"].data is None
    assert entries["link"].target == "target\ufffd" and entries["ok.py"].data == b"z = 3\n"
    assert list_entries(tmp_path)[0] == [("d\ufffd", "bad_name")]  # listed, not walked into
    json.dumps([e.key for e in entries.values()]).encode("utf-8")  # every key can go into the outputs


def test_folder_deeper_than_the_limit_is_recorded_not_walked(tmp_path: Path) -> None:
    deepest = tmp_path.joinpath(*["d"] * MAX_DEPTH)
    deepest.mkdir(parents=True)
    (deepest / "at-limit-child").mkdir()
    (deepest.parent / "at-limit.py").write_text("ok\n")
    (tmp_path / "top.py").write_text("top\n")
    dirs, others = list_entries(tmp_path)
    keys = [key for key, _, _ in others]
    assert keys == ["d/" * (MAX_DEPTH - 1) + "at-limit.py", "top.py"]
    assert ("/".join(["d"] * MAX_DEPTH), "too_deep") in dirs
    assert all(reason is None for key, reason in dirs if key.count("/") < MAX_DEPTH - 1)


def test_an_entry_that_cannot_be_statted_is_recorded_with_its_error(tmp_path: Path) -> None:
    entry = classify("gone.py", tmp_path / "gone.py", OSError(errno.ENOENT, "No such file or directory"),
                     max_file_bytes=100, skip_binary=True)
    assert entry.skipped == "error: No such file or directory" and entry.data is None


# --- the tree ---------------------------------------------------------------------------------------------------


def test_tree_functions_handle_trees_deeper_than_the_recursion_limit() -> None:
    tree = node = new_tree()
    for i in range(5000):
        node["children"]["z"] = {"type": "file", "skipped": "x"}
        node["children"][f"d{i}"] = node = new_tree()
    node["children"]["leaf.py"] = {"type": "file", "segments": 1}
    ordered = sort_tree(tree)
    assert list(ordered["children"]) == ["d0", "z"]
    files = list(iter_tree_files(ordered))
    assert len(files) == 5001
    assert files[0][0] == "/".join(f"d{i}" for i in range(5000)) + "/leaf.py"
    assert files[-1] == ("z", {"type": "file", "skipped": "x"})


def test_a_key_deeper_than_the_tree_limit_keeps_its_rest_as_one_name() -> None:
    key = "/".join(["d"] * 5000 + ["f.py"])
    tree = new_tree()
    assert add_file(tree, key, {"type": "file", "skipped": "too_deep"})
    assert [k for k, _ in iter_tree_files(tree)] == [key]
    depth, node = 0, tree
    while node.get("children"):
        node, depth = next(iter(node["children"].values())), depth + 1
    assert depth == MAX_TREE_DEPTH
    tree = sort_tree(tree)
    assert pickle.loads(pickle.dumps(tree)) == json.loads(json.dumps(tree, indent=1)) == tree


def test_a_path_taken_by_a_file_is_a_duplicate_and_the_first_stays() -> None:
    tree = new_tree()
    first = {"type": "file", "segments": 1}
    assert add_file(tree, "top/a", first)
    before = json.dumps(tree)
    assert not path_is_free(tree, "top/a/b") and not add_file(tree, "top/a/b", {"type": "file"})  # under a file
    assert add_dir(tree, "top/a/sub") is None  # a folder under a file
    assert add_dir(tree, "top/a") is None  # a folder where a file is
    assert not add_file(tree, "top/a", {"type": "file", "segments": 9})  # the same key again
    assert not add_file(tree, "top", {"type": "file"})  # a file where a folder is
    assert json.dumps(tree) == before and tree["children"]["top"]["children"]["a"] is first
    assert path_is_free(tree, "top/b") and add_dir(tree, "top/b/c") == new_tree()


def test_a_file_whose_bytes_are_known_is_judged_as_if_read(tmp_path: Path) -> None:
    """The extraction hands the walk the small files' bytes: text, binary, empty and too large alike."""
    cases = {"text.py": b"print(1)\n", "bin.dat": b"\x00\x01" * 10, "empty": b"", "large.txt": b"y" * 300}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        info = os.lstat(path)
        read = classify(name, path, info, max_file_bytes=100, skip_binary=True)
        path.write_bytes(b"not what was extracted")  # only the known bytes may be looked at now
        known = classify(name, path, info, max_file_bytes=100, skip_binary=True, known=data)
        assert known == read, name
    stale = classify("text.py", tmp_path / "text.py", os.lstat(tmp_path / "text.py"), max_file_bytes=100,
                     skip_binary=True, known=b"other size")
    assert stale.data == b"not what was extracted"  # bytes of another size than listed are not trusted

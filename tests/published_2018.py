"""Record 1065022 of the published 2018 Zenodo-ML dataset, rebuilt byte for byte as the 2018 code wrote its record
folders (not with this package's writer), for the readers' tests and the 2018 page's recipes.

How the 2018 code wrote them:
vsoch/zenodo-ml, slurm/run.py at commit 057302161b0f1abcb84edb519774de32d38703f0 (its last change,
2018-05-29), run in the image its Dockerfile builds (pandas, numpy, containertree==0.0.4):
  - images: create_images() turns each file into a list of pandas ``DataFrame(...).values`` arrays, int64,
    80 columns (lines padded with ' ' and cut at 80), 80 rows except the last image, which has the rows
    that are left (run.py drops the file's last line, i.e. the empty string after a final newline);
  - images_<id>.h5: save_h5() writes one dataset per image named "%s__%s" % (path, i) (h5py turns each
    '/' of the path into a group), no compression;
  - images_<id>.pkl: pickle.dump(images, ...) of {path: [arrays]} with Python 3's default protocol (3);
  - metadata_<id>.pkl: pickle.dump({'tree': tree, 'hit': hit}, ...), tree = ContainerTree(
    [{'Name': path, 'Size': size}, ...], tag=uid) of containertree 0.0.4: singularityhub/container-tree,
    containertree/tree.py at commit 29ad371c991e72f4342f5e7016a95c877558cdfe (unchanged until 0.0.41),
    classes containertree.tree.ContainerTree (root, data, folder_sep, count) and containertree.tree.Node
    (filepath, children, leaf, tags, counter, and each key of the attrs dict lower-cased: name, size;
    a folder's node is made with the attrs of the first file below it). (vsoch/containertree holds only
    a GitHub Actions example, not the package.)
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

SOURCES_2018 = {
    "zenodo-ml-1a2b/analysis.py": "import os\n" * 170,  # 3 images: 80, 80 and 10 rows
    "zenodo-ml-1a2b/docs/README.md": "# Zenodo ML\n\nThis ünïcode – \u4e2d\u6587 😀 readme.\n",
    "zenodo-ml-1a2b/run.sh": "#!/bin/bash\n" + "echo " + "x" * 100 + "\n",  # a line cut at 80
}
HIT_2018 = {"id": 1065022, "doi": "10.5281/zenodo.1065022", "metadata": {"title": "zenodo-ml demo"},
            "files": [{"links": {"self": "https://zenodo.org/api/files/x/zenodo-ml-1a2b.zip"}}]}


def images_2018(text: str) -> list[np.ndarray]:
    """A file's images as the 2018 code made them: rows of 80 int64 code points, the last image short."""
    lines = text.split("\n")[:-1]  # run.py never keeps the last element of split('\n')
    rows = [[ord(c) for c in line[:80]] + [32] * (80 - len(line[:80])) for line in lines]
    return [np.array(rows[i:i + 80], dtype=np.int64) for i in range(0, len(rows), 80)]


def _stand_in_containertree(monkeypatch: pytest.MonkeyPatch) -> tuple[type, type]:
    """Classes named containertree.tree.ContainerTree and .Node, as pickle records them (no package needed)."""
    module = types.ModuleType("containertree.tree")

    class ContainerTree:
        pass

    class Node:
        pass

    for cls in (ContainerTree, Node):
        cls.__module__, cls.__qualname__ = "containertree.tree", cls.__name__
        setattr(module, cls.__name__, cls)
    package = types.ModuleType("containertree")
    package.tree = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "containertree", package)
    monkeypatch.setitem(sys.modules, "containertree.tree", module)
    return ContainerTree, Node


def tree_2018(monkeypatch: pytest.MonkeyPatch, files: dict[str, int], uid: int) -> object:
    """A ContainerTree with containertree 0.0.4's attributes, built the way its _make_tree built them."""
    tree_cls, node_cls = _stand_in_containertree(monkeypatch)

    def node(filepath: str, attrs: dict[str, object]) -> object:
        new = node_cls()
        new.filepath, new.children = filepath, []
        for key, value in attrs.items():
            setattr(new, key.lower(), value)
        new.leaf, new.tags, new.counter = False, {uid}, 1
        return new

    tree = tree_cls()
    tree.root, tree.folder_sep, tree.count = node("", {"size": 0, "Name": "/"}), "/", 1
    tree.data = [{"Name": name, "Size": size} for name, size in files.items()]
    for attrs in tree.data:
        current = tree.root
        for part in attrs["Name"].split("/"):
            found = next((c for c in current.children if c.filepath == part), None)
            if found is None:
                found = node(part, attrs)
                current.children.append(found)
                tree.count += 1
            else:
                found.counter += 1
            current = found
        current.leaf = True
    return tree


def write_folder_2018(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write record 1065022 of the 2018 dataset into ``folder`` as the 2018 code wrote it (tests/dataset/test_load.py;
    tests/project/conftest.py for the recipes of docs/from-2018.md)."""
    folder.mkdir(parents=True)
    images = {path: images_2018(text) for path, text in SOURCES_2018.items()}
    with h5py.File(folder / "images_1065022.h5", "w") as h5:
        for image_id, image_dataset in images.items():
            for i, image in enumerate(image_dataset):
                h5.create_dataset(f"{image_id}__{i}", data=image)
    with open(folder / "images_1065022.pkl", "wb") as handle:
        pickle.dump(images, handle, protocol=3)
    sizes = {path: len(text.encode()) for path, text in SOURCES_2018.items()}
    metadata = {"tree": tree_2018(monkeypatch, sizes, 1065022), "hit": HIT_2018}
    with open(folder / "metadata_1065022.pkl", "wb") as handle:
        pickle.dump(metadata, handle, protocol=3)
    monkeypatch.delitem(sys.modules, "containertree")  # read back without containertree
    monkeypatch.delitem(sys.modules, "containertree.tree")
    return folder

"""publish kaggle's checks before any network call: the refusals, where credentials go, and the metadata.

They run in this process: they happen before ``import kaggle`` (which authenticates at import time), so they
need neither the client nor a server (tests/dataset/test_publish.py publishes with the real client).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import KAGGLE_KEY as KEY
from helpers import KAGGLE_ORGANIZE_LICENSES as ORGANIZE_LICENSES
from helpers import KAGGLE_REF as REF
from helpers import KAGGLE_SLUG as SLUG
from helpers import KAGGLE_TITLE as TITLE
from helpers import KAGGLE_USER as USER
from helpers import edit_kaggle_package as edit_package
from helpers import make_kaggle_export as make_export

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.publish import (
    KAGGLE_LICENSES,
    METADATA_FILE,
    prepare_kaggle_metadata,
    publish_kaggle,
)

needs_kaggle = pytest.mark.skipif(
    importlib.util.find_spec("kaggle") is None,
    reason="the kaggle client is not installed (the kaggle extra): its config file is not tested",
)


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path / "kaggle-export"
    return folder, make_export(folder)


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where the client would find no credentials: empty HOME, no KAGGLE_* variables."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


# --- refusals before any network call (in this process, no kaggle needed) ----------------------------------


def refuse(folder: Path, match: str, **kwargs: Any) -> str:
    """publish_kaggle refuses with one line matching ``match``, without importing kaggle or writing metadata."""
    arguments: dict[str, Any] = {"username": USER, "title": TITLE}
    arguments.update(kwargs)
    had_kaggle = "kaggle" in sys.modules
    with pytest.raises(UserError, match=match) as info:
        publish_kaggle(folder, **arguments)
    message = str(info.value)
    assert "\n" not in message
    assert KEY not in message
    assert had_kaggle or "kaggle" not in sys.modules, "checks must come before importing the client"
    assert not (folder / METADATA_FILE).exists()
    return message


@pytest.mark.parametrize("title", ["x" * 5, "x" * 51])
def test_title_must_be_6_to_50_characters(export, no_credentials, title: str) -> None:
    message = refuse(export[0], r"title must be 6 to 50 characters", title=title)
    assert f"has {len(title)}" in message


@pytest.mark.parametrize("name", ["my data set", "Zenodo-ML-images", "zenodo_ml_images", "-zenodo-ml", "zenodo--ml"])
def test_slug_only_lowercase_letters_digits_and_hyphens(export, no_credentials, name: str) -> None:
    refuse(export[0], r"only lowercase letters, digits and single hyphens \(no spaces\)", name=name)


@pytest.mark.parametrize("name", ["zenod", "z" * 51])
def test_slug_must_be_6_to_50_characters(export, no_credentials, name: str) -> None:
    refuse(export[0], r"name \(URL slug\) must be 6 to 50 characters", name=name)


def test_two_licenses_are_refused_unless_one_is_chosen(export, no_credentials) -> None:
    folder, _ = export
    edit_package(folder, licenses=[{"name": "CC0-1.0"}, {"name": "CC-BY-4.0"}])
    refuse(folder, r"exactly one license, .* names 2 \(CC0-1\.0, CC-BY-4\.0\): pass --license")
    metadata = prepare_kaggle_metadata(folder, username=USER, title=TITLE, license="cc-by-4.0")
    assert metadata["licenses"] == [{"name": "CC-BY-4.0"}]  # the spelling Kaggle knows


def test_unknown_or_missing_license(export, no_credentials) -> None:
    folder, _ = export
    message = refuse(folder, r"Kaggle does not know the license 'MIT'; use one of: CC0-1\.0", license="MIT")
    assert all(name in message for name in KAGGLE_LICENSES)
    edit_package(folder, licenses=[])
    refuse(folder, r"names no license: pass --license")


def test_the_exports_kaggle_choice_is_sent_whatever_licenses_the_records_have(export, no_credentials) -> None:
    """organize lists every license of the records (two here) and writes Kaggle's one as zenodo_hpc.kaggle_license:
    publish sends that one (or --license), never refuses the export for naming several."""
    folder, _ = export
    edit_package(folder, licenses=ORGANIZE_LICENSES, zenodo_hpc={"pngs": 2, "kaggle_license": "other"})
    metadata = prepare_kaggle_metadata(folder, username=USER, title=TITLE)
    assert metadata["licenses"] == [{"name": "other"}]
    assert prepare_kaggle_metadata(folder, username=USER, title=TITLE, license="cc0-1.0")["licenses"] == [
        {"name": "CC0-1.0"}]
    edit_package(folder, zenodo_hpc={"kaggle_license": "GPL-3.0"})
    assert prepare_kaggle_metadata(folder, username=USER, title=TITLE)["licenses"] == [{"name": "GPL-3.0"}]
    edit_package(folder, zenodo_hpc={"kaggle_license": "mit"})  # an export edited by hand: still checked
    refuse(folder, r"Kaggle does not know the license 'mit'")
    edit_package(folder, zenodo_hpc={"kaggle_license": ["other"]})
    refuse(folder, r'"zenodo_hpc\.kaggle_license" must be a license name: pass --license')


def test_missing_file(export, no_credentials) -> None:
    folder, _ = export
    (folder / "js.tar.gz").unlink()
    refuse(folder, r"js\.tar\.gz is listed in datapackage\.json but missing")


def test_changed_file_and_unlisted_file(export, no_credentials) -> None:
    folder, _ = export
    (folder / "notes.txt").write_text("not part of the dataset\n")
    refuse(folder, r"holds notes\.txt, not listed in datapackage\.json")
    (folder / "notes.txt").unlink()
    (folder / ".py.tar.gz.tmp").write_bytes(b"half")  # hidden leftovers are ignored (and never uploaded)
    with (folder / "index.csv").open("ab") as handle:
        handle.write(b"9999,go,go.tar.gz\n")
    refuse(folder, r"index\.csv has \d+ bytes, datapackage\.json says \d+")
    edit_package(folder, resources=[dict(r, bytes=(folder / r["path"]).stat().st_size)
                                    for r in json.loads((folder / "datapackage.json").read_text())["resources"]])
    refuse(folder, r"index\.csv does not match its hash")


def test_missing_folder_empty_folder_not_an_export(tmp_path: Path, no_credentials) -> None:
    refuse(tmp_path / "nowhere", r"nowhere does not exist: run `zenodo-hpc organize")
    (tmp_path / "empty").mkdir()
    refuse(tmp_path / "empty", r"empty is empty: run `zenodo-hpc organize")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("a\n")
    refuse(tmp_path / "other", r"has no datapackage\.json")


def test_at_most_1000_files(export, no_credentials) -> None:
    folder, _ = export
    resources = [{"path": f"part-{i:04d}.tar.gz"} for i in range(1001)]
    edit_package(folder, resources=resources)
    refuse(folder, r"lists 1001 files; a Kaggle dataset holds at most 1000")


def test_no_credentials_says_where_to_put_them(export, no_credentials, monkeypatch, capsys) -> None:
    folder, _ = export
    monkeypatch.setenv("KAGGLE_KEY", KEY)  # a key without a user name is not a credential
    with pytest.raises(UserError) as info:
        publish_kaggle(folder, username=USER, title=TITLE)
    message = str(info.value)
    assert message.startswith("no Kaggle credentials: ")
    assert str(no_credentials / ".config" / "kaggle" / "kaggle.json") in message  # no ~/.kaggle yet: XDG, as kaggle
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in message and "KAGGLE_API_TOKEN" in message
    (no_credentials / ".kaggle").mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(no_credentials / "conf"))
    with pytest.raises(UserError, match=r"save kaggle\.json as .*/conf/kaggle\.json \(chmod 600\)") as info:
        publish_kaggle(folder, username=USER, title=TITLE)
    out, err = capsys.readouterr()
    assert KEY not in out + err + str(info.value)


CLIENT_CONFIG = "from kaggle.api.kaggle_api_extended import KaggleApi; print(KaggleApi.config)"


@needs_kaggle
@pytest.mark.parametrize("dot_kaggle", [False, True], ids=["fresh-home", "with-dot-kaggle"])
def test_help_and_error_name_the_kaggle_json_the_client_reads(no_credentials: Path, dot_kaggle: bool) -> None:
    """Where the installed client looks for kaggle.json (its KaggleApi.config, read in a child with this HOME) is
    the file the error names and one that --help names."""
    if dot_kaggle:
        (no_credentials / ".kaggle").mkdir()
    child = subprocess.run([sys.executable, "-c", CLIENT_CONFIG], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "KAGGLE_API_ENVIRONMENT": "LOCALHOST"})
    reads = child.stdout.strip().splitlines()[-1]
    make_export(no_credentials / "export")
    with pytest.raises(UserError) as info:
        publish_kaggle(no_credentials / "export", username=USER, title=TITLE)
    assert f"save kaggle.json as {reads} " in str(info.value)
    from zenodo_hpc.cli import build_parser

    publish = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "publish" in a.choices)
    kaggle = next(a for a in publish.choices["publish"]._actions if getattr(a, "choices", None))
    help_text = " ".join(kaggle.choices["kaggle"].format_help().split())
    folder = "~/" + str(Path(reads).parent.relative_to(no_credentials)) + "/"
    assert "kaggle.json in $KAGGLE_CONFIG_DIR" in help_text and folder in help_text


def test_without_the_kaggle_extra(export, no_credentials, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setitem(sys.modules, "kaggle", None)  # as if not installed
    with pytest.raises(UserError, match=r"needs the official kaggle client: python -m pip install 'kaggle>=2\.2\.5,<3' "
                                        "six$"):
        publish_kaggle(export[0], username=USER, title=TITLE)


def test_metadata_is_the_package_with_the_arguments(export) -> None:
    folder, _ = export
    metadata = prepare_kaggle_metadata(folder, username=USER, title=f"  {TITLE} ", keywords=["code", " ", "code", "ml"])
    package = json.loads((folder / "datapackage.json").read_text())
    assert metadata["id"] == REF and metadata["name"] == SLUG and metadata["title"] == TITLE
    assert metadata["keywords"] == ["code", "ml"]
    assert metadata["resources"] == package["resources"]
    renamed = prepare_kaggle_metadata(folder, username=USER, title=TITLE, name="zenodo-ml-2018")
    assert renamed["id"] == f"{USER}/zenodo-ml-2018" and renamed["keywords"] == package["keywords"]


"""The YAML config loader: defaults, ${VAR} expansion, and errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from zenodo_hpc.config import Config, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_no_file_and_empty_file_give_the_defaults(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    assert load_config(write(tmp_path, "")) == Config()
    cfg = Config()
    assert (cfg.raster.width, cfg.raster.height, cfg.raster.pad, cfg.raster.max_file_bytes) == (80, 80, 32, 100_000)
    assert cfg.output.formats == ["h5", "pkl"]
    assert cfg.zenodo.exclude == ["gcube"]


def _dataclass_keys(obj: object, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        keys.add(prefix + f.name)
        if dataclasses.is_dataclass(value):
            keys |= _dataclass_keys(value, f"{prefix}{f.name}.")
    return keys


def _yaml_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and value:
            keys |= _yaml_keys(value, f"{prefix}{key}.")
    return keys


def test_default_yaml_lists_every_key_with_its_default_and_a_comment() -> None:
    path = ROOT / "configs" / "default.yaml"
    assert load_config(path) == Config()
    data = yaml.safe_load(path.read_text())
    assert _yaml_keys(data) == _dataclass_keys(Config())
    for line in path.read_text().splitlines():
        if re.match(r"\s*\w+:\s*\S", line):
            assert "#" in line, f"key without a comment in default.yaml: {line!r}"


def test_values_are_read_and_others_keep_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "raster:\n  width: 40\nexecutor:\n  slurm:\n    partition: normal\n"))
    assert cfg.raster.width == 40 and cfg.raster.height == 80
    assert cfg.executor.slurm.partition == "normal" and cfg.executor.slurm.mem_gb == 4


def test_int_is_accepted_where_a_number_is_expected(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "executor: {slurm: {mem_gb: 8}}\n"))
    assert cfg.executor.slurm.mem_gb == 8.0 and isinstance(cfg.executor.slurm.mem_gb, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rastr: {}\n", r"cfg\.yaml: rastr: unknown key"),
        ("raster: {wdth: 3}\n", r"cfg\.yaml: raster\.wdth: unknown key \(known keys: width,"),
        ("executor: {slurm: {parition: x}}\n", r"executor\.slurm\.parition: unknown key"),
        ("raster: {width: wide}\n", r"raster\.width: expected an integer, got 'wide'"),
        ("raster: {width: 2.5}\n", r"raster\.width: expected an integer"),
        ("raster: {skip_binary: 1}\n", r"raster\.skip_binary: expected true or false"),
        ("raster: {max_file_bytes: -1}\n", r"raster\.max_file_bytes: must be at least 0, got -1"),
        ("extract: {max_bytes: 0}\n", r"extract\.max_bytes: must be at least 1"),
        ("raster: {pad: 1114112}\n", r"raster\.pad: must be at most 1114111"),
        ("executor: {kind: cloud}\n", r"executor\.kind: must be one of auto, slurm, local, debug"),
        ("output: {formats: [h5, csv]}\n", r"output\.formats: must be one of h5, pkl, got 'csv'"),
        ("output: {formats: []}\n", r"output\.formats"),
        ("zenodo: {exclude: gcube}\n", r"zenodo\.exclude: expected a list of strings"),
        ("raster: 3\n", r"cfg\.yaml: raster: expected a mapping"),
        ("- a\n- b\n", r"cfg\.yaml: expected a mapping of sections"),
        ("raster: {width: [\n", r"cfg\.yaml: not valid YAML \(line \d+"),
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_env_vars_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH", "/scratch/users/me")
    cfg = load_config(write(tmp_path, "run: {scratch: '${SCRATCH}/zenodo'}\n"
                                      "executor: {slurm: {setup: ['source ${SCRATCH}/venv/bin/activate']}}\n"))
    assert cfg.run.scratch == "/scratch/users/me/zenodo"
    assert cfg.run_dir == Path("/scratch/users/me/zenodo/zenodo-ml")
    assert cfg.executor.slurm.setup == ["source /scratch/users/me/venv/bin/activate"]


def test_unset_env_var_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_X", raising=False)
    with pytest.raises(ConfigError, match=r"run\.scratch: environment variable NO_SUCH_VAR_X is not set"):
        load_config(write(tmp_path, "run: {scratch: '${NO_SUCH_VAR_X}/x'}\n"))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_follows_output_settings_only() -> None:
    base = Config().sha256()
    assert config_from_dict({}).sha256() == base
    assert config_from_dict({"raster": {"tab_width": 8}}).sha256() != base
    assert config_from_dict({"output": {"formats": ["h5"]}}).sha256() != base
    # a shard resubmitted with more memory, or a run given a bigger limit, writes the same records
    assert config_from_dict({"executor": {"slurm": {"mem_gb": 16}}, "zenodo": {"limit": 5}}).sha256() == base


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in sorted(_dataclass_keys(Config())):
        value: object = Config()
        for part in key.split("."):
            value = getattr(value, part)
        section, _, rest = key.partition(".")
        if not rest:
            assert f"## `{section}:`" in doc, f"section {section} has no heading in docs/configuration.md"
        elif not dataclasses.is_dataclass(value):
            assert f"| `{rest}` |" in doc, f"{key} is not described in docs/configuration.md"


@pytest.mark.parametrize("name", ["default.yaml", "local.yaml", "sherlock.yaml", "zenodo-ml-2018.yaml"])
def test_shipped_configs_load_and_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH", "/scratch/users/me")
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.raster.width == 80 and cfg.output.formats == ["h5", "pkl"]
    if name == "sherlock.yaml":
        assert cfg.executor.kind == "slurm" and cfg.run.scratch == "/scratch/users/me/zenodo-hpc"
        assert cfg.executor.slurm.setup[1] == "source /scratch/users/me/zenodo-hpc/venv/bin/activate"
    if name == "zenodo-ml-2018.yaml":
        assert cfg.zenodo.limit == 10000 and cfg.zenodo.exclude == ["gcube"]

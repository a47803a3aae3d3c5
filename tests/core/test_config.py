"""The YAML config loader: defaults, ${VAR} expansion, and errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from zenodo_hpc.core.config import FROZEN_FORMAT, Config, ConfigError, config_from_dict, frozen_keys, load_config
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, load_run, open_run

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_no_file_and_empty_file_give_the_defaults(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    assert load_config(write(tmp_path, "")) == Config()
    cfg = Config()
    assert (cfg.raster.width, cfg.raster.height, cfg.raster.pad, cfg.raster.max_file_bytes) == (80, 80, 32, 100_000)
    assert cfg.output.formats == ["h5"] and cfg.output.h5_compression == "gzip-2"  # the pickle is opt-in
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
        ("output: {h5_compression: gzip-10}\n", r"output\.h5_compression: must be gzip-1 \.\.\. gzip-9, lzf or zstd"),
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
    assert config_from_dict({"output": {"formats": ["h5", "pkl"]}}).sha256() != base
    assert config_from_dict({"output": {"h5_compression": "gzip-9"}}).sha256() != base
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


def _key_of_comment(lines: list[str], index: int) -> str:
    """The dotted key a YAML comment belongs to: the key on its line, or on the line a comment-only line follows."""
    while index > 0 and lines[index].lstrip().startswith("#"):
        index -= 1
    path: list[str] = []
    indent = len(lines[index]) - len(lines[index].lstrip())
    path.append(lines[index].split(":", 1)[0].strip())
    for line in reversed(lines[:index]):
        depth = len(line) - len(line.lstrip())
        if line.strip() and not line.lstrip().startswith("#") and depth < indent:
            path.insert(0, line.split(":", 1)[0].strip())
            indent = depth
    return ".".join(path)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_the_offline_switch_is_the_one_the_cluster_guide_names(name: str) -> None:
    """Compute nodes without internet: what a shipped config says about them is said on the key the guide names."""
    guide = (ROOT / "docs" / "cluster-guide.md").read_text().split("## Compute nodes without internet", 1)[1]
    guide = guide.split("\n## ", 1)[0]
    assert "`fetch.offline: true`" in guide
    lines = (ROOT / "configs" / name).read_text().splitlines()
    said = [_key_of_comment(lines, i) for i, line in enumerate(lines) if "without internet" in line
            or "lack internet" in line or "no internet" in line]
    assert set(said) <= {"fetch.offline"}, f"configs/{name} speaks of offline nodes on {said}"
    if name == "sherlock.yaml":
        assert said and "zenodo-hpc fetch" in "\n".join(lines)


@pytest.mark.parametrize("name", ["default.yaml", "local.yaml", "sherlock.yaml", "zenodo-ml-2018.yaml"])
def test_shipped_configs_load_and_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH", "/scratch/users/me")
    monkeypatch.setenv("HOME", "/home/users/me")
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.raster.width == 80 and cfg.output.formats == (["h5", "pkl"] if name == "zenodo-ml-2018.yaml" else ["h5"])
    assert cfg.output.h5_compression == Config().output.h5_compression
    if name == "sherlock.yaml":
        assert cfg.executor.kind == "slurm" and cfg.run.scratch == "/scratch/users/me/zenodo-hpc"
        assert cfg.executor.slurm.setup[1] == "source /home/users/me/zenodo-hpc/venv/bin/activate"  # not purged
    if name == "zenodo-ml-2018.yaml":
        assert cfg.zenodo.limit == 10000 and cfg.zenodo.exclude == ["gcube"]


# --- abuse: alias bombs, duplicate keys, NaN and infinities, absurd numbers ------------------------------

def _alias_bomb(indent: str = "") -> str:
    """The "billion laughs": nine levels of nine aliases, 9**9 values once expanded."""
    lines = [f"{indent}a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


_REFUSE_IN_A_SUBPROCESS = """
import sys
from zenodo_hpc.core.config import ConfigError, load_config
from zenodo_hpc.core.state import load_run
try:
    load_run(sys.argv[1]) if sys.argv[1].endswith("run") else load_config(sys.argv[1])
except ConfigError as exc:
    print(exc)
else:
    print("loaded")
"""


@pytest.mark.parametrize(("where", "text"), [
    ("cfg.yaml", _alias_bomb()),
    ("cfg.yaml", "executor:\n  slurm:\n    additional:\n" + _alias_bomb("      ")),
    ("run", "executor:\n  slurm:\n    additional:\n" + _alias_bomb("      ")),
])
def test_an_alias_bomb_is_refused_without_being_expanded(tmp_path: Path, where: str, text: str) -> None:
    path = tmp_path / where
    if where == "run":
        path.mkdir()
        (path / "run.yaml").write_text(text)
    else:
        path.write_text(text)
    # in a child process only so that a regression cannot hang the test suite; the assertion is on its answer
    proc = subprocess.run([sys.executable, "-c", _REFUSE_IN_A_SUBPROCESS, str(path)],
                          capture_output=True, text=True, timeout=600, check=True)
    message = proc.stdout.strip()
    assert re.fullmatch(r".*(cfg|run)\.yaml: [\w.]+: more than 100000 values once its aliases are expanded "
                        r"\(a YAML alias bomb\?\) \(line \d+\)", message), message


def test_aliases_within_reason_work(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "executor:\n  slurm: &res {time_min: 30, mem_gb: 2}\n"
                                      "pack:\n  <<: *res\n  mem_gb: 3\n"
                                      "zenodo: {exclude: &ex [gcube, test]}\nraster: {binary_extensions: *ex}\n"))
    assert (cfg.pack.time_min, cfg.pack.mem_gb) == (30, 3.0)
    assert cfg.raster.binary_extensions == ["gcube", "test"]


def test_an_alias_inside_its_own_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cfg\.yaml: executor\.slurm\.additional\.x: an alias refers to a value "
                                          r"that contains it \(line 1\)"):
        load_config(write(tmp_path, "executor: {slurm: {additional: &a {x: *a}}}\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("raster: {}\nzenodo: {}\nraster: {width: 3}\n", r"cfg\.yaml: raster: duplicate key, at lines 1 and 3"),
        ("raster:\n  width: 40\n  height: 3\n  width: 50\n",
         r"cfg\.yaml: raster\.width: duplicate key, at lines 2 and 4"),
        ("executor:\n  slurm:\n    partition: a\n    partition: b\n",
         r"cfg\.yaml: executor\.slurm\.partition: duplicate key, at lines 3 and 4"),
        ("executor: {slurm: {additional: {qos: a, qos: b}}}\n",
         r"cfg\.yaml: executor\.slurm\.additional\.qos: duplicate key, at lines 1 and 1"),
    ],
)
def test_duplicate_keys_are_refused_at_any_depth(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fetch: {timeout_s: .inf}\n", r"cfg\.yaml: fetch\.timeout_s: must be a finite number, got inf"),
        ("zenodo: {rate_limit_per_min: .nan}\n", r"zenodo\.rate_limit_per_min: must be a finite number, got nan"),
        ("zenodo: {max_wait_s: -.inf}\n", r"zenodo\.max_wait_s: must be a finite number, got -inf"),
        ("fetch: {deadline_s: 1.0e+999}\n", r"fetch\.deadline_s: must be a finite number, got inf"),
        ("fetch: {deadline_s: 1e999}\n", r"fetch\.deadline_s: expected a number, got '1e999'"),  # a string to YAML 1.1
        ("executor: {slurm: {mem_gb: .NaN}}\n", r"executor\.slurm\.mem_gb: must be a finite number"),
        ("executor: {slurm: {additional: {x: [1, .inf]}}}\n",
         r"executor\.slurm\.additional\.x\[1\]: must be a finite number, got inf"),
    ],
)
def test_nan_and_infinities_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_nan_is_refused_from_python_too() -> None:
    with pytest.raises(ConfigError, match=r"<config>: zenodo\.search_rate_limit_per_min: must be a finite number"):
        config_from_dict({"zenodo": {"search_rate_limit_per_min": float("nan")}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("raster: {width: 1000000000, height: 1000000000}\n", r"cfg\.yaml: raster\.width: must be at most 4096"),
        ("executor: {records_per_shard: 9223372036854775808}\n",
         r"executor\.records_per_shard: 9223372036854775808 is beyond 2\*\*63"),
        ("zenodo: {page_size: 99999999999999999999999}\n", r"zenodo\.page_size: 99999999999999999999999 is beyond"),
        ("fetch: {timeout_s: -99999999999999999999999}\n", r"fetch\.timeout_s: -99999999999999999999999 is beyond"),
        ("executor: {slurm: {additional: {nodes: 99999999999999999999}}}\n",
         r"executor\.slurm\.additional\.nodes: 99999999999999999999 is beyond 2\*\*63"),
        ("executor: {max_attempts: " + "9" * 5000 + "}\n",
         r"executor\.max_attempts: an integer of 5000 characters is beyond 2\*\*63 \(line 1\)"),
    ],
)
def test_absurd_integers_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def _numeric_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _numeric_fields(hints[f.name], f"{prefix}{f.name}.")
        elif {int, float} & set(typing.get_args(hints[f.name]) or [hints[f.name]]):
            out.append((prefix + f.name, f))
    return out


def _nested(key: str, value: object) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value  # type: ignore[return-value]


def _with_others(key: str, value: object) -> dict:
    """``_nested``, with the keys that must agree with it set to agree: the other splits 0 (they add up to 1)."""
    data = _nested(key, value)
    if key.startswith("export.splits."):
        data["export"]["splits"] = {"train": 0, "validation": 0, "test": 0, **data["export"]["splits"]}
    return data


@pytest.mark.parametrize(("key", "f"), _numeric_fields(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_number_has_a_maximum_that_is_enforced_and_documented(key: str, f: dataclasses.Field) -> None:
    assert "max" in f.metadata and "min" in f.metadata, f"{key} has no range"
    high = f.metadata["max"]
    assert config_from_dict(_with_others(key, high)) is not None
    with pytest.raises(ConfigError, match=rf"<config>: {re.escape(key)}: must be at most "):
        config_from_dict(_with_others(key, high + 1))
    section, _, rest = key.partition(".")
    doc = (ROOT / "docs" / "configuration.md").read_text().partition(f"## `{section}:`")[2]
    row = next(line for line in doc.splitlines() if line.startswith(f"| `{rest}` |"))
    assert f"{high:,}" in row, f"docs/configuration.md does not give the maximum of {key}: {row}"


# --- run.yaml: whole, truncated, or written by an older version ------------------------------------------

def _frozen_run(tmp_path: Path) -> tuple[RunDir, Config]:
    cfg = config_from_dict({"run": {"scratch": str(tmp_path), "name": "r"}, "executor": {"kind": "local"},
                            "raster": {"tab_width": 8}})
    return open_run(cfg), cfg


def test_run_yaml_is_written_whole_and_read_back(tmp_path: Path) -> None:
    run, cfg = _frozen_run(tmp_path)
    text = run.run_yaml.read_text()
    assert text.startswith(f"# zenodo-hpc run.yaml, format {FROZEN_FORMAT}:") and text.endswith("# end of run.yaml\n")
    assert load_run(run.root)[1] == cfg
    assert load_config(run.run_yaml) == cfg  # still a config file: `-c <run>/run.yaml` works


def _cut(text: str, after: str) -> str:
    return text[:text.index(after) + len(after)]


@pytest.mark.parametrize(
    ("cut", "missing"),
    [
        (lambda t: "", "run.name"),
        (lambda t: _cut(t, "executor:\n"), "executor.kind"),
        (lambda t: _cut(t, "  kin"), "executor.kind"),
        (lambda t: _cut(t, "  kind: local\n"), "executor.records_per_shard"),
        (lambda t: _cut(t, "pack:\n"), "pack.image"),
        (lambda t: t.replace("  tab_width: 8\n", ""), "raster.tab_width"),  # edited by hand
        (lambda t: t.replace("  max_wait_s: 600.0\n", ""), "zenodo.max_wait_s"),  # format 2 wrote it
    ],
)
def test_a_truncated_or_edited_run_yaml_names_the_first_missing_key(tmp_path: Path, cut, missing: str) -> None:
    run, _ = _frozen_run(tmp_path)
    run.run_yaml.write_text(cut(run.run_yaml.read_text()))
    with pytest.raises(UserError) as info:
        load_run(run.root)
    message = str(info.value)
    assert message.startswith(f"{run.run_yaml}: truncated or edited: key {missing} is missing; restore it")
    assert "delete it and run `zenodo-hpc submit -c CONFIG` with this run's config" in message
    assert "\n" not in message


def test_a_run_yaml_cut_in_its_last_value_is_refused(tmp_path: Path) -> None:
    run, _ = _frozen_run(tmp_path)
    run.run_yaml.write_text(_cut(run.run_yaml.read_text(), "webhook_url: nu"))  # the last value, cut: "nu" parses
    with pytest.raises(UserError, match=r"run\.yaml: truncated: it does not end with the line '# end of run\.yaml'"):
        load_run(run.root)


def test_a_run_yaml_cut_mid_syntax_is_refused(tmp_path: Path) -> None:
    run, _ = _frozen_run(tmp_path)
    run.run_yaml.write_text(_cut(run.run_yaml.read_text(), "  - gcube\n  token_e"))
    with pytest.raises(UserError, match=r"run\.yaml: truncated or damaged, not valid YAML \(line \d+, column \d+\)"):
        load_run(run.root)


def test_what_the_message_says_rewrites_run_yaml(tmp_path: Path) -> None:
    run, cfg = _frozen_run(tmp_path)
    run.run_yaml.write_text(_cut(run.run_yaml.read_text(), "executor:\n"))
    with pytest.raises(UserError, match="executor.kind is missing"):
        open_run(cfg)  # submit -c CONFIG over the broken file refuses too ...
    run.run_yaml.unlink()
    open_run(cfg)  # ... and, once it is deleted, writes it anew
    assert load_run(run.root)[1] == cfg


def test_a_run_yaml_from_an_older_version_keeps_loading_with_defaults(tmp_path: Path) -> None:
    run, cfg = _frozen_run(tmp_path)
    old = cfg.to_dict()  # what freeze_config wrote before formats: no head, no end line, fewer keys
    for key in ("zenodo.max_wait_s", "fetch.deadline_s", "raster.binary_extensions", "pack.time_min"):
        section, _, name = key.partition(".")
        del old[section][name]
    run.run_yaml.write_text(yaml.safe_dump(old, sort_keys=False))
    loaded = load_run(run.root)[1]
    assert loaded == cfg and loaded.executor.kind == "local" and loaded.raster.tab_width == 8
    del old["executor"]["kind"]  # every version wrote this one: its absence is a cut or an edit
    run.run_yaml.write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(UserError, match=r"run\.yaml: truncated or edited: key executor\.kind is missing"):
        load_run(run.root)


def test_a_run_yaml_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    run, _ = _frozen_run(tmp_path)
    run.run_yaml.write_text(run.run_yaml.read_text().replace(f"format {FROZEN_FORMAT}", f"format {FROZEN_FORMAT + 1}"))
    with pytest.raises(UserError, match=rf"written by a newer zenodo-hpc \(run\.yaml format {FROZEN_FORMAT + 1};"):
        load_run(run.root)


def test_run_yaml_goes_through_the_same_checks(tmp_path: Path) -> None:
    run, _ = _frozen_run(tmp_path)
    text = run.run_yaml.read_text()
    run.run_yaml.write_text(text.replace("  timeout_s: 120.0\n", "  timeout_s: .inf\n"))
    with pytest.raises(ConfigError, match=r"run\.yaml: fetch\.timeout_s: must be a finite number"):
        load_run(run.root)
    run.run_yaml.write_text(text.replace("  tab_width: 8\n", "  tab_width: 8\n  tab_width: 2\n"))
    with pytest.raises(ConfigError, match=r"run\.yaml: raster\.tab_width: duplicate key, at lines \d+ and \d+"):
        load_run(run.root)


@pytest.mark.parametrize("image", ["../ESCAPED.sqsh", "/tmp/abs.sqsh", "sub/x.sqsh", "..", "", ".hidden.sqsh",
                                   "records.jsonl"])
def test_pack_image_is_a_file_name_in_the_run_directory(tmp_path: Path, image: str) -> None:
    """The image and its checksums are written at ``<run>/<pack.image>``: a path there would write elsewhere."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"pack:\n  image: {image!r}\n"))
    assert str(info.value).startswith(f"{tmp_path / 'cfg.yaml'}: pack.image: {image!r} is ")
    assert "a plain file name like zenodo-ml.sqsh" in str(info.value) and "\n" not in str(info.value)
    run, _ = _frozen_run(tmp_path)  # the same in a run.yaml edited by hand
    run.run_yaml.write_text(run.run_yaml.read_text().replace("  image: zenodo-ml.sqsh\n", f"  image: {image!r}\n"))
    with pytest.raises(ConfigError, match=r"run\.yaml: pack\.image: "):
        load_run(run.root)
    assert load_config(write(tmp_path, "pack:\n  image: my-data.v2.sqsh\n")).pack.image == "my-data.v2.sqsh"


def test_a_config_file_is_read_only_as_far_as_a_config_can_be_long(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """``-c /dev/zero`` (or a data file given by mistake) ended in ``internal error: MemoryError``."""
    from zenodo_hpc.cli import main

    assert main(["process", "-c", "/dev/zero", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("zenodo-hpc process: error: /dev/zero: not a config file: longer than 1,048,576 bytes "
                           "(a config is a few kB)")
    big = write(tmp_path, "# a comment\n" * 100_000)  # 1.2 MB of valid YAML is no config either
    with pytest.raises(ConfigError, match=r"cfg\.yaml: not a config file: longer than 1,048,576 bytes"):
        load_config(big)
    assert not (tmp_path / "out").exists()


def test_the_keys_of_each_run_yaml_format_are_pinned() -> None:
    # A key added to Config must be marked with the format that first writes it (metadata since=N, with
    # FROZEN_FORMAT = N), or run.yaml files written before it would be refused as truncated.
    assert frozen_keys(FROZEN_FORMAT) == frozen_keys(FROZEN_FORMAT + 1)
    assert len(frozen_keys(1)) == 44
    assert set(frozen_keys(2)) - set(frozen_keys(1)) == {
        "zenodo.max_wait_s", "raster.binary_extensions", "fetch.deadline_s", "executor.slurm.max_mem_gb",
        "executor.slurm.max_time_min", "pack.time_min", "pack.mem_gb", "pack.cpus_per_task",
    }
    assert len(frozen_keys(2)) == 52, "a new key needs metadata since=3 and FROZEN_FORMAT = 3 (config.py)"
    assert "output.h5_compression" in set(frozen_keys(3)) - set(frozen_keys(2))


def test_export_near_duplicates_is_keep_or_drop() -> None:
    """export.near_duplicates: keep by default (near duplicates stay, marked by their cluster); drop, or an error."""
    assert Config().export.near_duplicates == "keep"
    assert config_from_dict({"export": {"near_duplicates": "drop"}}).export.near_duplicates == "drop"
    with pytest.raises(ConfigError, match=r"export\.near_duplicates: must be one of keep, drop, got 'remove'"):
        config_from_dict({"export": {"near_duplicates": "remove"}})


@pytest.mark.parametrize("repo", ["zenodo-ml", "alice/zenodo--ml", "alice/../x", "alice/zenodo-ml.git", "a/b/c",
                                  " alice/zenodo-ml", "-alice/zenodo-ml", f"alice/{'x' * 97}"])
def test_publish_huggingface_repo_is_an_id_the_hub_takes(tmp_path: Path, repo: str) -> None:
    """publish.huggingface (format 6): off by default; an id the Hub would refuse stops the config, not the month's
    update that would publish; a run.yaml of format 5 (no such section) loads with it off."""
    assert Config().publish.huggingface.repo is None and Config().publish.huggingface.public is False
    assert set(frozen_keys(6)) - set(frozen_keys(5)) == {"publish.huggingface.repo", "publish.huggingface.public"}
    hub = load_config(write(tmp_path, "publish:\n  huggingface:\n    repo: alice/zenodo-ml\n    public: true\n"))
    assert (hub.publish.huggingface.repo, hub.publish.huggingface.public) == ("alice/zenodo-ml", True)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"publish:\n  huggingface:\n    repo: {repo!r}\n"))
    assert str(info.value) == (f"{tmp_path / 'cfg.yaml'}: publish.huggingface.repo: {repo!r} must be OWNER/NAME: "
                               "letters, digits, '-', '_', '.', at most 96 characters each, no '--' or '..' (e.g. "
                               "alice/zenodo-ml)")

"""The YAML configuration: defaults, loading, validation.

Every key is optional; what a file leaves out keeps the default written here (and, with a comment, in
``configs/default.yaml``). Unknown keys, wrong types and out-of-range values are errors that name the
file and the key, so a typo never silently falls back to a default. ``${VAR}`` in a string is replaced by
the environment variable ``VAR`` (an unset variable is an error, naming it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def _positive(minimum: float = 1) -> dict[str, Any]:
    return {"min": minimum}


@dataclass
class RunConfig:
    name: str = "zenodo-ml"
    scratch: str = "./scratch"


@dataclass
class ZenodoConfig:
    api_url: str = "https://zenodo.org/api"
    type: str = "software"
    query: str = ""
    limit: int = field(default=10000, metadata=_positive(0))
    all_versions: bool = False
    exclude: list[str] = field(default_factory=lambda: ["gcube"])
    token_env: str = "ZENODO_TOKEN"
    rate_limit_per_min: float = field(default=60.0, metadata=_positive(0.001))
    search_rate_limit_per_min: float = field(default=30.0, metadata=_positive(0.001))
    page_size: int | None = field(default=None, metadata=_positive())
    search_window: int = field(default=10_000, metadata=_positive())
    timeout_s: float = field(default=60.0, metadata=_positive(0.001))
    retries: int = field(default=5, metadata=_positive(0))
    max_wait_s: float = field(default=600.0, metadata=_positive(0))


@dataclass
class GithubConfig:
    fallback: bool = True
    codeload_url: str = "https://codeload.github.com"


# Loose files of a record with these extensions (any case) are known binary types: not downloaded, so
# that the request budget is not spent on papers, pictures and data. Files inside archives are judged
# by their content instead (a NUL byte), as the walk always did.
BINARY_EXTENSIONS = (
    ".pdf", ".ps", ".eps", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".ico", ".webp", ".svgz",
    ".mp3", ".mp4", ".m4a", ".wav", ".flac", ".ogg", ".avi", ".mov", ".mkv", ".webm",
    ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".jar", ".war", ".whl", ".egg", ".deb", ".rpm", ".dmg", ".iso",
    ".exe", ".dll", ".so", ".dylib", ".o", ".a", ".class", ".pyc", ".bin",
    ".pkl", ".pickle", ".npy", ".npz", ".h5", ".hdf5", ".nc", ".mat", ".parquet", ".feather", ".sqlite", ".db",
    ".rds", ".rdata", ".sav", ".dta", ".fits",
    ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp",
    ".ttf", ".otf", ".woff", ".woff2", ".eot",
)


@dataclass
class RasterConfig:
    width: int = field(default=80, metadata=_positive())
    height: int = field(default=80, metadata=_positive())
    pad: int = field(default=32, metadata={"min": 0, "max": 0x10FFFF})
    tab_width: int = field(default=4, metadata=_positive(0))
    max_file_bytes: int = field(default=100_000, metadata=_positive(0))
    skip_binary: bool = True
    binary_extensions: list[str] = field(default_factory=lambda: list(BINARY_EXTENSIONS))


@dataclass
class ExtractConfig:
    max_bytes: int = field(default=1_000_000_000, metadata=_positive())
    max_members: int = field(default=100_000, metadata=_positive())


@dataclass
class FetchConfig:
    max_bytes: int = field(default=1_000_000_000, metadata=_positive())
    attempts: int = field(default=3, metadata=_positive())
    timeout_s: float = field(default=120.0, metadata=_positive(0.001))
    deadline_s: float = field(default=1800.0, metadata=_positive(0.001))
    cache: bool = False
    offline: bool = False


OUTPUT_FORMATS = ("h5", "pkl")


@dataclass
class OutputConfig:
    formats: list[str] = field(default_factory=lambda: ["h5", "pkl"], metadata={"choices": OUTPUT_FORMATS})


@dataclass
class SlurmConfig:
    partition: str | None = None
    time_min: int = field(default=60, metadata=_positive())
    mem_gb: float = field(default=4.0, metadata=_positive(0.001))
    cpus_per_task: int = field(default=1, metadata=_positive())
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)
    max_mem_gb: float = field(default=64.0, metadata=_positive(0.001))
    max_time_min: int = field(default=2880, metadata=_positive())


@dataclass
class LocalConfig:
    workers: int | None = field(default=None, metadata=_positive())


EXECUTOR_KINDS = ("auto", "slurm", "local", "debug")


@dataclass
class ExecutorConfig:
    kind: str = field(default="auto", metadata={"choices": EXECUTOR_KINDS})
    records_per_shard: int = field(default=50, metadata=_positive())
    array_parallelism: int = field(default=64, metadata=_positive())
    max_attempts: int = field(default=3, metadata=_positive())
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    local: LocalConfig = field(default_factory=LocalConfig)


@dataclass
class PackConfig:
    image: str = "zenodo-ml.sqsh"
    compression: str = field(default="zstd", metadata={"choices": ("zstd", "xz", "gzip", "lz4", "lzo")})
    time_min: int = field(default=240, metadata=_positive())
    mem_gb: float = field(default=8.0, metadata=_positive(0.001))
    cpus_per_task: int = field(default=4, metadata=_positive())


# What a run's outputs depend on. Everything else (executor resources, rate limits, timeouts, pack
# settings, limit) may change between submissions of the same run; these may not, or one run would mix
# two datasets.
OUTPUT_KEYS = (
    "zenodo.type", "zenodo.query", "zenodo.all_versions", "zenodo.exclude",
    "github.fallback", "raster", "extract", "output",
)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    zenodo: ZenodoConfig = field(default_factory=ZenodoConfig)
    github: GithubConfig = field(default_factory=GithubConfig)
    raster: RasterConfig = field(default_factory=RasterConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    pack: PackConfig = field(default_factory=PackConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.scratch) / self.run.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def output_settings(self) -> dict[str, Any]:
        """The settings a run's outputs depend on (see :data:`OUTPUT_KEYS`), by dotted key."""
        full = self.to_dict()
        out = {}
        for key in OUTPUT_KEYS:
            value: Any = full
            for part in key.split("."):
                value = value[part]
            out[key] = value
        return out

    def sha256(self) -> str:
        """A fingerprint of the output-defining settings, recorded as ``tool.config_sha256`` in every record.

        Executor resources, rate limits and the like are left out: a shard resubmitted with more
        memory must write byte-identical records.
        """
        canonical = json.dumps(self.output_settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_vars(text: str, where: str) -> str:
    """Replace ``${VAR}`` with the environment's value; an unset variable is an error naming it."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _VAR.sub(replace, text)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {str: "strings", int: "integers", float: "numbers"}.get(item, _type_name(item))
    if origin is dict:
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item, item_tp, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _expand_any(v, f"{where}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return expand_vars(value, where)
    elif tp is Any:
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _expand_any(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return expand_vars(value, where)
    return value


def _check_range(value: Any, meta: Any, where: str) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            continue
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"{where}: must be at least {meta['min']}, got {item!r}")
        if "max" in meta and item > meta["max"]:
            raise ConfigError(f"{where}: must be at most {meta['max']}, got {item!r}")
        if "choices" in meta and item not in meta["choices"]:
            raise ConfigError(f"{where}: must be one of {', '.join(meta['choices'])}, got {item!r}")


def _key_where(where: str, key: str) -> str:
    """``file.yaml: raster`` + ``width`` -> ``file.yaml: raster.width`` (top level: ``file.yaml: raster``)."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _build(cls: type, data: Any, where: str) -> Any:
    """Make a ``cls`` from a mapping, defaults for what is missing, errors naming what is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{_key_where(where, str(key))}: unknown key (known keys: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        key_where = _key_where(where, name)
        value = _coerce(data[name], hints[name], key_where)
        _check_range(value, f.metadata, key_where)
        values[name] = value
    return cls(**values)


def config_from_dict(data: dict[str, Any] | None, source: str = "<config>") -> Config:
    """Build and validate a :class:`Config`; ``source`` names the file in error messages."""
    cfg = _build(Config, data or {}, f"{source}:")
    if len(set(cfg.output.formats)) != len(cfg.output.formats) or not cfg.output.formats:
        raise ConfigError(f"{source}: output.formats: list each of {', '.join(OUTPUT_FORMATS)} at most once, "
                          "and at least one")
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read a YAML config file (``None`` gives the defaults)."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (run:, zenodo:, ...), got {type(data).__name__}")
    return config_from_dict(data, str(path))

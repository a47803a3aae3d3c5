"""The YAML configuration: defaults, loading, validation.

Every key is optional; what a file leaves out keeps the default written here (and, with a comment, in
``configs/default.yaml``). Unknown keys, wrong types and out-of-range values are errors that name the
file and the key, so a typo never silently falls back to a default. ``${VAR}`` in a string is replaced by
the environment variable ``VAR`` (an unset variable is an error, naming it). The YAML is read strictly
(:func:`parse_yaml`): alias bombs, duplicate keys, NaN, infinities and numbers out of range are refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .licenses import CATEGORIES as LICENSE_CATEGORIES

# Maxima no real run comes near: they turn a slip of the keyboard (a few zeros too many) or a hostile file into
# an error naming the key, instead of a worker allocating terabytes or waiting for years.
DAY_S = 86_400
WEEK_S = 7 * DAY_S
YEAR_MIN = 365 * 24 * 60  # 525,600 minutes: SLURM takes time limits in minutes; a year is beyond any cluster's
TB = 10**12
MAX_MEM_GB = 100_000  # 100 TB: more than any single node has
MAX_CPUS = 10_000
MAX_RATE_PER_MIN = 1_000_000
MAX_RATE_PER_HOUR = 60 * MAX_RATE_PER_MIN
MAX_TRIES = 100
INT64 = 2**63  # no integer anywhere in a config may reach it (or go below -2**63)


def _bounded(minimum: float, maximum: float, since: int = 1) -> dict[str, Any]:
    """Field metadata: the range of a number, and the run.yaml format that first wrote the key (see ``since``)."""
    return {"min": minimum, "max": maximum, "since": since}


@dataclass
class RunConfig:
    name: str = "zenodo-ml"
    scratch: str = "./scratch"


@dataclass(frozen=True)
class RequestBudget:
    """Requests a minute and an hour for the whole run (every worker's share together)."""

    per_minute: float
    per_hour: float


# Zenodo's published limits (developers.zenodo.org, "Rate limiting", November 2025: the zenodo/developers.zenodo.org
# repository, source/includes/rate-limit/_root.md): guests 60 requests a minute and 2,000 an hour, authenticated
# users 100 a minute and 5,000 an hour; searches 30 a minute for everyone (``search_rate_limit_per_min``).
GUEST_BUDGET = RequestBudget(per_minute=60.0, per_hour=2000.0)
TOKEN_BUDGET = RequestBudget(per_minute=100.0, per_hour=5000.0)


@dataclass
class ZenodoConfig:
    api_url: str = "https://zenodo.org/api"
    type: str = "software"
    query: str = ""
    limit: int = field(default=10000, metadata=_bounded(0, 100_000_000))
    all_versions: bool = False
    exclude: list[str] = field(default_factory=lambda: ["gcube"])
    token_env: str = "ZENODO_TOKEN"
    # None: Zenodo's published limit for guests or for a token (see ``request_budget``), chosen where the token is read.
    rate_limit_per_min: float | None = field(default=None, metadata=_bounded(0.001, MAX_RATE_PER_MIN))
    rate_limit_per_hour: float | None = field(default=None, metadata=_bounded(0.001, MAX_RATE_PER_HOUR, since=4))
    search_rate_limit_per_min: float = field(default=30.0, metadata=_bounded(0.001, MAX_RATE_PER_MIN))
    page_size: int | None = field(default=None, metadata=_bounded(1, 10_000))
    search_window: int = field(default=10_000, metadata=_bounded(1, 10_000_000))
    timeout_s: float = field(default=60.0, metadata=_bounded(0.001, DAY_S))
    retries: int = field(default=5, metadata=_bounded(0, MAX_TRIES))
    max_wait_s: float = field(default=600.0, metadata=_bounded(0, DAY_S, since=2))

    def request_budget(self, has_token: bool) -> RequestBudget:
        """The run's request budget: the keys that are set, Zenodo's published limits for the others (a token's
        when ``has_token``). Resolved where the token is read, so that loading a config never depends on it."""
        published = TOKEN_BUDGET if has_token else GUEST_BUDGET
        return RequestBudget(per_minute=published.per_minute if self.rate_limit_per_min is None
                             else self.rate_limit_per_min,
                             per_hour=published.per_hour if self.rate_limit_per_hour is None
                             else self.rate_limit_per_hour)


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
    width: int = field(default=80, metadata=_bounded(1, 4096))
    height: int = field(default=80, metadata=_bounded(1, 4096))
    pad: int = field(default=32, metadata=_bounded(0, 0x10FFFF))
    tab_width: int = field(default=4, metadata=_bounded(0, 64))
    max_file_bytes: int = field(default=100_000, metadata=_bounded(0, 10**9))
    skip_binary: bool = True
    binary_extensions: list[str] = field(default_factory=lambda: list(BINARY_EXTENSIONS), metadata={"since": 2})

    def layout(self) -> dict[str, int]:
        """The keywords of the rasterizer (``width``, ``height``, ``pad``, ``tab_width``), also the h5's attributes."""
        return {"width": self.width, "height": self.height, "pad": self.pad, "tab_width": self.tab_width}


@dataclass
class ExtractConfig:
    max_bytes: int = field(default=1_000_000_000, metadata=_bounded(1, TB))
    max_members: int = field(default=100_000, metadata=_bounded(1, 100_000_000))
    # MiB of a RAM-backed folder (tmpfs) a record's archives may be extracted into; 0: always node-local disk.
    memory_budget_mb: int = field(default=1024, metadata=_bounded(0, 1_000_000, since=3))


@dataclass
class FetchConfig:
    max_bytes: int = field(default=1_000_000_000, metadata=_bounded(1, TB))
    attempts: int = field(default=3, metadata=_bounded(1, MAX_TRIES))
    timeout_s: float = field(default=120.0, metadata=_bounded(0.001, DAY_S))
    deadline_s: float = field(default=1800.0, metadata=_bounded(0.001, WEEK_S, since=2))
    cache: bool = False
    offline: bool = False


OUTPUT_FORMATS = ("h5", "pkl")
# images_<id>.h5's filter: gzip and lzf are built into every h5py; zstd needs hdf5plugin in the writer and in
# every reader. The default was chosen by benchmarks/bench_record.py (benchmarks/RESULTS.md).
H5_COMPRESSIONS = (*(f"gzip-{level}" for level in range(1, 10)), "lzf", *(f"zstd-{level}" for level in range(1, 23)))
DEFAULT_H5_COMPRESSION = "gzip-2"


@dataclass
class OutputConfig:
    formats: list[str] = field(default_factory=lambda: ["h5"], metadata={"choices": OUTPUT_FORMATS})
    h5_compression: str = field(default=DEFAULT_H5_COMPRESSION, metadata={"since": 3})


@dataclass
class SlurmConfig:
    partition: str | None = None
    time_min: int = field(default=60, metadata=_bounded(1, YEAR_MIN))
    mem_gb: float = field(default=4.0, metadata=_bounded(0.001, MAX_MEM_GB))
    cpus_per_task: int = field(default=1, metadata=_bounded(1, MAX_CPUS))
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)
    max_mem_gb: float = field(default=64.0, metadata=_bounded(0.001, MAX_MEM_GB, since=2))
    max_time_min: int = field(default=2880, metadata=_bounded(1, YEAR_MIN, since=2))


@dataclass
class LocalConfig:
    workers: int | None = field(default=None, metadata=_bounded(1, MAX_CPUS))


EXECUTOR_KINDS = ("auto", "slurm", "local", "debug")


@dataclass
class ExecutorConfig:
    kind: str = field(default="auto", metadata={"choices": EXECUTOR_KINDS})
    records_per_shard: int = field(default=50, metadata=_bounded(1, 1_000_000))
    array_parallelism: int = field(default=64, metadata=_bounded(1, 100_000))
    max_attempts: int = field(default=3, metadata=_bounded(1, MAX_TRIES))
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    local: LocalConfig = field(default_factory=LocalConfig)


PACK_LEVEL = 3  # zstd 3: 6x mksquashfs's own 15 on h5 records for 0.5% more bytes (benchmarks/bench_pack.py)
PACK_MAX_LEVELS = {"zstd": 22, "gzip": 9, "lzo": 9}  # compressors with levels, and their highest


@dataclass
class PackConfig:
    image: str = "zenodo-ml.sqsh"
    compression: str = field(default="zstd", metadata={"choices": ("zstd", "xz", "gzip", "lz4", "lzo")})
    # The compressor's level: zstd 1-22, gzip and lzo 1-9 (xz and lz4 have none). Chosen by benchmarks/bench_pack.py.
    level: int = field(default=PACK_LEVEL, metadata=_bounded(1, 22, since=3))
    time_min: int = field(default=240, metadata=_bounded(1, YEAR_MIN, since=2))
    mem_gb: float = field(default=8.0, metadata=_bounded(0.001, MAX_MEM_GB, since=2))
    cpus_per_task: int = field(default=4, metadata=_bounded(1, MAX_CPUS, since=2))


@dataclass
class KaggleConfig:
    username: str | None = field(default=None, metadata={"since": 3})  # None: releases are not put on Kaggle
    name: str | None = field(default=None, metadata={"since": 3})  # the dataset's slug (default zenodo-ml-code-images)
    title: str = field(default="Zenodo ML code images by language", metadata={"since": 3})
    keywords: list[str] = field(default_factory=list, metadata={"since": 3})
    public: bool = field(default=False, metadata={"since": 3})


@dataclass
class ZenodoDepositConfig:
    api_url: str = field(default="", metadata={"since": 3})  # "": releases are not deposited on Zenodo
    token_env: str = field(default="ZENODO_DEPOSIT_TOKEN", metadata={"since": 3})
    concept_id: str | None = field(default=None, metadata={"since": 3})
    title: str = field(default="", metadata={"since": 3})
    creators: list[dict[str, Any]] = field(default_factory=list, metadata={"since": 3})
    description: str = field(default="", metadata={"since": 3})
    license: str = field(default="cc-by-4.0", metadata={"since": 3})
    keywords: list[str] = field(default_factory=list, metadata={"since": 3})
    related_identifiers: list[dict[str, Any]] = field(default_factory=list, metadata={"since": 3})
    rate_limit_per_min: float = field(default=30.0, metadata=_bounded(0.001, 1_000_000, since=3))
    timeout_s: float = field(default=300.0, metadata=_bounded(0.001, DAY_S, since=3))
    retries: int = field(default=3, metadata=_bounded(0, 100, since=3))
    max_wait_s: float = field(default=600.0, metadata=_bounded(0, DAY_S, since=3))


@dataclass
class HuggingfaceConfig:
    """The dataset repository on the Hugging Face Hub that gets each release's Parquet export (a commit and a tag)."""

    repo: str | None = field(default=None, metadata={"since": 6})  # OWNER/NAME; None: releases are not put on the Hub
    public: bool = field(default=False, metadata={"since": 6})  # a repository update creates is private unless true


@dataclass
class PublishConfig:
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)
    zenodo: ZenodoDepositConfig = field(default_factory=ZenodoDepositConfig)
    huggingface: HuggingfaceConfig = field(default_factory=HuggingfaceConfig, metadata={"since": 6})


@dataclass
class ReleasesConfig:
    keep: int = field(default=2, metadata=_bounded(1, 10_000, since=3))  # released images kept on disk


@dataclass
class NotifyConfig:
    webhook_url: str | None = field(default=None, metadata={"since": 3})


@dataclass
class DatasetConfig:
    """What leaves the dataset: records an author asked to leave out (``exclude``: a file of record ids, DOIs and
    concept DOIs), and whether the folders of records withdrawn from Zenodo stay in the run directory."""

    exclude: str | None = field(default=None, metadata={"since": 4})
    keep_withdrawn: bool = field(default=False, metadata={"since": 4})


NEAR_DUPLICATE_CHOICES = ("keep", "drop")  # export.near_duplicates


@dataclass
class SplitsConfig:
    """The fractions of the concepts (all versions of one software) in each split of the Parquet export: each
    from 0 to 1, together 1."""

    train: float = field(default=0.9, metadata=_bounded(0, 1, since=5))
    validation: float = field(default=0.05, metadata=_bounded(0, 1, since=5))
    test: float = field(default=0.05, metadata=_bounded(0, 1, since=5))


@dataclass
class ExportConfig:
    """What the exports publish: the records of which license categories (core/licenses.py: ``permissive``,
    ``copyleft``, ``other``, ``none``), the splits of the Parquet export, and whether its near duplicates
    (dataset/dedup.py) stay, marked by their ``near_dup_cluster``, or leave."""

    license_categories: list[str] = field(default_factory=lambda: list(LICENSE_CATEGORIES),
                                          metadata={"choices": LICENSE_CATEGORIES, "since": 5})
    splits: SplitsConfig = field(default_factory=SplitsConfig, metadata={"since": 5})
    near_duplicates: str = field(default="keep", metadata={"choices": NEAR_DUPLICATE_CHOICES, "since": 5})


# What a run's outputs depend on. Everything else (executor resources, rate limits, timeouts, pack
# settings, limit) may change between submissions of the same run; these may not, or one run would mix
# two datasets.
OUTPUT_KEYS = (
    "zenodo.type", "zenodo.query", "zenodo.all_versions", "zenodo.exclude",
    "github.fallback", "raster", "extract.max_bytes", "extract.max_members", "output",
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
    dataset: DatasetConfig = field(default_factory=DatasetConfig, metadata={"since": 4})
    export: ExportConfig = field(default_factory=ExportConfig, metadata={"since": 5})
    publish: PublishConfig = field(default_factory=PublishConfig)
    releases: ReleasesConfig = field(default_factory=ReleasesConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)

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


# --- the keys of run.yaml, by format -----------------------------------------------------------------
#
# ``state.freeze_config`` writes every key into a run's run.yaml, headed by the format number below. A
# run.yaml missing a key its format wrote was cut short or edited, and is refused; a key its format did
# not write yet keeps its default. A key's field metadata ``since`` is the first format that wrote it
# (default 1: run.yaml files written before formats were recorded, which all hold those keys). A new key
# gets ``since=FROZEN_FORMAT + 1``, and FROZEN_FORMAT that number.
FROZEN_FORMAT = 6


def frozen_keys(fmt: int, cls: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys a run.yaml of format ``fmt`` holds, in the order it holds them."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("since", 1) > fmt:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys += frozen_keys(fmt, hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def first_missing_key(data: dict[str, Any], fmt: int) -> str | None:
    """The first key of format ``fmt`` that ``data`` (a parsed run.yaml) lacks; a section that is empty or not a
    mapping (``executor: kin``, cut short) lacks all of its keys."""
    for key in frozen_keys(fmt):
        tree: Any = data
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return key
            tree = tree[part]
    return None


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


class _WrongType(ConfigError):
    """A value of the wrong type: the next type of a union is tried (a value out of range is final)."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except _WrongType:
                continue
        raise _WrongType(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _WrongType(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item, item_tp, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _WrongType(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _expand_any(v, f"{where}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _int64(value, where)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(value, where)
    elif tp is str:
        if isinstance(value, str):
            return expand_vars(value, where)
    elif tp is Any:
        _check_numbers(value, where)
        return value
    raise _WrongType(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _int64(value: int, where: str) -> int:
    """Refuse an integer beyond 64 bits: no key needs one, and sbatch, HDF5 or a float would choke on it."""
    if not -INT64 <= value < INT64:
        shown = str(value) if value.bit_length() <= 100 else f"an integer of {value.bit_length()} bits"
        raise ConfigError(f"{where}: {shown} is beyond 2**63")
    return value


def _finite(value: float, where: str) -> float:
    """A number as a float; NaN and infinities are refused, since every comparison with NaN is false (a
    rate limit of .nan would turn limiting off) and an infinite timeout fails every record."""
    if isinstance(value, int):
        _int64(value, where)
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {number}")
    return number


def _check_numbers(value: Any, where: str) -> None:
    """The number checks for free-form values (``slurm.additional``): at any depth, integers within 64
    bits and floats finite."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        _int64(value, where)
    elif isinstance(value, float):
        _finite(value, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{where}.{key}")


def _expand_any(value: Any, where: str) -> Any:
    _check_numbers(value, where)
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


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is no plain file name of a folder (``../x``, ``/abs``, ``a/b``, ``..``, hidden, empty), or None:
    a name from a config must not write outside the folder it names a file of."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        return "is not a file name (a path, or empty)"
    if name.startswith("."):
        return "is a hidden name (the run directory's temporary files start with a dot)"
    if name in RUN_DIR_ENTRIES:
        return "is the name of one of the run directory's own files or folders"
    return None


RUN_DIR_ENTRIES = ("run.yaml", "records.jsonl", "data", "state", "logs", "plans", "cache", "releases")


def config_from_dict(data: dict[str, Any] | None, source: str = "<config>") -> Config:
    """Build and validate a :class:`Config`; ``source`` names the file in error messages."""
    cfg: Config = _build(Config, data or {}, f"{source}:")
    top = PACK_MAX_LEVELS.get(cfg.pack.compression)
    if top is not None and cfg.pack.level > top:
        raise ConfigError(f"{source}: pack.level: {cfg.pack.compression} levels go from 1 to {top}, "
                          f"got {cfg.pack.level}")
    problem = file_name_problem(cfg.pack.image)
    if problem:
        raise ConfigError(f"{source}: pack.image: {cfg.pack.image!r} {problem}: the image is written in the run "
                          "directory, under a plain file name like zenodo-ml.sqsh")
    if len(set(cfg.output.formats)) != len(cfg.output.formats) or not cfg.output.formats:
        raise ConfigError(f"{source}: output.formats: list each of {', '.join(OUTPUT_FORMATS)} at most once, "
                          "and at least one")
    if cfg.output.h5_compression not in H5_COMPRESSIONS:
        raise ConfigError(f"{source}: output.h5_compression: must be gzip-1 ... gzip-9, lzf or zstd-1 ... zstd-22 "
                          f"(zstd needs hdf5plugin), got {cfg.output.h5_compression!r}")
    _check_export(cfg.export, source)
    _check_huggingface(cfg.publish.huggingface, source)
    return cfg


SPLIT_SUM_TOLERANCE = 1e-9  # fractions written in decimal (0.9 + 0.05 + 0.05) do not add up to 1.0 exactly


def _check_export(export: ExportConfig, source: str) -> None:
    """Each license category at most once and at least one; the splits' fractions add up to 1."""
    categories = export.license_categories
    if not categories or len(set(categories)) != len(categories):
        raise ConfigError(f"{source}: export.license_categories: list each of {', '.join(LICENSE_CATEGORIES)} at "
                          "most once, and at least one")
    splits = dataclasses.asdict(export.splits)
    total = sum(splits.values())
    if abs(total - 1.0) > SPLIT_SUM_TOLERANCE:
        shown = ", ".join(f"{name} {value:g}" for name, value in splits.items())
        raise ConfigError(f"{source}: export.splits: the fractions must add up to 1, {shown} add up to {total:g}")


# A Hub repository id as huggingface_hub's validate_repo_id takes it (dataset/hub.py checks --repo with it too).
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_REPO_ID = re.compile(rf"(?P<owner>{_HUB_PART})/(?P<name>{_HUB_PART})")
HUB_REPO_RULE = ("must be OWNER/NAME: letters, digits, '-', '_', '.', at most 96 characters each, no '--' or '..' "
                 "(e.g. alice/zenodo-ml)")


def hub_repo_ok(repo: str) -> bool:
    """Whether the Hub takes ``repo`` (already stripped) as a repository id."""
    match = HUB_REPO_ID.fullmatch(repo)
    if match is None or repo.endswith(".git"):
        return False
    return not any(bad in part for part in match.groups() for bad in ("--", ".."))


def _check_huggingface(hub: HuggingfaceConfig, source: str) -> None:
    """A repository id the Hub would refuse stops the config here, not a month later when ``update`` publishes."""
    if hub.repo is not None and not hub_repo_ok(hub.repo):
        raise ConfigError(f"{source}: publish.huggingface.repo: {hub.repo!r} {HUB_REPO_RULE}")


# --- the YAML loader ----------------------------------------------------------------------------------

MAX_YAML_VALUES = 100_000  # values in one file once its aliases are expanded (the default config has ~150)
_MAX_INT_CHARS = 100  # an integer literal longer than this is far beyond 2**63, and int() of it is slow
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _child(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, checking the composed document before any value is constructed.

    In the composed graph an alias is one shared node, so the size of every node with its aliases expanded
    is counted once per node: an alias bomb ("billion laughs") is measured and refused in linear time,
    never expanded. Aliases themselves are allowed (``<<: *defaults`` and friends), up to
    :data:`MAX_YAML_VALUES` values expanded. Duplicate keys, which SafeLoader silently resolves to the last,
    are refused too.
    """

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self._sizes: dict[int, int] = {}
        self._open: set[int] = set()

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            self._check(node, "")
        return node

    def _refuse(self, node: yaml.Node, path: str, problem: str) -> ConfigError:
        where = f"{self.source}: {path}:" if path else f"{self.source}:"
        return ConfigError(f"{where} {problem} (line {node.start_mark.line + 1})")

    def _check(self, node: yaml.Node, path: str) -> int:
        """The number of values in ``node`` with aliases expanded; refuses what is wrong on the way."""
        if id(node) in self._sizes:
            return self._sizes[id(node)]
        if id(node) in self._open:
            raise self._refuse(node, path, "an alias refers to a value that contains it")
        self._open.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            self._check_keys(node, path)
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                size += self._check(key_node, path) + self._check(value_node, _child(path, key))
        elif isinstance(node, yaml.SequenceNode):
            size += sum(self._check(item, f"{path}[{i}]") for i, item in enumerate(node.value))
        elif node.tag == _INT_TAG and len(node.value) > _MAX_INT_CHARS:
            raise self._refuse(node, path, f"an integer of {len(node.value)} characters is beyond 2**63")
        if size > MAX_YAML_VALUES:
            raise self._refuse(node, path, f"more than {MAX_YAML_VALUES} values once its aliases are expanded "
                                           "(a YAML alias bomb?)")
        self._open.discard(id(node))
        self._sizes[id(node)] = size
        return size

    def _check_keys(self, node: yaml.MappingNode, path: str) -> None:
        """Refuse a key given twice in one mapping (keys merged in with ``<<`` may be overridden)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            self._check(key_node, path)
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.source}: {_child(path, key)}: duplicate key, at lines {seen[key]} and {line}")
            seen[key] = line


def parse_yaml(text: str, source: str) -> Any:
    """Parse a config or run.yaml with :class:`_ConfigLoader`; a syntax error stays a ``yaml.YAMLError``."""
    loader = _ConfigLoader(text, source)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a value PyYAML cannot construct, e.g. the date 2024-13-45
        raise ConfigError(f"{source}: a value YAML cannot read: {exc}") from None
    finally:
        loader.dispose()


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """`` (line 3, column 7): problem`` for a message of one line."""
    mark = getattr(exc, "problem_mark", None)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{at}: {problem}"


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB (configs/default.yaml, every key commented, under 10 kB)


def read_config_text(path: Path) -> str:
    """A config file's text, read up to :data:`MAX_CONFIG_BYTES`: a bigger one (``/dev/zero``, a data file given by
    mistake) is refused before it fills the memory."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: not a config file: longer than {MAX_CONFIG_BYTES:,} bytes (a config is a few kB)")
    return data.decode("utf-8")


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read a YAML config file (``None`` gives the defaults)."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = parse_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{describe_yaml_error(exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (run:, zenodo:, ...), got {type(data).__name__}")
    return config_from_dict(data, str(path))

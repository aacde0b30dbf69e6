"""Run configuration: one dataclass of defaults per stage; a YAML file lists only what differs.

Inputs: `configs/<name>.yaml` (nested sections matching the dataclasses below) and optional
`key.sub=value` overrides. Unknown keys and wrong types fail with a message naming the key
(nanoGPT's configurator, without exec).

Usage:
    cfg = load_config("configs/mini.yaml", overrides=["generate.steps=2"])
    cfg.generate.steps, cfg.to_dict()
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


@dataclass
class PromptConfig:
    world: str = "miniworld"  # 'miniworld', 'comp90' or a folder in the same form
    split: str = "train"  # prompts the seeds are mined on
    kinds: list[str] = field(default_factory=lambda: ["count", "spatial"])
    counts: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    limit: int | None = None  # at most this many prompts per kind, evenly spread


@dataclass
class ModelConfig:
    pipeline: str = "tiny-sd"  # registry name (see generate.PIPELINES), hub id or local folder
    revision: str | None = None
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: float16 on cuda, float32 on cpu
    generator_device: str = "cpu"  # 'cuda' reproduces seeds mined the original way


@dataclass
class GenerateConfig:
    seeds: list[int] = field(default_factory=lambda: list(range(16)))
    steps: int = 20
    guidance: float = 7.5
    height: int = 32
    width: int = 32
    batch_size: int = 16


@dataclass
class JudgeConfig:
    name: str = "miniworld-local"  # registry name (see judge.JUDGES)
    base_url: str | None = None  # overrides the registry's endpoint
    model: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key, never the key
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 4


@dataclass
class MiningConfig:
    top_n: int = 3  # seeds kept per category (paper: 3 per count)
    k: int = 3  # top-k for the cross-half check
    n_permutations: int = 2000
    split_seed: int = 0


@dataclass
class RunConfig:
    name: str = "mini"
    runs_dir: str = "runs"
    prompts: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (for YAML and notebook parameters)."""
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        """`runs_dir/name`."""
        return Path(self.runs_dir) / self.name


def _coerce(value, tp, key: str):
    """Check `value` against type hint `tp`; ints pass for floats, nothing else is converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key!r}: {value!r} is not {tp}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a section (mapping), got {value!r}")
        return _build(tp, value, key + ".")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key {prefix + sorted(unknown)[0]!r}; "
                          f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {sorted(names)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def _set(d: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for p in path:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    d[last] = value


def apply_overrides(data: dict, overrides: list[str] | dict | None) -> dict:
    """Set `key.sub=value` overrides (values parsed as YAML) into a nested dict, in place."""
    items = overrides.items() if isinstance(overrides, dict) else (
        o.split("=", 1) if "=" in o else (o, None) for o in overrides or [])
    for k, v in items:
        if v is None:
            raise ConfigError(f"override {k!r} must look like key.sub=value")
        _set(data, k, yaml.safe_load(v) if isinstance(v, str) else v)
    return data


def config_from_dict(data: dict | None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Build a RunConfig from a nested dict plus `key=value` (YAML-parsed values) overrides."""
    return _build(RunConfig, apply_overrides(dict(data or {}), overrides))


def load_config(path: str | Path, overrides: list[str] | dict | None = None) -> RunConfig:
    """Read `configs/<name>.yaml`; the run name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    data.setdefault("name", path.stem)
    try:
        return config_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_dataclass(cls, path: str | Path, overrides: list[str] | dict | None = None):
    """Any config dataclass from a YAML file plus `key=value` overrides, with the same strict checks."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return _build(cls, apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

"""``FinetuneConfig``: every setting of a finetuning run, from YAML plus ``key=value`` overrides.

One flat dataclass for both tasks. It is validated once, at construction, so a bad value fails
before any data is read or model built. The resolved config is written to the run directory as
``config.yaml`` and read back by ``--resume`` to check the run is compatible.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..io import write_atomic

TASKS = ("tokenizer", "predictor")
SCHEDULES = ("onecycle", "cosine", "constant")
AMP_MODES = ("none", "bf16", "fp16")
DATA_FORMATS = ("auto", "qlib")

# Fields that may change between a run and its resumption without breaking it.
# out_dir: a run folder may be moved or copied and resumed where it now is.
RESUMABLE_CHANGES = frozenset({"resume", "device", "log_every", "tensorboard", "progress",
                               "compile", "cache_dir", "revision", "data", "out_dir"})


@dataclass
class FinetuneConfig:
    """Settings of one tokenizer or predictor finetuning run (see docs/finetune.md).

    Windows are ``lookback + pred_len + 1`` consecutive bars of one instrument, normalised
    with the mean/std of their first ``lookback`` bars only.
    """

    task: str = "predictor"
    # -- data ------------------------------------------------------------------------------
    data: str | None = None  # CSV/Parquet file, per-symbol directory, or Qlib dir (data_format)
    data_format: str = "auto"
    instrument_col: str = "instrument"
    datetime_col: str | None = None
    freq: str | None = None  # resample bars to this pandas frequency first
    instruments: list[str] | None = None  # subset of instruments (default: all)
    start: str | None = None  # keep bars at or after this date
    end: str | None = None  # keep bars at or before this date
    lookback: int = 90
    pred_len: int = 10
    max_context: int = 512
    clip: float = 5.0
    val_fraction: float = 0.2  # last share of the panel's dates used for validation
    val_start: str | None = None  # or an explicit first validation date
    embargo: int = 0  # dates skipped between the train and validation parts
    train_windows: int | None = None  # windows drawn per epoch (default: all)
    val_windows: int | None = None  # fixed validation subset (default: all)
    # -- model -----------------------------------------------------------------------------
    init: str = "nano"  # preset (nano/mini/small/base), checkpoint directory or Hub id
    tokenizer: str | None = None  # predictor task: the frozen tokenizer (directory or Hub id)
    teacher_forcing: bool = True  # s2 conditioned on the true s1 (False: sampled s1, upstream)
    revision: str | None = None
    cache_dir: str | None = None
    # -- optimisation ----------------------------------------------------------------------
    epochs: int = 1
    max_steps: int | None = None  # cap on optimizer steps (the schedule spans them)
    batch_size: int = 32  # windows per process per micro-batch
    accum_steps: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    schedule: str = "onecycle"
    warmup: float = 0.03  # warm-up share of all steps
    grad_clip: float = 3.0  # max gradient norm (0 disables)
    amp: str = "none"
    compile: bool = False
    seed: int = 0
    device: str | None = None
    # -- run directory and logging --------------------------------------------------------
    out_dir: str = "runs/finetune"
    resume: bool = False
    log_every: int = 10
    eval_every: int | None = None  # optimizer steps between validations (default: per epoch)
    tensorboard: bool = True  # used only if the tensorboard package is installed
    progress: bool = True

    def __post_init__(self) -> None:
        self._coerce_types()
        self._validate()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Build from a flat mapping; unknown keys are an error listing the valid ones."""
        if not isinstance(data, dict):
            raise TypeError(f"finetune config must be a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown finetune config keys {unknown}; valid keys: {names}")
        return cls(**data)

    @classmethod
    def from_sources(cls, path: str | Path | None = None, *, overrides: list[str] | None = None,
                     values: dict[str, Any] | None = None) -> FinetuneConfig:
        """YAML file (optional), then ``values`` (e.g. explicit CLI flags), then ``key=value``
        strings; later sources win."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(load_yaml(path))
        data.update({k: v for k, v in (values or {}).items() if v is not None})
        data.update(parse_overrides(overrides or []))
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @property
    def window(self) -> int:
        """Bars per training window."""
        return self.lookback + self.pred_len + 1

    def incompatibilities(self, other: FinetuneConfig) -> list[str]:
        """Fields that differ from ``other`` in ways a resumed run cannot absorb."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: saved {b[k]!r}, now {a[k]!r}" for k in a
                if k not in RESUMABLE_CHANGES and a[k] != b[k]]

    # -- checks ----------------------------------------------------------------------------
    def _coerce_types(self) -> None:
        """Cast YAML/CLI values to the declared field types, or fail naming the field."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(f.name, value, hints[f.name]))

    def _validate(self) -> None:
        _choice("task", self.task, TASKS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("amp", self.amp, AMP_MODES)
        _choice("data_format", self.data_format, DATA_FORMATS)
        for name in ("lookback", "pred_len", "max_context", "epochs", "batch_size",
                     "accum_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"finetune config: {name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("max_steps", "train_windows", "val_windows", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"finetune config: {name} must be ≥ 1 or null, got {value}")
        if self.window - 1 > self.max_context:
            raise ValueError(
                f"finetune config: lookback + pred_len + 1 = {self.window} bars give "
                f"{self.window - 1} input tokens, more than max_context={self.max_context}; "
                "shorten lookback/pred_len or raise max_context")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"finetune config: val_fraction must be in [0, 1), "
                             f"got {self.val_fraction}")
        checks = {"clip": self.clip > 0, "lr": self.lr > 0, "embargo": self.embargo >= 0,
                  "weight_decay": self.weight_decay >= 0, "grad_clip": self.grad_clip >= 0,
                  "warmup": 0.0 <= self.warmup < 1.0,
                  "adam_beta1": 0.0 <= self.adam_beta1 < 1.0,
                  "adam_beta2": 0.0 <= self.adam_beta2 < 1.0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"finetune config: invalid {name}={getattr(self, name)!r}")
        if self.task == "predictor" and not self.tokenizer:
            raise ValueError("finetune config: the predictor task needs `tokenizer`, the "
                             "(finetuned) tokenizer checkpoint it is trained on")


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"finetune config: {name} must be one of {list(options)}, got {value!r}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (int, float, bool, str, list[str], each possibly ``| None``)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise ValueError(f"finetune config: {name} must not be null")
    origin = typing.get_origin(base)
    if origin is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"finetune config: {name} must be a list, got {value!r}")
        return [str(v).strip() for v in items]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TypeError(f"finetune config: {name} must be true/false, got {value!r}")
    if base in (int, float):
        if isinstance(value, bool) or (base is int and isinstance(value, float)
                                       and not value.is_integer()):
            raise TypeError(f"finetune config: {name} must be {base.__name__}, got {value!r}")
        try:
            return base(value)
        except (TypeError, ValueError):
            raise TypeError(f"finetune config: {name} must be {base.__name__}, "
                            f"got {value!r}") from None
    return str(value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with clear errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"finetune config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "amp=bf16"]`` → ``{"lr": 1e-4, "amp": "bf16"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out

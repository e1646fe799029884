"""Typed configs for the tokenizer and the predictor.

Each config is a flat dataclass whose field names are exactly the keys of the published
``config.json`` files, so ``Config.from_dict(json.load(f)).to_dict()`` round-trips them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

CONFIG_NAME = "config.json"

C = TypeVar("C", bound="FlatConfig")


class FlatConfig:
    """JSON round-trip and validation shared by both configs."""

    model_name: ClassVar[str] = "model"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a flat dict; unknown or missing keys are errors (they mean a wrong file)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.model_name} config has unknown keys {unknown}; "
                             f"expected only {sorted(names)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if f.name not in data and f.default is dataclasses.MISSING)
        if missing:
            raise ValueError(f"{cls.model_name} config is missing keys {missing}")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no {CONFIG_NAME} at {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def _check(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{self.model_name} config: {f.name}={value} must be in [0, 1)")
        d_model, n_heads = self.d_model, self.n_heads
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"{self.model_name} config: d_model {d_model} / n_heads {n_heads} "
                             "must give an even head_dim (rotary embedding)")
        for bits in ("s1_bits", "s2_bits"):
            if not 1 <= getattr(self, bits) <= 20:
                raise ValueError(f"{self.model_name} config: {bits}={getattr(self, bits)} "
                                 "must be in 1..20")


@dataclass
class KronosTokenizerConfig(FlatConfig):
    """Constructor arguments of ``KronosTokenizer`` (keys of its config.json)."""

    model_name: ClassVar[str] = "KronosTokenizer"

    d_in: int = 6
    d_model: int = 256
    n_heads: int = 4
    ff_dim: int = 512
    n_enc_layers: int = 4
    n_dec_layers: int = 4
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    s1_bits: int = 10
    s2_bits: int = 10
    beta: float = 0.05
    gamma0: float = 1.0
    gamma: float = 1.1
    zeta: float = 0.05
    group_size: int = 4

    def __post_init__(self) -> None:
        self._check()
        if (self.s1_bits + self.s2_bits) % self.group_size:
            raise ValueError(f"KronosTokenizer config: s1_bits + s2_bits = "
                             f"{self.s1_bits + self.s2_bits} is not divisible by group_size "
                             f"{self.group_size}")
        if self.n_enc_layers < 1 or self.n_dec_layers < 1:
            raise ValueError("KronosTokenizer config: n_enc_layers and n_dec_layers must be ≥ 1 "
                             "(the checkpoints hold one block fewer than the number)")


@dataclass
class KronosConfig(FlatConfig):
    """Constructor arguments of ``Kronos`` (keys of its config.json)."""

    model_name: ClassVar[str] = "Kronos"

    s1_bits: int = 10
    s2_bits: int = 10
    n_layers: int = 8
    d_model: int = 512
    n_heads: int = 8
    ff_dim: int = 1024
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    token_dropout_p: float = 0.0
    learn_te: bool = True

    def __post_init__(self) -> None:
        self._check()
        if self.d_model % 4 or (self.d_model // 4) % 2:
            raise ValueError(f"Kronos config: d_model {self.d_model} must split into 4 "
                             "cross-attention heads of even size")


# Named sizes for fresh models (finetuning from scratch, tests, the demo).
TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(d_model=32, n_heads=2, ff_dim=64, n_enc_layers=2, n_dec_layers=2,
                 s1_bits=4, s2_bits=4, group_size=4),
    "mini": dict(d_model=64, n_heads=4, ff_dim=128, n_enc_layers=3, n_dec_layers=3,
                 s1_bits=6, s2_bits=6, group_size=4),
    "small": dict(d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4),
    "base": dict(d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4),
}
PREDICTOR_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=2, ff_dim=64),
    "mini": dict(s1_bits=6, s2_bits=6, n_layers=4, d_model=96, n_heads=4, ff_dim=192),
    "small": dict(s1_bits=10, s2_bits=10, n_layers=8, d_model=512, n_heads=8, ff_dim=1024),
    "base": dict(s1_bits=10, s2_bits=10, n_layers=12, d_model=832, n_heads=16, ff_dim=2048),
}


def preset_configs(name: str) -> tuple[KronosTokenizerConfig, KronosConfig]:
    """Matching tokenizer and predictor configs of a named size (nano, mini, small, base)."""
    if name not in PREDICTOR_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PREDICTOR_PRESETS)}")
    return KronosTokenizerConfig(**TOKENIZER_PRESETS[name]), KronosConfig(**PREDICTOR_PRESETS[name])

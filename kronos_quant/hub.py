"""Strict loading and saving in the Hub format (``config.json`` + ``model.safetensors``).

``huggingface_hub``'s own mixin loads non-strictly: a renamed key silently keeps a random
weight. Here every missing key, unexpected key and shape mismatch is an error that names it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn as nn

from .config import CONFIG_NAME, FlatConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
# Written beside config.json by our finetuning: the window the model was trained on.
TRAINING_NAME = "training.json"
# Context (tokens) the published predictors were trained on (kronos-compat-spec).
PUBLISHED_CONTEXT: dict[str, int] = {"NeoQuasar/Kronos-mini": 2048,
                                     "NeoQuasar/Kronos-small": 512,
                                     "NeoQuasar/Kronos-base": 512}

M = TypeVar("M", bound="HubModelMixin")


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model its config describes."""


def _resolve_files(name_or_path: str | Path, *, revision: str | None, cache_dir: str | None,
                   force_download: bool, token: str | bool | None,
                   local_files_only: bool) -> tuple[Path, Path]:
    """Local paths of config.json and the weights file, downloading from the Hub if needed."""
    local = Path(name_or_path)
    if local.is_dir():
        config = local / CONFIG_NAME
        if not config.is_file():
            raise FileNotFoundError(f"{local} has no {CONFIG_NAME}")
        for weights_name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
            if (local / weights_name).is_file():
                return config, local / weights_name
        raise FileNotFoundError(f"{local} has neither {WEIGHTS_NAME} nor {LEGACY_WEIGHTS_NAME}")
    if local.exists() or str(name_or_path).count("/") != 1:
        raise FileNotFoundError(f"{name_or_path!r} is neither a checkpoint directory nor a "
                                "Hub id of the form 'owner/name' (e.g. NeoQuasar/Kronos-small)")
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = dict(repo_id=str(name_or_path), revision=revision,
                                  cache_dir=cache_dir, force_download=force_download,
                                  token=token, local_files_only=local_files_only)
    config = Path(hf_hub_download(filename=CONFIG_NAME, **kwargs))
    try:
        weights = Path(hf_hub_download(filename=WEIGHTS_NAME, **kwargs))
    except Exception as err:  # noqa: BLE001 - fall back only when the file is absent
        if "404" not in str(err) and "EntryNotFound" not in type(err).__name__:
            raise
        weights = Path(hf_hub_download(filename=LEGACY_WEIGHTS_NAME, **kwargs))
    return config, weights


def write_training_record(directory: str | Path, *, lookback: int, pred_len: int) -> Path:
    """Record beside a predictor's config.json the windows it was trained on: ``context`` is
    the longest token sequence it saw (``lookback + pred_len``), the predictor's default
    ``max_context``."""
    path = Path(directory) / TRAINING_NAME
    record = {"context": int(lookback) + int(pred_len), "lookback": int(lookback),
              "pred_len": int(pred_len)}
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def trained_context(name_or_path: str | Path) -> int | None:
    """Context (tokens) a predictor checkpoint was trained on, or None if unknown.

    A directory's :data:`TRAINING_NAME` record, else the published checkpoints' known
    contexts (:data:`PUBLISHED_CONTEXT`: 512 for Kronos-small/base, 2048 for mini).
    """
    record = Path(name_or_path) / TRAINING_NAME
    if record.is_file():
        try:
            return int(json.loads(record.read_text())["context"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{record} is not a training record ({err})") from None
    return PUBLISHED_CONTEXT.get(str(name_or_path))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or legacy ``.bin`` weights file, on the CPU."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Raise ``CheckpointMismatchError`` listing every missing/unexpected key and bad shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state))
              if tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append("shape mismatches [" + "; ".join(shapes) + "]")
    if problems:
        raise CheckpointMismatchError(
            f"{type(model).__name__} checkpoint {source} does not match its config: "
            + ", ".join(problems))


class HubModelMixin:
    """``from_pretrained`` / ``save_pretrained`` for a module built from one flat config."""

    config_class: ClassVar[type[FlatConfig]]
    config: Any

    @classmethod
    def from_config(cls: type[M], config: FlatConfig | dict[str, Any]) -> M:
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        return cls(**config.to_dict())  # type: ignore[call-arg]

    @classmethod
    def from_pretrained(cls: type[M], name_or_path: str | Path, *, revision: str | None = None,
                        cache_dir: str | None = None, force_download: bool = False,
                        token: str | bool | None = None, local_files_only: bool = False,
                        map_location: str | torch.device = "cpu") -> M:
        """Load a checkpoint strictly from a local directory or a Hub id.

        Parameters
        ----------
        name_or_path
            Directory holding ``config.json`` and ``model.safetensors``, or a Hub id such as
            ``"NeoQuasar/Kronos-small"``.
        revision, cache_dir, force_download, token, local_files_only
            Passed to ``huggingface_hub.hf_hub_download``.
        map_location
            Device the weights are moved to.
        """
        config_path, weights_path = _resolve_files(
            name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download,
            token=token, local_files_only=local_files_only)
        model = cls.from_config(cls.config_class.load(config_path))
        state = read_state_dict(weights_path)
        check_state_dict(model, state, source=str(name_or_path))  # type: ignore[arg-type]
        model.load_state_dict(state, strict=True)  # type: ignore[attr-defined]
        model.eval()  # type: ignore[attr-defined]
        logger.info("loaded %s from %s", cls.__name__, name_or_path)
        return model.to(map_location)  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (the published layout)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        state = {k: v.detach().contiguous().cpu()
                 for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory

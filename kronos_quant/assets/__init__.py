"""The files shipped inside the package, and how to find them.

* ``demo/``: the embedded demo model (a small *mini* tokenizer + predictor pair, its model
  card and metrics) and the series it forecasts in the demo; :func:`embedded_demo` finds it,
  :func:`demo_predictor` loads it (or any Hub id or checkpoint directory);
* ``universe/us_stocks_daily.csv``: a small universe of real daily bars (AAPL, GOOG, IBM,
  MSFT, 2010-09-01 … 2013-03-01, split- and dividend-adjusted, public domain);
  :func:`load_universe` reads it as a canonical panel.

The demo (:mod:`kronos_quant.demo`), the commands, the examples and the benchmarks find these
files here; rebuilding them is the demo's job (``kronos-quant finetune demo-model``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..config import preset_configs
from ..data import load_panel
from ..model import Kronos
from ..predictor import KronosPredictor
from ..tokenizer import KronosTokenizer

ROOT = Path(__file__).parent
ASSETS = ROOT / "demo"  # the embedded demo model
UNIVERSE = ROOT / "universe" / "us_stocks_daily.csv"
UNIVERSE_TICKERS: tuple[str, ...] = ("AAPL", "GOOG", "IBM", "MSFT")
UNIVERSE_START = "2010-09-01"
# Seeds the random-weight stand-in model (and the demo's synthetic series) when the
# embedded model is missing, so that fallback is reproducible too.
DEMO_SEED = 7


@dataclass
class DemoAssets:
    """The embedded demo model, its bundled series and its training window sizes."""

    tokenizer_dir: Path
    model_dir: Path
    series_path: Path
    series_name: str
    label: str
    lookback: int
    pred_len: int


def embedded_demo(root: str | Path | None = None) -> DemoAssets | None:
    """The embedded demo model under ``root`` (default: :data:`ASSETS`), or None if any of its
    files is missing."""
    root = Path(ASSETS if root is None else root)
    meta_path = root / "demo.json"
    needed = [meta_path] + [root / d / f for d in ("tokenizer", "model")
                            for f in ("config.json", "model.safetensors")]
    if not all(p.is_file() for p in needed):
        return None
    meta = json.loads(meta_path.read_text())
    series = root / meta["series"]
    if not series.is_file():
        return None
    return DemoAssets(root / "tokenizer", root / "model", series, meta["series_name"],
                      meta["label"], int(meta["lookback"]), int(meta["pred_len"]))


def demo_predictor(model: str | None = None, tokenizer: str | None = None, *,
                   device: str | None = None, max_context: int | None = None,
                   assets: DemoAssets | None = None) -> tuple[KronosPredictor, str]:
    """A predictor and a label saying honestly what it is: ``model`` + ``tokenizer`` (Hub ids
    or directories) when given, else the embedded demo model ``assets``, else a seeded
    random-weight nano model (no forecasting skill; it says so)."""
    if (model is None) != (tokenizer is None):
        raise ValueError("give both --model and --tokenizer, or neither")
    if model is not None:
        return (KronosPredictor.from_pretrained(model, tokenizer, device=device,
                                                max_context=max_context), f"{model} + {tokenizer}")
    if assets is not None:
        return (KronosPredictor.from_pretrained(str(assets.model_dir), str(assets.tokenizer_dir),
                                                device=device, max_context=max_context),
                assets.label)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        tok_cfg, model_cfg = preset_configs("nano")
        predictor = KronosPredictor(Kronos.from_config(model_cfg),
                                    KronosTokenizer.from_config(tok_cfg), device=device,
                                    max_context=max_context)
    label = "freshly initialised nano model (random weights, untrained: no forecasting skill)"
    return predictor, label


def load_universe() -> pd.DataFrame:
    """The bundled universe (:data:`UNIVERSE`) as a canonical panel."""
    return load_panel(UNIVERSE)

"""``kronos-quant demo``: an offline end-to-end forecast on a bundled series.

By default it uses the embedded demo model (``kronos_quant/assets/demo``): a small *mini*
tokenizer + predictor pair trained by ``kronos-quant finetune demo-model`` on public-domain
daily US stock bars and synthetic panels. It is not the published Kronos; its model card
(``assets/demo/MODEL_CARD.md``) gives its held-out numbers against a random walk. The bundled
series is the last daily bars of MSFT from that data. ``--model/--tokenizer`` switch to any
Hub id or checkpoint directory. If the assets are missing, a seeded random-weight nano model
stands in (and says so).
"""
from __future__ import annotations

import argparse
import json
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import preset_configs
from .data import synthetic_ohlcv
from .forecast import Forecast
from .model import Kronos
from .predictor import KronosPredictor
from .signals import describe_scorers, score_forecast
from .tokenizer import KronosTokenizer

logger = logging.getLogger(__name__)

DEMO_SEED = 7
ASSETS = Path(__file__).parent / "assets" / "demo"
FALLBACK_LOOKBACK, FALLBACK_PRED_LEN = 400, 48


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


@dataclass
class DemoResult:
    forecast: Forecast
    files: dict[str, Path]
    model_label: str
    scores: pd.Series


def embedded_demo(root: str | Path | None = None) -> DemoAssets | None:
    """The embedded demo model under ``root`` (default: the package's assets), or None if any
    of its files is missing."""
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
                   device: str | None = None, max_context: int = 512,
                   assets: DemoAssets | None = None) -> tuple[KronosPredictor, str]:
    """The predictor the demo uses and a label saying honestly what it is."""
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


def demo_series(assets: DemoAssets | None, lookback: int) -> tuple[pd.DataFrame, str]:
    """The last ``lookback`` bars of the bundled series (synthetic 5-minute bars without assets)."""
    if assets is None:
        return synthetic_ohlcv(lookback, freq="5min", seed=DEMO_SEED), "DEMO (synthetic 5-min)"
    frame = pd.read_csv(assets.series_path, index_col="timestamps", parse_dates=True)
    return frame.iloc[-lookback:], assets.series_name


def run_demo(out_dir: str | Path, *, predictor: KronosPredictor, model_label: str,
             pred_len: int = FALLBACK_PRED_LEN, sample_count: int = 32,
             lookback: int = FALLBACK_LOOKBACK, seed: int = 0, verbose: bool = True,
             assets: DemoAssets | None = None) -> DemoResult:
    """Forecast the bundled series; write the fan chart, paths, summary and scores."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series, name = demo_series(assets, lookback)
    fc = predictor.forecast(series, pred_len=pred_len, sample_count=sample_count, seed=seed,
                            verbose=verbose, name=name)
    files = {"fan_chart": out / "forecast_fan.png", "paths": out / "forecast_paths.csv",
             "summary": out / "forecast_summary.csv", "scores": out / "scores.csv"}
    title = f"{name}: {sample_count} paths × {pred_len} bars\n" + textwrap.fill(model_label, 100)
    fc.plot(files["fan_chart"], title=title)
    fc.to_frame().to_csv(files["paths"], index=False)
    summary = fc.quantile([0.1, 0.5, 0.9]).xs("close", axis=1, level="column")
    summary.columns = [f"close_q{round(q * 100)}" for q in summary.columns]
    summary.insert(0, "close_mean", fc.mean()["close"])
    summary.to_csv(files["summary"], index_label="timestamp")
    scores = score_forecast(fc)
    formulas = describe_scorers()
    table = pd.DataFrame({"score": scores,
                          "definition": [formulas.get(k, "") for k in scores.index]})
    table.to_csv(files["scores"], index_label="scorer")
    return DemoResult(fc, files, model_label, scores)


def _command(args: argparse.Namespace) -> int:
    assets = None
    if args.model is None and args.tokenizer is None:
        assets = embedded_demo()
        if assets is None:
            print(f"note: the embedded demo model is missing from {ASSETS}; using a random-"
                  "weight nano model instead (rebuild it: kronos-quant finetune demo-model "
                  f"--out {ASSETS})")
    predictor, label = demo_predictor(args.model, args.tokenizer, device=args.device,
                                      max_context=args.max_context, assets=assets)
    print(f"model: {label}")
    # `is None`, not `or`: an explicit value is always honoured (0 is refused by argparse).
    lookback = args.lookback if args.lookback is not None else (
        assets.lookback if assets else FALLBACK_LOOKBACK)
    pred_len = args.pred_len if args.pred_len is not None else (
        assets.pred_len if assets else FALLBACK_PRED_LEN)
    result = run_demo(args.out, predictor=predictor, model_label=label, pred_len=pred_len,
                      sample_count=args.samples, lookback=lookback, seed=args.seed,
                      verbose=not args.quiet, assets=assets)
    fc = result.forecast
    last = float(fc.last["close"])
    close = fc.column_paths("close")[:, -1]
    print(f"series: {fc.name}, last close {last:.4f} at {fc.history.index[-1]}")
    print(f"{fc.sample_count} paths × {fc.pred_len} bars; close at horizon: "
          f"median {float(np.median(close)):.4f}, P(up) {float((close > last).mean()):.2f}")
    print("scores: " + ", ".join(f"{k} {v:+.4f}" for k, v in result.scores.items()))
    for kind, path in result.files.items():
        print(f"wrote {kind}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_model_args
    from .inputs import MIN_CONTEXT, int_option

    p = subparsers.add_parser("demo", help="offline forecast demo on a bundled series",
                              description=__doc__)
    add_model_args(p, default_model=None, default_tokenizer=None)
    p.add_argument("--out", default="kronos_demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--pred-len", type=int_option(1), default=None,
                   help="bars to forecast (default: the demo model's horizon, 20)")
    p.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=None,
                   help="context bars (default: the demo model's lookback, 120)")
    p.add_argument("--samples", type=int_option(1), default=32, help="sample paths")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_command)

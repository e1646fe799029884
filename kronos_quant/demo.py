"""``kronos-quant demo``: an offline end-to-end forecast on a bundled series.

Without ``--model/--tokenizer`` it uses a freshly initialised *nano* model (random weights,
seeded): the run shows the whole pipeline — tokenise, sample paths, fan chart, summaries —
but its forecast has no skill and is not the published Kronos.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import preset_configs
from .data import synthetic_ohlcv
from .forecast import Forecast
from .model import Kronos
from .predictor import KronosPredictor
from .tokenizer import KronosTokenizer

logger = logging.getLogger(__name__)

DEMO_SEED = 7


@dataclass
class DemoResult:
    forecast: Forecast
    files: dict[str, Path]
    model_label: str


def demo_predictor(model: str | None = None, tokenizer: str | None = None, *,
                   device: str | None = None, max_context: int = 512) -> tuple[KronosPredictor, str]:
    """The predictor the demo uses and a label saying honestly what it is."""
    if (model is None) != (tokenizer is None):
        raise ValueError("give both --model and --tokenizer, or neither")
    if model is not None:
        return (KronosPredictor.from_pretrained(model, tokenizer, device=device,
                                                max_context=max_context), f"{model} + {tokenizer}")
    torch.manual_seed(DEMO_SEED)
    tok_cfg, model_cfg = preset_configs("nano")
    predictor = KronosPredictor(Kronos.from_config(model_cfg), KronosTokenizer.from_config(tok_cfg),
                                device=device, max_context=max_context)
    label = "freshly initialised nano model (random weights, untrained: no forecasting skill)"
    return predictor, label


def run_demo(out_dir: str | Path, *, predictor: KronosPredictor, model_label: str,
             pred_len: int = 48, sample_count: int = 32, lookback: int = 400, seed: int = 0,
             verbose: bool = True) -> DemoResult:
    """Forecast the bundled 5-minute series and write the fan chart and tables to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = synthetic_ohlcv(lookback, freq="5min", seed=DEMO_SEED)
    fc = predictor.forecast(series, pred_len=pred_len, sample_count=sample_count, seed=seed,
                            verbose=verbose, name="DEMO (synthetic 5-min)")
    files = {"fan_chart": out / "forecast_fan.png", "paths": out / "forecast_paths.csv",
             "summary": out / "forecast_summary.csv"}
    fc.plot(files["fan_chart"], title=f"demo forecast — {model_label}")
    fc.to_frame().to_csv(files["paths"], index=False)
    bands = fc.quantile([0.1, 0.5, 0.9])["close" if False else slice(None)]
    summary = bands.xs("close", axis=1, level="column")
    summary.columns = [f"close_q{int(q * 100)}" for q in summary.columns]
    summary.insert(0, "close_mean", fc.mean()["close"])
    summary.to_csv(files["summary"], index_label="timestamp")
    return DemoResult(fc, files, model_label)


def _command(args: argparse.Namespace) -> int:
    predictor, label = demo_predictor(args.model, args.tokenizer, device=args.device,
                                      max_context=args.max_context)
    print(f"model: {label}")
    result = run_demo(args.out, predictor=predictor, model_label=label, pred_len=args.pred_len,
                      sample_count=args.samples, seed=args.seed, verbose=not args.quiet)
    fc = result.forecast
    last = float(fc.last["close"])
    close = fc.column_paths("close")[:, -1]
    print(f"series: {fc.name}, last close {last:.4f} at {fc.history.index[-1]}")
    print(f"{fc.sample_count} paths × {fc.pred_len} bars; close at horizon: "
          f"median {float(torch.tensor(close).median()):.4f}, "
          f"P(up) {float((close > last).mean()):.2f}")
    for kind, path in result.files.items():
        print(f"wrote {kind}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_model_args

    p = subparsers.add_parser("demo", help="offline forecast demo on a bundled series",
                              description=__doc__)
    add_model_args(p, default_model=None, default_tokenizer=None)
    p.add_argument("--out", default="kronos_demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--pred-len", type=int, default=48)
    p.add_argument("--samples", type=int, default=32, help="sample paths")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_command)

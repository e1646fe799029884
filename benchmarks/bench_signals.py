"""Signal-layer numbers: universe-scoring throughput and an evaluation table vs baselines.

    python benchmarks/bench_signals.py                       # seeded random nano model
    python benchmarks/bench_signals.py --model DIR --tokenizer DIR   # any checkpoint pair

1. Throughput: walk-forward ``score_panel`` over a synthetic daily panel (default 20
   instruments × 250 bars, lookback 60, pred_len 5, 8 paths), every bar a rebalance date;
   reports instrument-dates per minute, then the same run again from the forecast cache.
2. Evaluation: the same model on a synthetic panel with a planted momentum component
   (``predictable=0.5``), horizon = pred_len, against the random-walk / momentum / reversal
   baselines and the planted signal itself (the best any model could learn), plus the
   calibration of its paths.

A random-weight model has no forecasting skill: its rows show what "no skill" looks like
through this evaluation, not what Kronos can do.
"""
from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time

import torch

from kronos_quant import Kronos, KronosPredictor, KronosTokenizer
from kronos_quant.config import preset_configs
from kronos_quant.data import planted_signal, synthetic_panel
from kronos_quant.signals import calibrate, evaluate, forecast_panel, score_panel


def build_predictor(args: argparse.Namespace) -> tuple[KronosPredictor, str]:
    if args.model and args.tokenizer:
        return (KronosPredictor.from_pretrained(args.model, args.tokenizer, device=args.device),
                f"{args.model} + {args.tokenizer}")
    torch.manual_seed(args.seed)
    tok_cfg, model_cfg = preset_configs(args.preset)
    predictor = KronosPredictor(Kronos.from_config(model_cfg), KronosTokenizer.from_config(tok_cfg),
                                device=args.device, max_context=512)
    return predictor, f"random-weight {args.preset} preset (seed {args.seed}, no skill)"


def throughput(predictor: KronosPredictor, args: argparse.Namespace) -> None:
    panel = synthetic_panel(args.instruments, args.bars, seed=1)
    opts = dict(lookback=args.lookback, pred_len=args.pred_len, sample_count=args.samples,
                seed=0, batch_size=args.batch_size, verbose=not args.quiet)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        scores = score_panel(predictor, panel, cache_dir=cache, **opts)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        score_panel(predictor, panel, cache_dir=cache, **opts)
        warm = time.perf_counter() - start
    n = len(scores)
    print(f"\n## throughput: {args.instruments} instruments × {args.bars} daily bars, lookback "
          f"{args.lookback}, pred_len {args.pred_len}, {args.samples} paths, every bar")
    print(f"windows scored        {n}")
    print(f"model run (cold)      {cold:.1f} s  → {n / cold * 60:,.0f} instrument-dates/min")
    print(f"from cache (rerun)    {warm:.1f} s  → {n / warm * 60:,.0f} instrument-dates/min")


def evaluation(predictor: KronosPredictor, args: argparse.Namespace) -> None:
    panel = synthetic_panel(args.instruments, args.bars, seed=2, predictable=0.5)
    forecasts = forecast_panel(predictor, panel, lookback=args.lookback, pred_len=args.pred_len,
                               sample_count=args.samples, seed=0, batch_size=args.batch_size,
                               verbose=not args.quiet)
    scores = forecasts.score()
    scores["planted_signal"] = planted_signal(panel).reindex(scores.index)
    result = evaluate(scores, panel, horizon=args.pred_len)
    result.summary.loc["planted_signal", "kind"] = "oracle"
    print(f"\n## evaluation: synthetic panel, predictable=0.5, {args.instruments} instruments × "
          f"{args.bars} bars, horizon {args.pred_len}")
    print(result.table())
    print()
    print(calibrate(forecasts, panel).table())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--preset", default="nano", choices=["nano", "mini", "small", "base"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--bars", type=int, default=250)
    parser.add_argument("--lookback", type=int, default=60)
    parser.add_argument("--pred-len", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256, help="windows per generation call")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor, label = build_predictor(args)
    print(f"model: {label}; device {predictor.device}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; {platform.processor() or platform.machine()}")
    throughput(predictor, args)
    if not args.skip_eval:
        evaluation(predictor, args)


if __name__ == "__main__":
    main()

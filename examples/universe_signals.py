"""Score a universe walk-forward and evaluate the scores against baselines.

Runs offline with the embedded demo model on a synthetic daily panel:

    python examples/universe_signals.py

Swap in your own bars with ``--panel bars.csv`` (long format or a folder of per-symbol files)
and a published model with ``--model NeoQuasar/Kronos-small --tokenizer
NeoQuasar/Kronos-Tokenizer-base``.
"""
from __future__ import annotations

import argparse

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS
from kronos_quant.data import load_panel, synthetic_panel
from kronos_quant.signals import cs_zscore, evaluate, score_panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", default=None, help="bars file/folder (default: synthetic)")
    parser.add_argument("--model", default=str(ASSETS / "model"))
    parser.add_argument("--tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--max-context", type=int, default=None,
                        help="default: the context the checkpoint was trained on")
    parser.add_argument("--lookback", type=int, default=60)
    parser.add_argument("--pred-len", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--freq", default="W", help="rebalance: every k-th bar (int) or W, ME, …")
    args = parser.parse_args()

    panel = (load_panel(args.panel) if args.panel
             else synthetic_panel(12, 200, freq="D", seed=1, predictable=0.3))
    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device="cpu",
                                                max_context=args.max_context)
    freq = int(args.freq) if args.freq.isdigit() else args.freq
    scores = score_panel(predictor, panel, lookback=args.lookback, pred_len=args.pred_len,
                         sample_count=args.samples, freq=freq, seed=0)
    alpha = cs_zscore(scores["expected_return"])  # what an engine adapter would consume
    print(alpha.tail(len(alpha.index.get_level_values("instrument").unique())))
    print(evaluate(scores, panel, horizon=args.pred_len).table())


if __name__ == "__main__":
    main()

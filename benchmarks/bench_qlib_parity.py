"""How far Qlib's TopkDropout parts from vectorbt and backtrader on the same scores and spec.

For a few cases (fractional shares and no limits; A-share lots of 100; A-share 9.5 % price
limits; tied scores), runs the same TradeSpec through Qlib (``run_topk_dropout``) and vectorbt
and prints, side by side: the days on which Qlib's held names differ from ours (the adapter's
``extra["differences"]``) and the final equity gap in basis points. Qlib sizes buys from cash
and does not re-equalise the names it keeps, so equity differs even when names agree.

    python benchmarks/bench_qlib_parity.py [--names 12] [--bars 120]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from kronos_quant.adapters.qlib import run_topk_dropout
from kronos_quant.adapters.qlib_data import write_provider
from kronos_quant.adapters.vectorbt import backtest

from kronos_quant import TradeSpec
from kronos_quant.data import synthetic_panel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=12)
    parser.add_argument("--bars", type=int, default=120)
    args = parser.parse_args(argv)
    panel = synthetic_panel(args.names, args.bars, seed=7, predictable=0.3)
    rng = np.random.default_rng(3)
    scores = pd.Series(rng.standard_normal(len(panel)), index=panel.index, name="score")
    bench = panel["close"].unstack().pct_change().mean(axis=1).fillna(0.0)
    spec = TradeSpec(topk=4, n_drop=2, fees=0.0005)
    cases = {"fractional, no limits": (spec, scores, None),
             "lots of 100": (spec.replace(lot_size=100), scores, None),
             "cn limits 9.5%": (spec, scores, 0.095),
             "tied scores": (spec, scores.round(0), None)}
    with tempfile.TemporaryDirectory() as tmp:
        write_provider(panel, Path(tmp) / "p", verbose=False)
        print(f"{'case':24s} {'days':>5s} {'differ':>7s} {'equity gap (bp)':>16s}")
        for name, (s, sc, limit) in cases.items():
            res = run_topk_dropout(sc, Path(tmp) / "p", s.replace(cash=1e8),
                                   benchmark=bench, limit_threshold=limit, region="us",
                                   tearsheet=False, verbose=False)
            diff = res.extra["differences"]
            qlib_growth = float(np.prod(1 + res.report["return"] - res.report["cost"]))
            pf = backtest(sc, panel, s.replace(lot_size=None))
            ours = pf.value().reindex(res.report.index)
            ours_growth = float(ours.iloc[-1] / pf.value().shift(1).reindex(
                res.report.index).iloc[0])
            gap = (qlib_growth / ours_growth - 1) * 1e4
            print(f"{name:24s} {diff['days']:5d} {diff['days_differing']:7d} {gap:16.1f}")


if __name__ == "__main__":
    main()

"""Result-metrics cost: ``backtest_metrics`` with its bootstrap intervals, per curve length.

    python benchmarks/bench_metrics.py [--resamples 2000] [--bars 252 2520 12096 48384]

For daily (1 and 10 years) and 5-minute A-share curves (1 and 4 years), one run each of:
the full :func:`kronos_quant.metrics.backtest_metrics` (Lo standard error, Sharpe and excess
intervals, ``--resamples`` stationary-bootstrap resamples), the vectorised index generator
alone (:func:`bootstrap_indices`), and a per-resample Python loop drawing the same kind of
indices (what a direct transcription of Politis and Romano's algorithm costs), side by side.
"""
from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import pandas as pd

from kronos_quant.metrics import BOOTSTRAP, BootstrapSettings, backtest_metrics, bootstrap_indices


def loop_indices(n: int, resamples: int, block: float, rng: np.random.Generator) -> np.ndarray:
    """The stationary bootstrap one step at a time (the reference the vectorised form beats)."""
    out = np.empty((resamples, n), dtype=np.int64)
    for b in range(resamples):
        pos = rng.integers(n)
        for t in range(n):
            if t and rng.random() < 1.0 / block:
                pos = rng.integers(n)
            elif t:
                pos = (pos + 1) % n
            out[b, t] = pos
    return out


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP.resamples)
    parser.add_argument("--bars", type=int, nargs="+", default=[252, 2520, 12096, 48384])
    args = parser.parse_args()
    settings = BootstrapSettings(resamples=args.resamples)
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"{args.resamples} resamples")
    print(f"{'bars':>7} {'metrics s':>10} {'indices s':>10} {'loop s (est.)':>14} {'speed-up':>9}")
    rng = np.random.default_rng(0)
    for n in args.bars:
        r = rng.normal(3e-4, 0.01, n)
        index = pd.date_range("2015-01-01", periods=n, freq="D")
        equity = pd.Series(np.cumprod(1 + r), index=index)
        bench = pd.Series(rng.normal(2e-4, 0.01, n), index=index)
        full = timed(backtest_metrics, equity, initial=1.0, periods_per_year=252,
                     benchmark=bench, bootstrap=settings)
        block = max(1.0, math.ceil(n ** (1 / 3)))
        vec = timed(bootstrap_indices, n, resamples=args.resamples, block=block,
                    rng=np.random.default_rng(1))
        few = max(1, args.resamples // 100)  # the loop is timed on 1% and scaled
        loop = timed(loop_indices, n, few, block, np.random.default_rng(1))
        loop *= args.resamples / few
        print(f"{n:>7} {full:>10.3f} {vec:>10.3f} {loop:>14.1f} {loop / vec:>8.0f}x")


if __name__ == "__main__":
    main()

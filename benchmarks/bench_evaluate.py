"""Cost of the uncertainty in ``signals.evaluate``: today's code next to a base commit's.

    python benchmarks/bench_evaluate.py                      # 500 names × 2,520 dates
    python benchmarks/bench_evaluate.py --instruments 50 --bars 500 --base <commit>

Builds a seeded synthetic daily panel with a planted signal and two model-like score
columns, then times ``evaluate`` (baselines on, horizon 5, every date a rebalance date) with
this tree's ``kronos_quant/signals/evaluation.py`` and with the one at ``--base`` (loaded
from ``git show`` into the same package, so both use the same data, execution and
transforms code), best of ``--repeat`` runs each. The target: at most 2× the base's time.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_quant.data import planted_signal, synthetic_panel
from kronos_quant.signals import evaluation as current

ROOT = Path(__file__).resolve().parents[1]
MODULE = "kronos_quant/signals/evaluation.py"
BASE = "2522536"  # main before the statistics work (issue 20)


def load_base(commit: str, folder: Path):
    """The evaluation module as of ``commit``, imported as a sibling of today's."""
    source = subprocess.run(["git", "show", f"{commit}:{MODULE}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "evaluation_base.py"
    path.write_text(source)
    name = "kronos_quant.signals._evaluation_base"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def best_time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2520)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--base", default=BASE, help="commit whose evaluate is the reference")
    args = parser.parse_args()

    start = time.perf_counter()
    panel = synthetic_panel(args.instruments, args.bars, seed=0, predictable=0.3)
    signal = planted_signal(panel)
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"planted": signal,
                           "noisy": signal + rng.normal(0, signal.std(), len(signal)),
                           "noise": rng.normal(size=len(signal))}, index=signal.index)
    built = time.perf_counter() - start
    print(f"panel {args.instruments} instruments × {args.bars} daily bars "
          f"({len(scores):,} rows, 3 score columns + 3 baselines), horizon {args.horizon}, "
          f"every date; built in {built:.1f} s; python {platform.python_version()}, "
          f"pandas {pd.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        base = load_base(args.base, Path(folder))
        run = lambda mod: mod.evaluate(scores, panel, horizon=args.horizon)  # noqa: E731
        small = panel.loc[panel.index.get_level_values("instrument").isin(
            panel.index.levels[1][:5])]
        for mod in (base, current):  # warm up: one-time imports (scipy) are not per-call cost
            mod.evaluate(scores.reindex(small.index), small, horizon=args.horizon)
        before, old = best_time(lambda: run(base), args.repeat)
        after, new = best_time(lambda: run(current), args.repeat)
    print(f"\n{'code':<28}{'evaluate (s)':>14}{'summary columns':>18}")
    print(f"{'base ' + args.base:<28}{before:>14.2f}{old.summary.shape[1]:>18}")
    print(f"{'this tree':<28}{after:>14.2f}{new.summary.shape[1]:>18}")
    print(f"ratio this / base: {after / before:.2f}× (target ≤ 2×)")
    same = np.allclose(old.summary["rank_ic_mean"], new.summary["rank_ic_mean"], equal_nan=True)
    print(f"RankIC means identical: {same}")
    cols = ["rank_ic_mean", "rank_ic_se", "rank_ic_t", "rank_ic_p", "long_short_mean",
            "long_short_p"]
    print(new.summary[cols].to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()

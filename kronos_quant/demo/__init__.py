"""``kronos-quant demo`` (what ``make demo`` runs): the whole plugin, offline, in one folder.

Steps (``--steps`` runs a subset; the steps a chosen one builds on are added):

* ``forecast``: fan chart, every path and quantiles of one bundled series (MSFT, daily);
* ``scores``: walk-forward Kronos scores of a small real universe (AAPL, GOOG, IBM, MSFT);
* ``evaluate``: IC/RankIC against random-walk, momentum and reversal baselines under next-open
  execution; band coverage before and after split-conformal recalibration;
* ``vectorbt`` and ``backtrader``: one weight frame (top-k with dropout) traded in both
  engines, their holdings and final equity compared;
* ``qlib``: a generated Qlib provider directory and Qlib's TopkDropoutStrategy on the scores;
* ``live``: the live loop with the paper broker replayed over recorded candles;
* ``tearsheet``: the QuantStats tear sheet with the signal-quality section;

then ``index.html`` (every number, chart and file) and ``summary.json``. A step whose engine
is not installed is skipped with the pip command that adds it.

By default it uses the embedded demo model (``kronos_quant/assets/demo``): a small *mini*
tokenizer + predictor pair trained by ``kronos-quant finetune demo-model`` on public-domain
daily US stock bars and synthetic panels. It is not the published Kronos and does not beat a
random walk; its model card (``assets/demo/MODEL_CARD.md``) gives its held-out numbers.
``--model/--tokenizer`` switch to any Hub id or checkpoint directory. If the assets are
missing, a seeded random-weight nano model stands in (and says so).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..adapters import install_hint
from ..assets import ASSETS, DEMO_SEED, DemoAssets, demo_predictor, embedded_demo
from ..data import synthetic_ohlcv
from ..io import write_atomic
from .report import format_number, headline_numbers, summary_json, write_index
from .steps import STEPS, DemoContext, DemoSettings, StepResult, missing_extras

__all__ = ["run_demo", "plan_steps", "DemoRun", "demo_series", "STEPS", "DemoContext",
           "DemoSettings", "StepResult",
           # where the embedded model lives (kronos_quant.assets), kept here for old imports
           "ASSETS", "DEMO_SEED", "DemoAssets", "demo_predictor", "embedded_demo"]

logger = logging.getLogger(__name__)

FALLBACK_LOOKBACK, FALLBACK_PRED_LEN = 400, 48
# Per-cycle and per-rebalance info lines the demo's own progress lines replace.
CHATTY_LOGGERS = ("kronos_quant.strategies.live", "kronos_quant.portfolio")


def demo_series(assets: DemoAssets | None, lookback: int) -> tuple[pd.DataFrame, str]:
    """The last ``lookback`` bars of the bundled series (synthetic 5-minute bars without assets)."""
    if assets is None:
        return synthetic_ohlcv(lookback, freq="5min", seed=DEMO_SEED), "DEMO (synthetic 5-min)"
    frame = pd.read_csv(assets.series_path, index_col="timestamps", parse_dates=True)
    return frame.iloc[-lookback:], assets.series_name


def plan_steps(names: Sequence[str] | None = None) -> list[str]:
    """The steps to run, in order: ``names`` (default: all) plus the steps they build on."""
    wanted = set(STEPS if names is None else names)
    unknown = sorted(wanted - set(STEPS))
    if unknown:
        raise ValueError(f"unknown demo step(s) {unknown}; choose from {list(STEPS)}")
    for name in list(STEPS)[::-1]:  # a step's prerequisites come before it
        if name in wanted:
            wanted.update(STEPS[name].needs)
    return [name for name in STEPS if name in wanted]


@dataclass
class DemoRun:
    """What :func:`run_demo` did: each step's result, the index page and the total time."""

    results: dict[str, StepResult]
    index: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results.values())


def _skip(reason: str) -> StepResult:
    return StepResult(status="skipped", notes=[reason])


def run_demo(ctx: DemoContext, steps: Sequence[str] | None = None, *,
             progress: Callable[[str], None] = print) -> DemoRun:
    """Run the demo ``steps`` (default: all) in ``ctx``, then write ``index.html`` and
    ``summary.json`` into ``ctx.out``. A step whose extra is missing, or whose prerequisite
    did not run, is skipped; one that raises is recorded as failed and the rest go on."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    order = plan_steps(steps)
    results: dict[str, StepResult] = {}
    started = time.perf_counter()
    for i, name in enumerate(order, 1):
        step = STEPS[name]
        head = f"[{i}/{len(order)}] {name}: {step.title}"
        missing = missing_extras(step)
        blocked = [n for n in step.needs if results.get(n, _skip("")).status != "ok"]
        if missing or blocked:
            reason = (f"needs {install_hint(*missing)}" if missing else
                      f"needs the {', '.join(blocked)} step(s), which did not run")
            results[name] = _skip(reason)
            progress(f"{head} … skipped ({reason})")
            continue
        progress(f"{head} …")
        t0 = time.perf_counter()
        try:
            result = step.run(ctx)
        except Exception as err:  # the demo reports a broken step and shows the others
            logger.debug("demo step %s failed", name, exc_info=True)
            result = StepResult(status="failed", notes=[f"{type(err).__name__}: {err}"])
        result.seconds = time.perf_counter() - t0
        results[name] = result
        shown = "; ".join(f"{k} {format_number(k, v)}" for k, v in list(result.numbers.items())[:3])
        progress(f"      {result.status} in {result.seconds:.1f} s"
                 + (f": {shown}" if shown else "")
                 + (f" — {result.notes[0]}" if result.status == "failed" else ""))
    total = time.perf_counter() - started
    index = write_index(ctx.out, results, model_label=ctx.model_label,
                        headline=headline_numbers(results), total_seconds=total)
    write_atomic(ctx.out / "summary.json", summary_json(results))
    return DemoRun(results, index, total)

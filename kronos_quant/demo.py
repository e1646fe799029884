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

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .adapters import install_hint
from .config import preset_configs
from .data import synthetic_ohlcv
from .demo_report import format_number, headline_numbers, summary_json, write_index
from .demo_steps import STEPS, DemoContext, DemoSettings, StepResult, missing_extras
from .model import Kronos
from .predictor import KronosPredictor
from .tokenizer import KronosTokenizer

logger = logging.getLogger(__name__)

DEMO_SEED = 7
ASSETS = Path(__file__).parent / "assets" / "demo"
FALLBACK_LOOKBACK, FALLBACK_PRED_LEN = 400, 48
# Per-cycle and per-rebalance info lines the demo's own progress lines replace.
CHATTY_LOGGERS = ("kronos_quant.strategies.live", "kronos_quant.portfolio")


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
                   device: str | None = None, max_context: int | None = None,
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
    (ctx.out / "summary.json").write_text(summary_json(results), encoding="utf-8")
    return DemoRun(results, index, total)


def _command(args: argparse.Namespace) -> int:
    assets = None
    if args.model is None and args.tokenizer is None:
        assets = embedded_demo()
        if assets is None:
            print(f"note: the embedded demo model is missing from {ASSETS}; using a random-"
                  "weight nano model instead (rebuild it: kronos-quant finetune demo-model "
                  f"--out {ASSETS})")
    steps = plan_steps(args.steps)  # bad names fail before the model loads
    # The demo model is small: one thread is fastest, and on a shared machine OpenMP threads
    # spinning against other jobs make it many times slower.
    torch.set_num_threads(args.threads)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    predictor, label = demo_predictor(args.model, args.tokenizer, device=args.device,
                                      max_context=args.max_context, assets=assets)
    print(f"model: {label}")
    # `is None`, not `or`: an explicit value is always honoured (0 is refused by argparse).
    lookback = args.lookback if args.lookback is not None else (
        assets.lookback if assets else FALLBACK_LOOKBACK)
    pred_len = args.pred_len if args.pred_len is not None else (
        assets.pred_len if assets else FALLBACK_PRED_LEN)
    series, name = demo_series(assets, lookback)
    settings = DemoSettings(pred_len=pred_len, samples=args.samples, seed=args.seed,
                            live_candles=args.live_candles, score_samples=args.score_samples)
    ctx = DemoContext(Path(args.out), predictor, label, series, name, settings,
                      verbose=not args.quiet)
    run = run_demo(ctx, steps)
    width = max(len(n) for n in run.results)
    print("\nsummary (seconds per step):")
    for step_name, result in run.results.items():
        extra = f"  {result.notes[0]}" if result.status != "ok" and result.notes else ""
        print(f"  {step_name:<{width}}  {result.status:<7} {result.seconds:6.1f}{extra}")
    print(f"  {'total':<{width}}  {'':<7} {run.seconds:6.1f}")
    print(f"open {run.index.resolve()}")
    return 0 if run.ok else 1


def _step_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown step(s) {unknown or [text]}; choose from "
                                         f"{','.join(STEPS)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_model_args
    from .inputs import MIN_CONTEXT, int_option

    p = subparsers.add_parser("demo", help="offline demo of the whole plugin (make demo)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, default_model=None, default_tokenizer=None)
    p.add_argument("--out", default="kronos_demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=_step_list, default=None,
                   help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    p.add_argument("--pred-len", type=int_option(1), default=None,
                   help="bars the fan chart forecasts (default: the demo model's horizon, 20)")
    p.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=None,
                   help="context bars of the fan chart (default: the demo model's lookback, 120)")
    p.add_argument("--samples", type=int_option(1), default=32, help="fan chart sample paths")
    p.add_argument("--score-samples", type=int_option(1), default=16,
                   help="sample paths per walk-forward window")
    p.add_argument("--live-candles", type=int_option(2), default=30,
                   help="recorded candles the live loop replays")
    p.add_argument("--threads", type=int_option(1), default=1,
                   help="torch CPU threads (default: 1, fastest for the small demo model)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_command)

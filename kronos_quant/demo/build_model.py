"""Rebuild the embedded demo model: ``kronos-quant finetune demo-model --out DIR``.

Trains a *mini* tokenizer + predictor pair from scratch with this package's finetuning
pipeline on CPU, on

* real daily bars of AAPL, FB, GOOG, IBM and MSFT (2000-03-01 … 2013-03-01, Quandl WIKI
  prices, public domain) as shipped by the ``bokeh-sampledata`` package
  (``pip install 'kronos-quant[demo-data]'``), split- and dividend-adjusted with the
  source's adjusted close, and
* a seeded synthetic daily panel on the same calendar with a planted momentum component
  (:func:`kronos_quant.data.synthetic_panel`),

then evaluates it on the held-out end of the calendar and writes ``tokenizer/``, ``model/``,
``demo.json``, ``metrics.json``, ``MODEL_CARD.md`` and the bundled demo series into ``--out``.
It is a demo model: small, trained for minutes, not the published Kronos.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..data import panel_from_frames, panel_to_frames, synthetic_panel
from ..finetune import FinetuneConfig, Trainer, read_metrics
from ..hub import write_training_record
from ..io import atomic_path, write_atomic
from .model_card import write_model_card
from .model_eval import evaluate_pair

logger = logging.getLogger(__name__)

DATA_PACKAGE = "bokeh-sampledata"
DEMO_TICKER = "MSFT"  # the bundled series `kronos-quant demo` forecasts
DEMO_SERIES_BARS = 250
SYNTHETIC = dict(n_instruments=8, freq="B", seed=2024, predictable=0.3, start="2000-03-01")
COMMON = dict(lookback=120, pred_len=20, max_context=512, val_fraction=0.15, embargo=5,
              batch_size=32, init="mini", seed=7, log_every=50)
TOKENIZER = dict(task="tokenizer", epochs=2, lr=1e-3, val_windows=2048)
# One epoch: a longer run over these overlapping windows overfits (validation CE rises).
PREDICTOR = dict(task="predictor", epochs=1, lr=1e-3, val_windows=2048)
QUICK = dict(max_steps=3, val_windows=64)


def real_stock_panel() -> pd.DataFrame:
    """The bokeh-sampledata stocks as a canonical panel, adjusted for splits and dividends.

    The source's open/high/low/close/volume are unadjusted (AAPL's 2005 split would look like
    a 50% crash); prices are scaled by adj_close / close and volume by its inverse.
    """
    try:
        from bokeh_sampledata import stocks
    except ImportError:
        raise ValueError(f"the demo model's real data comes from the {DATA_PACKAGE} package: "
                         "pip install 'kronos-quant[demo-data]'") from None
    raw = stocks.data
    factor = raw["adj_close"] / raw["close"]
    frame = pd.DataFrame({"datetime": raw["date"], "instrument": raw["ticker"].astype(str)})
    for col in ("open", "high", "low", "close"):
        frame[col] = raw[col] * factor
    frame["volume"] = raw["volume"] / factor
    frames = {name: part.drop(columns="instrument").set_index("datetime")
              for name, part in frame.groupby("instrument")}
    return panel_from_frames(frames)


def training_panel(real: pd.DataFrame) -> pd.DataFrame:
    """Real stocks plus the synthetic panel on the same calendar span."""
    n_bars = len(pd.bdate_range(SYNTHETIC["start"], real.index.get_level_values(0).max()))
    synth = synthetic_panel(n_bars=n_bars, **SYNTHETIC)
    frames = {**panel_to_frames(real), **panel_to_frames(synth)}
    # The real data has no amount column; dropping it everywhere lets every window derive
    # amount the same way (volume × mean price), as the forecast pipeline does.
    return panel_from_frames({k: v.drop(columns="amount", errors="ignore")
                              for k, v in frames.items()})


def task_metric(config: FinetuneConfig) -> str:
    """The validation metric that picks the best checkpoint."""
    return "recon_mse" if config.task == "tokenizer" else "loss"


def _train(task: dict[str, Any], work: Path, panel: pd.DataFrame, quick: bool,
           verbose: bool, **extra: Any) -> tuple[Path, dict[str, Any]]:
    settings = {**COMMON, **task, **(QUICK if quick else {}), **extra,
                "out_dir": str(work / task["task"]), "progress": verbose, "tensorboard": False}
    config = FinetuneConfig.from_dict(settings)
    started = time.time()
    result = Trainer(config, panel=panel).fit()
    history = [{k: r[k] for k in ("step", task_metric(config))}
               for r in read_metrics(result.run_dir) if r["kind"] == "val"]
    summary = {"steps": result.step, "seconds": round(time.time() - started, 1),
               "final_val": result.last_val, "val_history": history,
               "best_step": min(history, key=lambda r: r[task_metric(config)])["step"],
               "config": config.to_dict()}
    return result.run_dir / "best", summary


def build_demo_model(out: str | Path, *, work_dir: str | Path | None = None, threads: int = 1,
                     quick: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Train, evaluate and write the demo pair into ``out``; returns the report dict."""
    out = Path(out)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="kronos-demo-model-"))
    started = time.time()
    real = real_stock_panel()
    panel = training_panel(real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(COMMON["seed"])
        tok_dir, tok_summary = _train(TOKENIZER, work, panel, quick, verbose)
        model_dir, pred_summary = _train(PREDICTOR, work, panel, quick, verbose,
                                         tokenizer=str(tok_dir))
    out.mkdir(parents=True, exist_ok=True)
    from ..model import Kronos
    from ..tokenizer import KronosTokenizer

    tokenizer = KronosTokenizer.from_pretrained(tok_dir)
    model = Kronos.from_pretrained(model_dir)
    tokenizer.save_pretrained(out / "tokenizer")
    model.save_pretrained(out / "model")
    write_training_record(out / "model", lookback=COMMON["lookback"],
                          pred_len=COMMON["pred_len"])
    config = FinetuneConfig.from_dict({**COMMON, **PREDICTOR, "tokenizer": str(tok_dir)})
    metrics = evaluate_pair(tokenizer, model, panel, config, real_instruments=sorted(
        set(real.index.get_level_values("instrument"))), quick=quick)
    series = panel_to_frames(real)[DEMO_TICKER].iloc[-DEMO_SERIES_BARS:]
    with atomic_path(out / "series.csv") as tmp:
        series.to_csv(tmp, index_label="timestamps", float_format="%.6g")
    meta = {"label": f"kronos-quant demo model (mini, trained on {DATA_PACKAGE} daily US stocks "
                     "+ synthetic panels; not the published Kronos)",
            "series": "series.csv", "series_name": f"{DEMO_TICKER} (daily, adjusted)",
            "lookback": COMMON["lookback"], "pred_len": COMMON["pred_len"]}
    write_atomic(out / "demo.json", json.dumps(meta, indent=2) + "\n")
    report = {"tokenizer": tok_summary, "predictor": pred_summary, "evaluation": metrics,
              "data": _data_summary(real, panel), "quick": quick,
              "seconds_total": round(time.time() - started, 1), "threads": threads}
    write_atomic(out / "metrics.json", json.dumps(report, indent=2, default=str) + "\n")
    report["card"] = write_model_card(out / "MODEL_CARD.md", report, meta)
    return report


def _data_summary(real: pd.DataFrame, panel: pd.DataFrame) -> dict[str, Any]:
    counts = real.groupby(level="instrument").size()
    stamps = panel.index.get_level_values("datetime")
    return {"package": DATA_PACKAGE, "real_bars": {k: int(v) for k, v in counts.items()},
            "synthetic": SYNTHETIC, "first_date": str(stamps.min().date()),
            "last_date": str(stamps.max().date()), "total_bars": len(panel)}

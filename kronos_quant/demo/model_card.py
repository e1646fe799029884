"""MODEL_CARD.md of the demo model, written from the numbers the build measured."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import write_atomic


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _token_table(ev: dict[str, Any]) -> list[str]:
    rows = ["| data | windows | model CE s1 | unigram s1 | uniform s1 | model CE s2 | "
            "unigram s2 | uniform s2 |", "|---|---|---|---|---|---|---|---|"]
    for group in ("real", "synthetic"):
        p = ev.get(group, {}).get("predictor")
        if p:
            rows.append(f"| {group} | {p['windows']} | " + " | ".join(_fmt(p[k]) for k in (
                "model_ce_s1", "unigram_ce_s1", "uniform_ce_s1", "model_ce_s2",
                "unigram_ce_s2", "uniform_ce_s2")) + " |")
    return rows


def _recon_table(ev: dict[str, Any]) -> list[str]:
    rows = ["| data | windows | MSE full code | MSE s1 only | MSE of predicting 0 |",
            "|---|---|---|---|---|"]
    for group in ("real", "synthetic"):
        t = ev.get(group, {}).get("tokenizer")
        if t:
            rows.append(f"| {group} | {t['windows']} | {_fmt(t['recon_mse'])} | "
                        f"{_fmt(t['recon_s1_only_mse'])} | {_fmt(t['zero_predictor_mse'])} |")
    return rows


def _forecast_table(ev: dict[str, Any]) -> list[str]:
    rows = ["| data | windows | horizon | MAE model | MAE random walk | DM p | direction acc. | "
            "best constant direction | binomial p | 10–90% band coverage |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for group in ("real", "synthetic"):
        f = ev.get(group, {}).get("forecast", {})
        for key in sorted((k for k in f if k.startswith("h")), key=lambda k: int(k[1:])):
            m = f[key]
            rows.append(f"| {group} | {f['windows']} | {key[1:]} bars | "
                        f"{_fmt(m['model_mae'])} | {_fmt(m['random_walk_mae'])} | "
                        f"{_fmt_p(m.get('mae_dm_p'))} | {_fmt(m['direction_accuracy'])} | "
                        f"{_fmt(m['best_constant_direction'])} | {_fmt_p(m.get('direction_p'))} | "
                        f"{_fmt(m['band_10_90_coverage'])} |")
    return rows


def _fmt_p(value: float | None) -> str:
    """A p-value, or – for metrics measured before the tests existed."""
    return "–" if value is None else f"{value:.3g}"


def _nonpositive_note(ev: dict[str, Any]) -> list[str]:
    shares = {g: ev[g]["forecast"].get("nonpositive_close_share", 0.0)
              for g in ("real", "synthetic") if g in ev}
    text = ", ".join(f"{g} {v:.2%}" for g, v in shares.items())
    return [f"Share of sampled closes at or below zero (a decoding failure mode): {text}."]


def _verdict(ev: dict[str, Any]) -> list[str]:
    """One measured sentence per data group: where the model beats the baselines."""
    lines = []
    for group in ("real", "synthetic"):
        f = ev.get(group, {}).get("forecast", {})
        hs = [f[k] for k in f if k.startswith("h")]
        if not hs:
            continue
        mae = sum(m["model_mae"] < m["random_walk_mae"] for m in hs)
        hit = sum(m["direction_accuracy"] > m["best_constant_direction"] for m in hs)
        cov = [m["band_10_90_coverage"] for m in hs]
        tested = ""
        if all("mae_dm_p" in m for m in hs):
            better = sum(m["mae_dm_p"] < 0.05 and m["mae_dm_t"] < 0 for m in hs)
            worse = sum(m["mae_dm_p"] < 0.05 and m["mae_dm_t"] > 0 for m in hs)
            tested = (f" (Diebold–Mariano at 5%: significantly lower at {better}, significantly "
                      f"higher at {worse})")
        lines.append(f"* Measured, {group}: lower MAE than the random walk at {mae} of {len(hs)} "
                     f"horizons{tested}; direction accuracy above the best constant guess at "
                     f"{hit} of {len(hs)}; 10–90% band coverage {min(cov):.2f}–{max(cov):.2f} "
                     "(nominal 0.80).")
    return lines


def _training_table(report: dict[str, Any]) -> list[str]:
    rows = ["| model | preset | steps | epochs | batch | peak lr | CPU seconds | validation "
            "metric by step | shipped |", "|---|---|---|---|---|---|---|---|---|"]
    for task in ("tokenizer", "predictor"):
        s = report[task]
        c = s["config"]
        metric = "recon_mse" if task == "tokenizer" else "loss"
        history = ", ".join(f"{r['step']}: {r[metric]:.4f}" for r in s["val_history"])
        rows.append(f"| {task} | {c['init']} | {s['steps']} | {c['epochs']} | {c['batch_size']} "
                    f"| {c['lr']} | {s['seconds']} | {metric} {history} | step "
                    f"{s['best_step']} |")
    return rows


def write_model_card(path: Path, report: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Render the card; every number comes from ``report`` (metrics.json)."""
    # One Markdown page as a list of lines, read top to bottom like the card it writes.
    data, ev = report["data"], report["evaluation"]
    cfg = report["predictor"]["config"]
    real = ", ".join(f"{k} ({v} bars)" for k, v in data["real_bars"].items())
    syn = data["synthetic"]
    quick = ["", "**This card comes from a `--quick` build (a few steps): its numbers say "
             "nothing about the shipped model.**"] if report["quick"] else []
    lines = [
        "# kronos-quant demo model", *quick, "",
        f"{meta['label']}.", "",
        "A small tokenizer + predictor pair (the `mini` preset) trained from scratch on CPU by",
        "`kronos-quant finetune demo-model --out kronos_quant/assets/demo`. It exists",
        "so that `kronos-quant demo` runs offline with a model that has seen market data. It is",
        "far smaller and less trained than the published Kronos checkpoints; do not trade on it.",
        "Every number below is read from `metrics.json`, written by that build; "
        "`kronos-quant finetune demo-card <folder>` re-renders this card from it.",
        "", "## Data", "",
        f"* Real: daily bars of {real}, {data['first_date']} … 2013-03-01, from the",
        f"  `{data['package']}` package (`bokeh_sampledata.stocks`; Quandl WIKI prices, public",
        "  domain, redistributed by the Bokeh project). Open/high/low/close are scaled by the",
        "  source's adjusted close / close (splits and dividends), volume by the inverse.",
        f"* Synthetic: `synthetic_panel(n_instruments={syn['n_instruments']}, freq="
        f"{syn['freq']!r}, seed={syn['seed']}, predictable={syn['predictable']})` on the same",
        "  calendar: a one-factor GARCH panel whose next return has a planted slow-momentum part.",
        f"* Windows of lookback {cfg['lookback']} + pred_len {cfg['pred_len']} + 1 bars, "
        "normalised with the lookback's mean/std only.",
        f"* Time split: the last {cfg['val_fraction']:.0%} of dates are held out (validation from "
        f"{ev['val_from'][:10]}, after an embargo of {cfg['embargo']} dates); all numbers below "
        "are on that held-out part.",
        f"* The bundled demo series (`{meta['series']}`) is the last bars of "
        f"{meta['series_name']}.",
        "", "## Training", "",
        "AdamW (weight decay 0.1), one-cycle schedule, gradient clipping 3.0; the tokenizer "
        "first, then the predictor on its frozen tokens (s2 teacher-forced on the true s1). "
        "The shipped checkpoint is the one with the lowest validation metric (tokenizer: "
        "full-code reconstruction MSE; predictor: mean next-token cross-entropy).", "",
        *_training_table(report), "",
        f"Total build time {report['seconds_total']:.0f} s with {report['threads']} CPU thread(s), "
        "including evaluation.",
        "", "## Held-out results", "",
        "Tokenizer reconstruction (normalised units; predicting 0 = the lookback mean):", "",
        *_recon_table(ev), "",
        "Next-token cross-entropy in nats (lower is better). Uniform = log(vocabulary); unigram ="
        " the training tokens' frequencies:", "", *_token_table(ev), "",
        "Forecasts: close return from the last context bar (simple return), model point "
        "forecast = mean of the sampled paths, random walk = no change. DM p: Diebold–Mariano "
        "test of equal MAE (Harvey–Leybourne–Newbold correction, losses averaged per forecast "
        "date). Direction accuracy is compared with always guessing the more frequent "
        "direction of the same windows (binomial p; windows treated as independent). A dash: "
        "metrics measured before these tests were added (rebuild the model to fill them):", "",
        *_forecast_table(ev), "", *_nonpositive_note(ev),
        "", "## Honest reading", "", *_verdict(ev),
        "* The cross-entropy tables show what the model learned about the token sequence; the "
        "forecast table shows whether that turns into return skill. On real daily stock returns "
        "a random walk is very hard to beat, and this small model should not be expected to.",
        "* On the synthetic panel part of the next return is predictable by construction, so "
        "skill there is possible; compare the model's columns with the baselines above.",
        "* Band coverage near 0.8 means calibrated 10–90% bands; lower means over-confident.",
        "", "## Licence", "",
        "Weights: MIT, as kronos-quant. Training data: public domain (Quandl WIKI via "
        "bokeh-sampledata, BSD-3-Clause package) and generated synthetic data.", ""]
    write_atomic(path, "\n".join(lines))
    return path


def rerender_model_card(folder: str | Path) -> Path:
    """Re-render ``MODEL_CARD.md`` of a built demo folder from its ``metrics.json`` and
    ``demo.json``; returns the card's path."""
    folder = Path(folder)
    report = json.loads((folder / "metrics.json").read_text())
    meta = json.loads((folder / "demo.json").read_text())
    return write_model_card(folder / "MODEL_CARD.md", report, meta)

"""The demo's ``index.html`` and ``summary.json``: every step's numbers, charts and files.

The page is static and self-contained (no scripts, no network): a header naming the model,
a table of key numbers and step timings, then one section per step with its numbers, tables,
charts (``<img>``) and links to the files it wrote (tear sheets, CSVs, the ledger).
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_atomic
from .steps import STEPS, StepResult

PERCENT_WORDS = ("return", "drawdown", "coverage", "hit rate", "P(up)")
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{margin-bottom:.2em}
.model{color:#555;margin-top:0}
.warn{background:#fff5e0;border-left:4px solid #e0a000;padding:.6em 1em}
table{border-collapse:collapse;margin:.6em 0 1em}
td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
section{margin-top:2em;border-top:2px solid #eee}
.skipped{color:#a60}.failed{color:#b00}.ok{color:#070}
code{background:#f4f4f4;padding:0 .3em}
"""


def format_number(name: str, value: Any) -> str:
    """A key number as shown on the page (percentages where the name says return, ...)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if not np.isfinite(value):
        return "n/a"
    if any(word in name for word in PERCENT_WORDS) and "IC" not in name:
        return f"{value:+.2%}" if "return" in name or "drawdown" in name else f"{value:.1%}"
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4f}"


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _numbers_table(numbers: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(format_number(k, v))}</td></tr>"
                   for k, v in numbers.items())
    return f"<table>{rows}</table>"


def _link(out: Path, path: Path) -> str:
    rel = Path(os.path.relpath(path, out)).as_posix()
    return rel + ("/" if path.is_dir() else "")


def _section(out: Path, name: str, result: StepResult) -> str:
    step = STEPS[name]
    parts = [f'<section id="{name}"><h2>{_esc(step.title)} '
             f'<small class="{result.status}">({result.status}, {result.seconds:.1f} s)'
             '</small></h2>',
             f"<p>{_esc(step.run.__doc__ or '')}</p>"]
    if result.numbers:
        parts.append(_numbers_table(result.numbers))
    for title, table in result.tables.items():
        parts += [f"<h3>{_esc(title)}</h3>", table]
    for kind, path in result.files.items():
        if path.suffix == ".png" and path.exists():
            parts.append(f'<figure><img src="{_esc(_link(out, path))}" alt="{_esc(kind)}">'
                         f"<figcaption>{_esc(kind)}</figcaption></figure>")
    links = [f'<li><a href="{_esc(_link(out, p))}">{_esc(kind)}</a> '
             f"<code>{_esc(_link(out, p))}</code></li>"
             for kind, p in result.files.items() if p.suffix != ".png"]
    if links:
        parts.append(f"<ul>{''.join(links)}</ul>")
    parts += [f"<p><em>note:</em> {_esc(n)}</p>" for n in result.notes]
    return "\n".join(parts + ["</section>"])


def write_index(out: str | Path, results: Mapping[str, StepResult], *, model_label: str,
                headline: Mapping[str, Any], total_seconds: float) -> Path:
    """Write ``index.html`` into ``out`` linking every step's outputs; returns its path."""
    out = Path(out)
    timing = "".join(
        f'<tr><td><a href="#{name}">{_esc(STEPS[name].title)}</a></td>'
        f'<td class="{r.status}">{r.status}</td><td>{r.seconds:.1f} s</td></tr>'
        for name, r in results.items())
    body = ["<h1>kronos-quant demo</h1>",
            f'<p class="model">model: {_esc(model_label)}</p>',
            '<p class="warn">The embedded demo model is small and trained for minutes on CPU; '
            "on held-out data it does not beat a random walk (see its model card, "
            "<code>kronos_quant/assets/demo/MODEL_CARD.md</code>). "
            f"{_esc(_verdict(results))}The numbers below show the plugin working end to end, "
            "not a strategy to trade.</p>",
            "<h2>Key numbers</h2>", _numbers_table(headline),
            "<h2>Steps</h2>",
            f"<table><tr><th>step</th><th>status</th><th>time</th></tr>{timing}"
            f"<tr><td><b>total</b></td><td></td><td><b>{total_seconds:.1f} s</b></td></tr></table>"]
    body += [_section(out, name, r) for name, r in results.items() if r.status != "skipped"]
    skipped = [f"<li>{_esc(STEPS[n].title)}: {_esc('; '.join(r.notes))}</li>"
               for n, r in results.items() if r.status == "skipped"]
    if skipped:
        body.append(f"<section><h2>Skipped</h2><ul>{''.join(skipped)}</ul></section>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>kronos-quant demo</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return write_atomic(out / "index.html", page)


def _verdict(results: Mapping[str, StepResult]) -> str:
    """The evaluate step's test-backed sentence on the random walk, if it ran."""
    result = results.get("evaluate")
    return f"{result.verdict} " if result is not None and result.verdict else ""


def headline_numbers(results: Mapping[str, StepResult]) -> dict[str, Any]:
    """The few numbers the page opens with, picked from the steps that ran."""
    picks = {"forecast": ("P(up)", "expected return"),
             "evaluate": tuple(k for k in results.get("evaluate", StepResult()).numbers
                               if k.startswith("RankIC") or "band" in k or "baseline" in k
                               or "random walk" in k),
             "vectorbt": ("total return", "Sharpe"),
             "backtrader": ("bars with the same holdings as vectorbt", "final equity vs vectorbt"),
             "qlib": ("annualised excess after cost",
                      "days holding the same names as our portfolio layer"),
             "live": ("decisions", "PnL")}
    out: dict[str, Any] = {}
    for name, keys in picks.items():
        result = results.get(name)
        if result is None or result.status != "ok":
            continue
        out |= {f"{name}: {k}": result.numbers[k] for k in keys if k in result.numbers}
    return out


def summary_json(results: Mapping[str, StepResult]) -> str:
    """Every step's status, time, numbers and notes as JSON (the demo's ``summary.json``)."""
    def clean(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return float(v) if np.isfinite(v) else None
        return v.item() if isinstance(v, np.generic) else v

    return json.dumps({name: {"status": r.status, "seconds": round(r.seconds, 2),
                              "numbers": {k: clean(v) for k, v in r.numbers.items()},
                              "files": {k: str(p) for k, p in r.files.items()},
                              "notes": r.notes, **({"verdict": r.verdict} if r.verdict else {})}
                       for name, r in results.items()}, indent=2) + "\n"

"""QuantStats tear sheets for our backtests, with a Kronos signal-quality section.

:func:`tearsheet` writes QuantStats' HTML report for a strategy's returns and appends what
QuantStats cannot know: how good the signal was (IC/RankIC and long-short against the
random-walk, momentum and reversal baselines of :func:`kronos_quant.signals.evaluate`), how
well the forecast bands covered (:func:`kronos_quant.signals.calibrate`), the execution
convention and the scores' metadata. :func:`metrics` returns QuantStats' metrics table.

Nothing here touches the network or a display: a benchmark must be a Series (a ticker string
would make QuantStats download it), reports are only written to files, and QuantStats'
font and deprecation chatter is silenced only while it runs. QuantStats is imported inside
the functions (``pip install "kronos-quant[reports]"``).

Returns come from a Series or from any backtest result a :func:`register_returns` rule knows;
vectorbt portfolios are known here, other adapters register theirs.
"""
from __future__ import annotations

import html
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data import periods_per_year as periods_per_year_of  # the parameter keeps its name
from ..execution import DEFAULT_EXECUTION, describe_execution
from ..inputs import wall_clock
from ..io import atomic_path
from . import require_engine

if TYPE_CHECKING:
    from ..signals import Calibration, Evaluation

logger = logging.getLogger(__name__)

SECTION_ID = "kronos-signal-quality"


@contextmanager
def quiet_reports() -> Iterator[None]:
    """Silence the known noise of QuantStats and its plotting stack, nothing else: missing-font
    log lines, and deprecation / tick-label warnings raised from inside those libraries.
    Errors and warnings from elsewhere pass through; settings are restored on exit."""
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category,
                                        module=r"(quantstats|seaborn|matplotlib)(\.|$)")
            warnings.filterwarnings("ignore", message=r"set_ticklabels\(\) should only be used",
                                    category=UserWarning, module=r"quantstats(\.|$)")
            yield
    finally:
        font_log.setLevel(level)


# --- returns from backtest results ---------------------------------------------------------

_RETURNS_RULES: list[tuple[str, Callable[[object], bool], Callable[[object], pd.Series]]] = []


def register_returns(name: str, matches: Callable[[object], bool],
                     extract: Callable[[object], pd.Series]) -> None:
    """Teach :func:`to_returns` a new kind of backtest result (e.g. a backtrader strategy):
    ``matches(obj)`` says whether ``obj`` is one, ``extract(obj)`` gives its per-bar returns.
    A rule registered again under the same name replaces the old one."""
    _RETURNS_RULES[:] = [rule for rule in _RETURNS_RULES if rule[0] != name]
    _RETURNS_RULES.append((name, matches, extract))


def _is_vectorbt_portfolio(obj: object) -> bool:
    # Checked by module name so that vectorbt need not be imported to rule it out.
    return type(obj).__module__.startswith("vectorbt.") and type(obj).__name__ == "Portfolio"


def _vectorbt_returns(portfolio) -> pd.Series:
    returns = portfolio.returns()
    if isinstance(returns, pd.DataFrame):
        if returns.shape[1] != 1:
            raise ValueError(f"the vectorbt portfolio has {returns.shape[1]} columns/groups; "
                             f"select one (portfolio['name']) or group them (group_by=True)")
        returns = returns.iloc[:, 0]
    return returns


register_returns("vectorbt", _is_vectorbt_portfolio, _vectorbt_returns)


def to_returns(result: object) -> pd.Series:
    """Per-bar simple returns (float Series on a tz-naive DatetimeIndex) of a backtest result:
    a returns Series or anything a :func:`register_returns` rule matches."""
    if isinstance(result, pd.Series):
        returns = result
    else:
        for _, matches, extract in _RETURNS_RULES:
            if matches(result):
                returns = extract(result)
                break
        else:
            known = ", ".join(name for name, _, _ in _RETURNS_RULES)
            raise TypeError(f"cannot read returns from a {type(result).__name__}; give a returns "
                            f"Series or a backtest result of: {known}")
    return _clean_series(returns, "returns")


def _clean_series(series: pd.Series, what: str) -> pd.Series:
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"{what} must be indexed by datetimes, got {type(series.index).__name__}")
    if len(series) < 2:
        raise ValueError(f"{what} need at least two bars, got {len(series)}")
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = series.notna() & values.isna() | np.isinf(values)
    if bad.any():
        raise ValueError(f"{what} have a non-numeric or infinite value at {series.index[bad][0]}")
    index = wall_clock(series.index, what=what)
    return pd.Series(values.to_numpy(), index=index, name=series.name).sort_index()


def benchmark_returns(benchmark: pd.Series, *, prices: bool | None = None) -> pd.Series:
    """A benchmark as returns. ``prices=None`` reads it as prices when every value is positive
    and some exceed 1 (QuantStats' own rule, applied here explicitly and logged)."""
    if isinstance(benchmark, str):
        raise TypeError(f"benchmark {benchmark!r} is a ticker: QuantStats would download it. "
                        f"Pass a pandas Series of its returns or prices instead")
    if not isinstance(benchmark, pd.Series):
        raise TypeError(f"benchmark must be a pandas Series of returns or prices, got "
                        f"{type(benchmark).__name__}")
    bench = _clean_series(benchmark, "benchmark")
    if prices is None:
        prices = bool((bench.dropna() > 0).all() and bench.max() > 1)
        logger.debug("benchmark read as %s", "prices" if prices else "returns")
    if prices:
        if (bench.dropna() <= 0).any():
            raise ValueError("benchmark prices must be positive")
        bench = bench.pct_change(fill_method=None).iloc[1:]
    return bench


# --- signal-quality section -----------------------------------------------------------------

@dataclass
class SignalReport:
    """What the tear sheet says about the signal behind the returns.

    ``evaluation``: :class:`kronos_quant.signals.Evaluation` (model rows and baselines);
    ``calibration``: :class:`kronos_quant.signals.Calibration` or None; ``execution``: the
    convention the backtest traded under; ``metadata``: the scores' ``attrs``.
    """

    evaluation: Evaluation | None = None
    calibration: Calibration | None = None
    execution: str = DEFAULT_EXECUTION
    metadata: Mapping[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """IC/RankIC (with the RankIC's Newey–West p-value and dates) and long-short (with its
        p-value) of the first model signal, and mean 80% band coverage, for summaries."""
        out: dict[str, float] = {}
        if self.evaluation is not None:
            table = self.evaluation.summary
            models = table[table["kind"] == "model"]
            if len(models):
                row = models.iloc[0]
                out.update(signal=str(models.index[0]), ic=float(row["ic_mean"]),
                           rank_ic=float(row["rank_ic_mean"]), rank_ic_p=float(row["rank_ic_p"]),
                           rank_ic_dates=int(row["rank_ic_n"]),
                           long_short=float(row["long_short_mean"]),
                           long_short_p=float(row["long_short_p"]))
        coverage = self.coverage()
        if coverage is not None and 0.8 in coverage.index:
            out["coverage_80"] = float(coverage.loc[0.8, "empirical"])
        return out

    def coverage(self) -> pd.DataFrame | None:
        """Band coverage per nominal level, averaged over forecast steps (None if absent)."""
        if self.calibration is None:
            return None
        cov = self.calibration.coverage  # step × level
        return pd.DataFrame({"nominal": cov.columns.astype(float),
                             "empirical": cov.mean(axis=0).to_numpy(),
                             "first_step": cov.iloc[0].to_numpy(),
                             "last_step": cov.iloc[-1].to_numpy()},
                            index=pd.Index(cov.columns.astype(float), name="level"))

    def to_html(self) -> str:
        """The section as an HTML fragment (self-contained, no scripts)."""
        fmt = lambda v: f"{v:.4f}"  # noqa: E731
        parts = [f'<div id="{SECTION_ID}" style="clear:both;padding-top:2em">',
                 "<h2>Signal quality (kronos-quant)</h2>",
                 f"<p>Execution: {html.escape(describe_execution(self.execution))}</p>"]
        if self.evaluation is not None:
            labels = self.evaluation.TABLE_COLUMNS
            table = self.evaluation.summary[list(labels)].rename(columns=labels)
            parts += [f"<h3>IC, RankIC and long-short vs baselines (horizon "
                      f"{int(self.evaluation.horizon)} bars)</h3>",
                      "<p>se, t, p: Newey–West over dates (lag covering "
                      f"{int(self.evaluation.overlap)} overlapping dates), two-sided.</p>",
                      table.to_html(float_format=fmt, border=0)]
            differences = self.evaluation.differences
            if len(differences):
                names = self.evaluation.DIFFERENCE_COLUMNS
                parts += ["<h3>Model minus baseline, paired by date</h3>",
                          differences[list(names)].rename(columns=names).to_html(
                              float_format=fmt, border=0)]
            notes = list(self.evaluation.notes)
            measured = self.evaluation.execution
            if measured != self.execution:
                notes.append(f"forward returns measured under {measured}, while the "
                             f"backtest trades under {self.execution}")
            parts += [f"<p>note: {html.escape(str(n))}</p>" for n in notes]
        coverage = self.coverage()
        if coverage is not None:
            parts += ["<h3>Forecast band coverage vs nominal</h3>",
                      coverage.to_html(float_format=fmt, border=0, index=False)]
        skill = None if self.calibration is None else self.calibration.skill
        if skill is not None:
            parts += ["<h3>Forecast skill vs the random walk and historical-volatility bands"
                      "</h3><p>Diebold–Mariano (Harvey–Leybourne–Newbold) on per-date losses; "
                      "t &lt; 0: the model is more accurate. Direction: binomial test against "
                      "the best constant guess.</p>",
                      skill.steps.to_html(float_format=fmt, border=0)]
        if self.metadata:
            meta = pd.DataFrame({"value": [str(v) for v in self.metadata.values()]},
                                index=pd.Index([str(k) for k in self.metadata], name="score"))
            parts += ["<h3>Score metadata</h3>", meta.to_html(border=0)]
        return "\n".join(parts + ["</div>"])


def evaluate_signal(scores: pd.Series | pd.DataFrame, panel: pd.DataFrame, *, horizon: int,
                  execution: str = DEFAULT_EXECUTION, calibration: Calibration | None = None,
                  **evaluate_options) -> SignalReport:
    """Evaluate ``scores`` on ``panel`` (with baselines) and bundle it for :func:`tearsheet`.

    ``calibration`` is a :func:`kronos_quant.signals.calibrate` result, if computed;
    ``evaluate_options`` go to :func:`kronos_quant.signals.evaluate`.
    """
    from ..signals import evaluate

    numeric = scores.select_dtypes("number") if isinstance(scores, pd.DataFrame) else scores
    evaluation = evaluate(numeric, panel, horizon=horizon, execution=execution,
                          **evaluate_options)
    return SignalReport(evaluation, calibration, execution, dict(evaluation.metadata))


# --- QuantStats ------------------------------------------------------------------------------

def _prepared(returns, benchmark, periods_per_year):
    strategy = to_returns(returns)
    bench = None if benchmark is None else benchmark_returns(benchmark)
    if periods_per_year is None:
        periods_per_year = periods_per_year_of(strategy.index)
    elif not isinstance(periods_per_year, (int, np.integer)) or periods_per_year < 1:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")
    return strategy, bench, int(periods_per_year)


def metrics(returns: object, *, benchmark: pd.Series | None = None,
            periods_per_year: int | None = None, mode: str = "full",
            rf: float = 0.0) -> pd.DataFrame:
    """QuantStats' metrics table (metric × strategy[/benchmark]) as a DataFrame.

    ``returns`` as in :func:`to_returns`; ``benchmark`` a returns or price Series;
    ``mode`` ``"basic"`` or ``"full"``; ``periods_per_year`` inferred when None.
    """
    with quiet_reports():  # its import is noisy too
        qs = require_engine("quantstats")
    strategy, bench, ppy = _prepared(returns, benchmark, periods_per_year)
    with quiet_reports():
        table = qs.reports.metrics(strategy, benchmark=bench, rf=rf, display=False, mode=mode,
                                   periods_per_year=ppy)
    return table


def tearsheet(returns: object, *, benchmark: pd.Series | None = None,
              title: str = "Kronos strategy", output: str | os.PathLike = "report.html",
              periods_per_year: int | None = None,
              signal_report: SignalReport | None = None, rf: float = 0.0) -> Path:
    """Write a QuantStats HTML tear sheet, plus our signal section, to ``output``.

    Parameters
    ----------
    returns
        A returns Series or a backtest result (a vectorbt ``Portfolio``, or any kind a
        :func:`register_returns` rule knows). Stamps are made tz-naive (local wall time).
    benchmark
        A returns or price Series (see :func:`benchmark_returns`); a ticker string is refused.
    title
        Report title.
    output
        HTML file to write (atomically: a temporary file, then renamed). Never a browser.
    periods_per_year
        Annualisation; inferred by :func:`kronos_quant.data.periods_per_year` when None.
    signal_report
        A :class:`SignalReport` (see :func:`evaluate_signal`) appended as its own section.
    rf
        Risk-free rate per year, as QuantStats takes it.

    Returns
    -------
    The path written.
    """
    with quiet_reports():  # its import is noisy too
        qs = require_engine("quantstats")
    strategy, bench, ppy = _prepared(returns, benchmark, periods_per_year)
    if output is None:
        raise ValueError("output must be a file path (QuantStats would otherwise try a browser)")
    path = Path(output)
    with atomic_path(path) as tmp:
        with quiet_reports():
            qs.reports.html(strategy, benchmark=bench, rf=rf, title=title, output=str(tmp),
                            periods_per_year=ppy,
                            benchmark_title=None if bench is None else (bench.name or "Benchmark"))
        if signal_report is not None:
            page = tmp.read_text(encoding="utf-8")
            section = signal_report.to_html()
            cut = page.rfind("</body>")
            page = page[:cut] + section + page[cut:] if cut >= 0 else page + section
            tmp.write_text(page, encoding="utf-8")
    return path

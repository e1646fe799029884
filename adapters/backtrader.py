"""backtrader adapter: data feeds that carry Kronos scores, headless plots, per-bar returns.

* :func:`feeds` turns a panel (and optionally a score frame) into one ``PandasData`` feed per
  instrument, named by instrument. Each score column becomes an extra line named after its
  scorer; bar t's line holds the score indexed at t, i.e. the score known once bar t has
  closed (when it may trade is the strategy's business, see :mod:`kronos_quant.execution`).
* :func:`plot` saves backtrader's charts as PNG files without a display: backtrader's plot
  module switches matplotlib to TkAgg on import and ``Cerebro.plot`` calls ``show()``; here
  neither happens.
* :func:`returns` reads the per-bar returns of a run from its :func:`bar_values` analyzer
  (one return per bar, intraday panels included), or the daily returns of a ``PyFolio``
  analyzer when that is all the run has.

backtrader is imported inside the functions (install it with
``pip install "kronos-quant[backtrader]"``).
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import INDEX_NAMES, PANEL_COLUMNS, validate_panel
from ..io import atomic_path
from ..signals.transforms import check_scores
from . import require_engine

logger = logging.getLogger(__name__)

# OHLCV lines every backtrader feed already has; "amount" travels as an extra line because
# the model reads it (live inference must see the same columns as score_panel).
FEED_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PYFOLIO_NAME = "pyfolio"
BAR_VALUES_NAME = "bar_values"


# The precomputed protective-stop line: a return (negative) below the entry price.
STOP_LINE = "stop_return"


def stop_returns(forecasts, quantile: float) -> pd.Series:
    """Per window, the ``quantile`` of the lowest forecast close over the horizon relative to
    the last close, minus 1 (a negative return): the ``stop_return`` line for precomputed
    mode, from :func:`kronos_quant.signals.forecast_panel` output."""
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"stop_quantile must lie in (0, 1), got {quantile!r}")
    batch = forecasts.batch
    lowest = batch.paths[..., 3].min(axis=2)  # (N, S) close column, min over the horizon
    level = np.quantile(lowest, float(quantile), axis=1) / batch.last_close - 1.0  # (N,)
    return pd.Series(level, index=forecasts.keys, name=STOP_LINE)


def score_frame(scores: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Scores as a float DataFrame with one column per scorer (a Series keeps its name, or
    becomes ``"score"``); column names must be usable as backtrader line names."""
    check_scores(scores)
    frame = scores.to_frame(scores.name or "score") if isinstance(scores, pd.Series) else scores
    frame = frame.astype(np.float64)
    for col in frame.columns:
        if not isinstance(col, str) or not col.isidentifier() or col.startswith("_"):
            raise ValueError(f"score column {col!r} cannot name a backtrader line: use a "
                             "Python identifier not starting with '_' (rename the column)")
        if col in PANEL_COLUMNS or col in ("datetime", "openinterest"):
            raise ValueError(f"score column {col!r} clashes with a bar line; rename it")
    return frame


@functools.cache
def data_class(extra_lines: tuple[str, ...]) -> type:
    """A ``PandasData`` subclass with one extra line (and column parameter) per name.

    It loads rows from NumPy arrays taken once at start instead of ``DataFrame.iloc`` per
    field and bar (the stock feed's cost dominates large multi-data runs). The class keeps
    ``dataname`` as the instrument's frame, so a strategy can read a data's first ``len(data)``
    rows, i.e. exactly the bars it has seen.
    """
    bt = require_engine("backtrader")

    class KronosPandasData(bt.feeds.PandasData):
        lines = extra_lines
        params = tuple((name, -1) for name in extra_lines)
        bar_columns = FEED_COLUMNS + tuple(n for n in extra_lines if n in PANEL_COLUMNS)
        signal_lines = tuple(n for n in extra_lines if n not in PANEL_COLUMNS)

        def start(self) -> None:
            super().start()  # resolves column names to positions in self._colmapping
            frame = self.p.dataname
            self._arrays = [(getattr(self.lines, field), frame.iloc[:, pos].to_numpy(np.float64))
                            for field, pos in self._colmapping.items()
                            if field != "datetime" and pos is not None]
            self._stamps = [bt.date2num(ts) for ts in frame.index.to_pydatetime()]

        def _load(self) -> bool:
            self._idx += 1
            if self._idx >= len(self._stamps):
                return False
            for line, values in self._arrays:
                line[0] = values[self._idx]
            self.lines.datetime[0] = self._stamps[self._idx]
            return True

    KronosPandasData.__name__ = KronosPandasData.__qualname__ = "KronosPandasData"
    return KronosPandasData


def _instrument_scores(frame: pd.DataFrame, inst: str, bars: pd.DatetimeIndex) -> pd.DataFrame:
    """Scores of one instrument on its own bars (NaN where not scored)."""
    if inst not in frame.index.get_level_values("instrument"):
        return pd.DataFrame(np.nan, index=bars, columns=frame.columns)
    own = frame.xs(inst, level="instrument")
    stray = own.index.difference(bars)
    if len(stray):
        raise ValueError(f"scores for instrument {inst!r} at {stray[0]} (and {len(stray) - 1} "
                         "more) fall on no bar of that instrument in the panel")
    return own.reindex(bars)


def feeds(panel: pd.DataFrame, scores: pd.Series | pd.DataFrame | None = None, *,
          instruments: Sequence[str] | None = None) -> list[Any]:
    """One backtrader data feed per instrument, named by instrument, in sorted order.

    Parameters
    ----------
    panel
        Canonical panel (see :mod:`kronos_quant.data`); an ``amount`` column becomes a line.
    scores
        Optional score Series/DataFrame indexed by ("datetime", "instrument"); each column
        becomes a line named after it, NaN on bars without a score. A score must sit on a
        bar of its instrument.
    instruments
        Restrict to these instruments (default: all of the panel's).

    Returns
    -------
    list of ``KronosPandasData`` feeds; add them with ``cerebro.adddata(feed, name=feed._name)``
    or use :func:`kronos_quant.strategies.backtrader.run`.
    """
    panel = validate_panel(panel)
    frame = score_frame(scores) if scores is not None else None
    names = sorted(panel.index.get_level_values("instrument").unique())
    if instruments is not None:
        unknown = sorted(set(instruments) - set(names))
        if unknown:
            raise ValueError(f"instruments not in the panel: {unknown}")
        names = sorted(instruments)
    if frame is not None:
        missing = sorted(set(frame.index.get_level_values("instrument")) - set(names))
        if missing:
            raise ValueError(f"scores name instruments absent from the panel: {missing[:5]}")
    extra = tuple(c for c in panel.columns if c not in FEED_COLUMNS)
    extra += tuple(frame.columns) if frame is not None else ()
    cls = data_class(extra)
    out = []
    for inst in names:
        bars = panel.xs(inst, level="instrument")
        bars.index = pd.DatetimeIndex(bars.index, name=INDEX_NAMES[0])
        if frame is not None:
            bars = bars.join(_instrument_scores(frame, inst, bars.index))
        data = cls(dataname=bars, name=inst)
        out.append(data)
    return out


@contextlib.contextmanager
def _no_backend_switch() -> Iterator[None]:
    """Make ``matplotlib.use`` a no-op while backtrader's plot module is imported."""
    import matplotlib

    use = matplotlib.use
    matplotlib.use = lambda *args, **kwargs: None
    try:
        yield
    finally:
        matplotlib.use = use


def plot(cerebro: Any, path: str | Path, *, width: float = 16, height: float = 9,
         dpi: int = 100, **scheme: Any) -> list[Path]:
    """Save backtrader's chart of every strategy run by ``cerebro`` as PNG, headless.

    The figures are drawn by backtrader's own plotter (``scheme`` options pass through to it)
    with pyplot in non-interactive mode, saved, then closed; ``show()`` is never called and
    the matplotlib backend is never switched. With several strategies the files are named
    ``<stem>_<i><suffix>``.

    Returns
    -------
    The written paths.
    """
    bt = require_engine("backtrader")
    if not getattr(cerebro, "runstrats", None):
        raise ValueError("plot needs a Cerebro that has been run (call cerebro.run() first)")
    with _no_backend_switch():
        from backtrader import plot as btplot
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strategies = [s for runs in cerebro.runstrats for s in runs]
    written = []
    with plt.ioff():
        for i, strat in enumerate(strategies):
            plotter = btplot.Plot(**scheme)
            figs = plotter.plot(strat, figid=i * 100, numfigs=1, iplot=False) or []
            for fig in figs:
                target = path if len(strategies) == 1 else path.with_name(
                    f"{path.stem}_{i}{path.suffix}")
                fig.set_size_inches(width, height)
                with atomic_path(target) as tmp:
                    fig.savefig(tmp, dpi=dpi)
                written.append(target)
                plt.close(fig)
    logger.info("wrote %d backtrader chart(s) (backtrader %s)", len(written), bt.__version__)
    return written


@functools.cache
def bar_values() -> type:
    """An analyzer recording the broker's portfolio value after every bar (start value
    first), so returns are per bar: ``PyFolio`` and ``TimeReturn`` group by calendar day,
    which merges an intraday panel's bars into one return a day."""
    bt = require_engine("backtrader")

    class BarValues(bt.Analyzer):
        def start(self) -> None:
            self.start_value = float(self.strategy.broker.getvalue())
            self.stamps: list = []
            self.values: list[float] = []

        def next(self) -> None:
            self.stamps.append(self.strategy.datetime.datetime(0))
            self.values.append(float(self.strategy.broker.getvalue()))

        def get_analysis(self) -> pd.Series:
            index = pd.DatetimeIndex(self.stamps, name=INDEX_NAMES[0])
            return pd.Series(self.values, index=index, name="value", dtype=np.float64)

    return BarValues


def add_return_analyzers(cerebro: Any) -> None:
    """Add the ``PyFolio`` analyzer and :func:`bar_values` (per-bar returns for
    :func:`returns`) to ``cerebro``."""
    bt = require_engine("backtrader")
    cerebro.addanalyzer(bt.analyzers.PyFolio, _name=PYFOLIO_NAME)
    cerebro.addanalyzer(bar_values(), _name=BAR_VALUES_NAME)


def returns(result: Any, *, name: str = "returns") -> pd.Series:
    """Per-bar simple returns of a finished strategy, tz-naive.

    ``result`` is a strategy returned by ``cerebro.run()`` with a :func:`bar_values`
    analyzer (``cerebro.addanalyzer(bar_values(), _name="bar_values")``, as
    :func:`kronos_quant.strategies.backtrader.cerebro_for` adds it): one return per bar, the
    first against the starting value. Without one, the daily returns of its ``PyFolio``
    analyzer (stamped in UTC by backtrader; the zone is dropped to match the panel's dates).
    """
    bt = require_engine("backtrader")
    analyzers = list(getattr(result, "analyzers", []))
    per_bar = [a for a in analyzers if isinstance(a, bar_values())]
    if per_bar:
        values = per_bar[0].get_analysis()
        rets = values / values.shift(1, fill_value=per_bar[0].start_value) - 1.0
        return rets.rename(name)
    analyzer = result
    if not isinstance(result, bt.analyzers.PyFolio):
        found = [a for a in analyzers if isinstance(a, bt.analyzers.PyFolio)]
        if not found:
            raise ValueError("no bar_values or PyFolio analyzer on this result: add one with "
                             f"cerebro.addanalyzer(bar_values(), _name={BAR_VALUES_NAME!r}) "
                             "before running")
        analyzer = found[0]
    rets = analyzer.get_pf_items()[0]
    index = pd.DatetimeIndex(rets.index).tz_convert("UTC").tz_localize(None)
    return pd.Series(rets.to_numpy(np.float64), index=index.rename(INDEX_NAMES[0]), name=name)

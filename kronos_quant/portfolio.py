"""Scores → target weights → the per-bar weights every engine trades.

The one place that turns a score panel into positions, so that vectorbt, backtrader, Qlib
and the live loop hold the same names in the same sizes:

* :func:`target_weights`: one row per rebalance date (the score's own stamps), one column
  per instrument, 0 for names not held.
* :func:`align`: puts each rebalance row on its execution bar
  (:mod:`kronos_quant.execution`) and, with ``fill=True``, holds it until the next one.
* :func:`turnover` and :func:`exposure` summarise a weight frame.

The terms (method, topk, caps, rebalance cadence, ...) are a
:class:`~kronos_quant.tradespec.TradeSpec`; what happens to names that stop trading is
:mod:`kronos_quant.orders`.

Ordering rule used everywhere: higher score first; equal scores are broken by instrument
name, ascending ("AAA" before "BBB"), so every engine picks the same names. Names whose
score is NaN or missing, or filtered out (``min_score``, ``threshold``), are not candidates.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .execution import (
    DEFAULT_EXECUTION,
    EXECUTIONS,
    check_execution,
    describe_execution,
    execution_lag,
    execution_price,
    execution_returns,
)
from .signals.transforms import score_column
from .tradespec import METHODS, TradeSpec, resolve_spec

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "TradeSpec", "THIN_DATES", "OnceFilter", "target_weights", "align",
           "turnover", "exposure", "check_against_spec", "EXECUTIONS",
           "DEFAULT_EXECUTION", "check_execution", "describe_execution", "execution_lag",
           "execution_price", "execution_returns"]

_EQUAL_WEIGHT = ("topk", "threshold", "long_short")
# The words of the warning for dates with fewer scored names than topk.
THIN_DATES = "holding what there is"


def _score_matrix(scores: pd.Series | pd.DataFrame, column: str | None) -> pd.DataFrame:
    """Validated scores as a dates × instruments float matrix (NaN = no score)."""
    values = score_column(scores, column)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        row = int(np.argmax(infinite))
        raise ValueError(f"scores have an infinite value at {values.index[row]}")
    if len(values) == 0:
        raise ValueError("scores are empty")
    wide = values.unstack("instrument").sort_index().sort_index(axis=1)
    wide.index = pd.DatetimeIndex(wide.index.to_numpy(), name="datetime")  # no freq: rows are dates
    wide.columns.name = "instrument"
    return wide


def _strengths(x: np.ndarray, spec: TradeSpec) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative long and short strength of each name (0 = not a candidate for that leg)."""
    finite = np.isfinite(x)
    if spec.method == "threshold":
        low, high = spec.bounds
        base = np.where(x > high, 1.0, np.where(x < low, -1.0, 0.0))
    elif spec.method in ("proportional", "conviction"):
        base = 2.0 * x - 1.0 if spec.method == "conviction" else x
        base = base - np.nanmean(base) if spec.long_short and finite.any() else base
    else:  # topk, rank, long_short: average rank, centred for long-short (ties stay together)
        ranks = pd.Series(x).rank(method="average").to_numpy()
        base = ranks - (finite.sum() + 1) / 2.0 if spec.long_short else ranks
    base = np.where(finite, base, 0.0)
    long = np.clip(base, 0.0, None)
    short = np.clip(-base, 0.0, None) if spec.long_short else np.zeros_like(base)
    if spec.min_score is not None:
        long = np.where(x >= spec.min_score, long, 0.0)
    if spec.method in _EQUAL_WEIGHT:
        long, short = (long > 0).astype(float), (short > 0).astype(float)
    return long, short


def _ranked(x: np.ndarray, members: np.ndarray, *, descending: bool = True) -> np.ndarray:
    """Positions of ``members`` ordered by score (desc or asc), ties by column (= name) order."""
    idx = np.flatnonzero(members)
    key = -x[idx] if descending else x[idx]
    return idx[np.lexsort((idx, key))]


def _cap(w: np.ndarray, cap: float | None) -> tuple[np.ndarray, bool]:
    """Cap weights at ``cap``, handing the excess to uncapped names pro rata, repeatedly.

    Returns the weights and whether the leg's total was kept (False: every name sits at the
    cap and the leg sums to less)."""
    if cap is None or w.size == 0 or w.max() <= cap:
        return w, True
    total, capped = w.sum(), w > cap
    while not capped.all():
        rest = w[~capped]
        scaled = rest * (total - cap * capped.sum()) / rest.sum()
        over = scaled > cap * (1 + 1e-12)
        if not over.any():
            out = np.full(w.size, cap)
            out[~capped] = scaled
            return out, True
        capped[np.flatnonzero(~capped)[over]] = True
    return np.full(w.size, cap), False


def _leg(strength: np.ndarray, chosen: np.ndarray, leg_gross: float,
         spec: TradeSpec) -> tuple[np.ndarray, bool]:
    w = np.zeros(strength.size)
    if chosen.size:
        s = strength[chosen]
        w[chosen], ok = _cap(s / s.sum() * leg_gross, spec.max_weight)
        return w, ok
    return w, True


def _dropout(x: np.ndarray, eligible: np.ndarray, held: np.ndarray, spec: TradeSpec) -> np.ndarray:
    """Qlib TopkDropout (method_sell="bottom", method_buy="top"): the new held set (bool)."""
    scored = _ranked(x, eligible)
    order = np.concatenate([scored, np.flatnonzero(~eligible)])  # unscored rank last, by name
    position = np.empty(x.size, dtype=int)
    position[order] = np.arange(x.size)
    n_held = int(held.sum())
    candidates = scored[~held[scored]]
    today = candidates[:max(spec.n_drop + spec.names - n_held, 0)]
    comb = np.concatenate([np.flatnonzero(held), today])
    comb = comb[np.argsort(position[comb], kind="stable")]
    bottom = comb[max(len(comb) - spec.n_drop, 0):] if spec.n_drop else comb[:0]
    sell = bottom[held[bottom]]
    buy = today[:max(len(sell) + spec.names - n_held, 0)]
    new = held.copy()
    new[sell], new[buy] = False, True
    return new


def _row_gross(x: np.ndarray, spec: TradeSpec) -> float:
    """The date's total |weight|: ``gross``, times the mean |conviction| for ``conviction``."""
    if spec.method != "conviction":
        return spec.gross
    conviction = 2.0 * x[np.isfinite(x)] - 1.0
    if not spec.long_short:
        conviction = np.clip(conviction, 0.0, None)
    return spec.gross * float(np.abs(conviction).mean()) if conviction.size else 0.0


def _row(x: np.ndarray, held: np.ndarray, spec: TradeSpec) -> tuple[np.ndarray, np.ndarray, bool]:
    """Weights of one rebalance date, the held set, and whether the caps kept the gross."""
    long, short = _strengths(x, spec)
    gross = _row_gross(x, spec)
    if spec.n_drop is not None:
        held = _dropout(x, long > 0, held, spec)
        w, ok = _leg(np.ones(x.size), np.flatnonzero(held), spec.gross, spec)
        return w, held, ok
    k = spec.names
    longs = _ranked(x, long > 0)[:k]
    if not spec.long_short:
        w, ok = _leg(long, longs, gross, spec)
        return w, w > 0, ok
    shorts = _ranked(x, short > 0, descending=False)[:k]
    if not (longs.size and shorts.size):  # one leg alone is not neutral: hold nothing
        return np.zeros(x.size), np.zeros(x.size, dtype=bool), True
    wl, ok_l = _leg(long, longs, gross / 2, spec)
    ws, ok_s = _leg(short, shorts, gross / 2, spec)
    if not (ok_l and ok_s):  # a cap shortened a leg: shrink the other one too, net stays 0
        both = min(wl.sum(), ws.sum())
        wl, ws = wl * both / wl.sum(), ws * both / ws.sum()
    return wl - ws, wl > 0, ok_l and ok_s


def target_weights(scores: pd.Series | pd.DataFrame, spec: TradeSpec | None = None, *,
                   column: str | None = None, **terms) -> pd.DataFrame:
    """Target weights per rebalance date (rows: the scores' dates; columns: every instrument).

    Each date is built from that date's scores alone (plus, with ``n_drop``, the previous
    date's holdings). Names with a NaN or missing score are not candidates and hold 0.

    Rebalance dates: the score dates with at least one finite score (a date where every
    score is NaN is no rebalance: the book is kept, logged), every ``rebalance``-th of them
    from the first. Fewer scored names than ``topk`` (per leg) is a warning the first time
    and the book holds what there is (equal weight over fewer names, still ``gross``).

    Parameters
    ----------
    scores : Series or DataFrame indexed by ("datetime", "instrument").
    spec : the trading terms (:class:`~kronos_quant.tradespec.TradeSpec`, default
        ``TradeSpec()``); keyword ``terms`` override it. The weight terms are read here
        (method, topk, n_drop, long_short, max_weight, gross, min_score, threshold,
        rebalance, invested: each row sums to ``gross × invested``), the others by engines.
    column : the score column when ``scores`` has several.
    method : ``"topk"`` equal weight on the ``topk`` best; ``"rank"`` weight ∝ average
        cross-sectional rank (1 = worst); ``"proportional"`` weight ∝ score (long only: positive
        scores only); ``"threshold"`` equal weight on scores above ``threshold``;
        ``"long_short"`` = ``"topk"`` with ``long_short=True``; ``"conviction"``: scores are
        probabilities of a rise p ∈ [0, 1] (e.g. the ``prob_up`` scorer), conviction
        c = 2·p − 1, weight ∝ c as in ``"proportional"`` (long only: c > 0 only), and the
        date's gross is ``gross`` × the mean |c| over the scored names (long only: c clipped
        at 0), so full ``gross`` only at full conviction: one name with p = 0.75 holds
        ``gross``/2, with p = 0.5 nothing.
    topk : names per leg (None: 10 for ``topk``/``long_short``, no cap for the others).
    n_drop : Qlib ``TopkDropoutStrategy`` (``method_sell="bottom"``, ``method_buy="top"``,
        tradability and ``hold_thresh`` ignored); long-only ``method="topk"``. Rank order as the
        module says; unscored names (NaN, missing, below ``min_score``) rank after every scored
        one, among themselves by name. With H the names held after the previous date:
        ``today`` = the first ``n_drop + topk − |H|`` scored names not in H; ``comb`` = H ∪
        today in rank order; ``sell`` = the names of H among the last ``n_drop`` of ``comb``;
        ``buy`` = the first ``|sell| + topk − |H|`` of ``today``; new holdings
        = (H − sell) ∪ buy, equal weight. So at most ``n_drop`` swaps per date, never more than
        ``topk`` names, exactly ``topk`` once at least ``n_drop`` scored names are not held
        (with fewer, the rule still sells and the book shrinks, as in Qlib), a held name is never
        sold for a worse one, and a held
        name that lost its score is sold first but stays (weighted) while more than ``n_drop``
        such names are held. ``n_drop=0`` never sells (Qlib's own code then sells every holding,
        because ``list[-0:]`` is the whole list; we keep the intended meaning). Qlib sizes buys
        from cash and does not re-equalise held names: compare held names, not sizes. Qlib
        orders ties with pandas' sort (stable only for small sets): compare on untied scores.
    long_short : long leg +``gross``/2 and short leg −``gross``/2 (net 0): ``topk``/``rank``
        sides by centred average rank, ``proportional`` by score minus the date's mean
        (``conviction``: conviction minus its mean),
        ``threshold`` by ``score > high`` / ``score < low``. A date where one leg is empty holds
        nothing.
    max_weight : cap on each |weight|; the excess goes pro rata to uncapped names of the same
        leg, repeatedly. If the cap makes the leg's gross unreachable the cap wins (the row
        sums to less; in long-short the other leg shrinks to match, net 0) and a warning says
        on how many dates (at DEBUG for ``conviction``: there the cap is the intended
        per-name limit of a gross that is a fraction by design).
    gross : sum of |weights| per date (> 0; ``conviction``: at full conviction).
    min_score : long-leg names need ``score >= min_score``.
    threshold : ``t`` (long ``> t``, short ``< −t``) or ``(low, high)``;
        ``method="threshold"`` only.

    Returns
    -------
    DataFrame indexed by rebalance datetime (name ``"datetime"``), columns the instruments
    (sorted), float weights. A date with no candidate holds nothing (all 0, logged).
    """
    spec = resolve_spec(spec, terms)
    wide = _rebalance_dates(_score_matrix(scores, column), spec)
    values = wide.to_numpy()
    if spec.method == "conviction":
        _check_probabilities(wide)
    out = np.zeros(values.shape)
    held = np.zeros(values.shape[1], dtype=bool)
    capped_dates = 0
    for i, x in enumerate(values):
        out[i], held, ok = _row(x, held, spec)
        capped_dates += not ok
    weights = pd.DataFrame(out * spec.invested, index=wide.index, columns=wide.columns)
    if capped_dates:
        _log_cap(spec, capped_dates, len(weights))
    empty = int((np.abs(out).sum(axis=1) == 0).sum())
    if empty:
        logger.info("%d of %d rebalance dates hold nothing (no candidate names)",
                    empty, len(weights))
    return weights


def _rebalance_dates(wide: pd.DataFrame, spec: TradeSpec) -> pd.DataFrame:
    """Score rows that rebalance: dates with a finite score, every ``spec.rebalance``-th."""
    scored = np.isfinite(wide.to_numpy()).sum(axis=1)
    if not scored.any():
        raise ValueError("scores are all NaN: nothing to trade")
    if not scored.all():
        logger.info("%d score date(s) have no finite score (first %s): no rebalance there, "
                    "the book is kept", int((scored == 0).sum()), wide.index[scored == 0][0])
    wide, scored = wide[scored > 0], scored[scored > 0]
    if spec.rebalance > 1:
        wide, scored = wide.iloc[::spec.rebalance], scored[::spec.rebalance]
    need = spec.names if spec.method in ("topk", "long_short") else None
    if need is not None:
        short = scored < need * (2 if spec.long_short else 1)
        if short.any():
            logger.warning("topk=%d but only %d name(s) have a score on %s (%d of %d rebalance "
                           "dates short): " + THIN_DATES, need, int(scored[short][0]),
                           wide.index[short][0], int(short.sum()), len(wide))
    return wide


class OnceFilter(logging.Filter):
    """A logging filter that lets the first record containing ``text`` through and drops its
    repeats: for callers of :func:`target_weights` once per rebalance (a backtrader strategy)
    whose :data:`THIN_DATES` warning should be said once per run."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in str(record.msg):
            return True
        said, self.seen = self.seen, True
        return not said


def _check_probabilities(wide: pd.DataFrame) -> None:
    values = wide.to_numpy()
    bad = np.isfinite(values) & ((values < 0) | (values > 1))
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        raise ValueError(f"method='conviction' needs probabilities in [0, 1] (e.g. the "
                         f"prob_up scorer); got {float(values[i, j])!r} at {wide.index[i]}, "
                         f"{wide.columns[j]!r}")


def _log_cap(spec: TradeSpec, capped_dates: int, dates: int) -> None:
    """The cap-wins message: a warning, or DEBUG for ``conviction``, whose gross is a fraction
    by design and whose cap is the intended per-name limit (the live loop sizes every candle)."""
    logger.log(logging.DEBUG if spec.method == "conviction" else logging.WARNING,
               "max_weight=%g keeps %d of %d dates below gross=%g (too few names); the cap "
               "wins", spec.max_weight, capped_dates, dates, spec.gross)


def _bars(bars_index) -> pd.DatetimeIndex:
    if isinstance(bars_index, pd.MultiIndex):
        if "datetime" not in bars_index.names:
            raise ValueError(f"bars_index MultiIndex has no 'datetime' level: {bars_index.names}")
        bars_index = bars_index.get_level_values("datetime").unique().sort_values()
    bars = pd.DatetimeIndex(bars_index)
    if not bars.is_unique or not bars.is_monotonic_increasing:
        raise ValueError("bars_index must be sorted and unique (the bar calendar)")
    return pd.DatetimeIndex(bars.to_numpy(), name="datetime")  # no freq, whatever the input


def _check_weights(weights: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(weights, pd.DataFrame) or not isinstance(weights.index, pd.DatetimeIndex):
        raise TypeError("weights must be a DataFrame indexed by datetime (target_weights output)")
    if not weights.index.is_unique or not weights.index.is_monotonic_increasing:
        raise ValueError("weights index must be sorted and unique")
    return weights.astype("float64")


def check_against_spec(weights: pd.DataFrame, spec: TradeSpec) -> pd.DataFrame:
    """Refuse a weight frame the spec does not allow: a short (negative weight) under a
    long-only spec, or rows holding more than ``gross × invested`` (sum of |w|). An engine
    would short it anyway, borrow cash for it or fill it part-way: a plausible wrong result
    each time. Returns ``weights``."""
    if not spec.long_short:
        short = weights.lt(0).to_numpy()
        if short.any():
            row, col = (int(k[0]) for k in np.nonzero(short))
            raise ValueError(f"weights hold a short: {weights.columns[col]} on "
                             f"{weights.index[row]} is {weights.iat[row, col]:g} "
                             f"({int(short.sum())} negative weight(s)), but the spec is "
                             "long-only: drop the shorts, or set long_short=True")
    limit = spec.gross * spec.invested
    held = weights.abs().sum(axis=1)
    over = held > limit * (1 + 1e-9) + 1e-12
    if over.any():
        first = held.index[over.to_numpy()][0]
        raise ValueError(f"weights on {first} sum to {held[first]:g} (sum of |w|), above the "
                         f"spec's gross × invested = {limit:g} ({int(over.sum())} of {len(held)} "
                         "rows): scale them down, or set gross=/invested= to what they hold")
    return weights


def align(weights: pd.DataFrame, bars_index: pd.Index, *, execution: str = DEFAULT_EXECUTION,
          fill: bool = True) -> pd.DataFrame:
    """Weights on every bar of ``bars_index``: each rebalance row placed at its execution bar.

    The row of rebalance date t goes to bar t (``same_close``) or to the first bar after t
    (``next_open``/``next_close``) of ``bars_index`` (a DatetimeIndex, or a panel index
    whose ``datetime`` level is used). ``fill=True``: held from there until the next
    rebalance (0 before the first); ``fill=False``: NaN on every other bar (the order frame).
    A rebalance date absent from ``bars_index`` raises ValueError; a rebalance with no bar to
    execute on (the last bar's, under ``next_*``) is dropped with a log line.
    """
    lag = execution_lag(execution)
    weights, bars = _check_weights(weights), _bars(bars_index)
    pos = bars.get_indexer(weights.index)
    if (pos < 0).any():
        missing = weights.index[pos < 0]
        raise ValueError(f"{len(missing)} rebalance date(s) are not bars of bars_index, first "
                         f"{missing[0]}: scores and weights must be dated at the panel's bar "
                         "times (those of the bars they were computed from)")
    pos = pos + lag
    late = pos >= len(bars)
    if late.any():
        logger.info("align: %d rebalance(s) from %s on have no later bar to execute on (%s); "
                    "dropped", int(late.sum()), weights.index[late][0], execution)
    placed = weights[~late].set_axis(bars[pos[~late]], axis=0)
    out = placed.reindex(bars)
    if fill:
        out = out.ffill().fillna(0.0)
    out.index.name, out.columns.name = "datetime", weights.columns.name
    return out


def turnover(weights: pd.DataFrame) -> pd.Series:
    """Two-sided turnover per rebalance: sum over names of |w_t − w_prev| (buys + sells).

    The first row is measured from an empty book; moving the whole book from one name to
    another at gross 1 counts 2.0 (halve it for one-sided turnover). Rows that are all NaN
    (non-execution bars of ``align(..., fill=False)``) are skipped. Target weights only: the
    drift of held weights with prices between rebalances is not counted.
    """
    w = _check_weights(weights).dropna(how="all").fillna(0.0)
    prev = w.shift(1).fillna(0.0)
    return (w - prev).abs().sum(axis=1).rename("turnover")


def exposure(weights: pd.DataFrame) -> pd.DataFrame:
    """Per row: ``long`` (sum of positive weights), ``short`` (sum of negative weights, ≤ 0),
    ``gross`` (sum of |w|), ``net`` (sum of w), ``n_long``, ``n_short``."""
    w = _check_weights(weights).dropna(how="all").fillna(0.0)
    pos, neg = w.clip(lower=0.0), w.clip(upper=0.0)
    return pd.DataFrame({"long": pos.sum(axis=1), "short": neg.sum(axis=1),
                         "gross": w.abs().sum(axis=1), "net": w.sum(axis=1),
                         "n_long": (w > 0).sum(axis=1), "n_short": (w < 0).sum(axis=1)})

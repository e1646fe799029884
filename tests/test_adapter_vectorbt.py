"""The vectorbt adapter on real vectorbt: planted signals, next-open timing, look-ahead, sweeps."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

vbt = pytest.importorskip("vectorbt")

from kronos_quant.adapters.vectorbt import KronosIndicator, backtest, price_frames, signals  # noqa: E402

from kronos_quant.data import (  # noqa: E402
    INDEX_NAMES,
    planted_signal,
    synthetic_panel,
    unstack_field,
    validate_panel,
)
from kronos_quant.portfolio import target_weights  # noqa: E402
from kronos_quant.predictor import KronosPredictor  # noqa: E402
from kronos_quant.signals import score_panel  # noqa: E402
from kronos_quant.testing import tiny_pair  # noqa: E402

SCORERS = ["expected_return", "prob_up"]


@pytest.fixture(scope="module")
def planted_panel():
    return synthetic_panel(16, 220, predictable=0.5, seed=4)


def _shuffled(scores: pd.Series, seed: int = 0) -> pd.Series:
    """The same values, permuted across instruments within each date: no information left."""
    rng = np.random.default_rng(seed)
    values = scores.groupby(level="datetime").transform(lambda s: rng.permutation(s.to_numpy()))
    return values.rename("shuffled")


def test_planted_score_beats_buy_and_hold_after_costs_and_shuffled_does_not(planted_panel):
    scores = planted_signal(planted_panel)
    names = planted_panel.index.get_level_values("instrument").unique().sort_values()
    first = planted_panel.index.get_level_values("datetime")[0]
    equal = pd.DataFrame(1.0 / len(names), index=pd.DatetimeIndex([first]), columns=names)
    hold = backtest(equal, planted_panel, fees=0.001)
    planted = backtest(scores, planted_panel, topk=4, fees=0.001)
    shuffled = backtest(_shuffled(scores), planted_panel, topk=4, fees=0.001)
    assert isinstance(planted, vbt.Portfolio)
    assert planted.total_return() > hold.total_return() + 0.2
    assert planted.sharpe_ratio() > hold.sharpe_ratio()
    assert shuffled.total_return() < hold.total_return()
    assert shuffled.sharpe_ratio() < hold.sharpe_ratio()
    # Fees were charged on every order, in vectorbt's own records.
    orders = planted.orders.records_readable
    assert np.allclose(orders["Fees"], 0.001 * orders["Size"] * orders["Price"])


def test_next_open_equals_hand_built_from_orders_on_shifted_weights(planted_panel):
    panel = planted_panel
    scores = planted_signal(panel)
    dates = scores.index.get_level_values("datetime").unique()[::5]
    scores = scores[scores.index.get_level_values("datetime").isin(dates)]
    weights = target_weights(scores, topk=4)
    pf = backtest(scores, panel, topk=4, fees=0.001, cash=1e6)

    close, open_ = (panel[f].unstack("instrument") for f in ("close", "open"))
    size = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    at = close.index.get_indexer(weights.index) + 1  # one bar later, by hand
    ok = at < len(close)
    size.iloc[at[ok]] = weights.to_numpy()[ok]
    ref = vbt.Portfolio.from_orders(close, size=size, price=open_, size_type="targetpercent",
                                    group_by=True, cash_sharing=True, call_seq="auto",
                                    fees=0.001, init_cash=1e6, freq="1D")
    first = close.index[at[0]]  # the portfolio starts at the first execution bar: before it,
    assert pf.wrapper.index[0] == first and (ref.value().loc[:first].iloc[:-1] == 1e6).all()
    np.testing.assert_allclose(pf.value().to_numpy(), ref.value().loc[first:].to_numpy(),
                               rtol=1e-10)  # the hand-built one holds only cash
    ours, theirs = pf.orders.records_readable, ref.orders.records_readable
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours["Timestamp"].min() == close.index[at[0]]
    fills = open_.stack().reindex(pd.MultiIndex.from_arrays([ours["Timestamp"], ours["Column"]]))
    np.testing.assert_allclose(ours["Price"].to_numpy(), fills.to_numpy())


def _gap_panel(n_instruments: int = 10, n_bars: int = 160, seed: int = 3) -> pd.DataFrame:
    """Bars whose overnight gaps and intraday moves are independent noise: open[t] =
    close[t-1]·e^gap[t], close[t] = open[t]·e^intra[t]. Nothing is predictable."""
    rng = np.random.default_rng(seed)
    gap, intra = rng.normal(0, 0.01, (2, n_bars, n_instruments))
    log_close = np.log(20.0) + np.cumsum(gap + intra, axis=0)
    close, open_ = np.exp(log_close), np.exp(log_close - intra)
    bars = {"open": open_, "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999, "close": close,
            "volume": np.full(close.shape, 1e6)}
    index = pd.MultiIndex.from_product(
        [pd.bdate_range("2023-01-02", periods=n_bars), [f"G{i:02d}" for i in range(n_instruments)]],
        names=list(INDEX_NAMES))
    return validate_panel(pd.DataFrame({k: v.ravel() for k, v in bars.items()}, index=index))


def _t_stat(returns: pd.Series) -> float:
    r = returns.iloc[1:]
    return float(r.mean() / r.std(ddof=1) * np.sqrt(len(r)))


def test_a_score_peeking_at_the_next_open_earns_nothing_under_next_open():
    panel = _gap_panel()
    by_inst = panel.groupby(level="instrument")
    peek = (by_inst["open"].shift(-1) / panel["close"] - 1.0).dropna().rename("peek")  # gap t→t+1
    same = backtest(peek, panel, topk=3, execution="same_close")
    nxt = backtest(peek, panel, topk=3, execution="next_open")
    assert _t_stat(same.returns()) > 8 and same.total_return() > 1.0  # wrongly rich
    assert abs(_t_stat(nxt.returns())) < 2.5  # once aligned: nothing beyond noise


def test_signals_hysteresis_and_execution_lag():
    bars = pd.bdate_range("2024-01-01", periods=6, name="datetime")
    a = [0.5, 0.2, -0.1, 0.3, 0.6, np.nan]
    b = [0.1, 0.45, 0.41, 0.05, -0.2, 0.9]
    scores = pd.Series(np.ravel(np.column_stack([a, b])), name="s",
                       index=pd.MultiIndex.from_product([bars, ["A", "B"]],
                                                        names=list(INDEX_NAMES)))
    entries, exits = signals(scores, bars=bars, entry=0.4, exit=0.0)
    # A: in at 0, kept at 0.2, out at -0.1, 0.3 is not enough, in at 0.6, out when the score
    # goes missing; B: in at 0.45, kept at 0.05 ≥ exit, out at -0.2. Each change trades a bar later.
    assert entries.index.equals(bars) and list(entries.columns) == ["A", "B"]
    assert entries["A"].tolist() == [False, True, False, False, False, True]
    assert exits["A"].tolist() == [False, False, False, True, False, False]
    assert entries["B"].tolist() == [False, False, True, False, False, False]
    assert exits["B"].tolist() == [False, False, False, False, False, True]
    same_entries, _ = signals(scores, bars=bars, entry=0.4, exit=0.0, execution="same_close")
    assert same_entries["A"].tolist() == [True, False, False, False, True, False]
    top1, _ = signals(scores, bars=bars, entry=0.0, exit=0.0, topk=1)
    assert top1["B"].tolist() == [False, False, True, False, False, False]  # B tops A at bar 1
    with pytest.raises(ValueError, match="exit <= entry"):
        signals(scores, bars=bars, entry=0.0, exit=0.5)


def test_price_frames_trade_at_the_execution_price(planted_panel):
    close, price, tradable = price_frames(planted_panel, execution="next_open")
    assert price.equals(unstack_field(planted_panel, "open")) and tradable.all().all()
    assert price_frames(planted_panel, execution="next_close")[1].equals(close)


def test_bad_inputs_get_one_clear_error(planted_panel, monkeypatch):
    scores = planted_signal(planted_panel)
    stray = pd.DataFrame({"NOPE": [1.0]}, index=pd.DatetimeIndex(["2022-01-03"]))
    with pytest.raises(ValueError, match="absent from the panel, first 'NOPE'"):
        backtest(stray, planted_panel)
    with pytest.raises(TypeError, match="indexed by"):
        backtest(scores.to_numpy(), planted_panel, topk=2)
    with pytest.raises(ValueError, match="fixed by this adapter"):
        backtest(scores, planted_panel, topk=2, portfolio_kwargs={"cash_sharing": False})
    with pytest.raises(TypeError, match=r"unknown trading term\(s\) \['tokp'\].*'topk'"):
        backtest(scores, planted_panel, tokp=2)
    with pytest.raises(ValueError, match="vectorbt cannot trade this spec: lot_size=100"):
        backtest(scores, planted_panel, lot_size=100)
    with pytest.raises(ValueError, match="fees must be a finite number >= 0"):
        backtest(scores, planted_panel, fees=-0.001)
    with pytest.raises(ValueError, match="execution must be one of"):
        backtest(scores, planted_panel, topk=2, execution="tomorrow")
    monkeypatch.setitem(sys.modules, "vectorbt", None)
    with pytest.raises(ImportError, match=r"kronos-quant\[vectorbt\]"):
        backtest(scores, planted_panel, topk=2)


def _counting(predictor: KronosPredictor) -> list[int]:
    """Wrap the predictor's model entry points (``forecast_batch`` for DataFrames,
    ``forecast_arrays`` for walk-forward arrays) to record how many windows each call runs."""
    calls: list[int] = []

    def counted(method):
        def wrapper(series, *args, **kwargs):
            calls.append(len(series))
            return method(series, *args, **kwargs)
        return wrapper

    for name in ("forecast_batch", "forecast_arrays"):
        setattr(predictor, name, counted(getattr(predictor, name)))
    return calls


def test_indicator_sweep_runs_the_model_once_per_window(tmp_path):
    panel = synthetic_panel(3, 30, seed=5).drop(columns="amount")
    wide = {f: unstack_field(panel, f) for f in ("open", "high", "low", "close", "volume")}
    tok, model = tiny_pair(0)
    predictor = KronosPredictor(model, tok, device="cpu", max_context=32)
    calls = _counting(predictor)
    options = dict(lookback=16, pred_len=2, sample_count=2, scorer=SCORERS, param_product=True,
                   predictor=predictor, freq=5, seed=0, verbose=False,
                   **{f: wide[f] for f in ("open", "high", "low", "volume")})
    ind = KronosIndicator.run(wide["close"], **options)
    expected = score_panel(predictor, panel, lookback=16, pred_len=2, sample_count=2,
                           scorers=SCORERS, freq=5, seed=0, verbose=False)
    windows = len(expected)
    assert sum(calls) == 2 * windows  # once for the indicator's sweep, once for score_panel
    for scorer in SCORERS:
        out = ind.score.xs(scorer, level="kronos_scorer", axis=1)
        out.columns = out.columns.get_level_values("instrument")
        ours = out.stack().reindex(expected.index)
        np.testing.assert_allclose(ours.to_numpy(), expected[scorer].to_numpy(), rtol=1e-6)
    levels = np.nanquantile(ind.score.to_numpy(), [0.3, 0.7])  # a threshold sweep
    above = ind.score_above(list(levels))
    crossed = ind.score_crossed_above(list(levels))
    assert above.shape[1] == crossed.shape[1] == 2 * len(SCORERS) * 3
    for n, level in enumerate(levels):
        block = above.iloc[:, n * 6:(n + 1) * 6].to_numpy()
        np.testing.assert_array_equal(block, (ind.score > level).to_numpy())
    assert crossed.to_numpy().any()
    assert sum(calls) == 2 * windows
    calls.clear()
    for _ in range(2):  # through the forecast cache: the second run reads it
        KronosIndicator.run(wide["close"], **options, cache_dir=str(tmp_path / "cache"))
    assert calls and sum(calls) == windows


def test_a_missing_bar_skips_that_order_and_keeps_values_finite(planted_panel, caplog):
    scores = planted_signal(planted_panel)
    weights = target_weights(scores, topk=4)
    held = weights.columns[weights.iloc[0] > 0][0]
    bars = planted_panel.index.get_level_values("datetime").unique()
    gone = (bars[1], held)  # the execution bar of the first rebalance, for a name it buys
    panel = planted_panel.drop(index=[gone])
    with caplog.at_level("WARNING", logger="kronos_quant.orders"):
        pf = backtest(weights, panel)
    assert f"{held}: 1 target(s) skipped, no bar at the execution bar" in caplog.text
    orders = pf.orders.records_readable
    assert not ((orders["Timestamp"] == bars[1]) & (orders["Column"] == held)).any()
    assert np.isfinite(pf.value().to_numpy()).all()


def test_sweep_stats_deflates_the_best_of_a_grid():
    from kronos_quant.adapters.vectorbt import sweep_stats

    close = unstack_field(synthetic_panel(1, 400, seed=8), "close").iloc[:, 0]
    windows = [(f, s) for f in range(3, 23, 2) for s in range(3, 23, 2) if f < s]
    gap = pd.DataFrame({w: close.rolling(w[0]).mean() - close.rolling(w[1]).mean()
                        for w in windows})  # a moving-average crossover grid
    above = gap > 0
    entries, exits = above & ~above.shift(1, fill_value=False), ~above & above.shift(1)
    pf = vbt.Portfolio.from_signals(close.vbt.tile(len(windows), keys=gap.columns), entries,
                                    exits.astype(bool), freq="1D")
    table = sweep_stats(pf, periods_per_year=252)
    assert len(table) == 45 and table.attrs["trials"] == 45
    np.testing.assert_allclose(table["sharpe"].sort_index(),
                               pf.sharpe_ratio().sort_index().to_numpy(), rtol=1e-9)
    best = table.iloc[0]
    assert best["sharpe"] == table["sharpe"].max()
    assert sweep_stats(pf, periods_per_year=252, trials=1000).iloc[0]["deflated_sharpe"] < \
        best["deflated_sharpe"]

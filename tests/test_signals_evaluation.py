"""Evaluation: IC/RankIC against an independent pandas computation, baselines, portfolios,
the execution convention and the scores' metadata."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from kronos_quant.data import forward_returns, planted_signal, synthetic_panel
from kronos_quant.execution import execution_returns
from kronos_quant.signals import (
    baseline_scores,
    evaluate,
    hit_rate,
    per_date_ic,
    quantile_returns,
    topk_turnover,
)


def _panel_from_closes(closes: pd.DataFrame) -> pd.DataFrame:
    """Canonical panel whose bars are flat at the given closes (dates × instruments)."""
    long = closes.stack().rename("close").rename_axis(["datetime", "instrument"]).to_frame()
    long = long.sort_index()
    for col in ("open", "high", "low"):
        long[col] = long["close"]
    long["volume"] = 1.0
    return long[["open", "high", "low", "close", "volume"]]


@pytest.fixture()
def hand_case():
    """6 dates × 5 instruments with known closes, and scores with ties and gaps."""
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2024-01-01", periods=6)
    names = list("ABCDE")
    closes = pd.DataFrame(np.exp(np.cumsum(rng.normal(0, 0.05, (6, 5)), axis=0)) * 10,
                          index=dates, columns=names)
    panel = _panel_from_closes(closes)
    scores = pd.Series(rng.normal(size=len(panel)), index=panel.index, name="alpha")
    scores.loc[(dates[1], "A")] = scores.loc[(dates[1], "B")]  # a tie for the ranks
    scores.loc[(dates[2], ["A", "B", "C"])] = np.nan  # only 2 scored instruments: skipped
    return panel, scores


def test_ic_and_rank_ic_equal_an_independent_pandas_computation(hand_case):
    panel, scores = hand_case
    result = evaluate(scores, panel, horizon=2, baselines=False, execution="same_close")
    fwd = forward_returns(panel, horizon=2)
    both = pd.DataFrame({"s": scores, "f": fwd}).dropna()
    both = both[both.groupby(level="datetime")["s"].transform("size") >= 3]
    by_date = both.groupby(level="datetime")
    expected_ic = by_date.apply(lambda g: g["s"].corr(g["f"]))
    # Spearman = Pearson of average ranks (pandas' method="spearman" needs scipy).
    expected_ric = by_date.apply(lambda g: g["s"].rank().corr(g["f"].rank()))
    assert len(expected_ic) == 3  # 6 dates − 2 without a 2-bar future − 1 too thin
    pd.testing.assert_series_equal(result.ic["alpha"].dropna(), expected_ic, check_names=False)
    pd.testing.assert_series_equal(result.rank_ic["alpha"].dropna(), expected_ric,
                                   check_names=False)
    row = result.summary.loc["alpha"]
    assert row["ic_mean"] == pytest.approx(expected_ic.mean())
    assert row["rank_ic_std"] == pytest.approx(expected_ric.std(ddof=1))
    assert row["rank_icir"] == pytest.approx(expected_ric.mean() / expected_ric.std(ddof=1))
    # Newey–West on 3 dates of 2-bar returns taken every bar: overlap 1, lag min(2, 3 − 1).
    assert result.overlap == 1
    fit = sm.OLS(expected_ric.to_numpy(), np.ones(3)).fit(cov_type="HAC",
                                                           cov_kwds={"maxlags": 2}, use_t=True)
    assert row["rank_ic_se"] == pytest.approx(fit.bse[0])
    assert row["rank_ic_t"] == pytest.approx(fit.tvalues[0])
    assert row["rank_ic_p"] == pytest.approx(fit.pvalues[0])
    assert row["rank_ic_n"] == 3 and row["n_dates"] == 3
    assert any("no forward 2-bar return" in n for n in result.notes)


def test_scores_aligned_with_the_future_return_are_perfect(hand_case):
    """Score at t = close-to-close return from t to t+h must give IC 1 under same_close
    (alignment check); the return from t−h to t (already known at t) must not."""
    panel, _ = hand_case
    fwd = forward_returns(panel, horizon=1)
    perfect = evaluate(fwd.rename("oracle"), panel, horizon=1, baselines=False,
                       execution="same_close")
    assert perfect.ic["oracle"].dropna().to_numpy() == pytest.approx(1.0)
    past = fwd.groupby(level="instrument").shift(1).rename("past")
    lagged = evaluate(past, panel, horizon=1, baselines=False, execution="same_close")
    assert lagged.summary.loc["past", "ic_mean"] < 0.9


def test_baselines_are_present_and_scored_on_the_same_rows(hand_case):
    panel, scores = hand_case
    result = evaluate(scores, panel, horizon=1, momentum_window=2, reversal_window=1)
    assert list(result.summary.index) == ["alpha", "random_walk", "momentum_2", "reversal_1"]
    assert result.summary["kind"].tolist() == ["model", "baseline", "baseline", "baseline"]
    base = baseline_scores(panel, scores.index, momentum_window=2, reversal_window=1)
    close = panel["close"].unstack()
    np.testing.assert_allclose(base["momentum_2"].unstack().to_numpy(),
                               (close / close.shift(2) - 1).to_numpy(), equal_nan=True)
    np.testing.assert_allclose(base["reversal_1"].unstack().to_numpy(),
                               -(close / close.shift(1) - 1).to_numpy(), equal_nan=True)
    # A random walk predicts no difference between instruments: zero IC, no position.
    assert result.summary.loc["random_walk", "rank_ic_mean"] == 0.0
    assert result.summary.loc["random_walk", "long_short_mean"] == 0.0


def test_planted_signal_is_found_and_beats_the_random_walk():
    panel = synthetic_panel(10, 160, seed=5, predictable=0.5)
    result = evaluate(planted_signal(panel), panel, horizon=1, momentum_window=10)
    row = result.summary.loc["planted_signal"]
    assert row["rank_ic_mean"] > 0.05 and row["rank_ic_t"] > 3
    assert row["long_short_mean"] > 0
    assert row["rank_ic_mean"] > result.summary.loc["random_walk", "rank_ic_mean"]


def test_per_date_ic_conventions():
    idx = pd.MultiIndex.from_product([pd.bdate_range("2024-01-01", periods=2), list("ABCD")],
                                     names=["datetime", "instrument"])
    flat_x = pd.Series([1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0], index=idx)
    y = pd.Series([0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0], index=idx)
    ic = per_date_ic(flat_x, y)
    assert ic.iloc[0] == 0.0  # no view on a date: zero, not missing
    assert len(ic) == 1  # all-equal returns: the date is skipped
    with pytest.raises(ValueError, match="method"):
        per_date_ic(flat_x, y, method="kendall")


def test_quantile_returns_hit_rate_and_turnover_by_hand():
    d = pd.bdate_range("2024-01-01", periods=3)
    names = list("ABCDEFGHIJ")
    idx = pd.MultiIndex.from_product([d[:1], names], names=["datetime", "instrument"])
    x = pd.Series(np.arange(10.0), index=idx)
    y = pd.Series(np.arange(10.0) * 0.01, index=idx)
    table = quantile_returns(x, y, quantiles=5)
    np.testing.assert_allclose(table.iloc[0].to_numpy(), [0.005, 0.025, 0.045, 0.065, 0.085])
    assert hit_rate(x, y) == 1.0 and hit_rate(x, -y) == 0.0
    tops = [["A", "B"], ["A", "C"], ["C", "D"]]
    rows = [(day, n, 2.0 if n in top else 0.0)
            for day, top in zip(d, tops, strict=True) for n in "ABCD"]
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", "s"])
    s = frame.set_index(["datetime", "instrument"])["s"]
    np.testing.assert_allclose(topk_turnover(s, k=2).to_numpy(), [0.5, 0.5])


def test_table_and_errors(hand_case):
    panel, scores = hand_case
    result = evaluate(scores.to_frame(), panel, horizon=1)
    text = result.table()
    assert "RankIC" in text and "momentum_20" in text and "alpha" in text
    assert "execution next_open: score known after the close of bar t" in text
    assert result.execution == "next_open" and result.metadata == {}
    with pytest.raises(ValueError, match="execution must be one of"):
        evaluate(scores, panel, horizon=1, execution="next-open")
    with pytest.raises(ValueError, match="not in the panel"):
        evaluate(scores.rename(index={"A": "ZZZ"}, level="instrument"), panel, horizon=1)
    with pytest.raises(ValueError, match="MultiIndex"):
        evaluate(scores.reset_index(drop=True), panel, horizon=1)
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        evaluate(scores, panel, horizon=0)
    with pytest.raises(ValueError, match="clash with baseline"):
        evaluate(scores.rename("random_walk"), panel, horizon=1)
    with pytest.raises(ValueError, match="quantiles"):
        evaluate(scores, panel, horizon=1, quantiles=1)


def test_long_short_with_tied_scores_uses_the_extreme_non_empty_buckets():
    dates = pd.bdate_range("2024-01-01", periods=2)
    names = [f"N{i}" for i in range(10)]
    nxt = 10.0 + np.arange(10.0)
    panel = _panel_from_closes(pd.DataFrame([np.full(10, 10.0), nxt], index=dates, columns=names))
    # Eight instruments tie at the top (like prob_up = 1 on many paths), two at the bottom.
    scores = pd.Series([0.0, 0.0] + [1.0] * 8, name="s",
                       index=pd.MultiIndex.from_product([dates[:1], names],
                                                        names=["datetime", "instrument"]))
    result = evaluate(scores, panel, horizon=1, baselines=False, execution="same_close")
    ret = nxt / 10.0 - 1.0
    assert result.long_short["s"].iloc[0] == pytest.approx(ret[2:].mean() - ret[:2].mean())


def _panel_with_gaps(n_dates: int, n_names: int, seed: int) -> pd.DataFrame:
    """Random bars whose overnight gaps move prices as much as the sessions do."""
    rng = np.random.default_rng(seed)
    gap, session = rng.normal(0, 0.02, (2, n_dates, n_names))
    log_open = np.log(20.0) + np.cumsum(gap + np.vstack([np.zeros(n_names), session[:-1]]), axis=0)
    opens, closes = np.exp(log_open), np.exp(log_open + session)
    index = pd.MultiIndex.from_product([pd.bdate_range("2023-01-02", periods=n_dates),
                                        [f"I{i:02d}" for i in range(n_names)]],
                                       names=["datetime", "instrument"])
    frame = pd.DataFrame({"open": opens.ravel(), "close": closes.ravel()}, index=index)
    frame["high"] = frame.max(axis=1) * 1.001
    frame["low"] = frame[["open", "close"]].min(axis=1) * 0.999
    frame["volume"] = 1.0
    return frame[["open", "high", "low", "close", "volume"]]


def test_next_open_measures_open_t_plus_1_to_open_t_plus_1_plus_h_by_hand():
    panel = _panel_with_gaps(8, 5, seed=1)
    opens, closes = panel["open"].unstack(), panel["close"].unstack()
    h = 2
    by_hand = (opens.shift(-1 - h) / opens.shift(-1) - 1.0).stack().rename("oracle")
    scores = by_hand.reindex(panel.index)
    result = evaluate(scores, panel, horizon=h, baselines=False)  # next_open is the default
    assert result.execution == "next_open"
    assert len(result.ic) == 8 - 1 - h  # the last 1 + h dates have no exit open yet
    np.testing.assert_allclose(result.ic["oracle"].to_numpy(), 1.0)
    # The same oracle judged close-to-close is not perfect: the convention changes the answer.
    same = evaluate(scores, panel, horizon=h, baselines=False, execution="same_close")
    assert same.summary.loc["oracle", "ic_mean"] < 0.9
    noise = pd.Series(np.random.default_rng(2).normal(size=len(panel)), index=panel.index)
    both = pd.DataFrame({"s": noise, "f": by_hand}).dropna()
    expected = both.groupby(level="datetime").apply(lambda g: g["s"].corr(g["f"]))
    got = evaluate(noise.rename("noise"), panel, horizon=h, baselines=False).ic["noise"]
    pd.testing.assert_series_equal(got, expected, check_names=False)
    close_oracle = (closes.shift(-1 - h) / closes.shift(-1) - 1.0).stack().reindex(panel.index)
    nxt = evaluate(close_oracle.rename("c"), panel, horizon=h, baselines=False,
                   execution="next_close")
    np.testing.assert_allclose(nxt.ic["c"].to_numpy(), 1.0)


def test_a_score_peeking_at_the_next_close_loses_most_of_its_ic_under_next_open():
    panel = _panel_with_gaps(120, 12, seed=4)
    close = panel["close"]
    peek = (close.groupby(level="instrument").shift(-1) / close - 1.0).rename("peek")
    same = evaluate(peek, panel, horizon=1, baselines=False, execution="same_close")
    nxt = evaluate(peek, panel, horizon=1, baselines=False)
    same_ric = same.summary.loc["peek", "rank_ic_mean"]
    next_ric = nxt.summary.loc["peek", "rank_ic_mean"]
    assert same_ric > 0.99  # judged from close[t], knowing close[t+1] is a perfect forecast
    assert next_ric < 0.7 and next_ric < same_ric - 0.3


def test_baselines_share_the_score_rows_and_the_execution():
    panel = synthetic_panel(8, 60, seed=3, predictable=0.5)
    signal = planted_signal(panel)
    result = evaluate(signal, panel, horizon=3, momentum_window=5)
    fwd = execution_returns(panel, horizon=3, execution="next_open")
    mom = baseline_scores(panel, signal.index, momentum_window=5)["momentum_5"]
    np.testing.assert_allclose(result.rank_ic["momentum_5"].dropna().to_numpy(),
                               per_date_ic(mom, fwd, method="spearman").to_numpy())


def test_score_metadata_is_kept_and_a_horizon_mismatch_warns(hand_case, caplog):
    panel, scores = hand_case
    scores = scores.copy()
    scores.attrs.update({"pred_len": 3, "lookback": 16, "sample_count": 4})
    with caplog.at_level(logging.WARNING, logger="kronos_quant.signals.evaluation"):
        result = evaluate(scores, panel, horizon=1, baselines=False)
    assert result.metadata == {"pred_len": 3, "lookback": 16, "sample_count": 4}
    assert "pred_len=3" in caplog.text and "pred_len=3" in result.table()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kronos_quant.signals.evaluation"):
        matched = evaluate(scores, panel, horizon=3, baselines=False)
    assert "pred_len" not in caplog.text and "pred_len" not in matched.table()


def _stacked(values: np.ndarray) -> pd.Series:
    """(seeds, dates, instruments) → a score Series whose every (seed, date) is its own date."""
    seeds, dates, names = values.shape
    index = pd.MultiIndex.from_product(
        [pd.date_range("2000-01-01", periods=seeds * dates, freq="D"),
         [f"i{k}" for k in range(names)]], names=["datetime", "instrument"])
    return pd.Series(values.reshape(-1), index=index)


def test_planted_signal_is_significant_and_a_shuffled_one_rejects_at_alpha_over_seeds():
    """1,000 independent panels at once (per-date RankIC + Newey–West, as evaluate runs them):
    the planted signal is found almost always, its within-date shuffle about alpha of the time."""
    from kronos_quant.stats import mean_test, newey_west_lag

    rng = np.random.default_rng(11)
    seeds, dates, names, alpha = 1000, 60, 10, 0.05
    signal = rng.normal(size=(seeds, dates, names))
    returns = 0.2 * signal + rng.normal(size=signal.shape)
    shuffled = rng.permuted(signal, axis=2)
    y = _stacked(returns)
    lag = newey_west_lag(dates)
    # Newey–West with a lag of 4 on 60 dates over-rejects a little (about 6–7% measured at a
    # nominal 5%; docs/statistics.md): the band is alpha ± 4 binomial sd, shifted up 1 point.
    for values, low, high in ((signal, 0.9, 1.0), (shuffled, 0.05 - 0.018, 0.05 + 0.038)):
        ric = per_date_ic(_stacked(values), y, method="spearman").to_numpy()
        rate = (mean_test(ric.reshape(seeds, dates).T, lag=lag).p_value < alpha).mean()
        assert low <= rate <= high, rate


def test_evaluate_reports_newey_west_tests_and_paired_differences():
    panel = synthetic_panel(12, 200, seed=5, predictable=0.5)
    planted = planted_signal(panel)
    noise = planted.groupby(level="datetime").transform(
        lambda s: s.sample(frac=1.0, random_state=0).to_numpy()).rename("shuffled")
    result = evaluate(pd.concat([planted, noise], axis=1), panel, horizon=1, momentum_window=10)
    summary = result.summary
    assert summary.loc["planted_signal", "rank_ic_p"] < 1e-4
    assert summary.loc["shuffled", "rank_ic_p"] > 0.01
    # The difference to a baseline is the same test run on the per-date differences.
    both = pd.concat([result.rank_ic["planted_signal"], result.rank_ic["momentum_10"]],
                     axis=1).dropna()
    diff = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy()
    fit = sm.OLS(diff, np.ones(len(diff))).fit(cov_type="HAC", cov_kwds={"maxlags": 4},
                                               use_t=True)
    row = result.differences.loc[("planted_signal", "momentum_10")]
    assert row["rank_ic_n"] == len(diff) and row["rank_ic_se"] == pytest.approx(fit.bse[0])
    assert summary.loc["planted_signal", "rank_ic_vs_momentum_10_p"] == pytest.approx(
        fit.pvalues[0])
    assert np.isnan(summary.loc["momentum_10", "rank_ic_vs_momentum_10_p"])  # baselines: none
    # One call answers "which are significant"; Holm's correction only ever removes some.
    sig = result.significant(0.05)
    assert sig.loc["planted_signal", "rank_ic"] and not sig.loc["shuffled", "rank_ic"]
    assert not sig.loc["random_walk"].any()  # no view: no test, never significant
    holm = result.significant(0.05, adjust="holm")
    assert (holm <= sig).all().all()
    assert "model minus baseline, paired by date" in result.table()
    verdicts = result.verdicts(0.05)
    assert len(verdicts) == 2 and verdicts[0].startswith("planted_signal: rank_ic +")
    assert "significant at 0.05" in verdicts[0] and "not significant at 0.05" in verdicts[1]
    assert "momentum_10" in verdicts[0]
    with pytest.raises(ValueError, match="alpha"):
        result.significant(1.5)

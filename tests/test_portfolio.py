"""Portfolio layer: target weights, Qlib-style dropout, alignment on execution bars, summaries."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from kronos_quant import execution, portfolio
from kronos_quant.portfolio import align, exposure, target_weights, turnover

DATES = pd.bdate_range("2024-01-01", periods=6)


def scores_of(rows: dict) -> pd.Series:
    """{date_position: {instrument: score}} → contract score Series (NaN allowed)."""
    items = [(DATES[i], name, value) for i, row in rows.items() for name, value in row.items()]
    frame = pd.DataFrame(items, columns=["datetime", "instrument", "alpha"])
    return frame.set_index(["datetime", "instrument"]).sort_index()["alpha"]


def held(weights: pd.DataFrame, i: int) -> list[str]:
    row = weights.loc[DATES[i]]
    return sorted(row.index[row != 0])


def test_topk_equal_weight_ties_by_name_and_shape():
    s = scores_of({0: {"D": 0.0, "C": 2.0, "B": 2.0, "A": 3.0}})
    w = target_weights(s, topk=2)
    assert w.index.name == "datetime" and w.columns.name == "instrument"
    assert list(w.columns) == ["A", "B", "C", "D"]
    assert w.loc[DATES[0]].tolist() == [0.5, 0.5, 0.0, 0.0]  # B beats C on the tie: name order
    # The same scores with instruments listed in another order give the same weights.
    assert target_weights(s.sample(frac=1.0, random_state=1), topk=2).equals(w)


def test_nan_missing_entering_and_leaving():
    s = scores_of({0: {"A": 3.0, "B": 2.0, "C": np.nan},
                   1: {"B": 1.0, "C": 5.0, "D": 4.0}})  # A leaves, D enters, C gets a score
    w = target_weights(s, topk=2)
    assert held(w, 0) == ["A", "B"] and held(w, 1) == ["C", "D"]
    assert w.loc[DATES[1], "A"] == 0.0 and w.loc[DATES[0], "D"] == 0.0
    # A date where every score is NaN is no rebalance (the book is kept): no row.
    empty = target_weights(scores_of({0: {"A": np.nan, "B": np.nan}, 1: {"A": 1.0}}), topk=1)
    assert list(empty.index) == [DATES[1]] and empty.loc[DATES[1], "A"] == 1.0


def test_method_weights_by_hand():
    s = scores_of({0: {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}})
    row = lambda **kw: target_weights(s, **kw).loc[DATES[0]].to_numpy()  # noqa: E731
    np.testing.assert_allclose(row(method="rank"), np.array([1, 2, 3, 4]) / 10)
    np.testing.assert_allclose(row(method="rank", long_short=True),
                               [-0.375, -0.125, 0.125, 0.375])
    np.testing.assert_allclose(row(method="proportional"), np.array([1, 2, 3, 4]) / 10)
    np.testing.assert_allclose(row(method="proportional", long_short=True, gross=2.0),
                               [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(row(method="threshold", threshold=2.5), [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(row(method="threshold", threshold=(1.5, 3.5), long_short=True),
                               [-0.5, 0, 0, 0.5])
    np.testing.assert_allclose(row(method="long_short", topk=1), [-0.5, 0, 0, 0.5])
    np.testing.assert_allclose(row(method="topk", topk=3, min_score=2.5), [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(row(method="rank", topk=2), np.array([0, 0, 3, 4]) / 7)
    negative = scores_of({0: {"A": -1.0, "B": 1.0, "C": 3.0}})
    np.testing.assert_allclose(target_weights(negative, method="proportional").to_numpy(),
                               [[0, 0.25, 0.75]])


@pytest.mark.parametrize("kw", [dict(method="topk", topk=3), dict(method="rank"),
                                dict(method="proportional"), dict(method="long_short", topk=3),
                                dict(method="threshold", threshold=0.2)])
@pytest.mark.parametrize("long_short", [False, True])
def test_rows_sum_to_gross_and_long_short_is_neutral(kw, long_short):
    rng = np.random.default_rng(7)
    idx = pd.MultiIndex.from_product([DATES, [f"N{i}" for i in range(9)]],
                                     names=["datetime", "instrument"])
    s = pd.Series(rng.normal(size=len(idx)), index=idx)
    s[rng.random(len(idx)) < 0.15] = np.nan
    w = target_weights(s, long_short=long_short, gross=1.5, **kw)
    ex = exposure(w)
    np.testing.assert_allclose(ex["gross"], 1.5)
    assert (w.to_numpy()[s.unstack().isna().to_numpy()] == 0).all()  # NaN scores hold 0
    if long_short or kw["method"] == "long_short":
        np.testing.assert_allclose(ex["net"], 0.0, atol=1e-12)
        np.testing.assert_allclose(ex["long"], 0.75)
    else:
        assert (w >= 0).all().all()


def test_caps_redistribute_then_the_cap_wins(caplog):
    s = scores_of({0: {"A": 1.0, "B": 4.0, "C": 5.0}})
    w = target_weights(s, method="proportional", max_weight=0.4)
    # C capped (0.5 → 0.4), then B exceeds after redistribution (0.48) and is capped too.
    np.testing.assert_allclose(w.to_numpy(), [[0.2, 0.4, 0.4]])
    with caplog.at_level(logging.WARNING, logger="kronos_quant.portfolio"):
        short = target_weights(s, topk=2, max_weight=0.3)
    np.testing.assert_allclose(short.to_numpy(), [[0, 0.3, 0.3]])
    assert "the cap wins" in caplog.text and "1 of 1 dates" in caplog.text
    ls = target_weights(scores_of({0: {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0, "E": 5.0}}),
                        method="long_short", topk=1, max_weight=0.2, gross=1.0)
    np.testing.assert_allclose(ls.to_numpy(), [[-0.2, 0, 0, 0, 0.2]])


def test_dropout_by_hand():
    s = scores_of({0: dict(A=6, B=5, C=4, D=3, E=2, F=1),
                   1: dict(A=1, B=2, C=3, D=4, E=5, F=6),   # the order flips: one swap only
                   2: dict(A=1, D=9, E=8, F=7, C=3.0),      # B missing, so is C's rank... C scored
                   3: dict(A=1.0, B=np.nan, C=np.nan, D=9, E=8, F=7),
                   4: dict(A=9.0, B=0.0, C=0.0, D=0.0, E=0.0, F=0.0)})
    w = target_weights(s.astype(float), topk=3, n_drop=1)
    assert held(w, 0) == ["A", "B", "C"]
    assert held(w, 1) == ["B", "C", "F"]  # A (worst held) sold for F (best not held)
    assert held(w, 2) == ["C", "D", "F"]  # unscored B ranks last: sold first, for D
    # B not held; C unscored now ranks last and is sold for E, the best not held.
    assert held(w, 3) == ["D", "E", "F"]
    assert held(w, 4) == ["A", "D", "E"]  # ties at 0: F is the last by name, so it goes
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    # A better name not held does not displace a held one it does not beat.
    calm = scores_of({0: dict(A=3, B=2, C=1), 1: dict(A=3, B=2, C=1.5)}).astype(float)
    assert held(target_weights(calm, topk=2, n_drop=1), 1) == ["A", "B"]


def test_dropout_keeps_unscored_holdings_beyond_n_drop_and_n_drop_zero_never_sells():
    s = scores_of({0: dict(A=4.0, B=3.0, C=2.0, D=1.0),
                   1: dict(A=np.nan, B=np.nan, C=2.0, D=1.0)})
    w = target_weights(s, topk=2, n_drop=1)
    assert held(w, 1) == ["A", "C"]  # only one sale: B (last by name) goes, A stays held
    frozen = target_weights(scores_of({0: dict(A=2.0, B=1.0, C=0.0),
                                       1: dict(A=0.0, B=1.0, C=2.0)}), topk=1, n_drop=0)
    assert held(frozen, 0) == ["A"] and held(frozen, 1) == ["A"]


def test_dropout_limits_on_random_universes():
    rng = np.random.default_rng(11)
    names = [f"S{i:02d}" for i in range(12)]
    idx = pd.MultiIndex.from_product([pd.bdate_range("2024-01-01", periods=40), names],
                                     names=["datetime", "instrument"])
    s = pd.Series(rng.normal(size=len(idx)), index=idx)
    s = s[rng.random(len(idx)) > 0.25]  # names enter and leave the universe
    scored = s.unstack().notna()
    for topk, n_drop in [(4, 1), (4, 2), (5, 5)]:
        w = target_weights(s, topk=topk, n_drop=n_drop)
        book = w != 0
        before = book.shift(1, fill_value=False)
        swaps = (book & ~before).sum(axis=1).iloc[1:]
        assert swaps.max() <= n_drop and swaps.max() == n_drop
        # topk names whenever n_drop scored names are free to buy; never more than topk.
        free = (scored & ~before).sum(axis=1)
        size = book.sum(axis=1)
        assert (size <= topk).all() and (size[free >= n_drop] == topk).all()
        assert (free < n_drop).any() == (topk == 5)  # the last case reaches the thin branch
        np.testing.assert_allclose(w.sum(axis=1), 1.0)


@pytest.mark.parametrize("kw", [dict(topk=3), dict(topk=3, n_drop=1), dict(method="rank"),
                                dict(method="proportional", long_short=True, max_weight=0.3)])
def test_weights_never_depend_on_later_scores(kw):
    rng = np.random.default_rng(3)
    idx = pd.MultiIndex.from_product([pd.bdate_range("2024-01-01", periods=20),
                                      [f"N{i}" for i in range(8)]],
                                     names=["datetime", "instrument"])
    s = pd.Series(rng.normal(size=len(idx)), index=idx)
    base = target_weights(s, **kw)
    for cut in (pd.Timestamp("2024-01-05"), pd.Timestamp("2024-01-17")):
        later = s.index.get_level_values("datetime") > cut
        changed = s.copy()
        changed[later] = rng.normal(size=int(later.sum())) * 10
        for other in (target_weights(changed, **kw), target_weights(s[~later], **kw)):
            pd.testing.assert_frame_equal(other.loc[:cut], base.loc[:cut])


def test_align_places_rows_on_execution_bars(caplog):
    bars = DATES  # 6 bars
    w = pd.DataFrame({"A": [1.0, 0.0], "B": [0.0, 1.0]},
                     index=pd.DatetimeIndex([DATES[1], DATES[3]], name="datetime"))
    for name, lag in (("next_open", 1), ("next_close", 1), ("same_close", 0)):
        filled = align(w, bars, execution=name)
        assert filled.index.equals(bars)
        expected_a = np.zeros(6)
        expected_a[1 + lag:3 + lag] = 1.0
        np.testing.assert_array_equal(filled["A"].to_numpy(), expected_a)
        np.testing.assert_array_equal(filled["B"].to_numpy()[3 + lag:], 1.0)
        assert (filled["B"].to_numpy()[:3 + lag] == 0).all()
        orders = align(w, bars, execution=name, fill=False)
        placed = orders.dropna(how="all")
        assert list(placed.index) == [DATES[1 + lag], DATES[3 + lag]]
        assert orders.drop(placed.index).isna().all().all()
    last = pd.DataFrame({"A": [1.0]}, index=pd.DatetimeIndex([DATES[-1]]))
    with caplog.at_level(logging.INFO, logger="kronos_quant.portfolio"):
        assert align(last, bars).sum().sum() == 0.0
    assert "no later bar" in caplog.text
    assert align(last, bars, execution="same_close").iloc[-1, 0] == 1.0
    panel_index = pd.MultiIndex.from_product([bars, ["A", "B"]], names=["datetime", "instrument"])
    pd.testing.assert_frame_equal(align(w, panel_index), align(w, bars))
    with pytest.raises(ValueError, match="not bars of bars_index, first 2024-01-13"):
        align(pd.DataFrame({"A": [1.0]}, index=pd.DatetimeIndex(["2024-01-13"])), bars)
    with pytest.raises(ValueError, match="execution must be one of"):
        align(w, bars, execution="open")


def test_turnover_and_exposure_by_hand():
    w = pd.DataFrame({"A": [0.5, 0.0, np.nan, -0.5], "B": [0.5, 1.0, np.nan, 0.0]},
                     index=pd.DatetimeIndex(DATES[:4], name="datetime"))
    np.testing.assert_allclose(turnover(w).to_numpy(), [1.0, 1.0, 1.5])  # NaN row skipped
    ex = exposure(w)
    assert ex.loc[DATES[3]].to_dict() == {"long": 0.0, "short": -0.5, "gross": 0.5, "net": -0.5,
                                          "n_long": 0, "n_short": 1}
    assert ex.loc[DATES[0], "n_long"] == 2 and len(ex) == 3


@pytest.mark.parametrize("call, message", [
    (lambda s: target_weights(s.reset_index(level=0, drop=True), topk=1), "MultiIndex"),
    (lambda s: target_weights(pd.DataFrame({"x": s, "y": s}), topk=1), "pick one with column="),
    (lambda s: target_weights(s.to_frame(), column="nope", topk=1), "'nope' is not a score column"),
    (lambda s: target_weights(s.astype(str), topk=1), "must be numeric"),
    (lambda s: target_weights(s.replace(2.0, np.inf), topk=1), "infinite value at"),
    (lambda s: target_weights(s, method="best", topk=1), "method must be one of"),
    (lambda s: target_weights(s, topk=0), "topk must be an integer >= 1"),
    (lambda s: target_weights(s, topk=2, n_drop=3), r"n_drop must be in 0..topk=2"),
    (lambda s: target_weights(s, topk=2, n_drop=1, long_short=True), "long only"),
    (lambda s: target_weights(s, topk=1, gross=0.0), "gross must be a finite number > 0"),
    (lambda s: target_weights(s, topk=1, max_weight=-1), "max_weight must be a finite number > 0"),
    (lambda s: target_weights(s, method="threshold"), "needs threshold"),
    (lambda s: target_weights(s, topk=1, threshold=0.1), "threshold only applies"),
])
def test_bad_input_gets_one_clear_error(call, message):
    s = scores_of({0: {"A": 1.0, "B": 2.0}})
    with pytest.raises((ValueError, TypeError), match=message):
        call(s)


def test_execution_names_are_re_exported():
    for name in ("EXECUTIONS", "DEFAULT_EXECUTION", "check_execution", "execution_lag",
                 "execution_price", "execution_returns"):
        assert getattr(portfolio, name) is getattr(execution, name)


def test_conviction_weights_by_probability_with_a_gross_that_follows_conviction(caplog):
    # p → c = 2p − 1: A 0.5, B 0 (p = 0.5), C 1.0, D −0.6 (long only: 0); mean c = 1.5 / 4
    s = scores_of({0: {"A": 0.75, "B": 0.5, "C": 1.0, "D": 0.2},
                   1: {"A": 0.75},  # one name alone at p = 0.75: half the gross
                   2: {"A": 0.5, "B": 0.3}})  # no conviction: nothing held
    w = target_weights(s, method="conviction", gross=2.0)
    gross0 = 2.0 * 1.5 / 4
    np.testing.assert_allclose(w.loc[DATES[0]].to_numpy(), [gross0 / 3, 0, 2 * gross0 / 3, 0])
    np.testing.assert_allclose(w.loc[DATES[1]].to_numpy(), [1.0, 0, 0, 0])
    assert (w.loc[DATES[2]] == 0).all()
    # long-short: c = 0.5, 0, 1, −0.6 minus its mean 0.225 → legs of gross·mean|c| / 2 each
    ls = target_weights(s.loc[[DATES[0]]], method="conviction", long_short=True)
    legs = np.array([0.275, -0.225, 0.775, -0.825])
    half = (0.5 + 0 + 1 + 0.6) / 4 / 2
    expected = np.where(legs > 0, legs / legs[legs > 0].sum(), legs / -legs[legs < 0].sum()) * half
    np.testing.assert_allclose(ls.iloc[0].to_numpy(), expected)
    assert ls.iloc[0].sum() == pytest.approx(0.0)
    # the cap is per name on the final weight and binds quietly (DEBUG, not WARNING)
    with caplog.at_level(logging.DEBUG, logger="kronos_quant.portfolio"):
        capped = target_weights(s.loc[[DATES[1]]], method="conviction", gross=2.0,
                                max_weight=0.4)
    assert capped.iloc[0, 0] == pytest.approx(0.4)
    assert [r.levelno for r in caplog.records if "cap wins" in r.message] == [logging.DEBUG]
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*1\.5 at .*'B'"):
        target_weights(scores_of({0: {"A": 0.2, "B": 1.5}}), method="conviction")

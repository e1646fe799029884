"""Cross-engine parity: the same scores through vectorbt and backtrader trade the same.

Both engines get one score frame (the planted signal every 5th date) on a 10-instrument ×
300-bar synthetic panel, trade it next-open with fractional shares, and are compared bar by
bar. The issue's bound is 10 bp of final equity; the engines agree far closer, because
backtrader's orders are sized exactly as vectorbt's target-percent orders (value at the fill
price, fixed for the bar, sells first, cash-limited buys cut). What is left is float
rounding plus a 1e-9 trim of any buy that would exhaust cash exactly (so that backtrader does
not reject it for margin): ~1e-9 relative, hence the 1e-6 tolerances below.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("backtrader")
pytest.importorskip("vectorbt")

from kronos_quant.adapters.vectorbt import backtest  # noqa: E402
from kronos_quant.strategies.backtrader import run  # noqa: E402

from kronos_quant.data import planted_signal, synthetic_panel  # noqa: E402

CASH = 1_000_000.0


@pytest.fixture(scope="module")
def case():
    panel = synthetic_panel(10, 300, seed=4, predictable=0.5)
    scores = planted_signal(panel)
    dates = scores.index.get_level_values("datetime")
    return panel, scores[dates.isin(dates.unique()[::5])]


def _holdings(fills: list[dict], bars: pd.DatetimeIndex, names: pd.Index) -> pd.DataFrame:
    trades = pd.DataFrame(fills).pivot_table(index="datetime", columns="instrument",
                                             values="size", aggfunc="sum")
    return trades.reindex(index=bars, columns=names).fillna(0.0).cumsum()


@pytest.mark.parametrize("fees, slippage, options", [(0.0, 0.0, dict(topk=3)),
                                                     (0.001, 0.0005, dict(topk=4, n_drop=1))])
def test_vectorbt_and_backtrader_hold_the_same(case, fees, slippage, options):
    panel, scores = case
    pf = backtest(scores, panel, fees=fees, slippage=slippage, cash=CASH, **options)
    res = run(panel, scores=scores, cash=CASH, fees=fees, slippage=slippage,
              stdstats=False, **options)
    vb = pf.assets()
    ours = _holdings(res.result.fills, vb.index, vb.columns)
    assert ((ours.abs() > 1e-9) == (vb.abs() > 1e-9)).all().all(), "held names differ"
    np.testing.assert_allclose(ours.to_numpy(), vb.to_numpy(), rtol=1e-6, atol=1e-6)
    final_bt, final_vb = res.cerebro.broker.getvalue(), float(pf.final_value())
    assert abs(final_bt / final_vb - 1) < 1e-6  # the issue asks for 10 bp (1e-3)
    np.testing.assert_allclose(res.returns.reindex(vb.index).to_numpy(),
                               pf.returns().to_numpy(), atol=1e-8)
    assert len(res.result.fills) == len(pf.orders.records)


def test_rebalance_every_kth_score_date(case):
    """rebalance=2 trades every 2nd date with a score: the same as those dates' scores."""
    panel, scores = case
    dates = scores.index.get_level_values("datetime")
    every_2nd = scores[dates.isin(dates.unique()[::2])]
    a = run(panel, scores=every_2nd, cash=CASH, topk=3, stdstats=False)
    b = run(panel, scores=scores, cash=CASH, rebalance=2, topk=3, stdstats=False)
    assert a.result.fills == b.result.fills and len(a.result.fills) > 0
    pa, pb = (backtest(s, panel, topk=3, rebalance=k) for s, k in ((every_2nd, 1), (scores, 2)))
    pd.testing.assert_frame_equal(pa.assets(), pb.assets())


def test_weights_trade_as_given(case):
    """The weight path (what ``kronos-quant backtest --engine backtrader`` uses) trades the
    same as scores turned into weights inside the strategy."""
    from kronos_quant.portfolio import target_weights

    panel, scores = case
    weights = target_weights(scores, topk=3)
    a = run(panel, scores=scores, cash=CASH, topk=3, stdstats=False)
    b = run(panel, weights=weights, cash=CASH, stdstats=False)
    assert a.result.fills == b.result.fills
    with pytest.raises(ValueError, match="NaN"):
        run(panel, weights=weights.where(weights > 0), cash=CASH)


def test_backtest_command_gives_the_same_book_in_both_engines(case, tmp_path):
    import argparse
    import json

    pytest.importorskip("quantstats")
    from kronos_quant.cli import backtest as backtest_cli
    from kronos_quant.signals.store import write_scores

    panel, scores = case
    panel.to_parquet(tmp_path / "panel.parquet")
    write_scores(scores.to_frame(), tmp_path / "scores.parquet")
    summaries = {}
    pytest.importorskip("qlib")
    for engine in ("vectorbt", "backtrader", "qlib"):
        parser = argparse.ArgumentParser(prog="kronos-quant")
        parser.add_argument("-q", "--quiet", action="store_true")
        backtest_cli.register(parser.add_subparsers(dest="command", required=True))
        out = tmp_path / engine
        args = parser.parse_args(["-q", "backtest", "--engine", engine, "--panel",
                                  str(tmp_path / "panel.parquet"), "--scores",
                                  str(tmp_path / "scores.parquet"), "--topk", "3",
                                  "--fees", "0.001", "--out", str(out)])
        assert args.func(args) == 0
        assert {"tearsheet.html", "equity.png", "summary.json"} <= {p.name for p in out.iterdir()}
        summaries[engine] = json.loads((out / "summary.json").read_text())
    vb, ours = summaries["vectorbt"], summaries["backtrader"]
    assert ours["engine"] == "backtrader" and ours["orders"] == vb["orders"]
    assert ours["total_return"] == pytest.approx(vb["total_return"], rel=1e-6)
    qlib = summaries["qlib"]
    assert vb["spec"] == ours["spec"] == qlib["spec"]
    assert vb["spec"]["topk"] == 3 and vb["spec"]["fees"] == 0.001
    # Qlib holds the same names (it reports it) but sizes buys from cash and does not
    # re-equalise kept names: docs/qlib.md gives the measured gap (tens of bp).
    assert qlib["engine_details"]["differences"]["days_differing"] == 0
    growth = {k: 1 + s["total_return"] for k, s in summaries.items()}
    assert abs(growth["qlib"] / growth["vectorbt"] - 1) < 0.05  # measured: +3.6 %


def test_old_term_names_still_work_with_a_deprecation_warning(case):
    panel, scores = case
    with pytest.warns(DeprecationWarning, match="init_cash= is deprecated.*use cash="):
        old = backtest(scores, panel, topk=3, init_cash=CASH, fees=0.001)
    new = backtest(scores, panel, topk=3, cash=CASH, fees=0.001)
    assert float(old.final_value()) == float(new.final_value())
    with pytest.warns(DeprecationWarning, match="commission= is deprecated.*use fees="):
        res = run(panel, scores=scores, topk=3, commission=0.001, stdstats=False)
    assert res.result.spec.fees == 0.001
    with pytest.raises(TypeError, match="give cash= or the deprecated init_cash=, not both"):
        backtest(scores, panel, cash=1.0, init_cash=1.0)
    with pytest.raises(TypeError, match=r"unknown KronosStrategy parameter\(s\) \['tokp'\]"):
        run(panel, scores=scores, tokp=3)

"""KronosStrategy with real backtrader: it trades the signal, never early, in both modes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

bt = pytest.importorskip("backtrader")

from kronos_quant.adapters.backtrader import feeds, returns  # noqa: E402
from kronos_quant.strategies.backtrader import BuyAndHold, KronosStrategy, cerebro_for, run  # noqa: E402

from kronos_quant.data import planted_signal, synthetic_panel  # noqa: E402
from kronos_quant.predictor import KronosPredictor  # noqa: E402
from kronos_quant.signals import score_panel  # noqa: E402
from kronos_quant.testing import tiny_pair  # noqa: E402


def _total(rets: pd.Series) -> float:
    return float(np.prod(1 + rets.to_numpy()) - 1)


@pytest.fixture(scope="module")
def planted():
    panel = synthetic_panel(10, 300, seed=4, predictable=0.5)
    return panel, planted_signal(panel)


def test_planted_signal_beats_buy_and_hold_and_shuffled_does_not(planted):
    panel, signal = planted
    cerebro = cerebro_for(panel, fees=0.001, stdstats=False)
    cerebro.addstrategy(BuyAndHold)
    hold = _total(returns(cerebro.run()[0]))
    ours = _total(run(panel, scores=signal, topk=3, fees=0.001, stdstats=False).returns)
    rng = np.random.default_rng(0)
    shuffled = signal.groupby(level="datetime", group_keys=False).transform(
        lambda s: rng.permutation(s.to_numpy()))
    noise = _total(run(panel, scores=shuffled, topk=3, fees=0.001, stdstats=False).returns)
    assert ours > hold + 0.1
    assert noise < hold


def _fill_frame(result) -> pd.DataFrame:
    return pd.DataFrame(result.fills)


@pytest.mark.parametrize("execution, field, lag", [("next_open", "open", 1),
                                                    ("next_close", "close", 1),
                                                    ("same_close", "close", 0)])
def test_fills_happen_at_the_execution_price_never_the_signal_close(planted, execution, field,
                                                                    lag):
    panel, signal = planted
    panel, signal = panel.loc[:"2022-03-31"], signal.loc[:"2022-03-31"]
    res = run(panel, scores=signal, topk=2, execution=execution, stdstats=False)
    fills = _fill_frame(res.result)
    bars = panel.index.levels[0]
    signal_dates = pd.DatetimeIndex([when for when, _ in res.result.decisions])
    expected_dates = bars[bars.get_indexer(signal_dates) + lag]
    assert set(fills["datetime"]) <= set(expected_dates) and len(fills) > 10
    at = pd.MultiIndex.from_frame(fills[["datetime", "instrument"]])
    np.testing.assert_allclose(fills["price"].to_numpy(), panel.loc[at, field].to_numpy(),
                               rtol=1e-12)
    if lag:  # never the signal bar's own close
        before = bars[bars.get_indexer(fills["datetime"]) - 1]
        own_close = panel.loc[pd.MultiIndex.from_arrays([before, fills["instrument"]]), "close"]
        assert not np.isclose(fills["price"].to_numpy(), own_close.to_numpy()).any()


def test_future_bars_do_not_change_earlier_decisions_or_trades(planted):
    panel, signal = planted
    cut = panel.index.levels[0][150]  # a rebalance bar (every 5th from the first)
    changed = panel.copy()
    late = changed.index.get_level_values("datetime") > cut
    changed.loc[late, ["open", "high", "low", "close"]] *= 1.5
    changed_signal = signal.where(~late, -signal)
    a, b = (run(p, scores=s, topk=3, stdstats=False).result
            for p, s in ((panel, signal), (changed, changed_signal)))
    early = [(when, w) for when, w in a.decisions if when <= cut]
    assert early[-1][0] == cut
    for (wa, xa), (wb, xb) in zip(early, b.decisions, strict=False):  # early: a prefix
        assert wa == wb and xa.equals(xb)
    assert not all(xa.equals(xb) for (_, xa), (_, xb) in zip(a.decisions, b.decisions, strict=True))
    fa, fb = _fill_frame(a), _fill_frame(b)
    pd.testing.assert_frame_equal(fa[fa.datetime <= cut], fb[fb.datetime <= cut])


def test_live_inference_scores_equal_score_panel():
    tok, model = tiny_pair(0)
    predictor = KronosPredictor(model, tok, device="cpu", max_context=32)
    panel = synthetic_panel(3, 40, seed=2)
    opts = dict(lookback=16, pred_len=3, sample_count=4, seed=5)
    # One forecast batch per date on both sides: float32 matmuls then give the same bits
    # (different batch shapes agree to ~1e-8, not bit for bit).
    expected = score_panel(predictor, panel, freq=5, scorers=["expected_return"], batch_size=3,
                           verbose=False, **opts)
    live = run(panel, predictor=predictor, rebalance=5, topk=1, stdstats=False, **opts)
    pd.testing.assert_frame_equal(live.result.score_history(), expected, check_exact=True)
    # Live: every 5th bar; precomputed: every score date (the scores are on that grid).
    pre = run(panel, scores=expected, topk=1, stdstats=False)
    assert live.result.fills == pre.result.fills and len(pre.result.fills) > 0


def test_protective_stop_sells_between_rebalances(planted):
    panel, signal = planted
    scores = pd.DataFrame({"planted_signal": signal, "stop_return": -0.002})
    res = run(panel.loc[:"2022-04-29"], scores=scores.loc[:"2022-04-29"], topk=3,
              rebalance=10, stop_quantile=0.1, stdstats=False)
    fills = _fill_frame(res.result)
    bars = panel.index.levels[0]
    execution_bars = {bars[bars.get_loc(when) + 1] for when, _ in res.result.decisions}
    stopped = fills[~fills["datetime"].isin(execution_bars)]
    assert len(stopped) > 0 and (stopped["size"] < 0).all()


def test_bad_set_ups_fail_clearly(planted):
    panel, signal = planted
    cerebro = bt.Cerebro()  # no cheat_on_open
    for d in feeds(panel.loc[:"2022-01-31"], signal.loc[:"2022-01-31"]):
        cerebro.adddata(d, name=d._name)
    cerebro.addstrategy(KronosStrategy, scorer="planted_signal", topk=2)
    with pytest.raises(ValueError, match="cheat_on_open=True"):
        cerebro.run()
    with pytest.raises(ValueError, match="scorer 'expected_return' is not a signal line"):
        run(panel, scores=signal, scorer="expected_return", topk=2)
    with pytest.raises(ValueError, match="exactly one of scores"):
        run(panel, topk=2)
    with pytest.raises(TypeError, match="unknown KronosStrategy parameter.*tokp"):
        run(panel, scores=signal, tokp=2)
    with pytest.raises(ValueError, match="stop_return"):
        run(panel, scores=signal, topk=2, stop_quantile=0.1)


def test_example_runs_offline_with_the_demo_model(tmp_path, capsys):
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "backtrader_strategy.py"
    main = runpy.run_path(str(example))["main"]
    chart = main(["--instruments", "3", "--bars", "45", "--lookback", "30", "--pred-len", "3",
                  "--samples", "2", "--rebalance", "5", "--topk", "1", "--out", str(tmp_path)])
    assert chart.is_file() and chart.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "final value" in out and "orders filled" in out
    assert "orders filled: 0" not in out

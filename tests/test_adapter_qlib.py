"""Qlib provider directories (write, read back, append) and TopkDropout backtests, run on the
real pyqlib: exact round trip, planted vs random scores, parity with kronos_quant.portfolio."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")

from kronos_quant.adapters.qlib import compare_scorers, run_topk_dropout  # noqa: E402
from kronos_quant.adapters.qlib_data import (  # noqa: E402
    check_provider,
    read_bin,
    read_calendar,
    read_instruments,
    read_provider,
    write_provider,
)

from kronos_quant.cli.qlib import register  # noqa: E402
from kronos_quant.data import planted_signal, synthetic_panel  # noqa: E402
from kronos_quant.portfolio import align, target_weights  # noqa: E402
from kronos_quant.signals import baseline_scores  # noqa: E402


def _with_gaps(panel: pd.DataFrame) -> pd.DataFrame:
    """SYN019 listed late, SYN003 suspended for three days: gaps the files must keep."""
    dates = panel.index.get_level_values("datetime").unique()
    inst = panel.index.get_level_values("instrument")
    stamps = panel.index.get_level_values("datetime")
    late = (inst == "SYN019") & (stamps < dates[40])
    suspended = (inst == "SYN003") & stamps.isin(dates[100:103])
    return panel[~(late | suspended)]


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return _with_gaps(synthetic_panel(20, 300, seed=3, predictable=0.5))


@pytest.fixture(scope="module")
def provider(tmp_path_factory, panel):
    root = tmp_path_factory.mktemp("qlib") / "provider"
    write_provider(panel, root, markets="syn", verbose=False)
    return root


def _market_returns(panel: pd.DataFrame) -> pd.Series:
    return panel["close"].unstack().pct_change().mean(axis=1).fillna(0.0)


def test_layout_follows_qlib_format(provider, panel):
    lines = (provider / "calendars" / "day.txt").read_text().splitlines()
    assert lines[0] == "2022-01-03" and len(lines) == 300
    rows = (provider / "instruments" / "all.txt").read_text().splitlines()
    assert rows[-1].split("\t") == ["SYN019", lines[40], lines[-1]]
    assert (provider / "instruments" / "syn.txt").read_text().splitlines() == rows
    raw = np.fromfile(provider / "features" / "syn019" / "close.day.bin", dtype="<f4")
    assert raw[0] == 40 and len(raw) == 1 + 260  # start index, then one value per slot
    close3 = read_bin(provider / "features" / "syn003" / "close.day.bin", 300)
    assert np.isnan(close3[100:103]).all() and not np.isnan(close3[99])
    change3 = read_bin(provider / "features" / "syn003" / "change.day.bin", 300)
    # across the gap
    np.testing.assert_allclose(change3[103], close3[103] / close3[99] - 1, rtol=1e-5)
    sub = panel.xs("SYN005", level="instrument")
    vwap = read_bin(provider / "features" / "syn005" / "vwap.day.bin", 300)
    np.testing.assert_array_equal(vwap, (sub["amount"] / sub["volume"]).to_numpy(np.float32))
    assert (read_bin(provider / "features" / "syn005" / "factor.day.bin", 300) == 1.0).all()


def test_qlib_reads_back_exactly(provider, panel):
    report = check_provider(provider, panel=panel)
    assert report.ok, str(report)
    assert report.values == 20 * 9 * 300 and "exactly" in str(report)
    back = read_provider(provider)
    assert back.index.equals(panel.index)
    np.testing.assert_array_equal(back.to_numpy(np.float32), panel.to_numpy(np.float32))
    two = read_provider(provider, instruments=["SYN001", "syn002"], start="2022-03-01")
    assert sorted(two.index.get_level_values("instrument").unique()) == ["SYN001", "SYN002"]
    assert two.index.get_level_values("datetime").min() == pd.Timestamp("2022-03-01")


def test_check_reports_a_changed_value(tmp_path, panel):
    root = tmp_path / "p"
    small = panel[panel.index.get_level_values("instrument").isin(["SYN000", "SYN001"])]
    write_provider(small, root, verbose=False)
    altered = small.copy()
    altered.iloc[7, 3] = altered.iloc[7, [1, 2]].mean()  # another close inside the bar
    report = check_provider(root, panel=altered)
    day = small.index[7][0]
    assert not report.ok and any(m.startswith(f"SYN001 close {day}") for m in report.mismatches)


def test_incremental_update_appends_and_refuses_rewrites(tmp_path, panel):
    root = tmp_path / "inc"
    dates = panel.index.get_level_values("datetime")
    inst = panel.index.get_level_values("instrument")
    cut = dates.unique()[199]
    first = panel[(dates <= cut) & (inst != "SYN018")]
    write_provider(first, root, verbose=False)
    # The update repeats some stored days (identical) and brings SYN018's whole history.
    update = panel[(dates > dates.unique()[180]) | (inst == "SYN018")]
    summary = write_provider(update, root, verbose=False)
    assert summary.new_dates == 100 and summary.new_instruments == ["SYN018"]
    assert check_provider(root, panel=panel).ok
    assert read_calendar(root).equals(pd.DatetimeIndex(dates.unique()))
    assert read_instruments(root).loc["SYN000", "end"] == dates.max()
    again = write_provider(update, root, verbose=False)  # rerun: nothing changes
    assert again.new_dates == 0 and check_provider(root, panel=panel).ok
    changed = panel.copy()
    changed.iloc[50, 3] = changed.iloc[50, [1, 2]].mean()  # a stored close, inside the bar
    day, name = changed.index[50]
    with pytest.raises(ValueError, match=f"rewrite history: {name} close at {day:%Y-%m-%d} is"):
        write_provider(changed, root, verbose=False)
    inside = panel.xs(pd.Timestamp("2022-01-07"), level="datetime", drop_level=False)
    inside = inside.rename(index={pd.Timestamp("2022-01-07"): pd.Timestamp("2022-01-08")})  # Sat
    with pytest.raises(ValueError, match="falls inside the stored calendar"):
        write_provider(inside, root, verbose=False)
    assert check_provider(root, panel=panel).ok  # refused updates left no trace


@pytest.fixture(scope="module")
def comparison(provider, panel):
    planted = planted_signal(panel)
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"planted": planted,
                           "random": rng.standard_normal(len(planted))}, index=planted.index)
    scores = scores.join(baseline_scores(panel)[["momentum_20"]])
    scores = scores[scores.index.get_level_values("datetime") >= pd.Timestamp("2022-06-01")]
    return compare_scorers(scores, provider, topk=5, n_drop=2, benchmark=_market_returns(panel),
                           region="us", out_dir=provider.parent / "cmp", verbose=False)


def test_planted_score_beats_benchmark_and_random_does_not(comparison):
    table, figure = comparison
    assert list(table.index) == ["planted", "random", "momentum_20"]
    planted, random = table.loc["planted"], table.loc["random"]
    assert planted["excess_annualized_after_cost"] > 0.3
    assert planted["information_ratio_after_cost"] > 2.0
    assert abs(random["excess_annualized"]) < 0.15 and random["information_ratio_after_cost"] < 1.0
    # the sweep's deflated Sharpe ratio: three scorers tried
    assert planted["deflated_sharpe"] > 0.95 > random["deflated_sharpe"]
    assert planted["excess_sharpe_after_cost"] > random["excess_sharpe_after_cost"]
    assert figure.exists() and figure.stat().st_size > 10_000
    assert (figure.parent / "scorers.csv").exists()


def test_report_risk_and_region_defaults(provider, panel, tmp_path):
    scores = planted_signal(panel)
    result = run_topk_dropout(scores, provider, topk=5, n_drop=2, lot_size=100,
                              benchmark="SYN000", region="cn", start="2022-06-01",
                              out_dir=tmp_path, verbose=False)
    assert {"return", "bench", "cost", "turnover"} <= set(result.report.columns)
    assert result.report.index[0] == pd.Timestamp("2022-06-01")
    assert list(result.risk.columns) == ["excess_return_without_cost", "excess_return_with_cost"]
    assert result.settings["trade_unit"] == 100 and result.settings["limit_threshold"] == 0.095
    assert result.settings["deal_price"] == "open"  # next_open, the default execution
    assert result.settings["spec"]["lot_size"] == 100 and result.settings["account"] == 1e6
    assert result.extra["differences"]["qlib_rules"][2] == "lots: orders rounded to 100 shares"
    held = result.holdings.iloc[-1]
    assert (held[held > 0] % 100 == 0).all()  # CN lots
    bench = panel["close"].xs("SYN000", level="instrument").pct_change()
    np.testing.assert_allclose(result.report["bench"], bench.reindex(result.report.index),
                               atol=1e-6)
    assert result.figure.exists()
    assert result.tearsheet.exists() and "<html" in result.tearsheet.read_text()[:2000].lower()


@pytest.mark.parametrize("execution", ["next_close", "next_open"])
def test_parity_with_portfolio_topk_dropout(tmp_path, execution):
    """Qlib holds, after trading on day d, exactly target_weights' names of the score date
    before d: a score at t trades at t+1 (align(..., execution) places it there)."""
    small = synthetic_panel(12, 60, seed=5)
    write_provider(small, tmp_path / "p", verbose=False)
    rng = np.random.default_rng(1)
    scores = pd.Series(rng.standard_normal(len(small)), index=small.index)  # no ties
    result = run_topk_dropout(scores, tmp_path / "p", topk=4, n_drop=1, benchmark="SYN000",
                              limit_threshold=None, region="us", execution=execution,
                              verbose=False)
    qlib_held = result.holdings > 0
    calendar = small.index.get_level_values("datetime").unique()
    ours = align(target_weights(scores, topk=4, n_drop=1), calendar, execution=execution) > 0
    ours = ours.reindex(index=qlib_held.index, columns=qlib_held.columns, fill_value=False)
    assert qlib_held.index[0] == calendar[1] and len(qlib_held) == 58
    assert (qlib_held.sum(axis=1) == 4).all()
    pd.testing.assert_frame_equal(qlib_held, ours)
    assert result.extra["differences"]["days_differing"] == 0
    swaps = (qlib_held.astype(int).diff().abs().sum(axis=1) / 2).iloc[1:]
    assert swaps.max() == 1 and swaps.sum() > 10  # n_drop bites, the test is not vacuous


def test_clear_errors(provider, panel, tmp_path):
    scores = planted_signal(panel)
    kw = dict(topk=5, n_drop=1, benchmark="SYN000", verbose=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_topk_dropout(scores, tmp_path / "nowhere", **kw)
    bad = scores.rename(index={"SYN004": "ZZZ"}, level="instrument")
    with pytest.raises(ValueError, match=r"not in .*\['ZZZ'\]"):
        run_topk_dropout(bad, provider, **kw)
    lower = scores.rename(index={"SYN004": "syn004"}, level="instrument")
    with pytest.raises(ValueError, match="stored as 'SYN004'"):
        run_topk_dropout(lower, provider, **kw)
    late = scores.rename(index={pd.Timestamp("2022-01-03"): pd.Timestamp("2021-06-01")},
                         level="datetime")
    with pytest.raises(ValueError, match="2021-06-01.* not in the provider calendar"):
        run_topk_dropout(late, provider, **kw)
    with pytest.raises(ValueError, match="benchmark is required.*SH000300"):
        run_topk_dropout(scores, provider, topk=5, n_drop=1, benchmark=None)
    with pytest.raises(ValueError, match="benchmark 'SH000300' is not an instrument"):
        run_topk_dropout(scores, provider, topk=5, n_drop=1, benchmark="SH000300")
    with pytest.raises(ValueError, match="benchmark returns have no value"):
        run_topk_dropout(scores, provider, topk=5, n_drop=1,
                         benchmark=_market_returns(panel).iloc[:100])
    with pytest.raises(ValueError, match=r"MultiIndex \('datetime', 'instrument'\)"):
        run_topk_dropout(scores.swaplevel(), provider, **kw)
    with pytest.raises(ValueError, match="qlib cannot trade this spec: execution='same_close'"):
        run_topk_dropout(scores, provider, execution="same_close", **kw)
    with pytest.raises(ValueError, match="outside the provider calendar"):
        run_topk_dropout(scores, provider, start="2030-01-01", **kw)
    with pytest.raises(ValueError, match="cannot be a Qlib symbol"):
        write_provider(panel.rename(index={"SYN019": "SYZ/19"}, level="instrument"), tmp_path / "x")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-q", "--quiet", action="store_true")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_checks_and_backtests(tmp_path, panel, capsys):
    small = panel[panel.index.get_level_values("instrument").isin([f"SYN00{i}" for i in range(8)])]
    small.reset_index().to_csv(tmp_path / "panel.csv", index=False)
    out = tmp_path / "prov"
    assert _cli(["-q", "qlib-data", "--panel", str(tmp_path / "panel.csv"), "--out", str(out),
                 "--market", "mine", "--check"]) == 0
    text = capsys.readouterr().out
    assert "8 instruments" in text and "exactly" in text
    assert _cli(["-q", "qlib-data", "--out", str(out), "--check"]) == 0
    planted_signal(small).to_frame("planted").to_parquet(tmp_path / "scores.parquet")
    assert _cli(["-q", "qlib-backtest", "--scores", str(tmp_path / "scores.parquet"),
                 "--provider", str(out), "--benchmark", "SYN000", "--topk", "3", "--n-drop", "1",
                 "--region", "us", "--out", str(tmp_path / "bt")]) == 0
    assert (tmp_path / "bt" / "risk.csv").exists()
    assert (tmp_path / "bt" / "cumulative_return.png").exists()


@pytest.mark.parametrize("terms", [dict(topk=3),  # full rebalance: n_drop = topk
                                   dict(topk=4, n_drop=2, rebalance=2, fees=0.001),
                                   dict(topk=15, n_drop=1, invested=0.9)])  # topk > names
def test_qlib_holds_our_names_for_the_same_spec(tmp_path, terms, caplog):
    """The same TradeSpec in Qlib and in our portfolio layer: the same names every day
    (fractional shares, no limits, untied scores, a late listing and NaN scores)."""
    from kronos_quant import TradeSpec

    small = synthetic_panel(12, 50, seed=6)
    late = (small.index.get_level_values("instrument") == "SYN003") & (
        small.index.get_level_values("datetime") < small.index.levels[0][10])
    small = small[~late]
    write_provider(small, tmp_path / "p", verbose=False)
    rng = np.random.default_rng(2)
    scores = pd.Series(rng.standard_normal(len(small)), index=small.index)
    spec = TradeSpec(**terms)
    if spec.names <= 12:  # Qlib sells held names that lost their score in its own order
        scores[rng.random(len(scores)) < 0.1] = np.nan
    with caplog.at_level("WARNING"):
        result = run_topk_dropout(scores, tmp_path / "p", spec, benchmark="SYN000",
                                  limit_threshold=None, region="us", verbose=False)
    assert result.settings["spec"] == spec.to_dict()
    calendar = small.index.get_level_values("datetime").unique()
    ours = align(target_weights(scores, spec), calendar, execution=spec.execution) > 0
    qlib_held = result.holdings > 0
    ours = ours.reindex(index=qlib_held.index, columns=qlib_held.columns, fill_value=False)
    pd.testing.assert_frame_equal(qlib_held, ours)
    assert result.extra["differences"]["days_differing"] == 0
    assert qlib_held.to_numpy().any(axis=1).all()
    if spec.names > 12:
        assert "topk=15 but only" in caplog.text  # warned, and holds what there is


def test_old_qlib_names_still_work_with_a_deprecation_warning(tmp_path):
    from kronos_quant import TradeSpec

    small = synthetic_panel(6, 30, seed=8)
    write_provider(small, tmp_path / "p", verbose=False)
    scores = planted_signal(small)
    with pytest.warns(DeprecationWarning) as caught:
        result = run_topk_dropout(scores, tmp_path / "p", topk=2, n_drop=1, account=1e7,
                                  costs={"open_cost": 0.001, "close_cost": 0.001,
                                         "min_cost": 5.0}, trade_unit=100, risk_degree=0.95,
                                  benchmark="SYN000", verbose=False)
    said = sorted(str(w.message).split("=")[0] for w in caught)
    assert said == ["account", "costs", "risk_degree", "trade_unit"]
    expected = TradeSpec(topk=2, n_drop=1, cash=1e7, fees=0.001, min_cost=5.0, lot_size=100,
                         invested=0.95)
    assert result.settings["spec"] == expected.to_dict()
    assert result.settings["trade_unit"] == 100 and result.settings["risk_degree"] == 0.95
    with pytest.raises(ValueError, match="open_cost=0.0005 and close_cost=0.0015 differ"), \
            pytest.warns(DeprecationWarning):
        run_topk_dropout(scores, tmp_path / "p", topk=2, benchmark="SYN000",
                         costs={"open_cost": 0.0005, "close_cost": 0.0015})

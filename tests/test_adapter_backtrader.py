"""adapters.backtrader with real backtrader: score lines, headless PNG, PyFolio returns."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

bt = pytest.importorskip("backtrader")

from kronos_quant.adapters import backtrader as btad  # noqa: E402

from kronos_quant.data import synthetic_panel  # noqa: E402


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return synthetic_panel(3, 25, seed=1)


def _scores(panel: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"alpha": rng.normal(size=len(panel)),
                          "beta": rng.normal(size=len(panel))}, index=panel.index)
    return frame.iloc[::2]  # every other row scored: the rest must read NaN


class Recorder(bt.Strategy):
    """Records, at every bar of every data, its stamp and the values of the given lines."""

    params = (("names", ()),)

    def __init__(self):
        self.rows = []

    def next(self):
        for d in self.datas:
            self.rows.append((d.p.dataname.index[len(d) - 1], d._name,
                              *[getattr(d.lines, n)[0] for n in self.p.names]))


def _record(datas, names):
    cerebro = bt.Cerebro(stdstats=False)
    for d in datas:
        cerebro.adddata(d, name=d._name)
    cerebro.addstrategy(Recorder, names=names)
    rows = cerebro.run()[0].rows
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", *names])
    return frame.set_index(["datetime", "instrument"]).sort_index()


def test_feeds_carry_each_score_on_its_own_bar(panel):
    scores = _scores(panel)
    datas = btad.feeds(panel, scores)
    assert [d._name for d in datas] == ["SYN000", "SYN001", "SYN002"]
    assert datas[0].signal_lines == ("alpha", "beta")
    seen = _record(datas, ("alpha", "beta", "close", "amount"))
    expected = scores.reindex(panel.index)
    np.testing.assert_array_equal(seen[["alpha", "beta"]].to_numpy(), expected.to_numpy())
    np.testing.assert_array_equal(seen["close"].to_numpy(), panel["close"].to_numpy())
    np.testing.assert_array_equal(seen["amount"].to_numpy(), panel["amount"].to_numpy())


def test_feeds_reject_bad_scores(panel):
    scores = _scores(panel)
    with pytest.raises(ValueError, match="cannot name a backtrader line"):
        btad.feeds(panel, scores.rename(columns={"alpha": "my score"}))
    with pytest.raises(ValueError, match="clashes with a bar line"):
        btad.feeds(panel, scores.rename(columns={"alpha": "close"}))
    stray = scores.rename(index={"SYN001": "ZZZ"}, level="instrument").sort_index()
    with pytest.raises(ValueError, match="absent from the panel.*ZZZ"):
        btad.feeds(panel, stray)
    late = pd.Series([0.1], index=pd.MultiIndex.from_tuples(
        [(pd.Timestamp("2030-01-01"), "SYN000")], names=["datetime", "instrument"]), name="s")
    with pytest.raises(ValueError, match="SYN000.*2030-01-01.*no bar"):
        btad.feeds(panel, late)


def test_returns_are_tz_naive_and_compound_to_the_final_value(panel):
    from kronos_quant.strategies.backtrader import BuyAndHold, cerebro_for

    cerebro = cerebro_for(panel, cash=10_000.0, stdstats=False)
    cerebro.addstrategy(BuyAndHold)
    strat = cerebro.run()[0]
    rets = btad.returns(strat)
    assert rets.index.tz is None
    assert rets.index.equals(pd.DatetimeIndex(panel.index.levels[0], name="datetime"))
    assert np.prod(1 + rets.to_numpy()) == pytest.approx(cerebro.broker.getvalue() / 10_000.0)
    with pytest.raises(ValueError, match="no bar_values or PyFolio analyzer"):
        btad.returns(object())


def test_plot_writes_png_without_display(tmp_path):
    script = textwrap.dedent(f"""
        import matplotlib
        from kronos_quant.adapters.backtrader import plot
        from kronos_quant.data import synthetic_panel, planted_signal
        from kronos_quant.strategies.backtrader import run
        panel = synthetic_panel(2, 30, seed=0)
        res = run(panel, scores=planted_signal(panel), topk=1)
        written = plot(res.cerebro, {str(tmp_path / "chart.png")!r}, dpi=40)
        import matplotlib.pyplot as plt
        print(len(written), matplotlib.get_backend().lower(), len(plt.get_fignums()))
    """)
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "agg", "0"]  # one file, Agg kept, no figure left open
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_plot_needs_a_run_cerebro():
    with pytest.raises(ValueError, match="has been run"):
        btad.plot(bt.Cerebro(), "unused.png")


def test_missing_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "backtrader", None)
    with pytest.raises(ImportError, match=r"kronos-quant\[backtrader\]"):
        btad.returns(object())  # any entry point that needs the engine

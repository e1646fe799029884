"""Engine adapters against their engine alone: time and peak memory on one large book.

    python benchmarks/bench_engines.py                  # 500 instruments × 2,520 daily bars
    python benchmarks/bench_engines.py --instruments 50 --bars 500   # a quick look

One synthetic daily panel, random scores on a weekly grid (every 5th bar) and the weekly
top-50 target weights of :func:`kronos_quant.portfolio.target_weights` are built once and
saved. Each section then runs in its own fresh process (so peak memory is its own) and
reports the best of ``--repeat`` wall and CPU times (the adapter's overhead is computed on
CPU time, which other load on the machine disturbs less), the peak of Python/NumPy
allocations traced by ``tracemalloc`` during one more run, and that process's peak RSS
growth over the run (``resource``; it also sees memory allocated by compiled code). Engines
are warmed up on a tiny book first so JIT compilation is not timed.

Sections (one function each; add an engine by adding functions to :data:`SECTIONS`):

* ``vectorbt from_orders alone``: the wide close/open/order arrays prepared beforehand, then
  ``vbt.Portfolio.from_orders`` with the adapter's settings: the engine's own cost.
* ``vectorbt adapter (weights)``: :func:`kronos_quant.adapters.vectorbt.backtest` on the long
  panel and the same weight frame: the engine plus our layer (panel → wide prices, execution
  alignment, order frame). Target: ≤ 20% over the engine alone.
* ``vectorbt adapter (scores)``: the same from the scores, target weights included.
* ``backtrader buy-and-hold`` and ``backtrader KronosStrategy (precomputed)``: the first
  :data:`BT_DATAS` instruments × :data:`BT_BARS` bars of the same book as backtrader feeds
  (backtrader runs bar by bar in Python, so the full book would take minutes): an
  equal-weight buy-and-hold strategy against ``KronosStrategy`` trading the random scores
  (top-:data:`BT_TOPK`, every 5th bar) on the same feeds; their ratio is our strategy's cost
  (scores → weights → orders sized at the fill price) plus backtrader's per-order cost.
  The table shows it as ``vs_buy_and_hold`` (wall-time ratio) on the backtrader rows only;
  ``vs_engine_alone`` (CPU-time overhead over ``from_orders`` alone) is on the vectorbt rows
  only.
* After the table, ``KronosStrategy``'s live-inference mode with the embedded demo model:
  seconds per rebalance (one batched forecast of every data's window, then the orders).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

TOPK, EVERY, FEES = 50, 5, 0.001
BT_DATAS, BT_BARS, BT_TOPK = 50, 1000, 10


def make_inputs(folder: Path, *, instruments: int, bars: int, seed: int = 0) -> None:
    """Panel, random weekly scores and their top-k weights, saved for the section processes."""
    from kronos_quant.data import synthetic_panel
    from kronos_quant.portfolio import target_weights

    panel = synthetic_panel(instruments, bars, seed=seed).drop(columns="amount")
    dates = panel.index.get_level_values("datetime").unique()[::EVERY]
    index = pd.MultiIndex.from_product([dates, panel.index.get_level_values("instrument").unique()],
                                       names=["datetime", "instrument"])
    rng = np.random.default_rng(seed)
    scores = pd.DataFrame({"score": rng.standard_normal(len(index))}, index=index)
    panel.to_parquet(folder / "panel.parquet")
    scores.to_parquet(folder / "scores.parquet")
    target_weights(scores, topk=TOPK).to_parquet(folder / "weights.parquet")


def _load(folder: Path) -> dict:
    return {name: pd.read_parquet(folder / f"{name}.parquet")
            for name in ("panel", "scores", "weights")}


def _tiny(data: dict) -> dict:
    """A few bars and names of the same data, to warm the engines up (JIT, caches)."""
    names = data["weights"].columns[:5]
    dates = data["weights"].index[:4]
    end = data["panel"].index.get_level_values("datetime") <= dates[-1] + pd.Timedelta(days=14)
    panel = data["panel"][end & data["panel"].index.get_level_values("instrument").isin(names)]
    scores = data["scores"][data["scores"].index.get_level_values("datetime").isin(dates)
                            & data["scores"].index.get_level_values("instrument").isin(names)]
    return {"panel": panel, "scores": scores, "weights": data["weights"].loc[dates, names]}


# --- vectorbt ------------------------------------------------------------------------------

def vectorbt_alone(data: dict) -> Callable[[], object]:
    import vectorbt as vbt

    close = data["panel"]["close"].unstack("instrument")
    price = data["panel"]["open"].unstack("instrument")
    weights = data["weights"].reindex(columns=close.columns, fill_value=0.0)
    size = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    at = close.index.get_indexer(weights.index) + 1  # next_open: the bar after each rebalance
    ok = at < len(close)
    size.iloc[at[ok]] = weights.to_numpy()[ok]
    return lambda: vbt.Portfolio.from_orders(
        close, size=size, price=price, size_type="targetpercent", group_by=True,
        cash_sharing=True, call_seq="auto", fees=FEES, init_cash=1e6, freq="1D")


def vectorbt_adapter_weights(data: dict) -> Callable[[], object]:
    from kronos_quant.adapters.vectorbt import backtest

    return lambda: backtest(data["weights"], data["panel"], fees=FEES, cash=1e6)


def vectorbt_adapter_scores(data: dict) -> Callable[[], object]:
    from kronos_quant.adapters.vectorbt import backtest

    return lambda: backtest(data["scores"], data["panel"], topk=TOPK, fees=FEES, cash=1e6)


def _vectorbt_value(pf) -> float:
    return float(pf.final_value())


# --- backtrader ----------------------------------------------------------------------------

def _backtrader_book(data: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first BT_DATAS instruments × BT_BARS bars of the panel and their scores."""
    panel, scores = data["panel"], data["scores"]
    names = panel.index.get_level_values("instrument").unique()[:BT_DATAS]
    dates = panel.index.get_level_values("datetime").unique()[:BT_BARS]
    keep = lambda f: f[f.index.get_level_values("instrument").isin(names)  # noqa: E731
                       & f.index.get_level_values("datetime").isin(dates)]
    return keep(panel), keep(scores)


def backtrader_buy_and_hold(data: dict) -> Callable[[], object]:
    from kronos_quant.strategies.backtrader import BuyAndHold, cerebro_for

    panel, _ = _backtrader_book(data)

    def run():
        cerebro = cerebro_for(panel, fees=FEES, stdstats=False)
        cerebro.addstrategy(BuyAndHold)
        cerebro.run()
        return cerebro
    return run


def backtrader_precomputed(data: dict) -> Callable[[], object]:
    from kronos_quant.strategies.backtrader import run

    panel, scores = _backtrader_book(data)
    return lambda: run(panel, scores=scores, topk=BT_TOPK, fees=FEES,
                       stdstats=False).cerebro


def _backtrader_value(cerebro) -> float:
    return float(cerebro.broker.getvalue())


def backtrader_live_seconds_per_rebalance(folder: Path, *, datas: int = 20,
                                          rebalances: int = 4) -> tuple[float, int]:
    """Live inference with the demo model on ``datas`` instruments: seconds per rebalance."""
    from kronos_quant.strategies.backtrader import run

    from kronos_quant import KronosPredictor
    from kronos_quant.assets import ASSETS, embedded_demo

    demo = embedded_demo()
    predictor = KronosPredictor.from_pretrained(str(ASSETS / "model"), str(ASSETS / "tokenizer"),
                                                device="cpu")
    panel = _load(folder)["panel"]
    names = panel.index.get_level_values("instrument").unique()[:datas]
    dates = panel.index.get_level_values("datetime").unique()
    bars = dates[:demo.lookback + (rebalances - 1) * EVERY]
    panel = panel[panel.index.get_level_values("instrument").isin(names)
                  & panel.index.get_level_values("datetime").isin(bars)]
    start = time.perf_counter()
    result = run(panel, predictor=predictor, lookback=demo.lookback, pred_len=demo.pred_len,
                 sample_count=8, seed=0, rebalance=EVERY, topk=BT_TOPK, stdstats=False)
    made = len(result.result.decisions)
    return (time.perf_counter() - start) / max(made, 1), made


# name → (build a zero-argument run from the data, the run result's final value)
SECTIONS: dict[str, tuple[Callable[[dict], Callable[[], object]], Callable[[object], float]]] = {
    "vectorbt from_orders alone": (vectorbt_alone, _vectorbt_value),
    "vectorbt adapter (weights)": (vectorbt_adapter_weights, _vectorbt_value),
    "vectorbt adapter (scores)": (vectorbt_adapter_scores, _vectorbt_value),
    "backtrader buy-and-hold": (backtrader_buy_and_hold, _backtrader_value),
    "backtrader KronosStrategy (precomputed)": (backtrader_precomputed, _backtrader_value),
}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _section(name: str, folder: str, repeat: int, queue) -> None:
    """Run one section in this (fresh) process and put its numbers on ``queue``."""
    build, value = SECTIONS[name]
    build(_tiny(_load(Path(folder))))()  # warm-up: compile / load the JIT caches
    data = _load(Path(folder))
    rss0 = _peak_rss_mib()
    run = build(data)
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    rss = _peak_rss_mib() - rss0
    del result
    tracemalloc.start()
    final = value(build(data)())
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    queue.put({"section": name, "seconds": min(times), "cpu_seconds": min(cpu),
               "traced_mib": traced,
               "rss_growth_mib": rss, "final_value": final})


def run_sections(names: list[str], folder: Path, repeat: int) -> pd.DataFrame:
    ctx = mp.get_context("spawn")
    rows = []
    for name in names:
        queue = ctx.Queue()
        proc = ctx.Process(target=_section, args=(name, str(folder), repeat, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    return pd.DataFrame(rows).set_index("section")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2520)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated section names (default: all)")
    args = parser.parse_args()
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {list(SECTIONS)}")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_inputs(Path(tmp), instruments=args.instruments, bars=args.bars)
        print(f"inputs: {args.instruments} instruments × {args.bars} daily bars, random scores "
              f"every {EVERY} bars, top-{TOPK} equal weight, fees {FEES:g}, next_open "
              f"(built in {time.perf_counter() - start:.1f} s)")
        table = run_sections(names, Path(tmp), args.repeat)
        live = (backtrader_live_seconds_per_rebalance(Path(tmp))
                if any(n.startswith("backtrader") for n in names) else None)
    alone = "vectorbt from_orders alone"
    if alone in table.index:
        # On CPU time: on a shared machine wall time also measures the neighbours.
        ours = table.index.str.startswith("vectorbt")
        table.loc[ours, "vs_engine_alone"] = (table.loc[ours, "cpu_seconds"]
                                              / table.loc[alone, "cpu_seconds"] - 1.0)
    print(f"machine: {platform.processor() or platform.machine()}, python "
          f"{platform.python_version()}; best of {args.repeat} runs, memory from one more")
    hold = "backtrader buy-and-hold"
    if hold in table.index:
        # backtrader's own comparison: a ratio to buy-and-hold on the same feeds (a different,
        # smaller book than the vectorbt rows, so neither column means anything for the other)
        traders = table.index.str.startswith("backtrader")
        table.loc[traders, "vs_buy_and_hold"] = (table.loc[traders, "seconds"]
                                                 / table.loc[hold, "seconds"])
    print(table.to_string(float_format=lambda v: f"{v:,.3f}", na_rep=""))
    if live is not None:
        print(f"backtrader KronosStrategy live inference (demo model, 20 datas, 8 paths): "
              f"{live[0]:.2f} s per rebalance over {live[1]} rebalances")


if __name__ == "__main__":
    main()

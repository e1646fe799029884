"""Decision latency of the live loop: candle close → orders committed in the ledger.

Runs :class:`kronos_quant.strategies.live.LiveLoop` with the real ccxt Binance client against
the local mock exchange (``tests/mock_exchange.py``, 127.0.0.1 only) on 1-minute candles. The
mock's clock is set to the instant a candle closes; one cycle then fetches the new candle
(server time + klines per symbol), forecasts ``--samples`` paths per symbol, scores, sizes and
commits the decision with the paper broker. Wall time of that cycle is the decision latency
(the loop's ``--grace`` wake-up delay is excluded: add it). Models: the embedded demo model and
Kronos-small-sized random weights (d_model 512, 8 layers; its speed is that of the published
Kronos-small, its forecasts meaningless).

    python benchmarks/bench_live.py                 # both models, 1 and 2 symbols, 32 paths
    python benchmarks/bench_live.py --decisions 3 --models demo
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kronos_quant.adapters.ccxt import CandleStore, CcxtFeed, RetryPolicy, make_exchange  # noqa: E402
from kronos_quant.strategies.brokers import PaperBroker  # noqa: E402
from kronos_quant.strategies.ledger import Ledger  # noqa: E402
from kronos_quant.strategies.live import LiveConfig, LiveLoop  # noqa: E402
from mock_exchange import ManualClock, MockExchange, MockServer  # noqa: E402

from kronos_quant.assets import demo_predictor, embedded_demo  # noqa: E402
from kronos_quant.config import preset_configs  # noqa: E402
from kronos_quant.model import Kronos  # noqa: E402
from kronos_quant.predictor import KronosPredictor  # noqa: E402
from kronos_quant.tokenizer import KronosTokenizer  # noqa: E402

MIN = 60_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def small_random(seed: int = 0) -> KronosPredictor:
    """Kronos-small-sized tokenizer + predictor with seeded random weights."""
    torch.manual_seed(seed)
    tok_cfg, model_cfg = preset_configs("small")
    return KronosPredictor(Kronos.from_config(model_cfg).eval(),
                           KronosTokenizer.from_config(tok_cfg).eval(), max_context=512)


def measure(predictor: KronosPredictor, *, symbols: int, samples: int, lookback: int,
            decisions: int) -> list[float]:
    clock = ManualClock(1_700_000_000_000 // MIN * MIN)
    with MockServer(MockExchange(clock_ms=clock.ms)) as srv, tempfile.TemporaryDirectory() as tmp:
        config = LiveConfig(exchange="binance", symbols=list(SYMBOLS[:symbols]), timeframe="1m",
                            lookback=lookback, sample_count=samples, late_timeout_s=0.0)
        feed = CcxtFeed(make_exchange("binance", api_host=srv.url), retry=RetryPolicy())
        loop = LiveLoop(config, predictor=predictor, feed=feed,
                        store=CandleStore(Path(tmp) / "candles"), ledger=Ledger(tmp),
                        broker=PaperBroker(), clock=clock, sleep=clock.sleep)
        loop.cycle()  # warm-up: history download, first decision
        times = []
        for _ in range(decisions):
            clock.advance(60)  # exactly at the next close
            start = time.perf_counter()
            result = loop.cycle()
            times.append(time.perf_counter() - start)
            assert len(result.decided) == 1, result
        loop.ledger.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,small", help="comma list: demo, small")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--decisions", type=int, default=3, help="timed decisions per case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# live decision latency: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {args.samples} paths, "
          f"pred_len 1, {args.decisions} decisions per row\n")
    print("| model | lookback | symbols | median s | p90 s | max s |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        if name == "demo":
            assets = embedded_demo()
            predictor, _ = demo_predictor(assets=assets)
            lookback = assets.lookback if assets else 120
        elif name == "small":
            predictor, lookback = small_random(), 400
        else:
            raise SystemExit(f"unknown model {name!r}; choose demo or small")
        for symbols in (1, 2):
            t = np.array(measure(predictor, symbols=symbols, samples=args.samples,
                                 lookback=lookback, decisions=args.decisions))
            print(f"| {name} | {lookback} | {symbols} | {np.median(t):.3f} | "
                  f"{np.quantile(t, 0.9):.3f} | {t.max():.3f} |", flush=True)


if __name__ == "__main__":
    main()

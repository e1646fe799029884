"""Live loop under faults: candles/min and decisions lost, with kill -9 restarts.

Runs the soak of ``tests/live_soak.py``: the real ccxt Binance client and the real-order
broker against the local mock exchange (127.0.0.1 only) on a 60× clock that also jumps over
the loop's sleeps, ~5% of requests answered with a random real error body (every kind:
-1000, -1001, 429/418 with Retry-After, -1021, -2010/-2011 on orders, 500 and maintenance
pages, timeouts, lost responses, truncated JSON, duplicate and late candles), and ``--kills``
kill -9 restarts, half of them between an order's send and its record. One row per seed;
``decisions lost`` counts (symbol, candle) rows skipped for a reason other than an exchange
gap. Every run's invariants are checked (the same checks as tests/test_live_soak.py).

    python benchmarks/bench_live_soak.py                      # 3 seeds x 500 candles
    python benchmarks/bench_live_soak.py --candles 2000 --kills 12 --seeds 7
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_soak import check_invariants, run_soak, summary  # noqa: E402

COLUMNS = ("seed", "candles", "wall_s", "candles_per_min", "decided", "skipped",
           "decisions_lost", "kills", "kills_between_send_and_record", "requests", "faults",
           "fault_kinds", "orders", "stale", "rejected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candles", type=int, default=500)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=3, help="seeds run at once")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}"
          f", {args.candles} one-minute candles x 2 symbols, fault rate {args.fault_rate}")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_soak, Path(tmp) / str(seed), seed=seed,
                               candles=args.candles, kills=args.kills,
                               fault_rate=args.fault_rate) for seed in args.seeds]
        results = [future.result() for future in futures]
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for result in results:
        row = summary(result)
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
        check_invariants(result)
    print("invariants: hold for every seed")


if __name__ == "__main__":
    main()

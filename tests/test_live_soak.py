"""Soak: ≥ 500 one-minute candles on two symbols, ~5% random faults of every kind, ≥ 5 kill -9
restarts (some between an order's send and its record), on a 60×-plus clock; three seeds at
once. The machinery is in tests/live_soak.py; ``benchmarks/bench_live_soak.py`` prints
candles/min and decisions lost."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import ccxt
import pytest
from live_soak import check_invariants, run_soak, summary
from mock_exchange import RANDOM_FAULTS

SEEDS = (0, 1, 2)
EXCHANGE_ERRORS = [name for name in dir(ccxt) if isinstance(getattr(ccxt, name), type)
                   and issubclass(getattr(ccxt, name), ccxt.BaseError)] + ["MalformedResponse"]


def soak_and_check(tmp_path, seeds, *, candles: int, kills: int) -> list[dict]:
    with ThreadPoolExecutor(len(seeds)) as pool:  # the loops are child processes
        futures = [pool.submit(run_soak, tmp_path / f"seed{seed}", seed=seed, candles=candles,
                               kills=kills) for seed in seeds]
        results = [future.result() for future in futures]
    drawn: set[str] = set()
    for result in results:
        check_invariants(result)
        assert result.candles >= candles and result.kills >= 5 and result.self_kills >= 1
        assert 0.03 < sum(result.faults.values()) / result.requests < 0.07
        # a candle is skipped only with the exchange's error after its deadline (never a bug)
        reasons = result.skipped["reason"].str.split(":").str[0]
        assert reasons.isin(EXCHANGE_ERRORS).all(), reasons.value_counts()
        drawn |= set(result.faults)
    assert drawn == set(RANDOM_FAULTS), set(RANDOM_FAULTS) - drawn  # every kind was met
    return [summary(result) for result in results]


def test_soak_500_candles_three_seeds_kill_9_and_random_faults(tmp_path):
    soak_and_check(tmp_path, SEEDS, candles=500, kills=5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KQ_SLOW"), reason="long soak: set KQ_SLOW=1")
def test_soak_long(tmp_path):
    soak_and_check(tmp_path, (11, 12, 13), candles=3000, kills=20)

"""Optional check on the real A-share sample in ../shared (skipped when it is absent)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kronos_quant import KronosPredictor
from kronos_quant.testing import tiny_pair

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "a_share_5min_sample.csv"


@pytest.fixture(scope="module")
def a_share():
    if not SAMPLE.is_file():
        pytest.skip(f"real sample not present at {SAMPLE}")
    return pd.read_csv(SAMPLE, parse_dates=["timestamps"])


def test_real_bars_forecast_end_to_end(a_share):
    tok, model = tiny_pair(0)
    predictor = KronosPredictor(model, tok, device="cpu", max_context=256)
    context = a_share.iloc[-300:]  # longer than max_context: the spec's sliding window
    fc = predictor.forecast(context, pred_len=24, sample_count=8, seed=0)
    assert fc.paths.shape == (8, 24, 6) and np.isfinite(fc.paths).all()
    assert fc.index[0] == context["timestamps"].iloc[-1] + pd.Timedelta(minutes=5)
    last = context.iloc[-1][list(fc.columns)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(fc.last.to_numpy(dtype=np.float32), last)
    greedy = predictor.predict(context, context["timestamps"], fc.index, pred_len=24, top_k=1,
                               verbose=False)
    # Outputs live on the context's scale (normalisation is undone per column).
    lo, hi = context["close"].min(), context["close"].max()
    span = hi - lo
    assert greedy["close"].between(lo - 10 * span, hi + 10 * span).all()

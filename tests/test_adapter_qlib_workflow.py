"""KronosModel and KronosDataHandler in a real Qlib dataset, and `qrun` on the example workflow,
with a tiny random-weight model (kronos_quant.testing) on a generated provider directory."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")

from kronos_quant.adapters import qlib as kq  # noqa: E402
from kronos_quant.adapters.qlib_data import init_qlib, write_provider  # noqa: E402

from kronos_quant.data import synthetic_panel  # noqa: E402
from kronos_quant.testing import save_tiny_pair  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "qlib_workflow.yaml"
SEGMENTS = {"train": ("2022-01-03", "2022-03-31"), "valid": ("2022-04-01", "2022-04-29"),
            "test": ("2022-05-02", "2022-05-20")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("qlib_wf")
    panel = synthetic_panel(6, 110, seed=2, predictable=0.3)
    write_provider(panel, root / "provider", verbose=False)
    tok, model = save_tiny_pair(root / "tiny")
    return root, panel, tok, model


def _dataset(root: Path, end: str = "2022-06-03"):
    from qlib.data.dataset import DatasetH

    init_qlib(root / "provider", region="us")
    handler = kq.KronosDataHandler(instruments="all", start_time="2022-01-03", end_time=end)
    return DatasetH(handler=handler, segments=SEGMENTS)


def _model(tok, model, lookback: int = 24, **kw):
    return kq.KronosModel(model=model, tokenizer=tok, lookback=lookback, pred_len=2,
                          sample_count=2, seed=7, **kw)


def test_handler_gives_raw_bars_and_label(setup):
    root, panel, _, _ = setup
    from qlib.data.dataset.handler import DataHandlerLP

    ds = _dataset(root)
    raw = ds.handler.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)
    bars = kq.handler_panel(raw)
    expected = panel[panel.index.get_level_values("datetime") <= pd.Timestamp("2022-06-03")]
    np.testing.assert_array_equal(bars.to_numpy(np.float32), expected.to_numpy(np.float32))
    label = ds.prepare("test", col_set="label", data_key=DataHandlerLP.DK_R)["LABEL0"]
    close = panel["close"].unstack()
    want = (close.shift(-2) / close.shift(-1) - 1).stack().reindex(label.index)
    np.testing.assert_allclose(label.to_numpy(), want.to_numpy(), atol=1e-6)


def test_tiny_model_predicts_cached_and_backtests(setup, tmp_path):
    root, _, tok, model = setup
    ds = _dataset(root)
    m = _model(tok, model, cache_dir=str(tmp_path / "cache")).fit(ds)
    pred = m.predict(ds)
    assert pred.index.names == ["datetime", "instrument"] and pred.name == "score"
    days = pred.index.get_level_values("datetime")
    assert days.min() == pd.Timestamp("2022-05-02") and days.max() == pd.Timestamp("2022-05-20")
    assert len(pred) == 15 * 6 and np.isfinite(pred).all() and pred.std() > 0
    # Cache honoured: a second run gives the same scores without calling the model.
    def refuse(*args, **kwargs):
        raise AssertionError("model called despite a warm cache")
    m.predictor.forecast_batch = m.predictor.forecast_arrays = refuse
    pd.testing.assert_series_equal(m.predict(ds), pred)
    # The scores of a segment do not depend on data after it.
    later = (_model(tok, model).fit(_dataset(root, end="2022-05-20"))
             .predict(_dataset(root, end="2022-05-20")))
    pd.testing.assert_series_equal(later, pred)
    result = kq.run_topk_dropout(pred, root / "provider", topk=2, n_drop=1, benchmark="SYN000",
                                 region="us", verbose=False)
    assert len(result.report) == 15 and (result.holdings > 0).sum(axis=1).max() == 2
    clone = pickle.loads(pickle.dumps(m))
    assert type(clone).__name__ == "KronosModel" and clone._predictor is None
    assert clone.options == m.options


def test_finetune_when_configured(setup, tmp_path):
    root, _, tok, model = setup
    ds = _dataset(root)
    # Windows of 19 bars fit in the 21-day valid segment, the validation split.
    m = _model(tok, model, lookback=16, finetune={"max_steps": 2, "batch_size": 8, "val_windows": 8,
                                     "out_dir": str(tmp_path / "ft"), "progress": False})
    m.fit(ds)
    assert Path(m.model).is_relative_to(tmp_path / "ft")
    assert (Path(m.model) / "model.safetensors").exists()
    assert np.isfinite(m.predict(ds)).all()


def test_missing_segment_is_named(setup):
    root, _, tok, model = setup
    with pytest.raises(ValueError, match="no segment 'holdout'"):
        _model(tok, model).fit(_dataset(root)).predict(_dataset(root), segment="holdout")


def test_qrun_runs_the_example_workflow(tmp_path):
    # A provider written from plain OHLCV (no amount), as most users' data is: the handler's
    # $amount reads as NaN and the forecasts derive amount as for any panel without it.
    panel = synthetic_panel(20, 300, seed=0, predictable=0.3).drop(columns="amount")
    write_provider(panel, tmp_path / "provider", verbose=False)
    assert not list((tmp_path / "provider" / "features").glob("*/amount.day.bin"))
    tok, model = save_tiny_pair(tmp_path / "tiny")
    env = dict(os.environ, KRONOS_QLIB_DATA=str(tmp_path / "provider"), KRONOS_MODEL=str(model),
               KRONOS_TOKENIZER=str(tok), KRONOS_LOOKBACK="32", KRONOS_SAMPLES="2",
               KRONOS_TEST_START="2023-02-01", MLFLOW_ALLOW_FILE_STORE="true",
               GIT_PYTHON_REFRESH="quiet")
    qrun = Path(sys.executable).with_name("qrun")
    # Run by this interpreter: a copied virtualenv's script may name another one.
    done = subprocess.run([sys.executable, str(qrun), str(WORKFLOW)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    artifacts = {p.name for p in (tmp_path / "mlruns").rglob("*.pkl")}
    assert {"pred.pkl", "ic.pkl", "port_analysis_1day.pkl", "report_normal_1day.pkl"} <= artifacts
    pred = pd.read_pickle(next((tmp_path / "mlruns").rglob("pred.pkl")))
    assert pred.index.names == ["datetime", "instrument"]
    assert len(pred) == 18 * 20  # 2023-02-01 … 02-24

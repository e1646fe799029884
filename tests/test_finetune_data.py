"""Finetuning data: config parsing, look-ahead-free windows, time split, sampling, errors."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from kronos_quant.data import panel_to_frames, synthetic_panel
from kronos_quant.finetune import FinetuneConfig, build_windows, load_training_panel
from kronos_quant.finetune.config import parse_overrides
from kronos_quant.finetune.dataset import epoch_order, shard


def _cfg(**kw) -> FinetuneConfig:
    base = dict(task="tokenizer", lookback=16, pred_len=4, val_fraction=0.25, progress=False)
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(3, 120, seed=3)


def test_config_from_yaml_flags_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("task: predictor\ntokenizer: some/tok\nlr: 1e-4\nlookback: 64\n"
                    "instruments: [A, B]\n")
    cfg = FinetuneConfig.from_sources(path, values={"lookback": "32", "epochs": None},
                                      overrides=["amp=bf16", "compile=true", "max_steps=5"])
    assert (cfg.lr, cfg.lookback, cfg.epochs, cfg.amp) == (1e-4, 32, 1, "bf16")
    assert cfg.compile is True and cfg.max_steps == 5 and cfg.instruments == ["A", "B"]
    saved = FinetuneConfig.from_sources(cfg.save_yaml(tmp_path / "out.yaml"))
    assert saved == cfg


@pytest.mark.parametrize("kwargs, message", [
    (dict(bogus=1), "unknown finetune config keys ['bogus']"),
    (dict(lookback="many"), "lookback must be int"),
    (dict(lookback=500, pred_len=20, max_context=512), "lookback + pred_len + 1 = 521"),
    (dict(task="predictor"), "needs `tokenizer`"),
    (dict(amp="fp8"), "amp must be one of"),
    (dict(val_fraction=1.0), "val_fraction must be in [0, 1)"),
])
def test_config_errors_name_the_problem(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        FinetuneConfig.from_dict({"task": "tokenizer", **kwargs})
    assert message in str(err.value)


def test_override_syntax_error():
    with pytest.raises(ValueError, match="not of the form key=value"):
        parse_overrides(["lr"])


def test_changing_the_future_leaves_the_normalised_lookback_unchanged(panel):
    cfg = _cfg(val_fraction=0.0)
    train, _ = build_windows(panel, cfg)
    k = len(train) // 2
    name, start = train.instrument[k], train.starts[k]
    x0, s0 = train.batch(np.array([k]))
    # Multiply every bar after the lookback of window k by 10: level and scale of the future.
    frames = panel_to_frames(panel)
    first_row = start - sum(len(f) for n, f in frames.items() if n < name)
    future = frames[name].index[first_row + cfg.lookback:]
    changed = panel.copy()
    rows = (changed.index.get_level_values("instrument") == name) & \
        changed.index.get_level_values("datetime").isin(future)
    changed.loc[rows] = changed.loc[rows] * 10.0
    train2, _ = build_windows(changed, cfg)
    x1, s1 = train2.batch(np.array([k]))
    lb = cfg.lookback
    assert np.array_equal(x0[:, :lb].numpy(), x1[:, :lb].numpy())
    assert np.array_equal(s0.numpy(), s1.numpy())
    assert not np.allclose(x0[:, lb:].numpy(), x1[:, lb:].numpy())
    # The lookback is standardised by its own statistics (before clipping).
    assert np.abs(x0[0, :lb].mean(0).numpy()).max() < 1e-3


def test_time_split_with_embargo_keeps_parts_apart(panel):
    cfg = _cfg(embargo=3)
    train, val = build_windows(panel, cfg)
    stamps = panel_to_frames(panel)["SYN000"].index
    w = cfg.window

    def bounds(ws):
        own = ws.instrument == "SYN000"
        return stamps[ws.starts[own]], stamps[ws.starts[own] + w - 1]

    _, train_last = bounds(train)
    val_first, _ = bounds(val)
    split = stamps[int(len(stamps) * 0.75)]
    assert train_last.max() < split
    assert val_first.min() == stamps[int(len(stamps) * 0.75) + 3]


def test_epoch_order_is_deterministic_and_shards_are_disjoint():
    a, b = epoch_order(100, epoch=1, seed=5), epoch_order(100, epoch=1, seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, epoch_order(100, epoch=2, seed=5))
    assert len(epoch_order(100, epoch=0, seed=5, count=30)) == 30
    shards = [shard(a, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 33 for s in shards)
    assert len(set(np.concatenate(shards))) == 99


def test_windows_longer_than_the_data(panel):
    with pytest.raises(ValueError, match="longer than the data: the longest instrument has 120"):
        build_windows(panel, _cfg(lookback=110, pred_len=20))


def test_validation_part_too_short(panel):
    with pytest.raises(ValueError, match="holds no complete window"):
        build_windows(panel, _cfg(val_fraction=0.1))


def test_empty_data(tmp_path, panel):
    empty = tmp_path / "empty.csv"
    empty.write_text("datetime,instrument,open,high,low,close,volume\n")
    with pytest.raises(ValueError, match="contains no rows|empty"):
        load_training_panel(_cfg(data=str(empty)))
    csv = tmp_path / "panel.csv"
    panel.reset_index().to_csv(csv, index=False)
    with pytest.raises(ValueError, match="no bars left after filtering"):
        load_training_panel(_cfg(data=str(csv), start="2030-01-01"))
    with pytest.raises(ValueError, match="`data` is required"):
        load_training_panel(_cfg())


def test_loads_csv_and_per_symbol_directory(tmp_path, panel):
    csv = tmp_path / "panel.csv"
    panel.reset_index().to_csv(csv, index=False)
    folder = tmp_path / "symbols"
    folder.mkdir()
    for name, frame in panel_to_frames(panel).items():
        frame.to_csv(folder / f"{name}.csv", index_label="datetime")
    a = load_training_panel(_cfg(data=str(csv), instruments=["SYN001"]))
    b = load_training_panel(_cfg(data=str(folder), instruments=["SYN001"]))
    assert list(a.index.get_level_values("instrument").unique()) == ["SYN001"]
    pd.testing.assert_frame_equal(a, b, check_exact=False)
    with pytest.raises(ValueError, match=r"instruments \['NOPE'\] are not in the data"):
        load_training_panel(_cfg(data=str(csv), instruments=["NOPE"]))


def test_qlib_without_adapter_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kronos_quant.adapters.qlib_data", None)  # import fails
    with pytest.raises(ValueError, match=r"kronos-quant\[qlib\]"):
        load_training_panel(_cfg(data=str(tmp_path), data_format="qlib"))


def test_qlib_provider_directory_is_read_through_the_adapter(tmp_path):
    pytest.importorskip("qlib")
    from kronos_quant.adapters.qlib_data import write_provider

    panel = synthetic_panel(3, 60, seed=4)
    write_provider(panel, tmp_path / "qlib", verbose=False)
    loaded = load_training_panel(_cfg(data=str(tmp_path / "qlib"), data_format="qlib"))
    assert sorted(loaded.index.get_level_values("instrument").unique()) == ["SYN000", "SYN001",
                                                                            "SYN002"]
    # Qlib stores float32: the bars come back at float32 precision, on the same dates.
    want = panel["close"].astype("float32").astype("float64")
    got = loaded["close"]
    assert got.index.equals(want.index)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())

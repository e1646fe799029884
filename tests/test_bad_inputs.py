"""No plausible wrong number: every input mistake is refused with one clear message, or works
with a warning that names it (issue 19).

First the cases found by trying the package as a new user (each failed before its fix), then
``BAD_INPUTS``: one row per mistake, each asserting the exact message or warning.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kronos_quant import KronosPredictor, TradeSpec, inputs
from kronos_quant.data import load_panel, panel_from_frames, synthetic_panel
from kronos_quant.hub import TRAINING_NAME, trained_context, write_training_record
from kronos_quant.inputs import MIN_CONTEXT
from kronos_quant.portfolio import target_weights
from kronos_quant.signals import baseline_scores, evaluate, score_panel
from kronos_quant.testing import random_walk_bars

ASSETS = Path(__file__).resolve().parents[1] / "kronos_quant" / "assets" / "demo"


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    """Warn-once notices as in a fresh process, so each row sees its own warning."""
    monkeypatch.setattr(inputs, "_WARNED", set())


def _bars(n: int = 40, **kw) -> pd.DataFrame:
    return random_walk_bars(n, **kw)


def _with(df: pd.DataFrame, row: int, **values: Any) -> pd.DataFrame:
    out = df.copy()
    for col, value in values.items():
        if isinstance(value, str) and out[col].dtype != object:
            out[col] = out[col].astype(object)
        out.iloc[row, out.columns.get_loc(col)] = value
    return out


def _long_csv(n: int = 30, names: tuple[str, ...] = ("AAA", "BBB"), *, fmt: str = "%Y-%m-%d",
              extra: str = "") -> str:
    """A long-format CSV text: datetime,instrument,open,high,low,close,volume[,extra]."""
    lines = ["datetime,instrument,open,high,low,close,volume" + (f",{extra}" if extra else "")]
    for k, name in enumerate(names):
        bars = _bars(n, seed=k)
        for ts, row in bars.iterrows():
            cells = [f"{ts:{fmt}}", name] + [f"{row[c]:.4f}" for c in
                                             ("open", "high", "low", "close", "volume")]
            if extra:
                cells.append(f"{row['close']:.4f}")
            lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- found cases
def test_case1_demo_checkpoint_carries_its_training_context_and_longer_asks_are_warned(caplog):
    """The demo model was trained on 120 + 20 bar windows; it used to get max_context 512 and
    forecast a 628-bar frame silently (GOOG: -19.5% in five days, P(up) 0.00)."""
    model, tok = ASSETS / "model", ASSETS / "tokenizer"
    assert trained_context(model) == 140
    assert trained_context("NeoQuasar/Kronos-small") == 512
    assert trained_context("NeoQuasar/Kronos-mini") == 2048
    predictor = KronosPredictor.from_pretrained(str(model), str(tok), device="cpu")
    assert predictor.max_context == predictor.trained_context == 140
    with caplog.at_level(logging.WARNING):
        wide = KronosPredictor.from_pretrained(str(model), str(tok), device="cpu",
                                               max_context=512)
    assert wide.max_context == 512
    assert [r.getMessage() for r in caplog.records if "max_context=512" in r.getMessage()] == [
        f"max_context=512 is longer than the 140-bar context {wide.model_label} was trained on: "
        "forecasts from longer contexts extrapolate beyond its training"]
    caplog.clear()
    long = _bars(200, freq="B")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # said once per process
            predictor.forecast(long, pred_len=2, sample_count=1, seed=0)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == ["context of 200 bars exceeds max_context=140: normalised over all 200 bars "
                    "(as the reference does) while the model attends to the last 140; pass at "
                    "most 140 bars to forecast on the scale the model was trained on"]


def test_case1_finetuned_checkpoints_record_their_window(tmp_path, tiny_dirs):
    from kronos_quant.finetune import FinetuneConfig
    from kronos_quant.finetune.tasks import PredictorTask

    tok_dir, model_dir = tiny_dirs
    config = FinetuneConfig(task="predictor", init=str(model_dir), tokenizer=str(tok_dir),
                            lookback=24, pred_len=4, progress=False)
    import torch

    PredictorTask(config, torch.device("cpu")).save(tmp_path / "best")
    assert (tmp_path / "best" / TRAINING_NAME).is_file()
    assert trained_context(tmp_path / "best") == 28
    loaded = KronosPredictor.from_pretrained(str(tmp_path / "best"), str(tok_dir), device="cpu")
    assert loaded.max_context == 28
    assert trained_context(model_dir) is None  # no record: the predictor falls back to 512
    assert KronosPredictor.from_pretrained(str(model_dir), str(tok_dir)).max_context == 512


def test_case1_a_broken_training_record_is_named(tmp_path):
    (tmp_path / TRAINING_NAME).write_text('{"lookback": 5}')
    with pytest.raises(ValueError) as info:
        trained_context(tmp_path)
    assert str(info.value) == f"{tmp_path / TRAINING_NAME} is not a training record ('context')"
    write_training_record(tmp_path, lookback=90, pred_len=10)
    assert trained_context(tmp_path) == 100


def test_case2_short_contexts_are_refused_and_lookback_beyond_max_context_too(predictor):
    with pytest.raises(ValueError) as info:
        predictor.forecast(_bars(10), pred_len=2)
    assert str(info.value) == (f"context has 10 bar(s); forecasting needs at least {MIN_CONTEXT} "
                               "(MIN_CONTEXT): a mean and standard deviation over fewer bars "
                               "make the normalised inputs noise")
    predictor.forecast(_bars(MIN_CONTEXT), pred_len=2, sample_count=1)  # the minimum works
    with pytest.raises(ValueError, match="lookback=40 is longer than the predictor's "
                                         "max_context=32"):
        score_panel(predictor, synthetic_panel(3, 60), lookback=40, pred_len=2, sample_count=1)


def test_case3_impossible_bars_are_refused_or_clipped_with_a_log(predictor, caplog):
    bars = _with(_bars(), 7, high=9.0, low=9.5)
    with pytest.raises(ValueError) as info:
        predictor.forecast(bars, pred_len=2)
    row = bars.iloc[7]
    assert str(info.value) == (
        f"impossible bar at row 7 ({bars.index[7]}): open {row['open']:g}, high 9, low 9.5, "
        f"close {row['close']:g} {RULES}")
    with caplog.at_level(logging.WARNING):
        fc = predictor.forecast(bars, pred_len=2, sample_count=1, repair="clip")
    prices = row[["open", "high", "low", "close"]].to_numpy(float)
    top, bottom = max(prices.max(), 9.5), min(prices.min(), 9.0)
    assert fc.history["high"].iloc[7] == pytest.approx(top, rel=1e-6)
    assert fc.history["low"].iloc[7] == pytest.approx(bottom, rel=1e-6)
    assert (f"repair='clip' widened 1 impossible bar(s): row 7 ({bars.index[7]}): high 9 -> "
            f"{top:g}, low 9.5 -> {bottom:g}") in caplog.text


def test_case3_adjusted_close_is_named_in_a_warning(predictor, caplog):
    bars = _bars().assign(**{"Adj Close": lambda d: d["close"] * 0.5})
    with caplog.at_level(logging.WARNING):
        predictor.forecast(bars, pred_len=2, sample_count=1)
    assert ("column 'Adj Close' is not used: forecasts read open/high/low/close as given; if "
            "those are unadjusted, splits and dividends look like price jumps (scale open/high/"
            "low/close by 'Adj Close' / close first)") in caplog.text


def test_case5_day_first_dates_get_a_format_option(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text(_long_csv(30, fmt="%d/%m/%Y"))
    with pytest.raises(ValueError) as info:
        load_panel(path)
    assert str(info.value) == (f"{path}, instrument 'AAA': column 'datetime': '13/01/2024' at "
                               "row 12 does not match the date format '%m/%d/%Y' of the first "
                               "rows; day-first dates? set the date format (date_format= / "
                               "--date-format), e.g. '%d/%m/%Y'")
    panel = load_panel(path, date_format="%d/%m/%Y")
    assert panel.index.get_level_values(0)[-1] == pd.Timestamp("2024-01-31")


def test_case5_integer_epoch_stamps_in_the_api_get_the_csv_hint(predictor):
    bars = _bars()
    epoch = bars.set_axis(bars.index.as_unit("s").asi8, axis=0)
    with pytest.raises(ValueError) as info:
        predictor.forecast(epoch, pred_len=2)
    assert str(info.value) == ("no timestamps: the index holds integers (e.g. 1704153600) that "
                               "are not YYYYMMDD dates: epoch stamps? convert them first, e.g. "
                               "pd.to_datetime(values, unit='s')")


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    from kronos_quant.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_case4_cli_messages_name_the_files_rows_and_no_api_argument(tmp_path):
    """A bad bar inside the --lookback window is named by its row in the file (it was the
    window's position), and a CLI user never reads ``x_timestamp``."""
    bars = _bars(200, freq="B").reset_index().rename(columns={"timestamps": "Date"})
    bars.loc[189, "high"] = bars.loc[189, "low"] * 0.5  # the file's data row 190
    bars.loc[194, "Date"] = bars.loc[193, "Date"]  # and row 195 repeats row 194's stamp
    path = tmp_path / "bars.csv"
    bars.to_csv(path, index=False)
    base = ["forecast", "--input", str(path), "--samples", "2", "--pred-len", "2",
            "--out", str(tmp_path / "out")]
    code, _, err = _run_cli([*base, "--lookback", "20"])
    assert code == 2
    assert err.startswith(f"kronos-quant forecast: error: {path}: column 'Date' has a duplicate "
                          f"timestamp at row 195: {bars.loc[193, 'Date']} then")
    assert "x_timestamp" not in err
    bars.loc[194, "Date"] = bars.loc[194, "Date"] + pd.Timedelta(hours=12)
    bars.to_csv(path, index=False)
    code, _, err = _run_cli([*base, "--lookback", "20"])
    assert code == 2 and f"impossible bar at row 190 ({bars.loc[189, 'Date']})" in err


def test_case7_forecast_cli_reads_like_score(tmp_path, monkeypatch):
    """--calendar, a MultiIndex Parquet with --instrument, and a long file without
    --instrument refused before any model loads."""
    from kronos_quant import assets

    pytest.importorskip("exchange_calendars")
    panel = synthetic_panel(3, 60, seed=4, start="2022-01-21")  # ends Thursday 2022-04-14
    panel.to_parquet(tmp_path / "panel.parquet")  # (datetime, instrument) MultiIndex
    loads = []
    real = assets.demo_predictor
    monkeypatch.setattr(assets, "demo_predictor", lambda *a, **k: loads.append(1) or real(*a, **k))
    base = ["forecast", "--input", str(tmp_path / "panel.parquet"), "--samples", "2",
            "--pred-len", "3", "--out", str(tmp_path / "out")]
    code, _, err = _run_cli(base)
    assert code == 2 and "holds 3 series in column 'instrument'" in err and loads == []
    code, out, _ = _run_cli([*base, "--instrument", "SYN001", "--calendar", "XNYS"])
    assert code == 0 and loads == [1]
    summary = pd.read_json(tmp_path / "out" / "summary.json", typ="series")
    assert summary["series"] == "SYN001"
    assert summary["last_close"] == pytest.approx(panel.xs("SYN001", level=1)["close"].iloc[-1])
    assert pd.Timestamp(summary["last_timestamp"]) == pd.Timestamp("2022-04-14")
    # Good Friday 2022-04-15 is a weekday but not an XNYS session: the horizon skips it.
    assert pd.Timestamp(summary["horizon_timestamp"]) == pd.Timestamp("2022-04-20")


def test_case7_evaluate_without_scores_scores_with_the_embedded_model(tmp_path):
    panel = synthetic_panel(4, 40, seed=6)
    panel.reset_index().to_csv(tmp_path / "panel.csv", index=False)
    code, out, err = _run_cli(["-q", "evaluate", "--panel", str(tmp_path / "panel.csv"),
                               "--horizon", "2", "--lookback", "30", "--samples", "2",
                               "--signals", "expected_return"])
    assert code == 0, err
    assert "model: kronos-quant demo model" in out and "score metadata (scored here):" in out
    assert "  max_context: 140" in out and "  pred_len: 2" in out
    assert "expected_return" in out.split("L/S =")[1]


def test_case8_pit_histogram_bins_are_filled_by_few_paths_and_turnover_names_its_set(tmp_path):
    """With 4 paths the PIT takes 5 values: 10 plain bins left every other one empty, so a
    calibrated forecast looked broken. Slots spread over the bins fill them evenly."""
    from kronos_quant.signals import pit_histogram, pit_values

    rng = np.random.default_rng(0)
    draws = rng.standard_normal((20_000, 5))  # realised value and 4 paths, one distribution
    pit = pit_values(draws[:, 1:], draws[:, 0])
    plain = pit_histogram(pit)
    assert (plain == 0).sum() == 5  # the bug: half the bins can never be reached
    spread = pit_histogram(pit, samples=4)
    assert spread.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(spread.to_numpy(), 0.1, atol=0.01)  # calibrated: flat
    # A forecast too narrow (all paths near the centre) still shows the U shape.
    narrow = pit_values(0.2 * draws[:, 1:], draws[:, 0])
    shape = pit_histogram(narrow, samples=4).to_numpy()
    assert shape[0] > 0.2 and shape[-1] > 0.2 and shape[4] < 0.1
    scores = SCORES.to_frame()
    scores.to_parquet(tmp_path / "s.parquet")
    PANEL.reset_index().to_csv(tmp_path / "panel.csv", index=False)
    code, out, _ = _run_cli(["evaluate", "--scores", str(tmp_path / "s.parquet"), "--panel",
                             str(tmp_path / "panel.csv"), "--horizon", "1", "--top-k", "2"])
    assert code == 0 and out.count("execution next_open") == 1
    assert "turnover of the top-2 set per rebalance" in out


# ----------------------------------------------------------------------------- the table
@dataclass
class Ctx:
    tmp: Path
    predictor: KronosPredictor

    def csv(self, text: str | bytes, name: str = "bars.csv") -> Path:
        path = self.tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path


@dataclass
class Row:
    id: str
    call: Callable[[Ctx], Any]
    message: str  # exact; {tmp} is the row's folder
    # None: a warning (a logged WARNING line); a Warning class: a warnings.warn of it;
    # CLI: the command's last stderr line, exit 2.
    error: type[Exception] | str | None = ValueError


CLI = "cli"


def _fc(df: pd.DataFrame, **kw) -> Callable[[Ctx], Any]:
    return lambda c: c.predictor.forecast(df, **{"pred_len": 2, "sample_count": 1, **kw})


B = _bars()
T7 = B.index[7]


def _row_text(df: pd.DataFrame, i: int) -> str:
    r = df.iloc[i]
    return f"open {r['open']:g}, high {r['high']:g}, low {r['low']:g}, close {r['close']:g}"


RULES = "(high must be >= open, close and low; low <= open and close); fix the data or pass " \
        "repair='clip' (--repair clip)"
HIGH_LOW = _with(B, 7, high=9.0, low=9.5)
HIGH_CLOSE = _with(B, 7, high=float(B["close"].iloc[7]) * 0.99)
LOW_OPEN = _with(B, 7, low=float(B["open"].iloc[7]) * 1.01)
SPLIT = B.copy()
SPLIT.iloc[20:, :4] = SPLIT.iloc[20:, :4] * 0.5
GAP = (SPLIT["open"].iloc[20] / SPLIT["close"].iloc[19] - 1) * 100
MIXED_TZ = B.reset_index().assign(timestamps=[f"{t:%Y-%m-%d} 09:30{'+08:00' if i % 2 else '+00:00'}"
                                              for i, t in enumerate(B.index)])

FORECAST_ROWS = [
    Row("forecast: high below low", _fc(HIGH_LOW),
        f"impossible bar at row 7 ({T7}): {_row_text(HIGH_LOW, 7)} {RULES}"),
    Row("forecast: high below close", _fc(HIGH_CLOSE),
        f"impossible bar at row 7 ({T7}): {_row_text(HIGH_CLOSE, 7)} {RULES}"),
    Row("forecast: low above open", _fc(LOW_OPEN),
        f"impossible bar at row 7 ({T7}): {_row_text(LOW_OPEN, 7)} {RULES}"),
    Row("forecast: a slice names rows as in its frame (case 4)",
        _fc(_with(B.reset_index(), 30, close=-1.0).iloc[-20:]),
        f"column 'close' has non-positive price -1.0 at row 30 ({B.index[30]})"),
    Row("forecast: unknown repair", _fc(B, repair="drop"),
        "repair must be None or one of ['clip'], got 'drop'"),
    Row("forecast: too short", _fc(_bars(10)),
        "context has 10 bar(s); forecasting needs at least 16 (MIN_CONTEXT): a mean and "
        "standard deviation over fewer bars make the normalised inputs noise"),
    Row("forecast: constant series", _fc(B.assign(open=12.5, high=12.5, low=12.5, close=12.5)),
        "every price is 12.5 on all 40 bars: a constant series has nothing to forecast from "
        "(normalised, it is all zeros)"),
    Row("forecast: text in prices", _fc(_with(B, 3, close="n/a")),
        "column 'close' is not numeric: value 'n/a' at row 3", TypeError),
    Row("forecast: thousands separators", _fc(_with(B, 3, close="1,234.5")),
        "column 'close' is not numeric: value '1,234.5' at row 3; thousands separators? read "
        "the file with thousands=',' or remove them", TypeError),
    Row("forecast: NaN price", _fc(_with(B, 5, close=np.nan)),
        f"column 'close' has non-finite value nan at row 5 ({B.index[5]})"),
    Row("forecast: infinite volume", _fc(_with(B, 6, volume=np.inf)),
        f"column 'volume' has non-finite value inf at row 6 ({B.index[6]})"),
    Row("forecast: zero price", _fc(_with(B, 2, low=0.0)),
        f"column 'low' has non-positive price 0.0 at row 2 ({B.index[2]})"),
    Row("forecast: negative volume", _fc(_with(B, 4, volume=-1.0)),
        f"column 'volume' has negative value -1.0 at row 4 ({B.index[4]})"),
    Row("forecast: boolean column", _fc(B.assign(volume=True)),
        "column 'volume' must be numeric, got dtype bool", TypeError),
    Row("forecast: missing price columns", _fc(B.drop(columns=["low"])),
        "missing price columns ['low']; required: ['open', 'high', 'low', 'close'], columns are "
        "['open', 'high', 'close', 'volume']"),
    Row("forecast: two close columns", _fc(B.assign(Close=B["close"])),
        "columns 'close' and 'Close' both match 'close'; keep one"),
    Row("forecast: adjusted close", _fc(B.assign(adj_close=B["close"])),
        "column 'adj_close' is not used: forecasts read open/high/low/close as given; if those "
        "are unadjusted, splits and dividends look like price jumps (scale open/high/low/close "
        "by 'adj_close' / close first)", None),
    Row("forecast: zero volume on every bar", _fc(B.assign(volume=0.0)),
        "column 'volume' is 0 on every bar: the model gets no volume information (as with no "
        "volume column)", None),
    Row("forecast: a split (50% gap)", _fc(SPLIT),
        f"row 20 ({B.index[20]}) opens at {SPLIT['open'].iloc[20]:g} after a close of "
        f"{SPLIT['close'].iloc[19]:g} ({GAP:+.0f}%): a split or other corporate action the "
        "prices are not adjusted for? the model reads it as a real move; adjust the prices "
        "first", None),
    Row("forecast: mixed time zones", _fc(MIXED_TZ),
        "column 'timestamps' mixes time zones; convert every stamp to one zone first (e.g. "
        "pd.to_datetime(values, utc=True))"),
    Row("forecast: epoch milliseconds index", _fc(B.set_axis(B.index.as_unit("ms").asi8, axis=0)),
        "no timestamps: the index holds integers (e.g. 1704153600000) that are not YYYYMMDD "
        "dates: epoch stamps? convert them first, e.g. pd.to_datetime(values, unit='ms')"),
    Row("forecast: float index", _fc(B.set_axis(np.arange(40) + 0.5, axis=0)),
        "no timestamps: the index holds numbers (e.g. 0.5), not dates; convert them with "
        "pd.to_datetime first"),
    Row("forecast: epoch seconds column",
        _fc(B.reset_index().assign(timestamps=B.index.as_unit("s").asi8)),
        "column 'timestamps' holds integers (e.g. 1704153600) that are not YYYYMMDD dates: "
        "epoch stamps? convert them first, e.g. pd.to_datetime(values, unit='s')"),
    Row("forecast: day-first text dates",
        _fc(B.reset_index().assign(timestamps=[f"{t:%d/%m/%Y}" for t in B.index])),
        "column 'timestamps': '13/01/2024' at row 11 does not match the date format "
        "'%m/%d/%Y' of the first rows; day-first dates? set the date format (date_format= / "
        "--date-format), e.g. '%d/%m/%Y'"),
    Row("forecast: a word among dates",
        _fc(B.reset_index().assign(timestamps=lambda d: d["timestamps"].astype(str))
            .pipe(lambda d: _with(d, 9, timestamps="yesterday"))),
        "column 'timestamps': 'yesterday' at row 9 does not match the date format '%Y-%m-%d' "
        "of the first rows; fix the value or set the date format (date_format= / "
        "--date-format)"),
    Row("forecast: missing timestamp",
        _fc(B.reset_index().pipe(lambda d: _with(d, 4, timestamps=pd.NaT))),
        "column 'timestamps' has a missing timestamp at row 4"),
    Row("forecast: duplicate timestamp", _fc(B.iloc[[0, 1, 1, *range(2, 40)]]),
        f"the index has a duplicate timestamp at position 2: {B.index[1]} then {B.index[1]}"),
    Row("forecast: unsorted timestamps", _fc(B.iloc[[0, 2, 1, *range(3, 40)]]),
        f"the index has a non-increasing timestamp at position 2: {B.index[2]} then "
        f"{B.index[1]}"),
    Row("forecast: newest first", _fc(B.iloc[::-1]),
        f"the index: timestamps run newest first ({B.index[-1]} … {B.index[0]}): sort the rows "
        "oldest first (e.g. df.sort_index() or df.sort_values(column))"),
    Row("forecast: no timestamps", _fc(B.reset_index(drop=True)),
        "no timestamps: no DatetimeIndex and no datetime column (one of ['datetime', "
        "'timestamps', 'timestamp', 'date', 'time']); columns are ['open', 'high', 'low', "
        "'close', 'volume']"),
    Row("forecast: two datetime columns", _fc(B.reset_index().assign(date=B.index)),
        "ambiguous datetime columns ['timestamps', 'date']; keep one or name it explicitly"),
    Row("forecast: x_timestamp of another length",
        _fc(B, x_timestamp=B.index[:30]), "x_timestamp has 30 entries for 40 rows"),
    Row("forecast: y_timestamp of another length",
        _fc(B, y_timestamp=pd.date_range("2030-01-01", periods=5)),
        "y_timestamp has 5 entries but pred_len is 2"),
    Row("forecast: y_timestamp inside the context",
        _fc(B, y_timestamp=B.index[-2:]),
        f"y_timestamp starts at {B.index[-2]}, not after the last context bar {B.index[-1]}: "
        "forecasts are for the bars after the context"),
    Row("forecast: y_timestamp out of order",
        _fc(B, pred_len=3, y_timestamp=pd.DatetimeIndex(["2030-01-02", "2030-01-04",
                                                         "2030-01-03"])),
        "y_timestamp has a non-increasing timestamp at position 2: 2030-01-04 00:00:00 then "
        "2030-01-03 00:00:00"),
    Row("forecast: pred_len beyond max_context", _fc(B, pred_len=33),
        "pred_len must be an integer in 1..32, got 33"),
    Row("forecast: no sample paths", _fc(B, sample_count=0),
        "sample_count must be an integer ≥ 1, got 0"),
    Row("forecast: top_p above one", _fc(B, top_p=1.5), "top_p must be in (0, 1], got 1.5"),
    Row("forecast: an array, not a frame", _fc(B.to_numpy()),
        "expected a pandas DataFrame, got ndarray", TypeError),
    Row("forecast: empty frame", _fc(B.iloc[:0]), "the DataFrame is empty"),
    Row("forecast: context longer than max_context", _fc(_bars(50)),
        "context of 50 bars exceeds max_context=32: normalised over all 50 bars (as the "
        "reference does) while the model attends to the last 32; pass at most 32 bars to "
        "forecast on the scale the model was trained on", None),
    Row("forecast_batch: one bad series of several",
        lambda c: c.predictor.forecast_batch([B, HIGH_LOW], pred_len=2),
        f"series 1: impossible bar at row 7 ({T7}): {_row_text(HIGH_LOW, 7)} {RULES}"),
    Row("forecast_batch: a short series in a mapping",
        lambda c: c.predictor.forecast_batch({"A": B, "B": _bars(12)}, pred_len=2),
        "series 1: context has 12 bar(s); forecasting needs at least 16 (MIN_CONTEXT): a mean "
        "and standard deviation over fewer bars make the normalised inputs noise"),
    Row("forecast_batch: seeds of another length",
        lambda c: c.predictor.forecast_batch([B, B], pred_len=2, seed=[1, 2, 3]),
        "got 3 seeds for 2 series"),
]


def _load(text: str | bytes, **kw) -> Callable[[Ctx], Any]:
    return lambda c: load_panel(c.csv(text), **kw)


LONG = _long_csv()
LONG_LINES = LONG.splitlines()


def _edit(line: int, column: int, value: str) -> str:
    """LONG with one cell replaced (``line`` counts data rows from 1, as a user does)."""
    lines = list(LONG_LINES)
    cells = lines[line].split(",")
    cells[column] = value
    lines[line] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _cell(line: int, column: int) -> str:
    return LONG_LINES[line].split(",")[column]


def _stamp(line: int) -> pd.Timestamp:
    return pd.Timestamp(_cell(line, 0))


def _bar(line: int, **changes: float) -> str:
    values = dict(zip(("open", "high", "low", "close"),
                      (float(_cell(line, i)) for i in range(2, 6)), strict=True)) | changes
    return ", ".join(f"{k} {v:g}" for k, v in values.items())


WORDS_IN_CSV = _edit(35, 5, "abc")
SPLIT_CSV = "\n".join(LONG_LINES[:41] + [
    ",".join(cells[:2] + [f"{float(x) * 0.5:.4f}" for x in cells[2:6]] + cells[6:])
    for cells in (line.split(",") for line in LONG_LINES[41:])]) + "\n"

PANEL_ROWS = [
    Row("load_panel: header only", _load(LONG_LINES[0] + "\n"),
        "{tmp}/bars.csv has a header (datetime, instrument, open, high, low, close, volume) but "
        "no data rows"),
    Row("load_panel: empty file", _load(""), "{tmp}/bars.csv is empty: no header and no rows"),
    Row("load_panel: not UTF-8", _load(LONG.replace("BBB", "BÉB").encode("latin-1")),
        "{tmp}/bars.csv is not UTF-8 text (byte 0xc9 on line 32); save it as UTF-8 (e.g. "
        "iconv -f latin1 -t utf-8)"),
    Row("load_panel: impossible bar, row as in the file", _load(_edit(35, 3, "1.0")),
        f"{{tmp}}/bars.csv, instrument 'BBB': impossible bar at row 35 ({_stamp(35)}): "
        f"{_bar(35, high=1.0)} {RULES}"),
    Row("load_panel: text in a price, row as in the file", _load(WORDS_IN_CSV),
        "{tmp}/bars.csv, instrument 'BBB': column 'close' is not numeric: value 'abc' at row 35",
        TypeError),
    Row("load_panel: thousands separators",
        _load(_edit(3, 5, '"1,234.5"')),
        "{tmp}/bars.csv, instrument 'AAA': column 'close' is not numeric: value '1,234.5' at row "
        "3; thousands separators? read the file with thousands=',' or remove them", TypeError),
    Row("load_panel: day-first dates", _load(_long_csv(30, fmt="%d/%m/%Y")),
        "{tmp}/bars.csv, instrument 'AAA': column 'datetime': '13/01/2024' at row 12 does not "
        "match the date format '%m/%d/%Y' of the first rows; day-first dates? set the date "
        "format (date_format= / --date-format), e.g. '%d/%m/%Y'"),
    Row("load_panel: a wrong date_format", _load(LONG, date_format="%d/%m/%Y"),
        "{tmp}/bars.csv, instrument 'AAA': column 'datetime': '2024-01-02' at row 1 does not "
        "match the given date format '%d/%m/%Y'; fix the value or set the date format "
        "(date_format= / --date-format)"),
    Row("load_panel: mixed time zones",
        _load(LONG.replace("2024-01-03,", "2024-01-03 00:00+08:00,")
              .replace("2024-01-04,", "2024-01-04 00:00+00:00,")),
        "{tmp}/bars.csv, instrument 'AAA': column 'datetime' mixes time zones (+08:00, "
        "+00:00); convert every stamp to one zone first (e.g. pd.to_datetime(values, utc=True))"),
    Row("load_panel: epoch stamps",
        _load("\n".join([LONG_LINES[0]] + [
            ",".join([str(int(_stamp(i).timestamp()))] + LONG_LINES[i].split(",")[1:])
            for i in range(1, len(LONG_LINES))]) + "\n"),
        "{tmp}/bars.csv, instrument 'AAA': column 'datetime' holds integers (e.g. 1704153600) "
        "that are not YYYYMMDD dates: epoch stamps? convert them first, e.g. "
        "pd.to_datetime(values, unit='s')"),
    Row("load_panel: names differing in case",
        _load(LONG.replace(",BBB,", ",aaa,")),
        "instruments 'AAA' and 'aaa' differ only in case: the same symbol twice? rename one or "
        "fix the names"),
    Row("panel_from_frames: names differing in surrounding spaces",
        lambda c: panel_from_frames({"AAA": B, "AAA ": _bars(seed=3)}),
        "instruments 'AAA' and 'AAA ' differ only in surrounding spaces: the same symbol twice? "
        "rename one or fix the names"),
    Row("load_panel: missing instrument column",
        _load(LONG.replace("instrument", "name")),
        "file {tmp}/bars.csv: instrument column 'instrument' not found in ['datetime', 'name', "
        "'open', 'high', 'low', 'close', 'volume']"),
    Row("load_panel: empty instrument cell", _load(_edit(5, 1, "")),
        "file {tmp}/bars.csv: instrument column 'instrument' is empty at row 5"),
    Row("load_panel: duplicate bar", _load(LONG + LONG_LINES[3] + "\n"),
        "panel has duplicate rows for (datetime=2024-01-04 00:00:00, instrument='AAA')"),
    Row("load_panel: unsupported file type", lambda c: load_panel(c.csv(LONG, "bars.txt")),
        "unsupported file type '.txt' for {tmp}/bars.txt; expected one of ('.csv', '.parquet', "
        "'.pq')"),
    Row("load_panel: no such path", lambda c: load_panel(c.tmp / "nope.csv"),
        "panel path {tmp}/nope.csv does not exist", FileNotFoundError),
    Row("load_panel: folder without tables",
        lambda c: (c.tmp / "empty").mkdir() or load_panel(c.tmp / "empty"),
        "directory {tmp}/empty has no .csv/.parquet/.pq files"),
    Row("load_panel: adjusted close column", _load(_long_csv(extra="Adj Close")),
        "{tmp}/bars.csv, instrument 'AAA': column 'Adj Close' is not used: forecasts read "
        "open/high/low/close as given; if those are unadjusted, splits and dividends look like "
        "price jumps (scale open/high/low/close by 'Adj Close' / close first)", None),
    Row("load_panel: a split in the file", _load(SPLIT_CSV),
        f"{{tmp}}/bars.csv, instrument 'BBB': row 41 ({_stamp(41)}) opens at "
        f"{float(_cell(41, 2)) * 0.5:g} after a close of {float(_cell(40, 5)):g} (-50%): a split "
        "or other corporate action the prices are not adjusted for? the model reads it as a "
        "real move; adjust the prices first", None),
    Row("load_panel: zero volume for a whole series",
        _load("\n".join([LONG_LINES[0]] + [
            ",".join(line.split(",")[:6] + ["0"]) if ",BBB," in line else line
            for line in LONG_LINES[1:]]) + "\n"),
        "{tmp}/bars.csv, instrument 'BBB': column 'volume' is 0 on every bar: the model gets no "
        "volume information (as with no volume column)", None),
    Row("panel_from_frames: not a mapping", lambda c: panel_from_frames([B]),
        "frames must be a mapping of instrument -> DataFrame, got list", TypeError),
    Row("panel_from_frames: impossible bar", lambda c: panel_from_frames({"X": HIGH_LOW}),
        f"instrument 'X': impossible bar at row 7 ({T7}): {_row_text(HIGH_LOW, 7)} {RULES}"),
]

PANEL = synthetic_panel(4, 60, seed=1)
ONE_DATE = PANEL.loc[PANEL.index.get_level_values(0)[:1]]
SCORES = pd.Series(np.arange(len(PANEL), dtype=float), index=PANEL.index, name="s")
MIDDAY = SCORES.set_axis(SCORES.index.set_levels(
    SCORES.index.levels[0] + pd.Timedelta(hours=15), level=0), axis=0)


def _score(panel: pd.DataFrame = PANEL, **kw) -> Callable[[Ctx], Any]:
    opts = {"lookback": 16, "pred_len": 2, "sample_count": 1, "seed": 0, **kw}
    return lambda c: score_panel(c.predictor, panel, **opts)


SIGNAL_ROWS = [
    Row("score_panel: lookback beyond max_context", _score(lookback=40),
        "lookback=40 is longer than the predictor's max_context=32: the model would see only "
        "the last 32 bars of windows normalised over 40"),
    Row("score_panel: lookback below the minimum", _score(lookback=8),
        "lookback must be an integer >= 16, got 8"),
    Row("score_panel: a panel with a single date", _score(ONE_DATE),
        "too few bars for lookback=16: the longest instrument history up to 2022-01-03 "
        "00:00:00 is 1 bars; lower lookback or start later"),
    Row("score_panel: a float index", _score(PANEL.reset_index(drop=True)),
        "panel index must be a 2-level MultiIndex ('datetime', 'instrument'), got RangeIndex "
        "named [None]", TypeError),
    Row("score_panel: swapped index levels", _score(PANEL.swaplevel()),
        "panel index levels are ordered ('instrument', 'datetime'); expected ('datetime', "
        "'instrument'); fix with `panel.swaplevel().sort_index()`"),
    Row("score_panel: impossible bar in a panel",
        _score(PANEL.assign(high=PANEL["low"] * 0.99)),
        "panel: impossible bar at (datetime=2022-01-03 00:00:00, instrument='SYN000'): "
        f"{_row_text(PANEL.assign(high=PANEL['low'] * 0.99), 0)} {RULES}"),
    Row("evaluate: scores whose dates are not bar dates",
        lambda c: evaluate(MIDDAY, PANEL, horizon=1),
        "scores have rows that are not in the panel, first (Timestamp('2022-01-03 15:00:00'), "
        "'SYN000'); evaluate on the panel they were computed from"),
    Row("evaluate: horizon 0", lambda c: evaluate(SCORES, PANEL, horizon=0),
        "horizon must be >= 1, got 0"),
    Row("evaluate: one quantile", lambda c: evaluate(SCORES, PANEL, horizon=1, quantiles=1),
        "quantiles must be an integer >= 2, got 1"),
    Row("baseline_scores: a list of baseline names where the rows go",
        lambda c: baseline_scores(PANEL, ["momentum_20"]),
        "index must be a (datetime, instrument) MultiIndex (the rows to return), got list "
        "['momentum_20']; the baselines are the result's columns: select them from it",
        TypeError),
]


def _provider(panel: pd.DataFrame | Callable[[Ctx], Path], **kw) -> Callable[[Ctx], Any]:
    """Write a Qlib provider from ``panel`` (or the file ``panel(ctx)`` writes)."""
    def call(c: Ctx) -> Any:
        from kronos_quant.adapters.qlib_data import write_provider

        source = panel(c) if callable(panel) else panel
        return write_provider(source, c.tmp / "provider", verbose=False, **kw)
    return call


def _renamed(panel: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    names = panel.index.levels[1].map(lambda n: new if n == old else n)
    return panel.set_axis(panel.index.set_levels(names, level=1), axis=0).sort_index()


QLIB_ROWS = [
    Row("qlib writer: names differing only in case", _provider(_renamed(PANEL, "SYN001", "syn000")),
        "instruments 'SYN000' and 'syn000' collide: Qlib symbols are case-insensitive folder "
        "names; rename one"),
    Row("qlib writer: intraday bars in a daily provider",
        _provider(synthetic_panel(2, 12, freq="30min")),
        "instrument 'SYN000' has several bars on 2022-01-03; a daily provider holds one bar "
        "per day (resample first)"),
    Row("qlib writer: a slash in a symbol", _provider(_renamed(PANEL, "SYN001", "BTC/USDT")),
        "instrument 'BTC/USDT' cannot be a Qlib symbol (a folder name): use letters, digits, "
        "'_', '.' or '-' (e.g. rename 'BTC/USDT' to 'BTCUSDT')"),
    Row("qlib writer: a market of unknown instruments",
        _provider(PANEL, markets={"top": ["SYN000", "NOPE"]}),
        "market 'top' lists instruments without data: ['NOPE']"),
    Row("qlib writer: a factor with gaps",
        _provider(PANEL, factor=pd.Series(1.0, index=PANEL.index[1:])),
        "factor has no value for (Timestamp('2022-01-03 00:00:00'), 'SYN000')"),
    Row("qlib writer: a panel file with an impossible bar",
        _provider(lambda c: c.csv(_edit(35, 3, "1.0"))),
        f"{{tmp}}/bars.csv, instrument 'BBB': impossible bar at row 35 ({_stamp(35)}): "
        f"{_bar(35, high=1.0)} {RULES}"),
]

def _cli(*argv: str, files: dict[str, str | bytes] | None = None) -> Callable[[Ctx], Any]:
    """Run ``kronos-quant *argv`` in the row's folder ({tmp} in argv); return stderr."""
    def call(c: Ctx) -> tuple[int, str]:
        import contextlib
        import io

        from kronos_quant.cli import main

        for name, text in (files or {}).items():
            c.csv(text, name)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main([a.replace("{tmp}", str(c.tmp)) for a in argv])
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code
        return code, err.getvalue()
    return call


LIVE = ("live", "--exchange", "binance", "--timeframe", "1m", "--state", "{tmp}/s",
        "--symbol", "BTC/USDT")
ONE = _long_csv(40, ("AAA",)).replace(",AAA,", ",").replace("instrument,", "")
ONE_LINES = ONE.splitlines()
FC = ("forecast", "--input", "{tmp}/bars.csv", "--pred-len", "2", "--samples", "2",
      "--out", "{tmp}/out")
SCORE = ("score", "--panel", "{tmp}/bars.csv", "--pred-len", "2", "--samples", "2",
         "--out", "{tmp}/s.parquet")
EVAL = ("evaluate", "--scores", "{tmp}/s.parquet", "--panel", "{tmp}/bars.csv")
PANEL_CSV = PANEL.reset_index().to_csv(index=False)

CLI_ROWS = [
    Row("forecast CLI: --lookback beyond the data", _cli(*FC, "--lookback", "100",
                                                         files={"bars.csv": ONE}),
        "kronos-quant forecast: error: --lookback 100 is more than the 40 bars in "
        "{tmp}/bars.csv", CLI),
    Row("forecast CLI: --lookback beyond the model's trained context",
        _cli(*FC, "--lookback", "150", files={"bars.csv": _long_csv(200, ("AAA",))
                                              .replace(",AAA,", ",").replace("instrument,", "")}),
        "kronos-quant forecast: error: --lookback 150 is longer than the model's context of 140 "
        "bars (what it was trained on, or --max-context): lower --lookback, or raise "
        "--max-context knowingly", CLI),
    Row("forecast CLI: --lookback below the minimum", _cli(*FC, "--lookback", "8"),
        "kronos-quant forecast: error: argument --lookback: must be an integer >= 16, got '8'",
        CLI),
    Row("forecast CLI: an unknown --repair", _cli(*FC, "--repair", "drop"),
        "kronos-quant forecast: error: argument --repair: invalid choice: 'drop' (choose from "
        "'clip')", CLI),
    Row("forecast CLI: a long file without --instrument", _cli(*FC, files={"bars.csv": LONG}),
        "kronos-quant forecast: error: {tmp}/bars.csv holds 2 series in column 'instrument' "
        "(AAA, BBB); pick one (instrument=, --instrument)", CLI),
    Row("forecast CLI: an --instrument not in the file",
        _cli(*FC, "--instrument", "CCC", files={"bars.csv": LONG}),
        "kronos-quant forecast: error: instrument 'CCC' is not in column 'instrument' of "
        "{tmp}/bars.csv; found AAA, BBB", CLI),
    Row("forecast CLI: --model without --tokenizer",
        _cli(*FC, "--model", "x", files={"bars.csv": ONE}),
        "kronos-quant forecast: error: give both --model and --tokenizer, or neither", CLI),
    Row("forecast CLI: header only", _cli(*FC, files={"bars.csv": ONE_LINES[0] + "\n"}),
        "kronos-quant forecast: error: {tmp}/bars.csv has a header (datetime, open, high, low, "
        "close, volume) but no data rows", CLI),
    Row("forecast CLI: day-first dates",
        _cli(*FC, files={"bars.csv": _long_csv(40, ("AAA",), fmt="%d/%m/%Y")}),
        "kronos-quant forecast: error: file {tmp}/bars.csv, instrument 'AAA': column 'datetime': "
        "'13/01/2024' at row 12 does not match the date format '%m/%d/%Y' of the first rows; "
        "day-first dates? set the date format (date_format= / --date-format), e.g. '%d/%m/%Y'",
        CLI),
    Row("forecast CLI: an impossible bar, named by its file row",
        _cli(*FC, files={"bars.csv": "\n".join(
            ONE_LINES[:36] + [",".join(ONE_LINES[36].split(",")[:2] + ["1.0"]
                                       + ONE_LINES[36].split(",")[3:])] + ONE_LINES[37:])
            + "\n"}),
        "kronos-quant forecast: error: {tmp}/bars.csv: impossible bar at row 36 "
        f"({pd.Timestamp(ONE_LINES[36].split(',')[0])}): " + ", ".join(
            f"{k} {float(v):g}" for k, v in zip(("open", "high", "low", "close"),
                                                [ONE_LINES[36].split(",")[1], "1.0",
                                                 *ONE_LINES[36].split(",")[3:5]], strict=True))
        + f" {RULES}", CLI),
    Row("forecast CLI: stamps newest first",
        _cli(*FC, files={"bars.csv": "\n".join([ONE_LINES[0], *ONE_LINES[:0:-1]]) + "\n"}),
        "kronos-quant forecast: error: {tmp}/bars.csv: column 'datetime': timestamps run newest "
        f"first ({pd.Timestamp(ONE_LINES[-1].split(',')[0])} … "
        f"{pd.Timestamp(ONE_LINES[1].split(',')[0])}): sort the rows oldest first (e.g. "
        "df.sort_index() or df.sort_values(column))", CLI),
    Row("score CLI: --lookback beyond the model's trained context",
        _cli(*SCORE, "--lookback", "200", files={"bars.csv": PANEL_CSV}),
        "kronos-quant score: error: --lookback 200 is longer than the model's context of 140 "
        "bars (what it was trained on, or --max-context): lower --lookback, or raise "
        "--max-context knowingly", CLI),
    Row("score CLI: a panel file with an impossible bar",
        _cli(*SCORE, files={"bars.csv": _edit(35, 3, "1.0")}),
        f"kronos-quant score: error: {{tmp}}/bars.csv, instrument 'BBB': impossible bar at row "
        f"35 ({_stamp(35)}): {_bar(35, high=1.0)} {RULES}", CLI),
    Row("score CLI: a --date-format the file does not have",
        _cli(*SCORE, "--date-format", "%d/%m/%Y", files={"bars.csv": LONG}),
        "kronos-quant score: error: {tmp}/bars.csv, instrument 'AAA': column 'datetime': "
        "'2024-01-02' at row 1 does not match the given date format '%d/%m/%Y'; fix the value "
        "or set the date format (date_format= / --date-format)", CLI),
    Row("demo CLI: --lookback beyond the bundled series",
        _cli("demo", "--lookback", "300", "--steps", "forecast", "--out", "{tmp}/demo"),
        "kronos-quant demo: error: --lookback 300 is more than the 250 bars in the bundled "
        "series (MSFT (daily, adjusted))", CLI),
    Row("demo CLI: --lookback beyond the model's trained context",
        _cli("demo", "--lookback", "200", "--steps", "forecast", "--out", "{tmp}/demo"),
        "kronos-quant demo: error: --lookback 200 is longer than the model's context of 140 "
        "bars (what it was trained on, or --max-context): lower --lookback, or raise "
        "--max-context knowingly", CLI),
    Row("live CLI: --lookback below the minimum",
        _cli("live", "--exchange", "binance", "--timeframe", "1m", "--state", "{tmp}/s",
             "--lookback", "10"),
        "kronos-quant live: error: argument --lookback: must be an integer >= 16, got '10'", CLI),
    Row("live CLI: an --entry-z no P(up) from --samples paths can reach",
        _cli(*LIVE, "--samples", "16", "--entry-z", "5"),
        "kronos-quant live: error: entry_z=5 with sample_count=16 puts the entry band at "
        "|P(up) - 1/2| >= 0.625: no forecast can reach it; use entry_z <= 4 (the square root "
        "of sample_count)", CLI),
    Row("live CLI: an --exit-z that never lets a position go",
        _cli(*LIVE, "--samples", "16", "--entry-z", "2", "--exit-z", "4"),
        "kronos-quant live: error: exit_z=4 with sample_count=16 puts the exit beyond P(up) = "
        "0 or 1: a position could never be left; use exit_z < 4 (the square root of "
        "sample_count)", CLI),
    Row("live CLI: a negative --exit-z", _cli(*LIVE, "--exit-z", "-1"),
        "kronos-quant live: error: argument --exit-z: must be a finite number >= 0, got -1", CLI),
    Row("live CLI: the hold band with --sizing threshold",
        _cli(*LIVE, "--sizing", "threshold", "--entry-z", "2"),
        "kronos-quant live: error: entry_z/exit_z (the hold band on P(up)) apply to "
        "sizing='prob'; got sizing='threshold'", CLI),
    Row("evaluate CLI: a scores file that does not exist",
        _cli(*EVAL, files={"bars.csv": PANEL_CSV}),
        "kronos-quant evaluate: error: scores file {tmp}/s.parquet does not exist", CLI),
]

# ----------------------------------------------------------------------------- engines
def _vbt(scores: Any = SCORES, **terms) -> Callable[[Ctx], Any]:
    def call(c: Ctx) -> Any:
        from kronos_quant.adapters.vectorbt import backtest

        return backtest(scores, PANEL, **terms)
    return call


def _btr(**kw) -> Callable[[Ctx], Any]:
    def call(c: Ctx) -> Any:
        from kronos_quant.strategies.backtrader import run

        return run(PANEL, **{"scores": SCORES, "stdstats": False, **kw})
    return call


def _tw(scores: Any = SCORES, **terms) -> Callable[[Ctx], Any]:
    return lambda c: target_weights(scores, **terms)


def _qlib(**terms) -> Callable[[Ctx], Any]:
    def call(c: Ctx) -> Any:
        from kronos_quant.adapters.qlib import run_topk_dropout

        return run_topk_dropout(SCORES, c.tmp / "provider", benchmark=None, verbose=False,
                                **terms)
    return call


TERM_LIST = ("['method', 'topk', 'n_drop', 'long_short', 'gross', 'max_weight', 'min_score', "
             "'threshold', 'rebalance', 'execution', 'cash', 'fees', 'slippage', 'min_cost', "
             "'invested', 'lot_size']")
WEIGHTS = target_weights(SCORES, topk=2)
FIRST = PANEL.index.get_level_values(0)[0]
UNKNOWN_NAME = pd.concat([SCORES, pd.Series([9.0], name="s", index=pd.MultiIndex.from_tuples(
    [(FIRST, "NOPE")], names=["datetime", "instrument"]))]).sort_index()
SCORES_CSV = SCORES.to_frame().to_csv()
BT = ("backtest", "--panel", "{tmp}/bars.csv", "--scores", "{tmp}/s.csv", "--out", "{tmp}/bt")
BT_FILES = {"bars.csv": PANEL_CSV, "s.csv": SCORES_CSV}
QB = ("qlib-backtest", "--scores", "{tmp}/s.csv", "--provider", "{tmp}/provider", "--benchmark",
      "SYN000", "--out", "{tmp}/q")
NOT_BARS = ("60 rebalance date(s) are not bars of bars_index, first 2022-01-03 15:00:00: scores "
            "and weights must be dated at the panel's bar times (those of the bars they were "
            "computed from)")
ABOVE_GROSS = ("weights on 2022-01-03 00:00:00 sum to 2 (sum of |w|), above the spec's gross × "
               "invested = 1 (60 of 60 rows): scale them down, or set gross=/invested= to what "
               "they hold")
SHORTED = WEIGHTS.assign(SYN002=-WEIGHTS["SYN002"])  # a short leg, on a long-only spec
SHORT_MSG = ("weights hold a short: SYN002 on 2022-01-03 00:00:00 is -0.5 (60 negative "
             "weight(s)), but the spec is long-only: drop the shorts, or set long_short=True")
THIN = ("topk=10 but only 4 name(s) have a score on 2022-01-03 00:00:00 (60 of 60 rebalance "
        "dates short): holding what there is")

ENGINE_ROWS = [
    Row("vectorbt: topk above the names with a score", _vbt(), THIN, None),
    Row("target_weights: topk above the names with a score", _tw(), THIN, None),
    Row("target_weights: a cap that makes gross unreachable", _tw(topk=2, max_weight=0.2),
        "max_weight=0.2 keeps 60 of 60 dates below gross=1 (too few names); the cap wins", None),
    Row("vectorbt: a weight frame that sums above gross", _vbt(WEIGHTS * 2), ABOVE_GROSS),
    Row("backtrader: a weight frame that sums above gross",
        _btr(scores=None, weights=WEIGHTS * 2), ABOVE_GROSS),
    Row("vectorbt: a short weight under a long-only spec", _vbt(SHORTED), SHORT_MSG),
    Row("backtrader: a short weight under a long-only spec",
        _btr(scores=None, weights=SHORTED), SHORT_MSG),
    Row("vectorbt: negative fees", _vbt(fees=-0.001),
        "fees must be a finite number >= 0 and <= 0.5, got -0.001"),
    Row("vectorbt: negative slippage", _vbt(slippage=-0.001),
        "slippage must be a finite number >= 0 and <= 0.5, got -0.001"),
    Row("vectorbt: fees in basis points", _vbt(fees=10),
        "fees must be a finite number >= 0 and <= 0.5, got 10.0"),
    Row("backtrader: negative fees", _btr(fees=-0.001),
        "fees must be a finite number >= 0 and <= 0.5, got -0.001"),
    Row("vectorbt: n_drop above topk", _vbt(topk=2, n_drop=3),
        "n_drop must be in 0..topk=2, got 3"),
    Row("target_weights: gross 0", _tw(gross=0), "gross must be a finite number > 0, got 0.0"),
    Row("target_weights: negative gross", _tw(gross=-1),
        "gross must be a finite number > 0, got -1.0"),
    Row("target_weights: rebalance 0", _tw(rebalance=0),
        "rebalance must be an integer >= 1, got 0"),
    Row("target_weights: a threshold without method threshold", _tw(threshold=0.1),
        "threshold only applies to method='threshold', not 'topk'"),
    Row("target_weights: all scores NaN", _tw(SCORES * np.nan),
        "scores are all NaN: nothing to trade"),
    Row("target_weights: conviction on scores that are not probabilities",
        _tw(method="conviction"),
        "method='conviction' needs probabilities in [0, 1] (e.g. the prob_up scorer); got 2.0 "
        "at 2022-01-03 00:00:00, 'SYN002'"),
    Row("vectorbt: an unknown trading term", _vbt(top_n=3),
        f"unknown trading term(s) ['top_n']; TradeSpec terms are {TERM_LIST}", TypeError),
    Row("backtrader: an unknown parameter", _btr(topn=3),
        f"unknown KronosStrategy parameter(s) ['topn']; trading terms are {TERM_LIST}, strategy "
        "params ['T', 'lookback', 'pred_len', 'predictor', 'sample_count', 'score_options', "
        "'scorer', 'seed', 'spec', 'stop_quantile', 'top_k', 'top_p', 'weights']", TypeError),
    Row("backtrader: top_k (live sampling) for topk on precomputed scores", _btr(top_k=3),
        "KronosStrategy parameter(s) ['top_k'] apply only with predictor= (live inference); "
        "with scores= or weights= they do nothing; the names to hold are topk=", TypeError),
    Row("vectorbt: spec given as a dict", _vbt(spec={"topk": 2}),
        "spec must be a TradeSpec, got dict", TypeError),
    Row("vectorbt: a lot size on a fractional engine", _vbt(lot_size=100),
        "vectorbt cannot trade this spec: lot_size=100 (it trades fractional shares)"),
    Row("backtrader: a minimum cost on a fractional engine", _btr(min_cost=5),
        "backtrader cannot trade this spec: min_cost=5 (it charges proportional fees)"),
    Row("vectorbt: leverage on a cash-only engine", _vbt(gross=2.0),
        "vectorbt cannot trade this spec: a long leg of 2 × equity (gross=2) borrows cash, and "
        "it has no margin account here"),
    Row("vectorbt: an unknown execution", _vbt(execution="next_bar"),
        "execution must be one of ['next_open', 'next_close', 'same_close'], got 'next_bar'"),
    Row("backtrader: an unknown execution", _btr(execution="next_bar"),
        "execution must be one of ['next_open', 'next_close', 'same_close'], got 'next_bar'"),
    Row("vectorbt: an unknown method", _vbt(method="best"),
        "method must be one of ['topk', 'rank', 'proportional', 'threshold', 'long_short', "
        "'conviction'], got 'best'"),
    Row("vectorbt: scores whose dates are not bar dates", _vbt(MIDDAY, topk=2), NOT_BARS),
    Row("backtrader: scores whose dates are not bar dates", _btr(scores=MIDDAY, topk=2),
        "scores for instrument 'SYN000' at 2022-01-03 15:00:00 (and 59 more) fall on no bar of "
        "that instrument in the panel"),
    Row("vectorbt: scores for an instrument the panel lacks", _vbt(UNKNOWN_NAME, topk=2),
        "weights name 1 instrument(s) absent from the panel, first 'NOPE'"),
    Row("backtrader: scores for an instrument the panel lacks",
        _btr(scores=UNKNOWN_NAME, topk=2),
        "scores name instruments absent from the panel: ['NOPE']"),
    Row("vectorbt: an empty scores frame", _vbt(SCORES.iloc[:0]), "scores are empty"),
    Row("backtrader: an empty scores frame", _btr(scores=SCORES.iloc[:0]), "scores are empty"),
    Row("vectorbt: the deprecated init_cash", _vbt(topk=2, init_cash=1e5),
        "init_cash= is deprecated and will be removed in the next release; use cash= (a "
        "TradeSpec term)", DeprecationWarning),
    Row("backtrader: the deprecated commission", _btr(topk=2, commission=0.001),
        "commission= is deprecated and will be removed in the next release; use fees= (a "
        "TradeSpec term)", DeprecationWarning),
    Row("vectorbt: init_cash and cash together", _vbt(init_cash=1e5, cash=1e5),
        "give cash= or the deprecated init_cash=, not both", TypeError),
    Row("TradeSpec.from_qlib: unequal open and close costs",
        lambda c: TradeSpec.from_qlib(exchange={"open_cost": 0.0005, "close_cost": 0.0015}),
        "open_cost=0.0005 and close_cost=0.0015 differ; TradeSpec charges one fee rate on buys "
        "and sells: pass fees= (e.g. their mean 0.001)"),
    Row("qlib run_topk_dropout: an unknown trading term", _qlib(top_k=3),
        f"unknown trading term(s) ['top_k']; TradeSpec terms are {TERM_LIST}", TypeError),
    Row("qlib run_topk_dropout: a method TopkDropout cannot hold", _qlib(method="rank"),
        "qlib cannot trade this spec: method='rank' (TopkDropout holds equal-weight top names, "
        "long only)"),
    Row("backtest CLI: an unknown --engine", _cli(*BT, "--engine", "nosuch", files=BT_FILES),
        "kronos-quant backtest: error: argument --engine: invalid choice: 'nosuch' (choose from "
        "'backtrader', 'qlib', 'vectorbt')", CLI),
    Row("backtest CLI: negative --fees", _cli(*BT, "--fees", "-0.001", files=BT_FILES),
        "kronos-quant backtest: error: argument --fees: must be a finite number >= 0, got "
        "-0.001", CLI),
    Row("backtest CLI: negative --slippage", _cli(*BT, "--slippage", "-0.001", files=BT_FILES),
        "kronos-quant backtest: error: argument --slippage: must be a finite number >= 0, got "
        "-0.001", CLI),
    Row("backtest CLI: --n-drop above --topk",
        _cli(*BT, "--topk", "2", "--n-drop", "3", files=BT_FILES),
        "kronos-quant backtest: error: n_drop must be in 0..topk=2, got 3", CLI),
    Row("backtest CLI: --gross 0", _cli(*BT, "--gross", "0", files=BT_FILES),
        "kronos-quant backtest: error: argument --gross: must be > 0", CLI),
    Row("backtest CLI: --lot-size on backtrader",
        _cli(*BT, "--engine", "backtrader", "--lot-size", "100", files=BT_FILES),
        "kronos-quant backtest: error: backtrader cannot trade this spec: lot_size=100 (it "
        "trades fractional shares)", CLI),
    Row("backtest CLI: an unknown --execution", _cli(*BT, "--execution", "next_bar",
                                                     files=BT_FILES),
        "kronos-quant backtest: error: argument --execution: invalid choice: 'next_bar' (choose "
        "from 'next_open', 'next_close', 'same_close')", CLI),
    Row("backtest CLI: a scores file whose dates are not bar dates",
        _cli(*BT, "--topk", "2", files={"bars.csv": PANEL_CSV,
                                        "s.csv": MIDDAY.to_frame().to_csv()}),
        f"kronos-quant backtest: error: {NOT_BARS}", CLI),
    Row("backtest CLI: a header-only scores file",
        _cli(*BT, files={"bars.csv": PANEL_CSV, "s.csv": "datetime,instrument,s\n"}),
        "kronos-quant backtest: error: {tmp}/s.csv has no score rows (a header only): nothing "
        "to trade or evaluate", CLI),
    Row("backtest CLI: the deprecated --init-cash",
        _cli(*BT, "--topk", "2", "--init-cash", "1000", files=BT_FILES),
        "--init-cash is deprecated; use --cash", None),
    Row("qlib-backtest CLI: a negative --n-drop", _cli(*QB, "--n-drop", "-1",
                                                      files={"s.csv": SCORES_CSV}),
        "kronos-quant qlib-backtest: error: argument --n-drop: must be an integer >= 0, got "
        "'-1'", CLI),
    Row("qlib-backtest CLI: --gross other than 1", _cli(*QB, "--gross", "2",
                                                       files={"s.csv": SCORES_CSV}),
        "kronos-quant qlib-backtest: error: qlib cannot trade this spec: gross=2 (use invested= "
        "for the share held)", CLI),
    Row("qlib-backtest CLI: a provider that does not exist",
        _cli(*QB, files={"s.csv": SCORES_CSV}),
        "kronos-quant qlib-backtest: error: Qlib provider directory {tmp}/provider does not "
        "exist; write one with `kronos-quant qlib-data --panel PATH --out {tmp}/provider`", CLI),
]

BAD_INPUTS = FORECAST_ROWS + PANEL_ROWS + SIGNAL_ROWS + QLIB_ROWS + CLI_ROWS + ENGINE_ROWS


@pytest.fixture()
def ctx(tmp_path, pair):
    tok, model = pair
    return Ctx(tmp_path, KronosPredictor(model, tok, device="cpu", max_context=32))


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[r.id for r in BAD_INPUTS])
def test_bad_input(row: Row, ctx: Ctx, caplog):
    expected = row.message.replace("{tmp}", str(ctx.tmp))
    if row.error == CLI:
        code, err = row.call(ctx)
        assert code == 2 and err.strip().splitlines()[-1] == expected, err
    elif isinstance(row.error, type) and issubclass(row.error, Warning):
        with pytest.warns(row.error) as said:
            row.call(ctx)
        assert expected in [str(w.message) for w in said], [str(w.message) for w in said]
    elif row.error is None:
        with caplog.at_level(logging.WARNING), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the API's, under a CLI flag
            row.call(ctx)
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert expected in said, said
    else:
        with pytest.raises(row.error) as info:
            row.call(ctx)
        assert str(info.value) == expected


def test_the_table_is_large_and_every_row_distinct():
    assert len(BAD_INPUTS) >= 60
    assert len({r.id for r in BAD_INPUTS}) == len(BAD_INPUTS)

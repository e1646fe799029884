"""Canonical OHLCV panels: validation, loaders, reshaping helpers and seeded synthetic data.

A *panel* is a DataFrame indexed by a MultiIndex named exactly ``("datetime", "instrument")``
(datetime64 of any unit, string instruments), sorted and unique, with float64 columns
``open, high, low, close, volume`` and optionally ``amount``, in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .calendars import freq_offset
from .inputs import (
    BAR_COLUMNS,
    DATETIME_ALIASES,
    PRICE_COLUMNS,
    bar_value_problem,
    check_bar_ranges,
    check_jumps,
    check_name_twins,
    clean_bars,
    frame_timestamps,
    match_columns,
    wall_clock,
)
from .io import read_table

# Seeded synthetic series are read from here too (``kronos_quant.data.synthetic_ohlcv``):
# the ``as`` form marks the re-exports.
from .synthetic import TRADING_SESSIONS as TRADING_SESSIONS
from .synthetic import (
    bar_stamps,
    bars_from_returns,
    check_positive,
    garch_shocks,
    seeded_rng,
)
from .synthetic import synthetic_ohlcv as synthetic_ohlcv

logger = logging.getLogger(__name__)

# A panel's columns are the model's bar columns (one definition, in .inputs).
PANEL_COLUMNS: tuple[str, ...] = BAR_COLUMNS
INDEX_NAMES: tuple[str, str] = ("datetime", "instrument")
INSTRUMENT_ALIASES: tuple[str, ...] = ("instrument", "symbol", "code", "ticker")
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq")
# Days per year of a market closed at weekends, and of one open every day (crypto).
TRADING_DAYS_PER_YEAR, CALENDAR_DAYS_PER_YEAR = 252, 365
# Smoothing constant of the momentum signal planted by ``synthetic_panel``.
SIGNAL_ALPHA: float = 0.1

_REQUIRED = PANEL_COLUMNS[:5]


def _key(panel: pd.DataFrame, row: int) -> str:
    dt, inst = panel.index[row]
    return f"(datetime={dt}, instrument={inst!r})"


def _check_index(panel: pd.DataFrame) -> None:
    if not isinstance(panel, pd.DataFrame):
        raise TypeError(f"panel must be a pandas DataFrame, got {type(panel).__name__}")
    index = panel.index
    if not isinstance(index, pd.MultiIndex) or index.nlevels != 2:
        got = f"{type(index).__name__} named {list(index.names)}"
        raise TypeError(f"panel index must be a 2-level MultiIndex {INDEX_NAMES}, got {got}")
    names = tuple(index.names)
    if names == INDEX_NAMES[::-1]:
        fix = "fix with `panel.swaplevel().sort_index()`"
        raise ValueError(f"panel index levels are ordered {names}; expected {INDEX_NAMES}; {fix}")
    if names != INDEX_NAMES:
        raise ValueError(f"panel index names must be {INDEX_NAMES}, got {names}")
    if not pd.api.types.is_datetime64_any_dtype(index.levels[0]):
        raise TypeError(f"panel 'datetime' level must be datetime64, "
                        f"got dtype {index.levels[0].dtype}")
    inst_level = index.levels[1]
    if inst_level.inferred_type not in ("string", "empty"):
        bad = next(v for v in inst_level if not isinstance(v, str))
        raise TypeError(f"panel 'instrument' level must hold strings, "
                        f"found {bad!r} ({type(bad).__name__})")


def _check_rows(panel: pd.DataFrame) -> None:
    index = panel.index
    if len(index) == 0:
        raise ValueError("panel is empty")
    nat = index.get_level_values(0).isna()
    if nat.any():
        row = int(np.argmax(nat))
        raise ValueError(f"panel has a missing datetime (NaT) at row {row}, "
                         f"instrument {index[row][1]!r}")
    if not index.is_unique:
        row = int(np.argmax(index.duplicated()))
        raise ValueError(f"panel has duplicate rows for {_key(panel, row)}")
    if not index.is_monotonic_increasing:
        dt = index.get_level_values(0).asi8
        inst = index.get_level_values(1).to_numpy(dtype=object)
        # The index is unique here, so strict lexicographic order is the only valid order.
        back = (dt[1:] < dt[:-1]) | ((dt[1:] == dt[:-1]) & (inst[1:] < inst[:-1]))
        row = int(np.argmax(back)) + 1
        where = f"row {row} {_key(panel, row)} comes after {_key(panel, row - 1)}"
        raise ValueError(f"panel is not sorted by (datetime, instrument): {where}; "
                         "use `panel.sort_index()`")


def _checked_column(panel: pd.DataFrame, col: str) -> np.ndarray:
    series = panel[col]
    if isinstance(series, pd.DataFrame):
        raise ValueError(f"panel has duplicate columns named {col!r}")
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise TypeError(f"panel column {col!r} must be numeric, got dtype {series.dtype}")
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    problem = bar_value_problem(col, values)
    if problem is not None:
        row, what = problem
        raise ValueError(f"panel column {col!r} has {what} at {_key(panel, row)}")
    return values


def validate_panel(panel: pd.DataFrame, *, require_amount: bool = False) -> pd.DataFrame:
    """Check that ``panel`` is canonical; raise TypeError/ValueError naming the first problem.

    Returns the panel with the same index and only the canonical columns (extras dropped),
    all float64. ``require_amount=True`` also requires an ``amount`` column. Volume and
    amount must be >= 0, prices > 0, every value finite. tz-aware datetimes become their
    local wall-clock time, tz dropped (one log line), as everywhere in the package.
    """
    _check_index(panel)
    stamps = panel.index.levels[0]
    if getattr(stamps, "tz", None) is not None:
        panel = panel.set_axis(panel.index.set_levels(wall_clock(stamps, what="panel datetimes"),
                                                      level=0), axis=0)
    _check_rows(panel)
    required = PANEL_COLUMNS if require_amount else _REQUIRED
    missing = [c for c in required if c not in panel.columns]
    if missing:
        lowered = {str(c).lower() for c in panel.columns}
        hint = " (column names are case-sensitive)" if set(missing) <= lowered else ""
        raise ValueError(f"panel is missing required columns {missing}{hint}")
    present = [c for c in PANEL_COLUMNS if c in panel.columns]
    extra = [c for c in panel.columns if c not in PANEL_COLUMNS]
    if extra:
        logger.debug("validate_panel: dropping non-canonical columns %s", extra)
    data = {c: _checked_column(panel, c) for c in present}
    check_bar_ranges(data, labels={c: c for c in PRICE_COLUMNS}, source="panel",
                     where=lambda row: _key(panel, row))
    return pd.DataFrame(data, index=panel.index)


def _normalize_frame(frame: pd.DataFrame, source: str, datetime_col: str | None, *,
                     date_format: str | None = None, repair: str | None = None,
                     rows: object = None) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{source}: expected a DataFrame, got {type(frame).__name__}")
    stamps = frame_timestamps(frame, source=source, column=datetime_col,
                              date_format=date_format, rows=rows).rename("datetime")
    out = clean_bars(frame, timestamps=stamps, source=source, rows=rows, repair=repair)
    if "volume" not in out.columns:
        logger.warning("%s: no volume column; filling volume with 0.0", source)
        out.insert(4, "volume", 0.0)
    order = np.argsort(stamps.to_numpy(), kind="stable")
    file_rows = np.arange(len(out)) if rows is None else np.asarray(rows)
    check_jumps(out["close"].to_numpy()[order], out["open"].to_numpy()[order], source=source,
                where=lambda pos: f"row {file_rows[order[pos]]} ({stamps[order[pos]]})")
    return out


def panel_from_frames(frames: Mapping[str, pd.DataFrame], *, datetime_col: str | None = None,
                      date_format: str | None = None, repair: str | None = None,
                      rows: Mapping[str, object] | None = None,
                      source: str = "") -> pd.DataFrame:
    """Build a validated panel from ``{instrument: frame}``.

    Each frame has a DatetimeIndex or a datetime/timestamps/timestamp/date/time column
    (or ``datetime_col``, read with ``date_format`` if given); column names are matched
    case-insensitively and numeric strings converted. A missing ``volume`` becomes 0.0 (with
    a warning); ``amount`` is kept only if every frame has it. Impossible bars are refused
    unless ``repair="clip"`` (see :func:`~kronos_quant.inputs.check_bar_ranges`); instrument
    names differing only in case are refused. ``rows`` gives, per instrument, the numbers
    messages use for its rows (a file's data rows; default: positions); ``source`` (e.g. the
    file) starts every message.
    """
    if not isinstance(frames, Mapping):
        raise TypeError(f"frames must be a mapping of instrument -> DataFrame, "
                        f"got {type(frames).__name__}")
    if not frames:
        raise ValueError("frames is empty: no instruments given")
    parts = []
    for name, frame in frames.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"instrument names must be non-empty strings, got {name!r}")
        where = f"{source}, instrument {name!r}" if source else f"instrument {name!r}"
        norm = _normalize_frame(frame, where, datetime_col,
                                date_format=date_format, repair=repair,
                                rows=None if rows is None else rows.get(name))
        norm.index = pd.MultiIndex.from_arrays([norm.index, [name] * len(norm)], names=INDEX_NAMES)
        parts.append(norm)
    check_name_twins(list(frames))
    lacking = [n for n, p in zip(frames, parts, strict=True) if "amount" not in p.columns]
    if 0 < len(lacking) < len(parts):
        logger.warning("dropping 'amount': instruments %s do not have it", lacking)
        parts = [p.drop(columns="amount", errors="ignore") for p in parts]
    return validate_panel(pd.concat(parts).sort_index())


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as read (:func:`~kronos_quant.io.read_table`), codes such as
    "000001" kept as text."""
    return read_table(path, text_columns=INSTRUMENT_ALIASES)


def _split_long(frame: pd.DataFrame, instrument_col: str, path: Path) -> dict[str, pd.DataFrame]:
    source = f"file {path}"
    wanted = instrument_col.strip().lower()
    aliases = INSTRUMENT_ALIASES if wanted == "instrument" else (wanted,)
    found = match_columns(frame.columns, aliases, source=source)
    if wanted in found:
        col = found[wanted]
    elif len(found) > 1:
        raise ValueError(f"{source}: ambiguous instrument columns {list(found.values())}; "
                         "pass the one to use explicitly")
    elif found:
        col = next(iter(found.values()))
    else:
        raise ValueError(f"{source}: instrument column {instrument_col!r} "
                         f"not found in {list(frame.columns)}")
    labels = frame[col]
    if labels.isna().any():
        raise ValueError(f"{source}: instrument column {col!r} is empty "
                         f"at row {int(np.argmax(labels.isna())) + 1}")
    labels = labels.astype("string")
    return {str(name): part.drop(columns=col) for name, part in frame.groupby(labels, sort=True)}


def _read_directory(path: Path) -> dict[str, pd.DataFrame]:
    files = sorted(p for p in path.iterdir()
                   if p.suffix.lower() in TABLE_SUFFIXES and not p.name.startswith("."))
    files = [p for p in files if p.is_file()]
    if not files:
        raise ValueError(f"directory {path} has no {'/'.join(TABLE_SUFFIXES)} files")
    frames: dict[str, pd.DataFrame] = {}
    for file in files:
        if file.stem in frames:
            raise ValueError(f"directory {path} has several files for instrument {file.stem!r}")
        frames[file.stem] = _read_table(file)
    return frames


def load_panel(
    path: str | Path, *, instrument_col: str = "instrument", datetime_col: str | None = None,
    freq: str | None = None, date_format: str | None = None, repair: str | None = None,
) -> pd.DataFrame:
    """Load a validated panel from a long-format file or a directory of per-symbol files.

    ``path`` is a ``.csv``/``.parquet``/``.pq`` file with one row per (datetime, instrument)
    or a directory holding one such file per instrument (instrument = file stem).
    ``instrument_col`` names the instrument column of a long file (at the default,
    symbol/code/ticker are also accepted); ``datetime_col`` is auto-detected when None;
    ``freq`` aggregates the bars with :func:`resample_panel`; ``date_format`` reads the
    stamps (e.g. ``'%d/%m/%Y'`` for day-first dates); ``repair="clip"`` widens impossible
    bars instead of refusing them. Errors name the file's rows counted from 1 (the first data
    row; the header is not counted).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"panel path {path} does not exist")
    if path.is_dir():
        frames = _read_directory(path)
    elif path.suffix.lower() in TABLE_SUFFIXES:
        frames = _split_long(_read_table(path), instrument_col, path)
    else:
        raise ValueError(f"unsupported file type {path.suffix!r} for {path}; "
                         f"expected one of {TABLE_SUFFIXES}")
    if not frames:
        raise ValueError(f"{path} contains no rows")
    rows = {name: frame.index.to_numpy() + 1 for name, frame in frames.items()}
    panel = panel_from_frames(frames, datetime_col=datetime_col, date_format=date_format,
                              repair=repair, rows=rows, source="" if path.is_dir() else str(path))
    return panel if freq is None else resample_panel(panel, freq)


def read_series(path: str | Path, *, instrument: str | None = None,
                date_format: str | None = None) -> pd.DataFrame:
    """One series of bars from a CSV or Parquet file, as read but for its timestamp column,
    parsed (``date_format`` as in :func:`~kronos_quant.stamps.parse_timestamps`).

    A file with an instrument column (any of :data:`INSTRUMENT_ALIASES`) may hold several
    series: ``instrument`` picks one (it may be left out when there is only one). The index
    holds the rows' numbers in the file (1 = the first data row), so a forecast of a slice
    names bad rows as the file has them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: expected a .csv or .parquet file, "
                         f"got {path.suffix.lower() or 'no suffix'!r}")
    frame = _read_table(path)
    frame.index = frame.index + 1
    found = list(match_columns(frame.columns, INSTRUMENT_ALIASES, source=f"file {path}").values())
    if not found:
        if instrument is not None:
            raise ValueError(f"{path} has no instrument column ({', '.join(INSTRUMENT_ALIASES)}) "
                             f"to pick {instrument!r} from")
        return _parsed_stamps(frame, f"file {path}", date_format)
    if len(found) > 1:
        raise ValueError(f"file {path}: ambiguous instrument columns {found}; keep one")
    series = _split_long(frame, str(found[0]), path)
    names = list(series)
    if instrument is None:
        if len(names) > 1:
            raise ValueError(f"{path} holds {len(names)} series in column {found[0]!r} "
                             f"({', '.join(names[:5])}{', …' if len(names) > 5 else ''}); "
                             "pick one (instrument=, --instrument)")
        instrument = names[0]
    if instrument not in series:
        raise ValueError(f"instrument {instrument!r} is not in column {found[0]!r} of {path}; "
                         f"found {', '.join(names[:10])}")
    return _parsed_stamps(series[instrument], f"file {path}, instrument {instrument!r}",
                          date_format)


def _parsed_stamps(frame: pd.DataFrame, source: str, date_format: str | None) -> pd.DataFrame:
    stamps = frame_timestamps(frame, source=source, date_format=date_format, rows=frame.index)
    label = next(iter(match_columns(frame.columns, DATETIME_ALIASES).values()))
    return frame.assign(**{str(label): stamps.to_numpy()})


def resample_panel(panel: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Aggregate each instrument's bars to ``freq`` (first/max/min/last/sum).

    Bins are left-closed and left-labelled (pandas defaults); bins without bars
    (nights, lunch breaks, holidays) are dropped rather than filled.
    """
    panel, _ = validate_panel(panel), freq_offset(freq)
    how = {"open": "first", "high": "max", "low": "min", "close": "last",
           "volume": "sum", "amount": "sum"}
    grouped = panel.groupby([pd.Grouper(level="instrument"),
                             pd.Grouper(level="datetime", freq=freq)])
    out = grouped.agg({c: how[c] for c in panel.columns})
    out = out[out["close"].notna()]
    return validate_panel(out.swaplevel().sort_index())


def panel_to_frames(panel: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split a panel into ``{instrument: frame}`` with a DatetimeIndex named ``datetime``.

    Inverse of :func:`panel_from_frames`; keys are in sorted order.
    """
    groups = validate_panel(panel).groupby(level="instrument", sort=True)
    return {str(name): part.droplevel("instrument") for name, part in groups}


def instruments(panel: pd.DataFrame) -> list[str]:
    """Sorted list of the instruments present in ``panel``."""
    _check_index(panel)
    return sorted(panel.index.get_level_values("instrument").unique())


def dates(panel: pd.DataFrame) -> pd.DatetimeIndex:
    """Sorted unique timestamps present in ``panel``."""
    _check_index(panel)
    return pd.DatetimeIndex(panel.index.get_level_values("datetime").unique()).sort_values()


def bar_spacing(index: pd.DatetimeIndex, *, option: str | None = None) -> pd.Timedelta:
    """The bars' typical spacing: the median gap between consecutive stamps of ``index``.

    ``option`` names the argument that sets the spacing-derived value by hand (e.g.
    ``"freq="``), quoted in the error raised when fewer than two bars leave nothing to infer.
    """
    if len(index) < 2:
        hint = f"; pass {option}" if option else ""
        raise ValueError(f"need at least two bars to infer the bar spacing{hint}")
    return pd.Timedelta(np.median(np.diff(pd.DatetimeIndex(index).to_numpy("datetime64[ns]"))))


def periods_per_year(index: pd.DatetimeIndex | None = None, *,
                     bar_seconds: float | None = None) -> int:
    """Bars per year: the one annualisation rule (Sharpe ratios, tear sheets, live reports).

    From the bars' stamps ``index``: :data:`TRADING_DAYS_PER_YEAR` (or
    :data:`CALENDAR_DAYS_PER_YEAR` when some bars fall on a weekend, i.e. the market trades
    every day) for daily bars, times the bars per active day for intraday bars; about 52 or
    12 for weekly or monthly bars. From a bar length ``bar_seconds`` alone (a live feed's
    timeframe, before there are stamps): a market open around the clock every day
    (``bar_seconds=3600`` gives 8760).
    """
    if (index is None) == (bar_seconds is None):
        raise TypeError("give the bars' stamps (index) or their length (bar_seconds)")
    if bar_seconds is not None:
        if not bar_seconds > 0:
            raise ValueError(f"bar length must be positive, got {bar_seconds} s")
        return max(1, round(CALENDAR_DAYS_PER_YEAR * 24 * 3600 / bar_seconds))
    index = pd.DatetimeIndex(index).unique().sort_values()  # a panel's level: stamps repeat
    step = bar_spacing(index, option="periods_per_year")
    weekends = bool((index.day_of_week >= 5).any())
    days_per_year = CALENDAR_DAYS_PER_YEAR if weekends else TRADING_DAYS_PER_YEAR
    if step < pd.Timedelta(hours=20):  # intraday: count bars per (active) day
        per_day = float(pd.Series(1, index=index).groupby(index.normalize()).size().median())
        return int(round(days_per_year * per_day))
    if step <= pd.Timedelta(days=4):  # daily bars, weekends and holidays skipped or not
        return days_per_year
    return max(1, int(round(pd.Timedelta(days=365.25) / step)))


def unstack_field(panel: pd.DataFrame, field: str = "close") -> pd.DataFrame:
    """Wide ``datetime x instrument`` matrix of one panel column (NaN where a bar is absent)."""
    panel = validate_panel(panel)
    if field not in panel.columns:
        raise ValueError(f"field {field!r} is not a panel column; available: {list(panel.columns)}")
    return panel[field].unstack("instrument").sort_index(axis=1)


def forward_returns(panel: pd.DataFrame, *, horizon: int, field: str = "close",
                    log: bool = False) -> pd.Series:
    """Return of ``field`` from bar t to bar t + ``horizon`` of the same instrument.

    ``horizon`` counts that instrument's own bars (>= 1); NaN where the future bar is
    absent. ``log=True`` gives log returns. The Series is indexed like ``panel`` and
    named ``f"fwd_ret_{horizon}"``.
    """
    if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool):
        raise TypeError(f"horizon must be an int, got {type(horizon).__name__}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    panel = validate_panel(panel)
    if field not in PRICE_COLUMNS:
        raise ValueError(f"field must be one of {PRICE_COLUMNS}, got {field!r}")
    price = panel[field]
    ratio = price.groupby(level="instrument").shift(-int(horizon)) / price
    out = np.log(ratio) if log else ratio - 1.0
    return out.rename(f"fwd_ret_{int(horizon)}")


def synthetic_panel(
    n_instruments: int = 20, n_bars: int = 300, *, freq: str = "D", seed: int = 0,
    market_beta: float = 1.0, market_vol: float = 0.01, idio_vol: float = 0.015,
    predictable: float = 0.0, start: str = "2022-01-03",
) -> pd.DataFrame:
    """Seeded canonical panel from a one-factor model with a known predictable component.

    For instrument i at bar t the close-to-close log return is::

        r[t, i] = beta_i * m[t] + e[t, i] + predictable * s[t-1, i]

    with ``m`` a GARCH(1,1) market return (std ``market_vol``), ``beta_i ~ market_beta
    * U(0.5, 1.5)``, ``e`` independent GARCH(1,1) idiosyncratic shocks (std ``idio_vol``)
    and ``s`` the planted signal, a slow momentum observable at t from closes alone::

        s[0, i] = 0,
        s[t, i] = (1 - SIGNAL_ALPHA) * s[t-1, i] + SIGNAL_ALPHA * log(close[t, i] / close[t-1, i])

    :func:`planted_signal` recomputes ``s`` from a panel. ``predictable`` must be in
    [0, 1) so the feedback stays stationary. OHLCV bars are built around the closes as
    in :func:`synthetic_ohlcv`; instruments are named ``SYN000``, ``SYN001``, ...
    """
    rng = seeded_rng(seed)
    if not isinstance(n_instruments, (int, np.integer)) or n_instruments < 1:
        raise ValueError(f"n_instruments must be a positive int, got {n_instruments!r}")
    if not 0.0 <= predictable < 1.0:
        raise ValueError(f"predictable must be in [0, 1), got {predictable}")
    for name, value in (("market_vol", market_vol), ("idio_vol", idio_vol)):
        check_positive(name, value)
    stamps = bar_stamps(start, n_bars, freq)
    n, k = len(stamps), int(n_instruments)
    betas = market_beta * rng.uniform(0.5, 1.5, size=k)
    market, m_sigma = garch_shocks(rng, (n, 1), np.array([market_vol]))
    idio, i_sigma = garch_shocks(rng, (n, k), np.full(k, idio_vol))
    log_ret, signal = betas * market + idio, np.zeros(k)
    for t in range(n):
        log_ret[t] += predictable * signal
        if t > 0:  # r[0] is measured from an unobserved base price, so it cannot feed the signal.
            signal = (1.0 - SIGNAL_ALPHA) * signal + SIGNAL_ALPHA * log_ret[t]
    sigma = np.sqrt((betas * m_sigma) ** 2 + i_sigma**2)
    base = np.exp(rng.normal(np.log(20.0), 0.5, size=k))
    size = np.exp(rng.normal(np.log(1e6), 0.7, size=k))
    bars = bars_from_returns(rng, log_ret, sigma, base, size)
    width = max(3, len(str(k - 1)))
    names = [f"SYN{i:0{width}d}" for i in range(k)]
    index = pd.MultiIndex.from_product([stamps, names], names=INDEX_NAMES)
    return validate_panel(pd.DataFrame({c: v.ravel() for c, v in bars.items()}, index=index))


def planted_signal(panel: pd.DataFrame, *, alpha: float = SIGNAL_ALPHA) -> pd.Series:
    """The momentum signal ``s`` of :func:`synthetic_panel`, recomputed from closes.

    ``s`` is an EWMA (``adjust=False``) of each instrument's close-to-close log returns,
    starting from 0 at its first bar; it is known at bar t. Named ``"planted_signal"``.
    """
    panel = validate_panel(panel)
    ret = np.log(panel["close"]).groupby(level="instrument").diff().fillna(0.0)
    signal = ret.groupby(level="instrument").transform(
        lambda r: r.ewm(alpha=alpha, adjust=False).mean())
    return signal.rename("planted_signal")

"""Qlib provider directories: write our panels in Qlib's binary layout and read them back.

pip's ``pyqlib`` ships no ``dump_bin.py``; :func:`write_provider` replaces it. The layout::

    calendars/<freq>.txt            one stamp per line (%Y-%m-%d daily, %Y-%m-%d %H:%M:%S intraday)
    instruments/<market>.txt        SYMBOL<TAB>start<TAB>end, upper-case symbols; "all" + named
                                    markets
    features/<symbol>/<field>.<freq>.bin
                                    little-endian float32: the calendar index of the instrument's
                                    first bar, then one value per calendar slot up to its last bar
                                    (NaN where it has no bar)

Fields: open, high, low, close, volume, amount (when the panel has it), vwap = amount / volume
(when derivable), factor (1.0 unless adjustment factors are given; prices are taken as already
adjusted, as in Qlib's own data) and change = close / previous close - 1 (Qlib's exchange
reads it). Writing into an existing directory appends: new dates after the stored calendar and
new instruments are added; a value that would change stored history is refused with an error.
Every file is replaced atomically, features first and the calendar last, so an interrupted
update leaves the previous directory readable and can simply be rerun.

Qlib is imported lazily (``pip install "kronos-quant[qlib]"``) through
:mod:`kronos_quant.adapters.qlib_runtime`.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data import PANEL_COLUMNS, load_panel, validate_panel
from ..io import write_atomic

# The Qlib package side (import, noise, regions) lives in qlib_runtime; re-exported here.
from .qlib_runtime import REGION_DEFAULTS, check_region, import_qlib, quiet_qlib

__all__ = ["DAY_FREQ", "ALL_MARKET", "BASE_FIELDS", "DERIVED_FIELDS", "REGION_DEFAULTS",
           "ProviderSummary", "ProviderCheck", "write_provider", "read_provider",
           "check_provider", "check_provider_dir", "init_qlib", "import_qlib", "quiet_qlib",
           "check_region", "read_calendar", "read_instruments", "read_bin"]

logger = logging.getLogger(__name__)

DAY_FREQ = "day"
DAY_FORMAT = "%Y-%m-%d"
INTRADAY_FORMAT = "%Y-%m-%d %H:%M:%S"
ALL_MARKET = "all"
BASE_FIELDS: tuple[str, ...] = PANEL_COLUMNS + ("factor",)  # stored as given
DERIVED_FIELDS: tuple[str, ...] = ("vwap", "change")  # computed from the stored fields
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_provider_dir(provider_uri: str | Path, freq: str = DAY_FREQ) -> Path:
    """The provider directory as a Path; FileNotFoundError naming what is missing."""
    root = Path(provider_uri).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Qlib provider directory {root} does not exist; write one with "
                                f"`kronos-quant qlib-data --panel PATH --out {root}`")
    for part in (f"calendars/{freq}.txt", f"instruments/{ALL_MARKET}.txt", "features"):
        if not (root / part).exists():
            raise FileNotFoundError(f"{root} is not a Qlib provider directory for freq {freq!r}: "
                                    f"{part} is missing")
    return root


_INITIALISED: dict[str, object] = {}


def init_qlib(provider_uri: str | Path, *, region: str = "cn", freq: str = DAY_FREQ,
              **options) -> Path:
    """``qlib.init`` on a checked provider directory, quietly; skipped when already done with
    the same settings. ``options`` go to ``qlib.init`` (e.g. ``kernels``)."""
    root = check_provider_dir(provider_uri, freq).resolve()
    region = check_region(region)
    key = repr((str(root), region, sorted(options.items())))
    if _INITIALISED.get("key") == key:
        return root
    qlib = import_qlib()
    settings = {"kernels": 1, "expression_cache": None, "dataset_cache": None,
                "logging_level": logging.WARNING, **options}
    with quiet_qlib():
        qlib.init(provider_uri=str(root), region=region, **settings)
    _INITIALISED["key"] = key
    return root


# ----------------------------------------------------------------------------- writing


@dataclass
class ProviderSummary:
    """What :func:`write_provider` wrote."""

    path: Path
    freq: str
    dates: int  # calendar length after the write
    instruments: int  # instruments in the "all" market after the write
    new_dates: int
    new_instruments: list[str] = field(default_factory=list)
    updated_instruments: int = 0
    markets: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.path}: {self.dates} {self.freq} dates, {self.instruments} instruments "
                f"({self.new_dates} new dates, {len(self.new_instruments)} new instruments, "
                f"{self.updated_instruments} written); markets {self.markets}")


def _stamp_format(freq: str) -> str:
    return DAY_FORMAT if freq == DAY_FREQ else INTRADAY_FORMAT


def read_calendar(root: Path, freq: str = DAY_FREQ) -> pd.DatetimeIndex:
    """The stored calendar (empty when the directory has none yet)."""
    path = root / "calendars" / f"{freq}.txt"
    if not path.exists():
        return pd.DatetimeIndex([], name="datetime")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return pd.DatetimeIndex(pd.to_datetime(lines, format=_stamp_format(freq)), name="datetime")


def read_instruments(root: Path, market: str = ALL_MARKET) -> pd.DataFrame:
    """instruments/<market>.txt as a frame (symbol index; start, end columns)."""
    path = root / "instruments" / f"{market.lower()}.txt"
    if not path.exists():
        return pd.DataFrame({"start": pd.DatetimeIndex([]), "end": pd.DatetimeIndex([])},
                            index=pd.Index([], name="symbol", dtype=object))
    frame = pd.read_csv(path, sep="\t", header=None, names=["symbol", "start", "end"],
                        dtype={"symbol": str}, parse_dates=["start", "end"])
    return frame.set_index("symbol")


def read_bin(path: Path, length: int) -> np.ndarray:
    """A feature file spread over ``length`` calendar slots (NaN outside its stored span)."""
    out = np.full(length, np.nan, np.float32)
    if path.exists():
        raw = np.fromfile(path, dtype="<f4")
        if raw.size:
            start = int(raw[0])
            values = raw[1:][:max(0, length - start)]
            out[start:start + len(values)] = values
    return out


def _encode_bin(values: np.ndarray) -> bytes | None:
    """File bytes for one instrument's values on the calendar: from its first to last bar."""
    present = np.flatnonzero(~np.isnan(values))
    if len(present) == 0:
        return None
    first, last = int(present[0]), int(present[-1])
    return np.concatenate([[first], values[first:last + 1]]).astype("<f4").tobytes()


def _check_symbols(names: Sequence[str]) -> dict[str, str]:
    """Panel name -> Qlib symbol (upper case); errors for unusable or colliding names."""
    symbols: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        if not _SYMBOL.match(name):
            raise ValueError(f"instrument {name!r} cannot be a Qlib symbol (a folder name): use "
                             "letters, digits, '_', '.' or '-' (e.g. rename 'BTC/USDT' to "
                             "'BTCUSDT')")
        upper = name.upper()
        if upper in seen:
            raise ValueError(f"instruments {seen[upper]!r} and {name!r} collide: Qlib symbols are "
                             "case-insensitive folder names; rename one")
        seen[upper], symbols[name] = name, upper
    return symbols


def _prepare_panel(panel: pd.DataFrame | str | Path, freq: str) -> pd.DataFrame:
    panel = load_panel(panel) if isinstance(panel, (str, Path)) else validate_panel(panel)
    if freq != DAY_FREQ:
        return panel
    stamps = panel.index.get_level_values("datetime")
    days = stamps.normalize()
    if (days != stamps).any():
        logger.info("daily provider: dropping the time of day from the bar stamps (e.g. %s)",
                    stamps[np.argmax(days != stamps)])
        panel = panel.set_axis(pd.MultiIndex.from_arrays(
            [days, panel.index.get_level_values("instrument")], names=panel.index.names))
        if not panel.index.is_unique:
            dt, inst = panel.index[np.argmax(panel.index.duplicated())]
            raise ValueError(f"instrument {inst!r} has several bars on {dt:%Y-%m-%d}; a daily "
                             "provider holds one bar per day (resample first)")
    return panel


def _merged_calendar(old: pd.DatetimeIndex, new: pd.DatetimeIndex, fmt: str) -> pd.DatetimeIndex:
    """old + the new dates after it; an error for a new date inside the stored calendar."""
    if len(old) == 0:
        return new.rename("datetime")
    inside = new[(new < old[-1]) & ~new.isin(old)]
    if len(inside):
        raise ValueError(f"date {inside[0]:{fmt}} falls inside the stored calendar "
                         f"({old[0]:{fmt}} … {old[-1]:{fmt}}) but is not in it: inserting it would "
                         "shift every stored value; write a new directory instead")
    return old.append(new[new > old[-1]]).rename("datetime")


def _check_history(symbol: str, name: str, stored: np.ndarray, given: np.ndarray,
                   calendar: pd.DatetimeIndex, fmt: str) -> None:
    """Refuse values that would change the stored part of a feature."""
    given = given[:len(stored)]
    differs = ~np.isnan(given) & ~(given.astype(np.float32) == stored)
    if differs.any():
        i = int(np.argmax(differs))
        raise ValueError(f"update would rewrite history: {symbol} {name} at {calendar[i]:{fmt}} is "
                         f"stored as {stored[i]} but the new data has {given[i]}; write a new "
                         "directory to change past values")


def _instrument_arrays(frame: pd.DataFrame | None, symbol: str, root: Path, freq: str,
                       calendar: pd.DatetimeIndex, n_old: int) -> dict[str, np.ndarray]:
    """Every field of one instrument on the merged calendar (stored part kept, checked)."""
    folder = root / "features" / symbol.lower()
    # A new instrument has no stored history: all of its slots are new.
    keep = n_old if (folder / f"close.{freq}.bin").exists() else 0
    out: dict[str, np.ndarray] = {}
    rows = None if frame is None else calendar.get_indexer(frame.index)
    for name in BASE_FIELDS + DERIVED_FIELDS:
        stored = read_bin(folder / f"{name}.{freq}.bin", keep)
        merged = np.full(len(calendar), np.nan)
        merged[:keep] = stored
        if frame is not None and name in frame.columns:
            given = np.full(len(calendar), np.nan)
            given[rows] = frame[name].to_numpy(np.float64)
            _check_history(symbol, name, stored, given, calendar, _stamp_format(freq))
            merged[keep:] = given[keep:]
        out[name] = merged
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(out["volume"] > 0, out["amount"] / out["volume"], np.nan)
        close = pd.Series(out["close"]).ffill().to_numpy()
        change = out["close"] / np.concatenate([[np.nan], close[:-1]]) - 1.0
    # Derived fields: stored history is kept as it is; only the new slots are computed.
    out["vwap"][keep:], out["change"][keep:] = vwap[keep:], change[keep:]
    return out


def _spans(root: Path, freq: str, calendar: pd.DatetimeIndex) -> dict[str, tuple]:
    """First and last bar of every stored instrument, from its close file."""
    spans = {}
    for folder in sorted((root / "features").iterdir()):
        close = read_bin(folder / f"close.{freq}.bin", len(calendar))
        present = np.flatnonzero(~np.isnan(close))
        if len(present):
            spans[folder.name.upper()] = (calendar[present[0]], calendar[present[-1]])
    return spans


def _write_markets(root: Path, markets: Mapping[str, Sequence[str]], spans: dict[str, tuple],
                   fmt: str) -> list[str]:
    """instruments/<market>.txt for "all", every stored market and ``markets`` (spans refreshed)."""
    stored = {p.stem: [] for p in (root / "instruments").glob("*.txt")}
    names = []
    for market, members in {**stored, ALL_MARKET: sorted(spans), **markets}.items():
        old = list(read_instruments(root, market).index) if market != ALL_MARKET else []
        symbols = sorted(set(old) | {m.upper() for m in members})
        unknown = [s for s in symbols if s not in spans]
        if unknown:
            raise ValueError(f"market {market!r} lists instruments without data: {unknown[:5]}")
        lines = "".join(f"{s}\t{spans[s][0]:{fmt}}\t{spans[s][1]:{fmt}}\n" for s in symbols)
        write_atomic(root / "instruments" / f"{market.lower()}.txt", lines.encode())
        names.append(market.lower())
    return names


def write_provider(panel: pd.DataFrame | str | Path, out: str | Path, *,
                   markets: Mapping[str, Sequence[str]] | Sequence[str] | str | None = None,
                   freq: str = DAY_FREQ, factor: pd.Series | None = None,
                   verbose: bool = True) -> ProviderSummary:
    """Write (or extend) a Qlib provider directory from a panel.

    Parameters
    ----------
    panel
        Canonical panel, or a CSV/Parquet file or per-symbol folder for :func:`load_panel`.
    out
        Provider directory; created if absent, appended to if it holds data for ``freq``.
    markets
        Extra instrument lists besides ``"all"``: a market name (every instrument of the
        panel), a list of names, or ``{market: [instruments]}``.
    freq
        ``"day"`` (dates without time of day) or an intraday Qlib freq such as ``"1min"``.
    factor
        Adjustment factor per panel row (default 1.0); prices are taken as already adjusted.
    verbose
        Progress bar over instruments.

    Returns
    -------
    ProviderSummary
    """
    panel = _prepare_panel(panel, freq)
    if factor is not None:
        panel = panel.assign(factor=factor.reindex(panel.index).to_numpy(np.float64))
        if panel["factor"].isna().any():
            raise ValueError(f"factor has no value for {panel.index[panel['factor'].isna()][0]}")
    else:
        panel = panel.assign(factor=1.0)
    if isinstance(markets, str):
        markets = [markets]
    if markets is not None and not isinstance(markets, Mapping):
        markets = {m: sorted(panel.index.get_level_values("instrument").unique()) for m in markets}
    root, fmt = Path(out).expanduser(), _stamp_format(freq)
    old_cal = read_calendar(root, freq)
    calendar = _merged_calendar(old_cal, pd.DatetimeIndex(panel.index.get_level_values(0).unique()),
                                fmt)
    groups = dict(tuple(panel.groupby(level="instrument", sort=True)))
    symbols = _check_symbols(list(groups))
    stored = ({p.name.upper() for p in (root / "features").iterdir()}
              if (root / "features").exists() else set())
    for name in tqdm(groups, disable=not verbose, desc="writing Qlib features", unit="instrument"):
        frame = groups[name].droplevel("instrument")
        arrays = _instrument_arrays(frame, symbols[name], root, freq, calendar, len(old_cal))
        for field_name, values in arrays.items():
            data = _encode_bin(values)
            if data is not None:
                write_atomic(root / "features" / symbols[name].lower()
                             / f"{field_name}.{freq}.bin", data)
    spans = _spans(root, freq, calendar)
    written = _write_markets(root, dict(markets or {}), spans, fmt)
    # The calendar goes last: until it is replaced, readers see the previous directory.
    write_atomic(root / "calendars" / f"{freq}.txt",
                 "".join(f"{d:{fmt}}\n" for d in calendar).encode())
    _INITIALISED.clear()  # a cached qlib.init may hold the old calendar
    return ProviderSummary(root, freq, len(calendar), len(spans), len(calendar) - len(old_cal),
                           sorted(set(symbols.values()) - stored), len(groups), written)


# ----------------------------------------------------------------------------- reading


def _fields(root: Path, freq: str) -> list[str]:
    """Panel columns the directory holds (amount only when some instrument has it)."""
    has_amount = any((root / "features").glob(f"*/amount.{freq}.bin"))
    return [c for c in PANEL_COLUMNS if c != "amount" or has_amount]


def _qlib_frame(root: Path, instruments: str | Sequence[str], fields: Sequence[str], *,
                start: object, end: object, freq: str) -> pd.DataFrame:
    """``D.features`` of ``fields`` ($-prefixed) as a (datetime, instrument) frame."""
    from qlib.data import D

    if isinstance(instruments, str):
        market = instruments.lower()
        if not (root / "instruments" / f"{market}.txt").exists():
            known = sorted(p.stem for p in (root / "instruments").glob("*.txt"))
            raise ValueError(f"market {instruments!r} is not in {root}; markets: {known}")
        universe = D.instruments(market)
    else:
        known = set(read_instruments(root).index)
        missing = [s for s in instruments if s.upper() not in known]
        if missing:
            raise ValueError(f"instruments {missing[:5]} are not in {root} "
                             f"({len(known)} instruments, e.g. {sorted(known)[:5]})")
        universe = [s.upper() for s in instruments]
    with quiet_qlib():
        frame = D.features(universe, [f"${f}" for f in fields], start_time=start, end_time=end,
                           freq=freq)
    frame.columns = list(fields)
    frame = frame.swaplevel().sort_index()
    frame.index = frame.index.set_names(["datetime", "instrument"])
    return frame


def read_provider(provider_uri: str | Path, *,
                  instruments: str | Sequence[str] | None = ALL_MARKET,
                  start: object = None, end: object = None, freq: str = DAY_FREQ,
                  region: str = "cn") -> pd.DataFrame:
    """A canonical panel read from a Qlib provider directory through ``qlib.data.D``.

    ``instruments`` is a market name (``"all"``, ``"csi300"``, …), a list of symbols or
    None (all);
    calendar slots where an instrument has no close (gaps, suspensions) are dropped. Values
    are Qlib's float32 widened to float64; instruments are Qlib's upper-case symbols.
    """
    root = init_qlib(provider_uri, region=region, freq=freq)
    fields = _fields(root, freq)
    frame = _qlib_frame(root, instruments or ALL_MARKET, fields, start=start, end=end, freq=freq)
    frame = frame[frame["close"].notna()].astype(np.float64)
    if frame.empty:
        raise ValueError(f"{root} has no bars for instruments={instruments!r} between "
                         f"{start} and {end}")
    frame.index = frame.index.set_levels(frame.index.levels[1].astype(str), level="instrument")
    return validate_panel(frame)


@dataclass
class ProviderCheck:
    """Result of :func:`check_provider`: values compared and the first mismatches."""

    path: Path
    instruments: int
    fields: list[str]
    values: int
    mismatches: list[str]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        head = (f"{self.path}: {self.instruments} instruments × {len(self.fields)} fields, "
                f"{self.values} values compared")
        if self.ok:
            return f"{head}: Qlib reads back exactly what was written"
        return "\n".join([f"{head}: {len(self.mismatches)} mismatches"] + self.mismatches[:10])


def _compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Positions where two float32 arrays differ (NaN equals NaN)."""
    return np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))


def check_provider(provider_uri: str | Path, *, panel: pd.DataFrame | None = None,
                   freq: str = DAY_FREQ, region: str = "cn") -> ProviderCheck:
    """Read every stored feature through ``qlib.init`` + ``D.features`` and compare it bit for
    bit with the files (and with ``panel``, as float32, when given: the writer's input)."""
    root = init_qlib(provider_uri, region=region, freq=freq)
    calendar = read_calendar(root, freq)
    fields = [f for f in BASE_FIELDS + DERIVED_FIELDS
              if any((root / "features").glob(f"*/{f}.{freq}.bin"))]
    frame = _qlib_frame(root, ALL_MARKET, fields, start=None, end=None, freq=freq)
    wide = {f: frame[f].unstack("instrument").reindex(calendar) for f in fields}
    symbols = list(read_instruments(root).index)
    mismatches, count = [], 0
    for symbol in symbols:
        folder = root / "features" / symbol.lower()
        for name in fields:
            stored = read_bin(folder / f"{name}.{freq}.bin", len(calendar))
            got = wide[name][symbol].to_numpy(np.float32) if symbol in wide[name] else \
                np.full(len(calendar), np.nan, np.float32)
            count += len(stored)
            for i in _compare(stored, got)[:3]:
                mismatches.append(f"{symbol} {name} {calendar[i]}: file {stored[i]}, Qlib {got[i]}")
    if panel is not None:
        mismatches += _compare_panel(_prepare_panel(panel, freq), wide, calendar)
    return ProviderCheck(root, len(symbols), fields, count, mismatches)


def _compare_panel(panel: pd.DataFrame, wide: dict[str, pd.DataFrame],
                   calendar: pd.DatetimeIndex) -> list[str]:
    """Mismatches on the panel's instruments over the span of its dates (its gaps included)."""
    dates = panel.index.get_level_values("datetime")
    calendar = calendar[(calendar >= dates.min()) & (calendar <= dates.max())]
    out = []
    for name in panel.columns:
        expected = panel[name].unstack("instrument").reindex(calendar)
        expected.columns = [c.upper() for c in expected.columns]
        got = wide[name].reindex(index=calendar, columns=expected.columns)
        exp32, got32 = expected.to_numpy(np.float32), got.to_numpy(np.float32)
        for flat in _compare(exp32.ravel(), got32.ravel())[:3]:
            i, j = divmod(int(flat), exp32.shape[1])
            out.append(f"{expected.columns[j]} {name} {calendar[i]}: panel {exp32[i, j]}, "
                       f"Qlib {got32[i, j]}")
    return out

"""Walk-forward scoring of a panel: one forecast per (rebalance date, instrument).

For a rebalance date ``t`` and an instrument with a bar at ``t``, the context window is that
instrument's last ``lookback`` bars up to and including ``t``, and its future stamps are
:func:`~kronos_quant.calendars.future_timestamps` of the window's own stamps (optionally on
an exchange calendar): nothing after ``t`` is read, so a score at ``t`` is the same in a
backtest and live, whatever later rows the panel holds. Windows of every date and instrument
are batched together into :meth:`KronosPredictor.forecast_arrays` calls (the panel is validated
once; windows travel as array slices, not DataFrames), and each window gets
its own seed derived from ``(seed, instrument, date)``, so its paths do not depend on which
windows share its batch: cached, partly cached and uncached runs agree.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import __version__
from ..calendars import CalendarLike, calendar_sessions, future_timestamps
from ..data import INDEX_NAMES, validate_panel
from ..generation import SamplingParams
from ..inputs import BAR_COLUMNS, MIN_CONTEXT, checked_int, complete_bars
from .cache import ForecastCache, module_fingerprint, weights_fingerprint, window_key
from .scorers import PathBatch, resolve_scorers, score_batch

logger = logging.getLogger(__name__)


def rebalance_dates(calendar: pd.DatetimeIndex, freq: int | str | None = 1, *,
                    start: object = None, end: object = None) -> pd.DatetimeIndex:
    """Panel dates in [start, end] at which to score.

    ``freq`` is an int ``k`` (every k-th panel date, counted from the panel's first date so
    the grid does not move with ``start``), ``None``/``1`` (every date), or a pandas offset
    alias such as ``"W"``, ``"W-FRI"``, ``"ME"`` (the last panel date of each period).
    """
    lo = pd.Timestamp(start) if start is not None else calendar[0]
    hi = pd.Timestamp(end) if end is not None else calendar[-1]
    if lo > hi:
        raise ValueError(f"start {lo} is after end {hi}")
    if freq is None or isinstance(freq, (int, np.integer)):
        step = checked_int(1 if freq is None else freq, name="freq")
        chosen = calendar[np.arange(len(calendar)) % step == 0]
    elif isinstance(freq, str):
        try:
            last = pd.Series(calendar, index=calendar).resample(freq).last().dropna()
        except (ValueError, TypeError) as err:
            raise ValueError(f"unrecognised freq {freq!r}: {err}") from None
        chosen = pd.DatetimeIndex(last.to_numpy())
    else:
        raise TypeError(f"freq must be an int, an offset alias string or None, got {freq!r}")
    chosen = chosen[(chosen >= lo) & (chosen <= hi)]
    if len(chosen) == 0:
        raise ValueError(f"no rebalance dates between {lo} and {hi} at freq={freq!r}; the "
                         f"panel spans {calendar[0]} to {calendar[-1]}")
    return pd.DatetimeIndex(chosen, name="datetime")


def window_seed(seed: int, instrument: str, date: pd.Timestamp) -> int:
    """Deterministic 63-bit seed of one window, independent of batching."""
    text = f"{int(seed)}|{instrument}|{pd.Timestamp(date).value}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


@dataclass
class WindowSet:
    """Every (date, instrument) window to forecast, in (date, instrument) order."""

    keys: pd.MultiIndex  # (N,) ("datetime", "instrument")
    inst: np.ndarray  # (N,) instrument code
    end: np.ndarray  # (N,) position of the window's last bar in its instrument's arrays
    future: list[np.ndarray]  # per window: (P,) datetime64[ns] stamps of its forecast bars
    stamps: list[np.ndarray]  # per instrument: datetime64[ns] (n_i,)
    values: list[np.ndarray]  # per instrument: float64 (n_i, C)
    columns: list[str]
    lookback: int

    def __len__(self) -> int:
        return len(self.inst)

    def window(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(values (L, C), stamps (L,)) of window ``j``: the last ``lookback`` bars ≤ its date."""
        i, stop = self.inst[j], self.end[j] + 1
        return self.values[i][stop - self.lookback:stop], self.stamps[i][stop - self.lookback:stop]


def split_instruments(panel: pd.DataFrame) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Sorted instrument names, and per instrument its stamps (datetime64[ns]) and values
    (float64, the six :data:`~kronos_quant.inputs.BAR_COLUMNS`, amount filled as the
    predictor fills it), in date order."""
    panel = complete_bars(panel)[list(BAR_COLUMNS)]
    names = panel.index.get_level_values("instrument")
    codes, uniques = pd.factorize(names, sort=True)
    order = np.argsort(codes, kind="stable")  # rows of each instrument, still in date order
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    stamps_all = panel.index.get_level_values("datetime").to_numpy("datetime64[ns]")
    values_all = panel.to_numpy(np.float64)
    rows = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return [str(u) for u in uniques], [stamps_all[r] for r in rows], [values_all[r] for r in rows]


def plan_windows(panel: pd.DataFrame, *, lookback: int, pred_len: int, dates: pd.DatetimeIndex,
                 calendar: CalendarLike = None) -> WindowSet:
    """Windows for every rebalance date and instrument that has a bar at the date and at least
    ``lookback`` bars up to it (others are skipped and logged). Each window's future stamps
    come from its own stamps alone (:func:`~kronos_quant.calendars.future_timestamps`)."""
    names, stamps, values = split_instruments(panel)
    when = dates.to_numpy("datetime64[ns]")
    parts, short = [], {}
    for code, own in enumerate(stamps):
        pos = np.minimum(np.searchsorted(own, when), len(own) - 1)
        present = own[pos] == when
        ok = present & (pos + 1 >= lookback)
        parts.append((np.flatnonzero(ok), np.full(int(ok.sum()), code), pos[ok]))
        if (present & ~ok).any():
            short[names[code]] = int((present & ~ok).sum())
    d_idx, inst, end = (np.concatenate(col) for col in zip(*parts, strict=True))
    if len(d_idx) == 0:
        longest = max(int(np.searchsorted(own, when[-1], side="right")) for own in stamps)
        raise ValueError(f"too few bars for lookback={lookback}: the longest instrument history "
                         f"up to {dates[-1]} is {longest} bars; lower lookback or start later")
    if short:
        never = sorted(set(names) - {names[c] for c in np.unique(inst)})
        logger.info("skipped %d (date, instrument) pairs with fewer than %d bars of history%s",
                    sum(short.values()), lookback,
                    f"; never scored: {never}" if never else "")
        logger.debug("skipped pairs per instrument: %s", short)
    order = np.lexsort((inst, d_idx))  # date-major, then instrument: the panel's order
    d_idx, inst, end = d_idx[order], inst[order], end[order]
    keys = pd.MultiIndex.from_arrays([dates[d_idx], np.asarray(names, dtype=object)[inst]],
                                     names=list(INDEX_NAMES))
    ws = WindowSet(keys, inst, end, [], stamps, values, list(BAR_COLUMNS), lookback)
    # Instruments trading the same days share window stamps: infer each distinct one once.
    known: dict[bytes, np.ndarray] = {}
    for j in range(len(ws)):
        own = ws.window(j)[1]
        key = own.tobytes()
        if key not in known:
            known[key] = future_timestamps(own, pred_len,
                                           calendar=calendar).to_numpy("datetime64[ns]")
        ws.future.append(known[key])
    return ws


@dataclass
class PanelForecasts:
    """Sample paths of many (date, instrument) windows.

    ``keys`` (N,) MultiIndex ("datetime", "instrument"); ``batch`` the paths and context
    statistics (see :class:`PathBatch`); ``future`` (N, P) datetime64[ns] forecast stamps;
    ``meta`` the settings that produced them (:func:`score_metadata`), carried into the
    ``attrs`` of every score frame.
    """

    keys: pd.MultiIndex
    batch: PathBatch
    future: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def score(self, scorers: str | Iterable[str] | None = None, *,
              log: bool = False) -> pd.DataFrame:
        """Scores of every window: DataFrame indexed like ``keys``, one column per scorer."""
        batch = self.batch if self.batch.log == log else replace(self.batch, log=log)
        frame = pd.DataFrame(score_batch(batch, scorers), index=self.keys)
        frame.attrs = {**self.meta, "log": bool(log)}
        return frame

    @classmethod
    def concat(cls, parts: list[PanelForecasts]) -> PanelForecasts:
        if not parts:
            raise ValueError("nothing to concatenate")
        cat = lambda f: np.concatenate([getattr(p.batch, f) for p in parts])  # noqa: E731
        batch = PathBatch(cat("paths"), cat("last_close"), cat("close_mean"), cat("close_std"),
                          log=parts[0].batch.log, clip=parts[0].batch.clip)
        keys = (parts[0].keys.append([p.keys for p in parts[1:]]) if len(parts) > 1
                else parts[0].keys)
        return cls(keys, batch, np.concatenate([p.future for p in parts]), dict(parts[0].meta))


@dataclass
class ScoringJob:
    """A planned walk-forward run: its windows and everything that makes their paths.

    Built by :func:`plan_scoring`; :meth:`run` gives the forecasts of any subset of windows,
    so a run can be split into chunks (:func:`iter_panel_forecasts`) or across processes
    (:mod:`kronos_quant.signals.distributed`) with identical results.
    """

    predictor: object
    windows: WindowSet
    pred_len: int
    sampling: SamplingParams
    seed: int
    meta: dict
    cache: ForecastCache | None = None
    fingerprint: str | None = None

    @cached_property
    def seeds(self) -> list[int]:
        """Every window's :func:`window_seed`, derived once for the whole plan (reading the keys
        one by one through the MultiIndex costs more than the hashing)."""
        keys = self.windows.keys
        stamps = keys.get_level_values("datetime").as_unit("ns").asi8  # what Timestamp.value is
        names = keys.get_level_values("instrument")
        return [window_seed(self.seed, name, pd.Timestamp(ns))
                for name, ns in zip(names, stamps, strict=True)]

    def window_seed(self, j: int) -> int:
        return self.seeds[j]

    def window_keys(self, idx: Iterable[int]) -> list[str]:
        """Content-hash keys (:func:`~.cache.window_key`) of windows ``idx``."""
        if self.fingerprint is None:
            self.fingerprint = weights_fingerprint(self.predictor)
        ws = self.windows
        return [window_key(self.fingerprint, ws.columns, *ws.window(j), ws.future[j],
                           pred_len=self.pred_len, sampling=self.sampling,
                           seed=self.window_seed(j)) for j in idx]

    def generate(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on windows ``idx`` → paths (n, S, P, 6) float32 and stamps (n, P)."""
        ws = self.windows
        values = np.stack([ws.window(j)[0] for j in idx])  # (n, L, 6)
        stamps = np.stack([ws.window(j)[1] for j in idx])  # (n, L)
        future = np.stack([ws.future[j] for j in idx])  # (n, P)
        s = self.sampling
        paths = self.predictor.forecast_arrays(
            values, stamps, future, sample_count=s.sample_count, T=s.T, top_k=s.top_k,
            top_p=s.top_p, seed=[self.window_seed(j) for j in idx])
        return paths.astype(np.float32), future

    def forecasts(self, idx: list[int], paths: np.ndarray, stamps: np.ndarray) -> PanelForecasts:
        """:class:`PanelForecasts` of windows ``idx`` from their paths (n, S, P, 6) and stamps."""
        ws, close = self.windows, self.windows.columns.index("close")
        # Context statistics as the predictor sees them (float32 inputs).
        ctx = (np.stack([ws.window(j)[0][:, close] for j in idx])
               .astype(np.float32).astype(np.float64))
        batch = PathBatch(paths, ctx[:, -1], ctx.mean(axis=1), ctx.std(axis=1),
                          clip=float(self.predictor.clip))
        return PanelForecasts(ws.keys[idx], batch, stamps, self.meta)

    def run(self, idx: list[int]) -> PanelForecasts:
        """Forecasts of windows ``idx`` (in order), from the cache where possible."""
        keys = self.window_keys(idx) if self.cache is not None else None
        hits = self.cache.get_many(keys) if keys is not None else {}
        misses = [n for n in range(len(idx)) if keys is None or keys[n] not in hits]
        paths = np.empty((len(idx), self.sampling.sample_count, self.pred_len, 6), np.float32)
        stamps = np.empty((len(idx), self.pred_len), "datetime64[ns]")
        if misses:
            paths[misses], stamps[misses] = self.generate([idx[n] for n in misses])
            if self.cache is not None:
                self.cache.put_many([keys[n] for n in misses], paths[misses], stamps[misses])
        for n, key in enumerate(keys or []):
            if key in hits:
                paths[n], stamps[n] = hits[key].paths, hits[key].stamps
        return self.forecasts(idx, paths, stamps)


def score_metadata(predictor, *, lookback: int, pred_len: int, sampling: SamplingParams,
                   seed: int, freq: int | str | None, calendar: CalendarLike) -> dict:
    """JSON-serialisable settings behind a score frame (kept in its ``attrs``)."""
    if calendar is None or isinstance(calendar, str):
        calendar_label = calendar
    else:
        sessions = pd.DatetimeIndex(calendar)
        calendar_label = (f"{len(sessions)} given sessions {sessions.min().date()}.."
                          f"{sessions.max().date()}")
    return {"lookback": int(lookback), "pred_len": int(pred_len),
            "sample_count": int(sampling.sample_count), "T": float(sampling.T),
            "top_k": int(sampling.top_k), "top_p": float(sampling.top_p), "seed": int(seed),
            "slide_block": int(predictor.slide_block), "max_context": int(predictor.max_context),
            "freq": freq if freq is None or isinstance(freq, str) else int(freq),
            "calendar": calendar_label,
            "model_fingerprint": module_fingerprint(predictor.model),
            "tokenizer_fingerprint": module_fingerprint(predictor.tokenizer),
            "kronos_quant_version": __version__}


def plan_scoring(predictor, panel: pd.DataFrame, *, lookback: int, pred_len: int,
                 sample_count: int, freq: int | str | None = 1, start: object = None,
                 end: object = None, seed: int | None = None, T: float = 1.0, top_k: int = 0,
                 top_p: float = 0.9, cache_dir: str | None = None,
                 calendar: CalendarLike = None) -> ScoringJob:
    """Check the arguments, validate the panel once and plan every window (no model run).
    Arguments as in :func:`score_panel`."""
    if not hasattr(predictor, "forecast_arrays"):
        raise TypeError(f"predictor must be a KronosPredictor, got {type(predictor).__name__}")
    lookback = checked_int(lookback, name="lookback", minimum=MIN_CONTEXT)
    if lookback > predictor.max_context:
        raise ValueError(f"lookback={lookback} is longer than the predictor's max_context="
                         f"{predictor.max_context}: the model would see only the last "
                         f"{predictor.max_context} bars of windows normalised over {lookback}")
    pred_len = checked_int(pred_len, name="pred_len")
    sampling = SamplingParams(T=T, top_k=top_k, top_p=top_p,
                              sample_count=checked_int(sample_count, name="sample_count"))
    panel = validate_panel(panel)  # tz-aware datetimes become local wall-clock time here
    panel_dates = pd.DatetimeIndex(panel.index.get_level_values("datetime").unique()).sort_values()
    dates = rebalance_dates(panel_dates, freq, start=start, end=end)
    sessions = calendar_sessions(calendar, start=panel_dates[0])  # resolved once
    ws = plan_windows(panel, lookback=lookback, pred_len=pred_len, dates=dates, calendar=sessions)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
        logger.info("no seed given: using random seed %d (pass seed= to reproduce)", seed)
    meta = score_metadata(predictor, lookback=lookback, pred_len=pred_len, sampling=sampling,
                          seed=int(seed), freq=freq, calendar=calendar)
    logger.info("planned %d windows (%d dates × up to %d instruments)", len(ws), len(dates),
                len(ws.stamps))
    return ScoringJob(predictor, ws, pred_len, sampling, int(seed), meta,
                      cache=ForecastCache(cache_dir) if cache_dir is not None else None)


def iter_panel_forecasts(predictor, panel: pd.DataFrame, *, batch_size: int | None = 256,
                         verbose: bool = True, **options) -> Iterator[PanelForecasts]:
    """Yield :class:`PanelForecasts` chunks of at most ``batch_size`` windows, in
    (date, instrument) order. Arguments as in :func:`score_panel`."""
    job = plan_scoring(predictor, panel, **options)
    if batch_size is None:  # as many windows as the predictor generates in one batch
        samples = job.sampling.sample_count
        batch_size = max(1, predictor.batch_rows(job.windows.lookback, job.pred_len,
                                                 samples) // samples)
    batch_size = checked_int(batch_size, name="batch_size")
    n = len(job.windows)
    with tqdm(total=n, disable=not verbose, desc="scoring windows", unit="window") as bar:
        for a in range(0, n, batch_size):
            chunk = job.run(list(range(a, min(a + batch_size, n))))
            bar.update(len(chunk))
            yield chunk


def forecast_panel(predictor, panel: pd.DataFrame, **options) -> PanelForecasts:
    """Every window's sample paths (for calibration or custom scoring); options as in
    :func:`score_panel` except ``scorers`` and ``log``."""
    return PanelForecasts.concat(list(iter_panel_forecasts(predictor, panel, **options)))


def score_panel(predictor, panel: pd.DataFrame, *, lookback: int, pred_len: int,
                sample_count: int, scorers: str | Iterable[str] | None = None,
                freq: int | str | None = 1, start: object = None, end: object = None,
                seed: int | None = None, log: bool = False, T: float = 1.0, top_k: int = 0,
                top_p: float = 0.9, cache_dir: str | None = None, batch_size: int | None = 256,
                calendar: CalendarLike = None, verbose: bool = True) -> pd.DataFrame:
    """Walk-forward Kronos scores of every instrument at every rebalance date.

    Parameters
    ----------
    predictor
        A :class:`~kronos_quant.predictor.KronosPredictor`.
    panel
        Canonical panel (see :mod:`kronos_quant.data`).
    lookback, pred_len, sample_count
        Context bars per window, bars forecast, sample paths per window.
    scorers
        Scorer names (default: every built-in, see :mod:`.scorers`).
    freq
        Rebalance grid: every k-th panel date (int) or the last date of each pandas period
        (``"W"``, ``"ME"``, ...); see :func:`rebalance_dates`. ``start``/``end`` bound it.
    seed
        Base seed; each window's seed is derived from it, its instrument and its date.
        ``None`` draws a fresh random seed (so the cache never serves stale draws).
    log
        Score on log instead of simple returns.
    T, top_k, top_p
        Sampling parameters, as in :meth:`KronosPredictor.forecast`.
    cache_dir
        Folder of the Parquet forecast cache; a rerun with the same inputs reads it and does
        not run the model.
    batch_size
        Windows per ``forecast_arrays`` call (the predictor splits them further to respect its
        ``max_batch_rows``); also the cache file granularity. ``None``: the windows whose
        paths fit one generation batch (:meth:`KronosPredictor.batch_rows`), so a large
        universe streams through memory in batches sized to the device.
    calendar
        Future stamps of daily windows on an exchange calendar (``"XNYS"``; needs the
        ``[calendars]`` extra) or a DatetimeIndex of sessions; None infers them from each
        window (:func:`~kronos_quant.calendars.future_timestamps`). Either way nothing after
        the date is read.
    verbose
        Progress bar over windows.

    Returns
    -------
    DataFrame indexed by ("datetime", "instrument"), one float64 column per scorer; its
    ``attrs`` hold the settings (:func:`score_metadata`, plus ``log``).
    """
    names = resolve_scorers(scorers)
    parts = [chunk.score(names, log=log) for chunk in iter_panel_forecasts(
        predictor, panel, lookback=lookback, pred_len=pred_len, sample_count=sample_count,
        freq=freq, start=start, end=end, seed=seed, cache_dir=cache_dir, batch_size=batch_size,
        T=T, top_k=top_k, top_p=top_p, calendar=calendar, verbose=verbose)]
    scores = pd.concat(parts).sort_index()
    scores.attrs = dict(parts[0].attrs)
    return scores

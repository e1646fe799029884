"""KronosPredictor: DataFrames in, sample paths out.

``predict`` / ``predict_batch`` keep the reference signatures and numbers (the mean path);
``forecast`` / ``forecast_batch`` return :class:`Forecast` objects holding every path. All
four, and ``forecast_arrays`` (windows as arrays, for walk-forward scoring), run through one
private method, :meth:`KronosPredictor._sample`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .calendars import CalendarLike
from .forecast import Forecast
from .generation import SamplingParams, generate, resolve_step
from .hub import trained_context
from .inputs import (
    BAR_COLUMNS,
    ModelInputs,
    PreparedSeries,
    prepare_arrays,
    prepare_series,
    warn_once,
)
from .model import Kronos
from .runtime import resolve_device
from .static_decode import auto_batch_rows
from .tokenizer import KronosTokenizer

logger = logging.getLogger(__name__)

# max_context when neither the caller nor the checkpoint says (the reference's default).
DEFAULT_MAX_CONTEXT = 512


def checkpoint_label(model: str | Path, tokenizer: str | Path) -> str:
    """Short label of a checkpoint pair: the last two parts of each Hub id or directory.

    ``"NeoQuasar/Kronos-small + NeoQuasar/Kronos-Tokenizer-base"`` for Hub ids,
    ``"run/best + run/tokenizer"`` for a fine-tuned run's folders.
    """
    def name(source: str | Path) -> str:
        path = Path(os.path.abspath(source)) if Path(source).exists() else Path(source)
        return "/".join(path.parts[-2:])

    return f"{name(model)} + {name(tokenizer)}"


class KronosPredictor:
    """Forecasts OHLCV(A) frames with a Kronos model and its tokenizer.

    Parameters
    ----------
    model, tokenizer
        A :class:`Kronos` network and the :class:`KronosTokenizer` it was trained with.
    device
        ``None`` auto-detects (cuda, mps, cpu).
    max_context
        Longest window the predictor sees. ``None`` (default): ``trained_context`` if known,
        else 512. Asking for more than ``trained_context`` is allowed and warned about once.
    trained_context
        The context the model was trained on (:func:`~kronos_quant.hub.trained_context`;
        :meth:`from_pretrained` reads it: 512 for Kronos-small/base, 2048 for mini, a
        finetuned run's ``lookback + pred_len``). ``None``: unknown.
    clip
        Normalised inputs are clipped to ±clip.
    slide_block
        1 (default) reproduces the reference when context + pred_len > max_context;
        k > 1 is the faster approximate sliding mode (see :mod:`kronos_quant.generation`).
    amp_dtype
        Optional autocast dtype for CUDA (``torch.bfloat16`` or ``torch.float16``).
    max_batch_rows
        Upper bound on series × sample paths generated together (bounds cache memory).
        ``None``: chosen per call from free CUDA memory, or on CPU from a fixed budget
        (:func:`~kronos_quant.static_decode.auto_batch_rows`).
    static_step, cuda_graphs
        Decode step (see :func:`~kronos_quant.generation.generate`); ``None`` takes the
        defaults there. Neither changes the draws.
    model_label
        Which model this is, in a few words; every :class:`Forecast` carries it (charts show
        it). :meth:`from_pretrained` sets the checkpoint names (:func:`checkpoint_label`).
    """

    def __init__(self, model: Kronos, tokenizer: KronosTokenizer, device: str | None = None,
                 max_context: int | None = None, clip: float = 5, *, slide_block: int = 1,
                 amp_dtype: torch.dtype | None = None, max_batch_rows: int | None = 1024,
                 static_step: bool | None = None, cuda_graphs: bool | None = None,
                 model_label: str | None = None, trained_context: int | None = None):
        if (tokenizer.s1_bits, tokenizer.s2_bits) != (model.s1_bits, model.s2_bits):
            raise ValueError(f"tokenizer bits (s1={tokenizer.s1_bits}, s2={tokenizer.s2_bits}) do "
                             f"not match the model's (s1={model.s1_bits}, s2={model.s2_bits})")
        if tokenizer.d_in != len(BAR_COLUMNS):
            raise ValueError(f"tokenizer d_in is {tokenizer.d_in}; the predictor feeds "
                             f"{len(BAR_COLUMNS)} columns {list(BAR_COLUMNS)}")
        if max_context is None:
            max_context = trained_context or DEFAULT_MAX_CONTEXT
        if max_context < 1 or clip <= 0 or (max_batch_rows is not None and max_batch_rows < 1):
            raise ValueError("max_context, clip and max_batch_rows must be positive")
        if trained_context is not None and max_context > trained_context:
            warn_once(f"max_context {model_label} {max_context}",
                      "max_context=%d is longer than the %d-bar context %s was trained on: "
                      "forecasts from longer contexts extrapolate beyond its training",
                      max_context, trained_context, model_label or "the model")
        self.trained_context = trained_context
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.max_context, self.clip = int(max_context), float(clip)
        self.slide_block, self.amp_dtype = slide_block, amp_dtype
        self.max_batch_rows = max_batch_rows
        resolve_step(self.device, static_step=static_step, cuda_graphs=cuda_graphs)  # errors now
        self.static_step, self.cuda_graphs = static_step, cuda_graphs
        self.model_label = model_label

    @classmethod
    def from_pretrained(cls, model: str, tokenizer: str, *, device: str | None = None,
                        max_context: int | None = None, clip: float = 5,
                        revision: str | None = None,
                        cache_dir: str | None = None, **kwargs: Any) -> KronosPredictor:
        """Load a predictor/tokenizer pair (Hub ids or directories) strictly and wrap them.

        Example: ``KronosPredictor.from_pretrained("NeoQuasar/Kronos-small",
        "NeoQuasar/Kronos-Tokenizer-base")``. Extra keyword arguments go to ``__init__``;
        ``model_label`` defaults to the checkpoint names (:func:`checkpoint_label`);
        ``trained_context`` to what the checkpoint records (:func:`~kronos_quant.hub.
        trained_context`), which ``max_context=None`` then uses.
        """
        kwargs.setdefault("model_label", checkpoint_label(model, tokenizer))
        kwargs.setdefault("trained_context", trained_context(model))
        hub = dict(revision=revision, cache_dir=cache_dir)
        return cls(Kronos.from_pretrained(model, **hub),
                   KronosTokenizer.from_pretrained(tokenizer, **hub), device=device,
                   max_context=max_context, clip=clip, **kwargs)

    # -- the one code path ---------------------------------------------------------------
    def _sample(self, series: Sequence[ModelInputs], *, pred_len: int, sampling: SamplingParams,
                seed: int | Sequence[int] | None, verbose: bool) -> list[np.ndarray]:
        """Normalised bars (sample_count, pred_len, 6) for each series of model inputs.

        Series of equal length are generated together (different lengths cannot share a
        window), in chunks of at most ``max_batch_rows`` paths.
        """
        longest = max(len(s.x) for s in series)
        if longest > self.max_context:
            warn_once(f"long context {self.max_context}",
                      "context of %d bars exceeds max_context=%d: normalised over all %d bars "
                      "(as the reference does) while the model attends to the last %d; pass "
                      "at most %d bars to forecast on the scale the model was trained on",
                      longest, self.max_context, longest, self.max_context, self.max_context)
        generator: torch.Generator | list[torch.Generator] | None = None
        if isinstance(seed, Sequence):
            if len(seed) != len(series):
                raise ValueError(f"got {len(seed)} seeds for {len(series)} series")
            generator = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seed]
        elif seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        rows = self.batch_rows(longest, pred_len, sampling.sample_count)
        per_chunk = max(1, rows // sampling.sample_count)
        chunks = []
        for length in sorted({len(s.x) for s in series}):
            members = [i for i, s in enumerate(series) if len(s.x) == length]
            chunks += [members[a:a + per_chunk] for a in range(0, len(members), per_chunk)]
        out: list[np.ndarray] = [np.empty(0)] * len(series)
        for members in tqdm(chunks, disable=not verbose or len(chunks) == 1, desc="batches"):
            def stack(field: str, members: list[int] = members) -> torch.Tensor:
                arr = np.stack([getattr(series[i], field) for i in members])
                return torch.from_numpy(arr).to(self.device)

            # Per-series generators travel with their series into whichever chunk it lands in.
            chunk_generator = ([generator[i] for i in members] if isinstance(generator, list)
                               else generator)
            result = generate(self.model, self.tokenizer, stack("x"), stack("x_stamp"),
                              stack("y_stamp"), pred_len=pred_len, max_context=self.max_context,
                              sampling=sampling, generator=chunk_generator,
                              slide_block=self.slide_block, amp_dtype=self.amp_dtype,
                              static_step=self.static_step, cuda_graphs=self.cuda_graphs,
                              verbose=verbose)
            bars = result.bars.cpu().numpy()  # (n, S, P, 6)
            for j, i in enumerate(members):
                out[i] = bars[j]
        return out

    def batch_rows(self, ctx_len: int, pred_len: int, sample_count: int) -> int:
        """Series × paths generated together for windows of this size: ``max_batch_rows``,
        or with ``None`` what fits in memory (:func:`~.static_decode.auto_batch_rows`)."""
        if self.max_batch_rows is not None:
            return self.max_batch_rows
        return auto_batch_rows(self.model, ctx_len=ctx_len, pred_len=pred_len,
                               samples=sample_count, max_context=self.max_context,
                               dtype=self.amp_dtype or torch.float32)

    def _check_pred_len(self, pred_len: Any) -> int:
        if not isinstance(pred_len, (int, np.integer)) or not 1 <= pred_len <= self.max_context:
            raise ValueError(f"pred_len must be an integer in 1..{self.max_context}, "
                             f"got {pred_len!r}")
        return int(pred_len)

    def _prepare(self, frames: Sequence[pd.DataFrame], x_ts: Sequence[Any],
                 y_ts: Sequence[Any], pred_len: int, calendar: CalendarLike = None,
                 repair: str | None = None) -> list[PreparedSeries]:
        self._check_pred_len(pred_len)
        if not (len(frames) == len(x_ts) == len(y_ts)):
            raise ValueError(f"got {len(frames)} frames, {len(x_ts)} x_timestamp and "
                             f"{len(y_ts)} y_timestamp entries; they must match")
        if not frames:
            raise ValueError("no series given")
        prepared = []
        for k, (df, xt, yt) in enumerate(zip(frames, x_ts, y_ts, strict=True)):
            try:
                prepared.append(prepare_series(df, pred_len=int(pred_len), x_timestamp=xt,
                                               y_timestamp=yt, clip=self.clip,
                                               calendar=calendar, repair=repair))
            except (ValueError, TypeError) as err:
                if len(frames) == 1:
                    raise
                raise type(err)(f"series {k}: {err}") from None
        return prepared

    # -- reference-compatible API --------------------------------------------------------
    def predict(self, df: pd.DataFrame, x_timestamp: Any = None, y_timestamp: Any = None,
                pred_len: int | None = None, T: float = 1.0, top_k: int = 0,
                top_p: float = 0.9, sample_count: int = 1, verbose: bool = True) -> pd.DataFrame:
        """Mean forecast of one series, as the reference computes it (same arguments)."""
        if pred_len is None:
            raise ValueError("pred_len is required")
        return self.predict_batch([df], [x_timestamp], [y_timestamp], pred_len, T=T,
                                  top_k=top_k, top_p=top_p, sample_count=sample_count,
                                  verbose=verbose)[0]

    def predict_batch(self, df_list: Sequence[pd.DataFrame], x_timestamp_list: Sequence[Any],
                      y_timestamp_list: Sequence[Any], pred_len: int, T: float = 1.0,
                      top_k: int = 0, top_p: float = 0.9, sample_count: int = 1,
                      verbose: bool = True) -> list[pd.DataFrame]:
        """Mean forecasts of many series (lengths may differ), averaged over paths in
        normalised space and un-normalised, exactly as the reference does."""
        if not isinstance(df_list, (list, tuple)):
            raise TypeError("df_list must be a list or tuple of DataFrames")
        sampling = SamplingParams(T=T, top_k=top_k, top_p=top_p, sample_count=sample_count)
        prepared = self._prepare(df_list, x_timestamp_list, y_timestamp_list, pred_len)
        paths = self._sample(prepared, pred_len=int(pred_len), sampling=sampling, seed=None,
                             verbose=verbose)
        return [pd.DataFrame(p.denormalise(bars.mean(axis=0)), columns=list(BAR_COLUMNS),
                             index=p.y_index) for p, bars in zip(prepared, paths, strict=True)]

    # -- sample paths --------------------------------------------------------------------
    def forecast(self, df: pd.DataFrame, *, pred_len: int, x_timestamp: Any = None,
                 y_timestamp: Any = None, sample_count: int = 20, T: float = 1.0,
                 top_k: int = 0, top_p: float = 0.9, seed: int | None = None,
                 verbose: bool = False, name: str | None = None,
                 calendar: CalendarLike = None, repair: str | None = None) -> Forecast:
        """Sample ``sample_count`` future paths of one series.

        Columns are matched case-insensitively and checked (prices > 0, volume >= 0, all
        finite; see :func:`~kronos_quant.inputs.clean_bars`). Timestamps come from
        ``x_timestamp``, else the frame's DatetimeIndex or its one datetime column (any of
        :data:`~kronos_quant.inputs.DATETIME_ALIASES`); tz-aware stamps are read as their
        local wall-clock time. Without ``y_timestamp`` the future stamps are
        :func:`~kronos_quant.calendars.future_timestamps` of the context stamps, on
        ``calendar`` if given (``"XNYS"`` or a DatetimeIndex of sessions). ``seed`` makes the
        paths reproducible without touching torch's global random state. The Forecast's
        ``model_label`` is the predictor's.

        Refused: fewer than :data:`~kronos_quant.inputs.MIN_CONTEXT` bars, a constant series,
        impossible bars (high below low, open or close; low above open or close) unless
        ``repair="clip"`` (widens them, logging each change). Warned about once: a context
        longer than ``max_context``, an unused adjusted-close column, a volume of 0 on every
        bar, an opening gap that looks like an unadjusted split.
        """
        return self.forecast_batch([df], pred_len=pred_len, x_timestamps=[x_timestamp],
                                   y_timestamps=[y_timestamp], sample_count=sample_count, T=T,
                                   top_k=top_k, top_p=top_p, seed=seed, verbose=verbose,
                                   names=[name], calendar=calendar, repair=repair)[0]

    def forecast_batch(self, series: Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame], *,
                       pred_len: int, x_timestamps: Sequence[Any] | None = None,
                       y_timestamps: Sequence[Any] | None = None, sample_count: int = 20,
                       T: float = 1.0, top_k: int = 0, top_p: float = 0.9,
                       seed: int | Sequence[int] | None = None, verbose: bool = False,
                       names: Sequence[str | None] | None = None,
                       calendar: CalendarLike = None, repair: str | None = None):
        """Forecasts for many series: a dict symbol → Forecast for a mapping input, else a list.

        Series may have different lengths. Arguments as in :meth:`forecast`; ``seed`` may also
        be one seed per series, giving each its own random stream so that its paths do not
        depend on which other series share its generation batch.
        """
        keyed = isinstance(series, Mapping)
        labels = list(series.keys()) if keyed else list(names or [None] * len(series))
        frames = list(series.values()) if keyed else list(series)
        n = len(frames)
        sampling = SamplingParams(T=T, top_k=top_k, top_p=top_p, sample_count=sample_count)
        prepared = self._prepare(frames, list(x_timestamps or [None] * n),
                                 list(y_timestamps or [None] * n), pred_len, calendar,
                                 repair)
        paths = self.sample_prepared(prepared, sampling=sampling, seed=seed, verbose=verbose)
        # strict=False: ``names`` comes from the caller and its length is not checked.
        out = [Forecast(paths=bars, index=p.y_index,
                        history=pd.DataFrame(p.raw, index=p.x_index, columns=list(BAR_COLUMNS)),
                        name=None if label is None else str(label), model_label=self.model_label)
               for p, bars, label in zip(prepared, paths, labels, strict=False)]
        return dict(zip(labels, out, strict=True)) if keyed else out

    def forecast_arrays(self, values: np.ndarray, stamps: np.ndarray, future_stamps: np.ndarray,
                        *, sample_count: int = 20, T: float = 1.0, top_k: int = 0,
                        top_p: float = 0.9, seed: int | Sequence[int] | None = None,
                        verbose: bool = False) -> np.ndarray:
        """Sample paths of many equal-length windows given as arrays (no DataFrames).

        ``values`` (N, L, 6) bars in :data:`~kronos_quant.inputs.BAR_COLUMNS` order (volume
        and amount filled, as :func:`~kronos_quant.inputs.complete_bars` does), ``stamps``
        (N, L) and ``future_stamps`` (N, pred_len) tz-naive datetime64. Values are checked as
        in :meth:`forecast` (:func:`~kronos_quant.inputs.prepare_arrays`). Other arguments as
        in :meth:`forecast_batch`. Returns paths (N, sample_count, pred_len, 6) float32 in
        price units: the same numbers :meth:`forecast_batch` gives for the same windows.
        """
        inputs = prepare_arrays(values, stamps, future_stamps, clip=self.clip)
        sampling = SamplingParams(T=T, top_k=top_k, top_p=top_p, sample_count=sample_count)
        return np.stack(self.sample_prepared(inputs, sampling=sampling, seed=seed,
                                             verbose=verbose))

    def sample_prepared(self, series: Sequence[ModelInputs], *, sampling: SamplingParams,
                        seed: int | Sequence[int] | None = None,
                        verbose: bool = False) -> list[np.ndarray]:
        """Sample paths of series already checked and prepared
        (:func:`~kronos_quant.inputs.prepare_series` or
        :func:`~kronos_quant.inputs.prepare_arrays`): (sample_count, pred_len, 6) in price
        units each, pred_len being their future stamps' length (all equal; context lengths
        may differ). The generation step :meth:`forecast_batch` and :meth:`forecast_arrays`
        share; ``seed`` as there."""
        lengths = {len(s.y_stamp) for s in series}
        if len(lengths) != 1:
            raise ValueError(f"series must share their number of future stamps, got {lengths}")
        pred_len = self._check_pred_len(lengths.pop())
        paths = self._sample(series, pred_len=pred_len, sampling=sampling, seed=seed,
                             verbose=verbose)
        return [s.denormalise(bars) for s, bars in zip(series, paths, strict=True)]

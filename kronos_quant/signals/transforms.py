"""Cross-sectional transforms: rank, z-score, winsorise and demean scores per date.

Every function takes a score Series or DataFrame indexed by ("datetime", "instrument") and
returns the same shape, transforming each column within each date independently (so a date
never sees another date). NaN scores stay NaN and are ignored by the per-date statistics.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd

Scores = TypeVar("Scores", pd.Series, pd.DataFrame)


def check_scores(scores: pd.Series | pd.DataFrame, *, what: str = "scores") -> None:
    """Raise a clear error unless ``scores`` follow the signal contract."""
    if not isinstance(scores, (pd.Series, pd.DataFrame)):
        raise TypeError(f"{what} must be a pandas Series or DataFrame, got {type(scores).__name__}")
    names = tuple(scores.index.names)
    if not isinstance(scores.index, pd.MultiIndex) or names != ("datetime", "instrument"):
        raise ValueError(f"{what} must be indexed by a MultiIndex ('datetime', 'instrument'), "
                         f"got index names {list(names)}")
    if not scores.index.is_unique:
        row = int(np.argmax(scores.index.duplicated()))
        raise ValueError(f"{what} has a duplicate row {scores.index[row]}")
    columns = scores.to_frame() if isinstance(scores, pd.Series) else scores
    for col in columns.columns:
        dtype = columns[col].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise TypeError(f"{what} column {col!r} must be numeric, got dtype {dtype}")


def score_column(scores: pd.Series | pd.DataFrame, column: str | None = None) -> pd.Series:
    """The one score column to trade on, validated, as a float64 Series.

    A DataFrame must have exactly one column unless ``column`` names one of them; a Series
    is taken as it is (``column``, if given, must be its name).
    """
    check_scores(scores)
    if isinstance(scores, pd.DataFrame):
        if column is None:
            if scores.shape[1] != 1:
                raise ValueError(f"scores have {scores.shape[1]} columns {list(scores.columns)}; "
                                 f"pick one with column=")
            column = scores.columns[0]
        elif column not in scores.columns:
            raise ValueError(f"column {column!r} is not a score column: {list(scores.columns)}")
        scores = scores[column]
    elif column is not None and column != scores.name:
        raise ValueError(f"column {column!r} given but the scores are a Series "
                         f"named {scores.name!r}")
    return scores.astype("float64")


def _by_date(scores: pd.Series | pd.DataFrame):
    check_scores(scores)
    return scores.astype("float64").groupby(level="datetime", sort=False)


def cs_rank(scores: Scores, *, pct: bool = True) -> Scores:
    """Rank within each date (ties averaged); ``pct=True`` scales to (0, 1]."""
    return _by_date(scores).rank(method="average", pct=pct)


def cs_demean(scores: Scores) -> Scores:
    """Subtract each date's mean."""
    grouped = _by_date(scores)
    return scores.astype("float64") - grouped.transform("mean")


def cs_zscore(scores: Scores) -> Scores:
    """(score − date mean) / date std (population std); 0 where a date's scores are all equal."""
    grouped = _by_date(scores)
    centred = scores.astype("float64") - grouped.transform("mean")
    std = grouped.transform(lambda s: s.std(ddof=0))
    return (centred / std.where(std > 0)).where(std > 0, centred * 0.0)


def cs_winsorise(scores: Scores, *, lower: float = 0.01, upper: float = 0.99) -> Scores:
    """Clip each date's scores to that date's [``lower``, ``upper``] quantiles."""
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got lower={lower}, upper={upper}")
    grouped = _by_date(scores)
    lo = grouped.transform(lambda s: s.quantile(lower))
    hi = grouped.transform(lambda s: s.quantile(upper))
    return scores.astype("float64").clip(lower=lo, upper=hi, axis=0)


cs_winsorize = cs_winsorise

TRANSFORMS = {"rank": cs_rank, "zscore": cs_zscore, "winsorise": cs_winsorise,
              "winsorize": cs_winsorise, "demean": cs_demean}


def cross_sectional(scores: Scores, method: str, **options) -> Scores:
    """Apply a named transform: ``"rank"``, ``"zscore"``, ``"winsorise"`` or ``"demean"``."""
    if method not in TRANSFORMS:
        raise ValueError(f"unknown cross-sectional transform {method!r}; "
                         f"choose from {sorted(TRANSFORMS)}")
    return TRANSFORMS[method](scores, **options)

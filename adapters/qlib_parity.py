"""How Qlib's TopkDropout holdings compare with our engines' for the same TradeSpec.

Qlib follows its own rules (lot rounding, price limits, an unstable sort of tied scores, and a
delisted name kept at its last close), so :func:`kronos_quant.adapters.qlib.run_topk_dropout`
reports, day by day, where its held names part from ours and which rules were in play.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..orders import order_plan
from ..portfolio import align
from ..tradespec import TradeSpec

__all__ = ["held_names", "qlib_differences"]


def held_names(holdings: pd.DataFrame) -> pd.Series:
    """Per day, the sorted tuple of names with a non-zero position."""
    values = holdings.to_numpy() != 0
    names = np.asarray(holdings.columns)
    return pd.Series([tuple(names[row]) for row in values], index=holdings.index)


def qlib_differences(holdings: pd.DataFrame, weights: pd.DataFrame, spec: TradeSpec, *,
                     limit: float | None, spans: pd.DataFrame) -> dict:
    """Where Qlib's held names part from ours (``target_weights`` with the same spec, placed
    on the same days under the rules of :mod:`kronos_quant.orders`, instruments present from
    their first to their last day, ``spans``: ``start``/``end`` per instrument), and which of
    Qlib's rules may explain it (``limit``: its price limit)."""
    calendar = holdings.index.union(weights.index)
    spans = spans.reindex(weights.columns)
    days = calendar.to_numpy()[:, None]
    present = pd.DataFrame((spans["start"].to_numpy() <= days) & (days <= spans["end"].to_numpy()),
                           index=calendar, columns=weights.columns)
    due = align(weights, calendar, execution=spec.execution, fill=False)
    orders = order_plan(due, present).orders.ffill().fillna(0.0)
    ours = held_names((orders.reindex(holdings.index).abs() > 1e-12).astype(float))
    theirs = held_names(holdings)
    after = {}  # name → first day Qlib still holds it after its last bar
    for name in holdings.columns.intersection(spans.index):
        late = holdings.index[(holdings[name] != 0).to_numpy()
                              & (holdings.index > spans.loc[name, "end"])]
        if len(late):
            after[name] = str(late[0])
    differ = ours.index[ours.to_numpy() != theirs.reindex(ours.index).to_numpy()]
    rules = ["ties: Qlib orders equal scores with an unstable sort, and held names without a "
             "score in its own order (ours: by name)",
             "delisting: Qlib keeps a name whose bars end, valued at its last close"]
    if spec.lot_size is not None:
        rules.append(f"lots: orders rounded to {spec.lot_size} shares")
    if limit is not None:
        rules.append(f"price limits: no trade on a {limit:.1%} move")
    return {"days": len(ours), "days_differing": len(differ),
            "first_differing": str(differ[0]) if len(differ) else None,
            "delisted_held": after, "qlib_rules": rules}

"""``TradeSpec``: every trading term of a backtest or live run, defined once.

How scores become trades — which names, what size, when, at what cost — is one frozen
object that every engine reads (vectorbt, backtrader, Qlib, the live loop and the
``backtest`` command), so the same call gives the same trades everywhere. Each term has one
default, chosen for a research backtest (the reasons are in :class:`TradeSpec` and
docs/portfolio.md); ``None`` means "use the default" wherever a function takes ``spec=``.

>>> spec = TradeSpec(topk=5, fees=0.001)
>>> spec.replace(execution="next_close").execution
'next_close'
>>> TradeSpec.from_json(spec.to_json()) == spec
True
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .execution import DEFAULT_EXECUTION, EXECUTIONS, execution_lag, execution_price
from .inputs import checked_int

__all__ = ["TradeSpec", "METHODS", "TERMS", "DEPRECATED_TERMS", "DEFAULT_TOPK", "ENGINES",
           "resolve_spec"]

METHODS: tuple[str, ...] = ("topk", "rank", "proportional", "threshold", "long_short",
                            "conviction")
# topk when the method needs one and none is given (None = "the default").
DEFAULT_TOPK = 10
# Engines with fractional shares and proportional costs only (no lots, no minimum cost).
FRACTIONAL_ENGINES: tuple[str, ...] = ("vectorbt", "backtrader", "live")
ENGINES: tuple[str, ...] = (*FRACTIONAL_ENGINES, "qlib")
# Old keyword names: one release with a DeprecationWarning, then removed.
DEPRECATED_TERMS: dict[str, str] = {"init_cash": "cash", "account": "cash",
                                    "commission": "fees", "risk_degree": "invested",
                                    "trade_unit": "lot_size"}
# Qlib keyword names from_qlib reads that are market settings, not trading terms.
_QLIB_MARKET = ("limit_threshold", "freq", "codes", "volume_threshold", "signal")


def _number(name: str, value: Any, *, low: float | None = None, low_open: bool = False,
            high: float | None = None) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok:
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    bad = (not np.isfinite(value) or (low is not None and (value <= low if low_open
                                                           else value < low))
           or (high is not None and value > high))
    if bad:
        rng = ("" if low is None else f"{'>' if low_open else '>='} {low:g}") + \
              ("" if high is None else f"{' and ' if low is not None else ''}<= {high:g}")
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return value


@dataclass(frozen=True)
class TradeSpec:
    """How scores become trades: one default per term, validated once.

    Parameters (defaults chosen for a research backtest)
    ----------------------------------------------------
    method : ``"topk"``. Equal weight on the best names is the plainest test of a ranking
        signal; ``rank``, ``proportional``, ``threshold``, ``long_short`` and ``conviction``
        are described in :func:`kronos_quant.portfolio.target_weights`.
    topk : None = 10 for ``topk``/``long_short`` (enough names to diversify a ranking on a
        small universe; more than the names scored is a warning and the book holds what there
        is), no cap for the other methods; an integer caps the names per leg.
    n_drop : None (rebalance fully to the top names, the cleanest read of the signal). An
        integer gives Qlib's TopkDropout: at most ``n_drop`` swaps per rebalance.
    long_short : False (long only: what most research books and every Qlib strategy hold).
    gross : 1.0, fully invested and unlevered: the sum of |weights| per rebalance.
    max_weight : None (no cap: equal weights need none).
    min_score, threshold : None (no filter; ``threshold`` only with ``method="threshold"``).
    rebalance : 1, every score date (the scores' own cadence decides); k = every k-th date
        that has a score.
    execution : ``"next_open"``: a score known after bar t's close trades at t+1's open, the
        earliest honest fill (see :mod:`kronos_quant.execution`).
    cash : 1,000,000, large enough that fractional sizes and a minimum cost do not bite.
    fees, slippage, min_cost : 0. Costs depend on the market (stamp duty, maker/taker,
        spread) and no single default is right anywhere, so the default is the frictionless
        baseline and every result records its spec; set them for the market you trade.
        ``fees`` and ``slippage`` are fractions of the traded value (0.001 = 10 bp); slippage
        moves the fill price (buys higher, sells lower). ``min_cost`` (currency per order) is
        Qlib's only.
    invested : 1.0, the share of equity the weights apply to (Qlib's ``risk_degree``; its 0.95
        is a buffer for lot rounding, which fractional engines do not need).
    lot_size : None (fractional shares, as vectorbt and backtrader trade); an integer rounds
        Qlib's orders to lots (A-shares: 100).
    """

    method: str = "topk"
    topk: int | None = None
    n_drop: int | None = None
    long_short: bool = False
    gross: float = 1.0
    max_weight: float | None = None
    min_score: float | None = None
    threshold: float | tuple[float, float] | None = None
    rebalance: int = 1
    execution: str = DEFAULT_EXECUTION
    cash: float = 1_000_000.0
    fees: float = 0.0
    slippage: float = 0.0
    min_cost: float = 0.0
    invested: float = 1.0
    lot_size: int | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if not isinstance(self.long_short, (bool, np.bool_)):
            raise TypeError(f"long_short must be True or False, got {self.long_short!r}")
        set_("long_short", bool(self.long_short) or self.method == "long_short")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {list(EXECUTIONS)}, "
                             f"got {self.execution!r}")
        for name in ("topk", "n_drop", "lot_size"):
            value = getattr(self, name)
            if value is not None:
                set_(name, checked_int(value, name=name, minimum=0 if name == "n_drop" else 1))
        set_("rebalance", checked_int(self.rebalance, name="rebalance"))
        set_("gross", _number("gross", self.gross, low=0.0, low_open=True))
        set_("cash", _number("cash", self.cash, low=0.0, low_open=True))
        set_("invested", _number("invested", self.invested, low=0.0, low_open=True, high=1.0))
        for name in ("fees", "slippage"):
            set_(name, _number(name, getattr(self, name), low=0.0, high=0.5))
        set_("min_cost", _number("min_cost", self.min_cost, low=0.0))
        if self.max_weight is not None:
            set_("max_weight", _number("max_weight", self.max_weight, low=0.0, low_open=True))
        if self.min_score is not None:
            set_("min_score", _number("min_score", self.min_score))
        set_("threshold", self._checked_threshold())
        self._check_combinations()

    def _checked_threshold(self) -> float | tuple[float, float] | None:
        t = self.threshold
        if self.method != "threshold":
            if t is not None:
                raise ValueError(f"threshold only applies to method='threshold', not "
                                 f"{self.method!r}")
            return None
        if t is None:
            raise ValueError("method='threshold' needs threshold=t (or a (low, high) pair)")
        if isinstance(t, (tuple, list)):
            if len(t) != 2:
                raise ValueError(f"threshold must be a number or a (low, high) pair, got {t!r}")
            low, high = (_number("threshold", v) for v in t)
            if low > high:
                raise ValueError(f"threshold low {low} is above high {high}")
            return (low, high)
        return _number("threshold", t)

    def _check_combinations(self) -> None:
        if self.n_drop is not None:
            if self.method != "topk" or self.long_short:
                raise ValueError("n_drop (Qlib TopkDropout) works with method='topk', long only")
            if self.n_drop > self.names:
                raise ValueError(f"n_drop must be in 0..topk={self.names}, got {self.n_drop}")

    # -- derived ------------------------------------------------------------------------
    @property
    def names(self) -> int | None:
        """Names per leg: ``topk``, or :data:`DEFAULT_TOPK` for methods that need a count."""
        if self.topk is None and self.method in ("topk", "long_short"):
            return DEFAULT_TOPK
        return self.topk

    @property
    def long_leg(self) -> float:
        """Most of the equity the long names may hold: ``gross × invested`` (half of it in
        long-short)."""
        return self.gross * self.invested / (2.0 if self.long_short else 1.0)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """``threshold`` as (low, high): long above high, short (long-short) below low."""
        t = self.threshold
        return None if t is None else (t if isinstance(t, tuple) else (-t, t))

    @property
    def lag(self) -> int:
        """Bars from the score's bar to the execution bar (see :mod:`kronos_quant.execution`)."""
        return execution_lag(self.execution)

    @property
    def price(self) -> str:
        """Panel column orders fill at: ``"open"`` for ``next_open``, else ``"close"``."""
        return execution_price(self.execution)

    # -- overrides ----------------------------------------------------------------------
    def replace(self, **terms: Any) -> TradeSpec:
        """A copy with ``terms`` changed; a ``None`` value means the term's default.

        An unknown term is a TypeError naming it and the valid ones; the copy is validated."""
        _check_names(terms)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: defaults[k] if v is None else v
                                            for k, v in terms.items()})

    def check_engine(self, engine: str) -> TradeSpec:
        """Raise ValueError if ``engine`` cannot trade this spec exactly; return the spec."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
        problems = []
        if engine in FRACTIONAL_ENGINES:
            if self.lot_size is not None:
                problems.append(f"lot_size={self.lot_size} (it trades fractional shares)")
            if self.min_cost:
                problems.append(f"min_cost={self.min_cost:g} (it charges proportional fees)")
            if self.long_leg > 1.0:
                problems.append(f"a long leg of {self.long_leg:g} × equity (gross={self.gross:g}"
                                f"{', long-short' if self.long_short else ''}) borrows cash, "
                                "and it has no margin account here")
        else:
            if self.method != "topk" or self.long_short:
                problems.append(f"method={self.method!r} (TopkDropout holds equal-weight "
                                "top names, long only)")
            for name in ("max_weight", "min_score"):
                if getattr(self, name) is not None:
                    problems.append(f"{name}={getattr(self, name)!r}")
            if self.gross != 1.0:
                problems.append(f"gross={self.gross:g} (use invested= for the share held)")
            if self.lag != 1:
                problems.append(f"execution={self.execution!r} (Qlib trades a score at t "
                                "on bar t+1: use next_open or next_close)")
        if problems:
            raise ValueError(f"{engine} cannot trade this spec: {'; '.join(problems)}")
        return self

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every term as plain JSON types (``threshold`` pairs become lists)."""
        out = dataclasses.asdict(self)
        if isinstance(self.threshold, tuple):
            out["threshold"] = list(self.threshold)
        return out

    @classmethod
    def from_dict(cls, terms: Mapping[str, Any]) -> TradeSpec:
        """Inverse of :meth:`to_dict` (unknown keys: TypeError; missing keys: defaults)."""
        terms = dict(terms)
        _check_names(terms)
        if isinstance(terms.get("threshold"), list):
            terms["threshold"] = tuple(terms["threshold"])
        return cls(**terms)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TradeSpec:
        return cls.from_dict(json.loads(text))

    # -- Qlib ---------------------------------------------------------------------------
    def to_qlib(self) -> dict[str, Any]:
        """Qlib's ``TopkDropoutStrategy`` kwargs, exchange kwargs and account.

        ``n_drop=None`` (full rebalance) is ``n_drop=topk``; Qlib has no price slippage, so
        ``slippage`` is added to both cost ratios (equal to first order: a buy at p(1+s) with
        fee f costs p(1+s)(1+f) against p(1+f+s))."""
        self.check_engine("qlib")
        cost = self.fees + self.slippage
        return {"strategy": {"topk": self.names, "n_drop": self.names if self.n_drop is None
                             else self.n_drop, "risk_degree": self.invested},
                "exchange": {"deal_price": self.price, "open_cost": cost, "close_cost": cost,
                             "min_cost": self.min_cost, "trade_unit": self.lot_size},
                "account": self.cash}

    @classmethod
    def from_qlib(cls, *, strategy: Mapping[str, Any] | None = None,
                  exchange: Mapping[str, Any] | None = None, account: float | None = None,
                  **terms: Any) -> TradeSpec:
        """A spec from Qlib's strategy and exchange kwargs (and ``account``); ``terms``
        override. Market settings (``limit_threshold``, ``codes``, …) are not trading terms
        and are ignored; our engines charge one fee rate both ways, so unequal
        ``open_cost``/``close_cost`` are refused."""
        strategy, exchange = dict(strategy or {}), dict(exchange or {})
        known = {"topk", "n_drop", "risk_degree", "signal", "deal_price", "open_cost",
                 "close_cost", "min_cost", "trade_unit", *_QLIB_MARKET}
        unknown = sorted((set(strategy) | set(exchange)) - known)
        if unknown:
            raise TypeError(f"from_qlib does not know {unknown}; it reads {sorted(known)}")
        out: dict[str, Any] = {}
        for name in ("topk", "n_drop"):
            if name in strategy:
                out[name] = strategy[name]
        if "risk_degree" in strategy:
            out["invested"] = strategy["risk_degree"]
        deal = str(exchange.get("deal_price", "open")).lstrip("$")
        if deal not in ("open", "close"):
            raise ValueError(f"deal_price must be open or close, got {exchange['deal_price']!r}")
        out["execution"] = "next_open" if deal == "open" else "next_close"
        buy, sell = exchange.get("open_cost", 0.0), exchange.get("close_cost", 0.0)
        if buy != sell:
            raise ValueError(f"open_cost={buy} and close_cost={sell} differ; TradeSpec charges "
                             f"one fee rate on buys and sells: pass fees= (e.g. their mean "
                             f"{(buy + sell) / 2:g})")
        out["fees"] = buy
        out["min_cost"] = exchange.get("min_cost", 0.0)
        out["lot_size"] = exchange.get("trade_unit")
        if account is not None:
            out["cash"] = account
        return cls.from_dict({**out, **terms})


TERMS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TradeSpec))


def _check_names(terms: Mapping[str, Any]) -> None:
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise TypeError(f"unknown trading term(s) {unknown}; TradeSpec terms are {list(TERMS)}")


def resolve_spec(spec: TradeSpec | None, terms: Mapping[str, Any], *,
                 engine: str | None = None, stacklevel: int = 3) -> TradeSpec:
    """``spec`` (default: ``TradeSpec()``) with keyword ``terms`` on top, for an engine.

    Old names (:data:`DEPRECATED_TERMS`, and Qlib's ``costs`` mapping) still work with a
    DeprecationWarning; giving an old name and its new name together is a TypeError."""
    if spec is not None and not isinstance(spec, TradeSpec):
        raise TypeError(f"spec must be a TradeSpec, got {type(spec).__name__}")
    terms = dict(terms)
    if "costs" in terms:
        costs = dict(terms.pop("costs") or {})
        _deprecated("costs", "fees= and min_cost=", stacklevel)
        qlib = TradeSpec.from_qlib(exchange={"open_cost": costs.pop("open_cost", 0.0),
                                             "close_cost": costs.pop("close_cost", 0.0),
                                             "min_cost": costs.pop("min_cost", 0.0), **costs})
        for name in ("fees", "min_cost"):
            terms.setdefault(name, getattr(qlib, name))
    for old, new in DEPRECATED_TERMS.items():
        if old in terms:
            if new in terms:
                raise TypeError(f"give {new}= or the deprecated {old}=, not both")
            _deprecated(old, f"{new}=", stacklevel)
            terms[new] = terms.pop(old)
    out = (spec or TradeSpec()).replace(**terms)
    return out.check_engine(engine) if engine is not None else out


def _deprecated(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{old}= is deprecated and will be removed in the next release; use {new} "
                  "(a TradeSpec term)", DeprecationWarning, stacklevel=stacklevel + 1)

"""Options several commands share, defined once: the model, walk-forward scoring, and the
``type=`` checks of numbers (a bad value is one usage line naming the option as typed)."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import MIN_CONTEXT, REPAIRS, checked_int

logger = logging.getLogger(__name__)


def int_option(minimum: int = 1) -> Callable[[str], int]:
    """``type=`` for an integer option >= ``minimum`` (a clear usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            return checked_int(int(text), name="value", minimum=minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, "
                                             f"got {text!r}") from None
    parse.__name__ = f"integer >= {minimum}"
    return parse


def non_negative(text: str) -> float:
    """``type=`` for a finite number >= 0 (fees, slippage)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive(text: str) -> float:
    """``type=`` for a finite number > 0 (cash)."""
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def probability(text: str) -> float:
    """``type=`` for a number strictly between 0 and 1 (a significance level)."""
    value = non_negative(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def csv_list(text: str | None) -> list[str] | None:
    """``a,b , c`` → ``["a", "b", "c"]`` (None stays None)."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def add_model_args(parser: argparse.ArgumentParser, *, default_model: str | None = None,
                   default_tokenizer: str | None = None) -> None:
    """Options every model-using command shares."""
    parser.add_argument("--model", default=default_model,
                        help="predictor: Hub id (e.g. NeoQuasar/Kronos-small) or directory")
    parser.add_argument("--tokenizer", default=default_tokenizer,
                        help="tokenizer: Hub id (e.g. NeoQuasar/Kronos-Tokenizer-base) "
                             "or directory")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--max-context", type=int_option(1), default=None,
                        help="longest window the predictor sees (default: the context the "
                             "checkpoint was trained on: 512 small/base, 2048 mini, a "
                             "finetuned run's lookback + pred-len; else 512)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """How a command reads the user's bars: the timestamps' format and impossible bars."""
    parser.add_argument("--date-format", default=None, metavar="FORMAT",
                        help="strptime format of the file's timestamps, e.g. %%d/%%m/%%Y for "
                             "day-first dates (default: inferred)")
    parser.add_argument("--repair", choices=REPAIRS, default=None,
                        help="clip: widen bars whose high is below their low/open/close (or "
                             "low above open/close) instead of refusing them; every change "
                             "is logged")


def model_context(model: str | Path | None, max_context: int | None) -> int:
    """The context a command's model will get: ``--max-context``, else what the checkpoint
    was trained on, else the predictor's default (known before loading any weights)."""
    from ..hub import trained_context  # torch: not needed to parse the command line
    from ..predictor import DEFAULT_MAX_CONTEXT

    return max_context or (trained_context(model) if model else None) or DEFAULT_MAX_CONTEXT


def check_lookback(lookback: int, *, context: int, bars: int | None = None,
                   source: str = "") -> None:
    """``--lookback`` against the data (``bars`` in ``source``) and the model's context."""
    if bars is not None and lookback > bars:
        raise ValueError(f"--lookback {lookback} is more than the {bars} bars in {source}")
    if lookback > context:
        raise ValueError(f"--lookback {lookback} is longer than the model's context of "
                         f"{context} bars (what it was trained on, or --max-context): lower "
                         "--lookback, or raise --max-context knowingly")


def add_scoring_args(parser: argparse.ArgumentParser, *,
                     title: str = "walk-forward forecasts") -> None:
    """The walk-forward forecast options (``--lookback`` … ``--batch-size``) as one argument
    group: ``kronos-quant score`` and every command that scores with ``--model`` use these."""
    g = parser.add_argument_group(title)
    g.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=64,
                   help="context bars per window")
    g.add_argument("--pred-len", type=int_option(1), default=5, help="bars forecast per window")
    g.add_argument("--samples", type=int_option(1), default=16, help="sample paths per window")
    g.add_argument("--freq", default="1",
                   help="rebalance every k-th date (int) or a pandas period such as W, ME")
    g.add_argument("--start", default=None, help="first rebalance date (inclusive)")
    g.add_argument("--end", default=None, help="last rebalance date (inclusive)")
    g.add_argument("--seed", type=int_option(0), default=0)
    g.add_argument("--T", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--top-k", type=int_option(0), default=0,
                   help="sample from the k likeliest tokens (0: off)")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass")
    g.add_argument("--calendar", default=None,
                   help="exchange calendar for daily future stamps, e.g. XNYS (needs the "
                        "[calendars] extra; default: weekdays)")
    g.add_argument("--cache-dir", default=None,
                   help="Parquet forecast cache folder (resumable runs)")
    g.add_argument("--batch-size", type=int_option(1), default=256,
                   help="windows per generation call")


def scoring_options(args: argparse.Namespace) -> dict:
    """Keyword options of :func:`~kronos_quant.signals.forecast_panel` from the options
    :func:`add_scoring_args` added (``cache_dir`` and ``batch_size`` are left to the caller)."""
    freq = int(args.freq) if args.freq.isdigit() else args.freq
    return dict(lookback=args.lookback, pred_len=args.pred_len, sample_count=args.samples,
                freq=freq, start=args.start, end=args.end, seed=args.seed,
                T=args.T, top_k=args.top_k, top_p=args.top_p, calendar=args.calendar)


# Trading terms: one flag per TradeSpec term, shared by `backtest` and `qlib-backtest`.
# (flag, type, help); the default shown is TradeSpec's own.
_TRADE_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("method", None, "how scores become weights"),
    ("topk", int_option(1), "names per leg (default: 10 for topk/long_short, no cap otherwise)"),
    ("n_drop", int_option(0), "Qlib TopkDropout: at most this many swaps per rebalance "
                              "(default: full rebalance)"),
    ("long_short", None, "long and short legs, net 0"),
    ("gross", positive, "sum of |weights|"),
    ("max_weight", positive, "cap on each |weight|"),
    ("min_score", float, "long names need score >= this"),
    ("threshold", float, "with --method threshold: long above t, short below -t"),
    ("rebalance", int_option(1), "trade every k-th date that has a score"),
    ("execution", None, "when a score at t trades"),
    ("cash", positive, "starting cash"),
    ("fees", non_negative, "per trade, a fraction of the traded value (0.001 = 10 bp)"),
    ("slippage", non_negative, "fill price moved by this fraction (buys up, sells down)"),
    ("min_cost", non_negative, "minimum cost per order, in currency (Qlib only)"),
    ("invested", positive, "share of equity the weights apply to (Qlib's risk_degree)"),
    ("lot_size", int_option(1), "round orders to lots of this many shares (Qlib only; "
                                "default: fractional shares)"),
)


def add_trade_args(parser: argparse.ArgumentParser, *, deprecated: str | None = None) -> None:
    """The :class:`~kronos_quant.tradespec.TradeSpec` terms as options (``--topk`` …
    ``--lot-size``), each showing the spec's default; an absent option takes the default.
    ``deprecated`` (``"init_cash"`` or ``"account"``) keeps an old cash option working."""
    from ..execution import EXECUTIONS
    from ..tradespec import METHODS, TradeSpec

    defaults = TradeSpec()
    g = parser.add_argument_group("trading terms (a TradeSpec; the same in every engine)")
    for name, kind, text in _TRADE_FLAGS:
        flag = "--" + name.replace("_", "-")
        value = getattr(defaults, name)
        shown = "" if "default:" in text else f" (default: {'none' if value is None else value})"
        extra: dict[str, Any] = {"type": kind} if kind is not None else {}
        if name == "method":
            extra = {"choices": METHODS}
        elif name == "execution":
            extra = {"choices": EXECUTIONS}
        elif name == "long_short":
            extra = {"action": "store_const", "const": True}
        g.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=text + shown, **extra)
    if deprecated is not None:
        g.add_argument("--" + deprecated.replace("_", "-"), dest=deprecated, type=positive,
                       default=argparse.SUPPRESS, help="deprecated: use --cash")


def trade_spec(args: argparse.Namespace):
    """The TradeSpec of the options :func:`add_trade_args` added (absent: the default)."""
    from ..tradespec import DEPRECATED_TERMS, TERMS, resolve_spec

    terms = {name: value for name, value in vars(args).items()
             if name in TERMS or name in DEPRECATED_TERMS}
    for old in set(terms) & set(DEPRECATED_TERMS):
        logger.warning("--%s is deprecated; use --%s", old.replace("_", "-"),
                       DEPRECATED_TERMS[old].replace("_", "-"))
    return resolve_spec(None, terms)

"""Options several commands share, defined once: the model, walk-forward scoring, and the
``type=`` checks of numbers (a bad value is one usage line naming the option as typed)."""
from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from ..inputs import MIN_CONTEXT, checked_int


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
    parser.add_argument("--max-context", type=int_option(1), default=512,
                        help="longest window the predictor sees (512 small/base, 2048 mini)")


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

"""``kronos-quant`` command line: a thin dispatcher over per-feature subcommands.

Each feature module exposes ``register(subparsers)``, which adds its subcommand and sets
``func`` (called with the parsed arguments, returning an exit code). Modules are imported
here, at the top layer, so the library never depends on the CLI.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "kronos_quant.demo",
    "kronos_quant.forecast_cli",
    "kronos_quant.finetune.cli",
    "kronos_quant.signals.cli",
    "kronos_quant.backtest_cli",
    "kronos_quant.qlib_cli",
    "kronos_quant.live_cli",
)


def add_model_args(parser: argparse.ArgumentParser, *, default_model: str | None,
                   default_tokenizer: str | None) -> None:
    """Options every model-using command shares."""
    from .inputs import int_option
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kronos-quant",
                                     description="Kronos forecasts, signals and finetuning.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Bad input: one clear line, not a traceback (use -v to see where it came from).
        if args.verbose:
            raise
        print(f"kronos-quant {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""``kronos-quant`` command line: every command of the package, and nothing else.

One module per command group (:mod:`.forecast`, :mod:`.signals` (score, evaluate),
:mod:`.backtest`, :mod:`.qlib`, :mod:`.live`, :mod:`.finetune`, :mod:`.demo`, :mod:`.serve`);
each exposes ``register(subparsers)``, which adds its subcommands and sets ``func`` (called
with the parsed arguments, returning an exit code). Shared options live in :mod:`.options`.
argparse is imported only in this package, and nothing outside it imports it: the library
never depends on its command line. :func:`main` is the one entry point (``kronos-quant``,
``python -m kronos_quant.cli``) and handles errors once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = ("demo", "forecast", "finetune", "signals", "backtest", "qlib", "live",
                   "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kronos-quant",
                                     description="Kronos forecasts, signals and finetuning.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
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

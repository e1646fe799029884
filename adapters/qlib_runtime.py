"""The Qlib package itself: importing it, silencing its known harmless noise, and the
region conventions our adapters make explicit.

Provider directories (writing, reading, checking) are :mod:`kronos_quant.adapters.qlib_data`;
backtests are :mod:`kronos_quant.adapters.qlib`. Qlib is imported lazily
(``pip install "kronos-quant[qlib]"``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

from . import require_engine

# Region conventions made explicit (Qlib's own defaults are CN and silent).
REGION_DEFAULTS: dict[str, dict[str, float | int | None]] = {
    "cn": {"trade_unit": 100, "limit_threshold": 0.095},
    "us": {"trade_unit": 1, "limit_threshold": None},
}


def import_qlib():
    """The ``qlib`` package (:func:`require_engine`), imported with its import-time noise
    held back: Qlib needs this set-up, so it keeps a helper of its own."""
    with quiet_qlib():
        qlib = require_engine("qlib")
    _import_gym_quietly()
    return qlib


def _import_gym_quietly() -> None:
    """Qlib's strategies import gym, which prints an unmaintained-package banner to stderr on
    import: import it first with that one message held back (anything else is passed on)."""
    if "gym" in sys.modules:
        return
    held = io.StringIO()
    with contextlib.redirect_stderr(held):
        try:
            import gym  # noqa: F401
        except ImportError:
            pass
    text = held.getvalue()
    if text and "Gym has been unmaintained" not in text:
        sys.stderr.write(text)


class _DropMessages(logging.Filter):
    """Drops log records whose message contains one of ``parts``."""

    def __init__(self, *parts: str):
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(part in record.getMessage() for part in self.parts)


# Known harmless third-party output around Qlib calls: (logger, message part) pairs.
_QUIET_LOGS = (("qlib.BaseExecutor", "`common_infra` is not set"),
               # a daily backtest asks for a future calendar that no user data has
               ("qlib.data", "load calendar error: freq="),
               ("qlib.data", "You can get future calendar"))


@contextlib.contextmanager
def quiet_qlib(*, progress: bool = True) -> Iterator[None]:
    """Silence the known harmless noise of Qlib and its dependencies, narrowly (by message
    or module); ``progress=False`` also hides Qlib's own backtest progress bar."""
    filters = [(logging.getLogger(name), _DropMessages(part)) for name, part in _QUIET_LOGS]
    for target, flt in filters:
        target.addFilter(flt)
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        for module in ("qlib", "mlflow", "gym", "joblib"):
            warnings.filterwarnings("ignore", category=FutureWarning, module=module)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning,
                                module=r"qlib\.utils\.index_data")
        warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")
        if not progress:
            stack.enter_context(_no_backtest_bar())
        try:
            yield
        finally:
            for target, flt in filters:
                target.removeFilter(flt)


@contextlib.contextmanager
def _no_backtest_bar() -> Iterator[None]:
    """Qlib's backtest loop has no switch for its tqdm bar: swap in a disabled one meanwhile."""
    import functools
    import importlib

    loop = importlib.import_module("qlib.backtest.backtest")  # the module, not the function

    original = loop.tqdm
    loop.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        loop.tqdm = original


def check_region(region: str) -> str:
    """``region`` lower-cased, or a ValueError naming the supported ones."""
    key = str(region).lower()
    if key not in REGION_DEFAULTS:
        raise ValueError(f"region must be one of {sorted(REGION_DEFAULTS)}, got {region!r}")
    return key

"""Adapters to external engines (vectorbt, backtrader, Qlib, QuantStats, ccxt).

Each engine is an optional extra, imported only inside the functions that use it through
:func:`require_engine`; nothing here imports an engine, so ``import kronos_quant.adapters``
works on a bare install.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["ENGINE_EXTRAS", "install_hint", "require_engine"]

# Importable module name -> the pyproject extra that installs it.
ENGINE_EXTRAS: dict[str, str] = {
    "vectorbt": "vectorbt",
    "backtrader": "backtrader",
    "qlib": "qlib",
    "quantstats": "reports",
    "ccxt": "crypto",
}


def install_hint(*extras: str) -> str:
    """The pip command that installs ``extras``, e.g. ``pip install "kronos-quant[qlib]"``."""
    return f'pip install "kronos-quant[{",".join(extras)}]"'


def require_engine(module: str, extra: str | None = None) -> ModuleType:
    """Import the engine ``module``, or raise ImportError naming the extra that installs it.

    Parameters
    ----------
    module
        Importable name, e.g. ``"vectorbt"``.
    extra
        The extra to name; by default the one :data:`ENGINE_EXTRAS` maps ``module`` to.
    """
    extra = extra or ENGINE_EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed ({err}): {install_hint(extra)}") from err

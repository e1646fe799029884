"""``kronos-quant serve``: a forecast API and a dashboard (application layer; needs ``[serve]``).

:func:`create_app` builds the FastAPI application from a predictor and the state folders of
live loops to watch; :class:`ServeSettings` holds every default and limit; :func:`check_bind`
is the rule that keeps the server on loopback unless a token is set. FastAPI is imported
only when :func:`create_app` is first used, so the settings (and ``kronos-quant serve
--help``) work without the ``[serve]`` extra.
"""
from __future__ import annotations

from typing import Any

from .settings import LimitError, ServeSettings, check_bind, is_loopback

__all__ = ["create_app", "ServeSettings", "LimitError", "check_bind", "is_loopback"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

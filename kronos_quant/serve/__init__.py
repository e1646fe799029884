"""``kronos-quant serve``: a forecast API and a dashboard (application layer; needs ``[serve]``).

:func:`create_app` builds the FastAPI application from a predictor and the state folders of
live loops to watch; :class:`ServeSettings` holds every default and limit; :func:`check_bind`
is the rule that keeps the server on loopback unless a token is set. FastAPI is imported
here, so import this package only where the ``[serve]`` extra is installed.
"""
from __future__ import annotations

from .app import create_app
from .settings import LimitError, ServeSettings, check_bind, is_loopback

__all__ = ["create_app", "ServeSettings", "LimitError", "check_bind", "is_loopback"]

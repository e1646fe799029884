"""``kronos-quant serve``: the forecast API and the dashboard, on this machine by default.

    kronos-quant serve                                  # embedded demo model, 127.0.0.1:8000
    kronos-quant serve --model NeoQuasar/Kronos-small --tokenizer NeoQuasar/Kronos-Tokenizer-base
    kronos-quant serve --state runs/hourly --state runs/daily   # watch live loops (read-only)

Open http://127.0.0.1:8000/ for the dashboard (a forecast page, one page per ``--state``) and
/docs for the API. Beyond loopback (``--host 0.0.0.0``) a token is required: ``--token`` or,
better (it stays out of the process list), the ``KRONOS_QUANT_TOKEN`` environment variable;
every endpoint but /health then needs ``Authorization: Bearer <token>`` and the dashboard asks
for it once. The server never writes files and never reads a path a client names.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from ..adapters import require_engine
from .options import add_model_args, int_option

logger = logging.getLogger(__name__)
TOKEN_ENV = "KRONOS_QUANT_TOKEN"


def dashboard_command(state: str | Path | None = None, *, port: int = 8000) -> str:
    """The one-line command that serves the dashboard, watching the live loop in ``state`` if
    given (``make demo`` ends by printing it)."""
    watch = f" --state {state}" if state is not None else ""
    return f"kronos-quant serve{watch} --port {port}   # then open http://127.0.0.1:{port}/"


def build_app(args: argparse.Namespace):
    """The application a ``serve`` command line describes (also used by the tests)."""
    from .. import assets
    from ..demo import demo_series
    from ..serve import ServeSettings, create_app
    from ..strategies.ledger import Ledger

    bundled = assets.embedded_demo()
    predictor, label = assets.demo_predictor(
        args.model, args.tokenizer, device=args.device, max_context=args.max_context,
        assets=bundled if args.model is None and args.tokenizer is None else None)
    example, name = demo_series(bundled, bundled.lookback) if bundled else (None, "example")
    for state in args.state:
        if not (Path(state) / Ledger.FILE).is_file():
            logger.warning("--state %s has no ledger yet; its page waits for the loop", state)
    given = {"batch_window_ms": args.batch_window_ms, "max_batch": args.max_batch,
             "refresh_s": args.refresh, "model_process": args.model_process or None}
    settings = ServeSettings(**{k: v for k, v in given.items() if v is not None})
    return create_app(predictor, states=args.state, token=_token(args), settings=settings,
                      model_label=label, example=example, example_name=name)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def _serve(args: argparse.Namespace) -> int:
    require_engine("fastapi", extra="serve")
    uvicorn = require_engine("uvicorn", extra="serve")
    from ..serve import check_bind

    token = _token(args)
    check_bind(args.host, token)  # before the model loads
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    app = build_app(args)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"kronos-quant serve: dashboard http://{host}:{args.port}/ , API "
          f"http://{host}:{args.port}/docs" + (" (token required)" if token else ""),
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, server_header=False,
                log_level="warning" if args.quiet else "info", access_log=not args.quiet)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..serve.settings import ServeSettings  # no FastAPI import: `serve --help` always works

    p = subparsers.add_parser("serve", help="forecast API and dashboard (needs [serve])",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--state", action="append", default=[], metavar="DIR",
                   help="state folder of a live loop to watch, read-only (repeatable)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; others need a token)")
    p.add_argument("--port", type=int_option(1), default=8000, help="port (default: %(default)s)")
    p.add_argument("--token", default=None,
                   help=f"access token (prefer the {TOKEN_ENV} environment variable)")
    p.add_argument("--threads", type=int_option(1), default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-window-ms", type=float, default=None,
                   help="longest a batch waits for requests on their way to share its "
                        f"model call (default: {ServeSettings.batch_window_ms})")
    p.add_argument("--max-batch", type=int_option(1), default=None,
                   help=f"most forecasts in one model call (default: {ServeSettings.max_batch})")
    p.add_argument("--model-process", action="store_true",
                   help="run the model in a process of its own (CPU: requests are read and "
                        "answered while it works)")
    p.add_argument("--refresh", type=float, default=None, help="seconds between the live "
                   f"pages' refreshes (default: {ServeSettings.refresh_s})")
    p.set_defaults(func=_serve)

"""The FastAPI application behind ``kronos-quant serve``: forecast API, live views, dashboard.

:func:`create_app` builds it from a predictor, the state folders of live loops to watch and an
optional token; ``kronos-quant serve`` runs it under uvicorn. Endpoints (``/docs`` lists
them): ``/health``; ``POST /forecast`` (JSON or CSV bars → quantiles, mean, scores, paths)
and ``POST /score`` (a small panel → walk-forward scores of its last date); ``/live`` and
``/live/{name}/decisions|positions|equity|coverage`` (read-only ledger views); the dashboard
at ``/`` (forecast page) and ``/loops/{name}`` (one page per live loop).
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from .. import __version__
from ..signals import score_panel
from ..strategies.ledger import to_ms
from .batching import ForecastBatcher, Overloaded
from .guard import COOKIE, BodyLimit, Token, TokenGuard
from .ledger_view import LedgerView, unique_views
from .pages import docs_page, login_page
from .requests import (
    ForecastRequest,
    ScoreRequest,
    forecast_job,
    forecast_payloads,
    parse_quantile_text,
    read_csv_bars,
    score_panel_input,
    score_payload,
)
from .settings import ServeSettings

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = ("app.js", "live.js", "forecast.js", "style.css")
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


def plotly_js() -> Path:
    """plotly.min.js as bundled in the plotly package (served locally: no CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def one_line(err: BaseException) -> str:
    """A short, single-line message of an exception (pydantic errors joined by '; ')."""
    if isinstance(err, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                         for e in err.errors(include_url=False))
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def model_failure(what: str, err: BaseException) -> JSONResponse:
    logger.error("%s failed: %s: %s", what, type(err).__name__, err, exc_info=err)
    return error(500, f"{what} failed ({type(err).__name__}: {one_line(err)[:200]})")


FORECAST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ForecastRequest.model_json_schema()},
    "text/csv": {"schema": {"type": "string", "description":
                            "header row then one bar per row: timestamp, open, high, low, "
                            "close[, volume, amount]; settings as query parameters"}}}}}
SCORE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ScoreRequest.model_json_schema()}}}}


def create_app(predictor: Any, *, states: list[str | Path] = (), token: str | None = None,
               settings: ServeSettings | None = None, model_label: str | None = None,
               example: pd.DataFrame | None = None, example_name: str = "example") -> FastAPI:
    """The service for ``predictor`` (a :class:`~kronos_quant.KronosPredictor`).

    Parameters
    ----------
    states
        State folders of live loops to watch (read-only); each is named by its folder.
    token
        Access token; ``None`` leaves every endpoint open (loopback use only, see
        :func:`~kronos_quant.serve.settings.check_bind`).
    settings
        Defaults and limits (:class:`ServeSettings`; ``None``: the defaults).
    model_label
        What ``/health`` and every reply call the model (default: the predictor's label).
    example, example_name
        Bars the dashboard's "example" button loads (e.g. the demo model's bundled series),
        and their name.
    """
    settings = settings or ServeSettings()
    label = model_label or getattr(predictor, "model_label", None) or "kronos"
    views = unique_views(list(states))
    batcher = ForecastBatcher(predictor, window_s=settings.batch_window_ms / 1000.0,
                              max_batch=settings.max_batch, max_pending=settings.max_pending,
                              reply=partial(forecast_payloads, model_label=label),
                              process=settings.model_process)
    guard = Token(token)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(batcher.start)
        yield
        batcher.close()

    app = FastAPI(title="kronos-quant serve", version=__version__, docs_url=None,
                  redoc_url=None, lifespan=lifespan,
                  description="Kronos forecasts over HTTP, and read-only views of live loops.")
    app.state.batcher, app.state.settings, app.state.views = batcher, settings, views
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(TokenGuard, token=guard)

    _model_routes(app, predictor, batcher=batcher, settings=settings, label=label)
    _live_routes(app, views, settings=settings)
    _pages(app, token=guard, example=example, example_name=example_name, views=views)
    return app


def _model_routes(app: FastAPI, predictor: Any, *, batcher: ForecastBatcher,
                  settings: ServeSettings, label: str) -> None:
    """/health, /forecast and /score."""

    @app.get("/health", summary="liveness, model and version (no token needed)")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": label, "version": __version__}

    @app.post("/forecast", summary="forecast one series", openapi_extra=FORECAST_BODY,
              description="JSON body, or text/csv with the settings as query parameters. "
                          "Equal to KronosPredictor.forecast with the reply's seed.")
    async def forecast(request: Request) -> Response:
        try:
            with batcher.arriving():
                req = await _forecast_request(request)
                # Checking and preparing bars is pandas work: off the event loop.
                job = await asyncio.to_thread(forecast_job, req, settings, clip=predictor.clip,
                                              max_context=predictor.max_context)
        except (ValidationError, ValueError, TypeError) as err:
            return error(422, one_line(err))
        try:
            payload = await batcher.submit(job)
        except Overloaded as err:
            return JSONResponse({"detail": str(err)}, status_code=503,
                                headers={"Retry-After": "1"})
        except Exception as err:
            return model_failure("forecast", err)
        return JSONResponse(payload)

    @app.post("/score", summary="walk-forward scores of a small panel's last date",
              openapi_extra=SCORE_BODY,
              description="Equal to kronos_quant.signals.score_panel at the panel's last date.")
    async def score(request: Request) -> Response:
        try:
            req = ScoreRequest.model_validate_json(await request.body())
            panel, options = await asyncio.to_thread(score_panel_input, req, settings,
                                                     predictor.max_context)
        except (ValidationError, ValueError, TypeError) as err:
            return error(422, one_line(err))
        try:
            scores = await batcher.call(score_panel, panel, **options)
        except (ValueError, TypeError) as err:  # windows that cannot be planned
            return error(422, one_line(err))
        except Exception as err:
            return model_failure("scoring", err)
        return JSONResponse(score_payload(scores, label))


def _live_routes(app: FastAPI, views: dict[str, LedgerView], *,
                 settings: ServeSettings) -> None:
    """/live and the read-only views of each watched ledger."""

    def view(name: str) -> LedgerView:
        if name not in views:
            raise LookupError(f"no live loop named {name!r}; watching {sorted(views)}")
        return views[name]

    def ledger_reply(name: str, read) -> Response:
        try:
            return JSONResponse(read(view(name)))
        except LookupError as err:  # unknown name, or no ledger yet (LedgerMissing)
            return error(404, one_line(err))
        except sqlite3.Error as err:
            return error(503, f"ledger of {name!r} could not be read: {one_line(err)}")

    @app.get("/live", summary="every watched live loop: settings, equity, heartbeat")
    def live() -> Response:
        loops = []
        for v in views.values():
            try:
                loops.append(v.summary())
            except sqlite3.Error as err:
                loops.append({"name": v.name, "status": "error", "message": one_line(err)})
        return JSONResponse({"loops": loops, "refresh_s": settings.refresh_s})

    @app.get("/live/{name}/decisions", summary="decisions with their forecasts and scores")
    def decisions(name: str, since: str | None = None, limit: int = 100) -> Response:
        try:
            since_ms = None if since is None else (
                int(since) if since.lstrip("-").isdigit() else to_ms(pd.Timestamp(since)))
        except ValueError:
            return error(422, f"since must be epoch milliseconds or a timestamp, got {since!r}")
        if not 1 <= limit <= settings.max_decisions:
            return error(422, f"limit must be in 1..{settings.max_decisions} "
                              f"(this server's limit max_decisions), got {limit}")
        return ledger_reply(name, lambda v: {"name": name, "decisions": v.decisions(
            since_ms=since_ms, limit=limit)})

    @app.get("/live/{name}/positions", summary="cash and open positions, marked")
    def positions(name: str) -> Response:
        return ledger_reply(name, lambda v: {"name": name, **v.positions()})

    @app.get("/live/{name}/equity", summary="the equity curve")
    def equity(name: str) -> Response:
        return ledger_reply(name, lambda v: {"name": name, **v.equity()})

    @app.get("/live/{name}/coverage", summary="realised closes vs the forecast 10-90% band")
    def coverage(name: str) -> Response:
        return ledger_reply(name, lambda v: {"name": name, **v.coverage()})


async def _forecast_request(request: Request) -> ForecastRequest:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    body = await request.body()
    if kind in CSV_TYPES:
        q = request.query_params
        fields: dict[str, Any] = {k: q[k] for k in ("pred_len", "sample_count", "seed", "T",
                                                    "top_k", "top_p", "name", "paths") if k in q}
        fields["quantiles"] = parse_quantile_text(q.get("quantiles"))
        return ForecastRequest.model_validate({"bars": read_csv_bars(body), **fields})
    if kind != "application/json":
        raise ValueError(f"unsupported content type {kind!r}; send application/json or text/csv")
    try:
        return ForecastRequest.model_validate_json(body)
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise ValueError("the body is not valid JSON") from None
        raise


def _pages(app: FastAPI, *, token: Token, example: pd.DataFrame | None, example_name: str,
           views: dict[str, LedgerView]) -> None:
    """The dashboard, its static files, the login form and /docs."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/loops/{name}", include_in_schema=False)
    def loop_page(name: str) -> Response:
        if name not in views:
            return error(404, f"no live loop named {name!r}")
        return FileResponse(STATIC / "live.html")

    @app.get("/static/{file}", include_in_schema=False)
    def static(file: str) -> Response:
        if file == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript")
        if file not in STATIC_FILES:
            return error(404, "not found")
        return FileResponse(STATIC / file)

    @app.get("/example.csv", include_in_schema=False)
    def example_csv() -> Response:
        if example is None:
            return error(404, "this server has no example series")
        safe = "".join(ch for ch in example_name[:64] if ch.isprintable() and ch not in '"\\'
                       and ord(ch) < 256) or "example"
        return Response(example.to_csv(index_label="timestamp"), media_type="text/csv",
                        headers={"Content-Disposition": f'inline; filename="{safe}.csv"'})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    @app.get("/login", include_in_schema=False)
    def login_form(next: str = "/") -> Response:
        if not token.enabled:
            return RedirectResponse("/", status_code=303)
        return HTMLResponse(login_page(next))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        target = form.get("next", ["/"])[0]
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # only pages of this server
        if not token.enabled:
            return RedirectResponse(target, status_code=303)
        if not token.matches(form.get("token", [""])[0]):
            return HTMLResponse(login_page(target, wrong=True), status_code=401)
        reply = RedirectResponse(target, status_code=303)
        reply.set_cookie(COOKIE, token.session(), httponly=True, samesite="strict", path="/")
        return reply

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        reply = RedirectResponse("/login", status_code=303)
        reply.delete_cookie(COOKIE, path="/")
        return reply


__all__ = ["create_app", "plotly_js"]

"""Every default and limit of ``kronos-quant serve`` in one settings object.

A field left at ``None`` in a request means "the server's default" from here; a value above
a limit is refused with a 422 naming the limit (:func:`check_limit`). The binding rule —
loopback only unless a token is set — is :func:`check_bind`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LOOPBACK_NAMES = ("localhost",)


class LimitError(ValueError):
    """A request asked for more than the server allows (answered with 422)."""


@dataclass(frozen=True)
class ServeSettings:
    """Defaults and limits of the forecast service and dashboard.

    Attributes
    ----------
    pred_len, sample_count, quantiles
        Defaults of a ``/forecast`` request that leaves them out.
    lookback
        Default context of a ``/score`` request (bars per instrument).
    max_body_bytes
        Largest request body (413 above it).
    max_bars
        Most bars per series in one request.
    max_pred_len, max_samples
        Most bars forecast and sample paths per series (``max_pred_len`` is further capped by
        the predictor's ``max_context``).
    max_reply_paths
        Most sample paths a reply may carry with ``"paths": true``.
    max_quantiles
        Most quantiles per request.
    max_instruments
        Most instruments in one ``/score`` panel.
    batch_window_ms
        Longest a batch waits for requests on their way (a lone request never waits; see
        :mod:`~kronos_quant.serve.batching`).
    max_batch
        Most requests generated in one model call.
    max_pending
        Most forecast requests waiting for or in the model at once; more get 503.
    model_process
        Run the model in a process of its own (:mod:`~kronos_quant.serve.model_worker`):
        on a CPU, requests are then read and answered while the model works.
    refresh_s
        How often the dashboard's live pages reload their data.
    max_decisions
        Most decisions one ``/live/{name}/decisions`` reply returns.
    """

    pred_len: int = 10
    sample_count: int = 16
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    lookback: int = 120
    max_body_bytes: int = 2_000_000
    max_bars: int = 4096
    max_pred_len: int = 256
    max_samples: int = 512
    max_reply_paths: int = 64
    max_quantiles: int = 19
    max_instruments: int = 64
    batch_window_ms: float = 5.0
    max_batch: int = 64
    max_pending: int = 512
    model_process: bool = False
    refresh_s: float = 10.0
    max_decisions: int = 1000

    def __post_init__(self) -> None:
        for name in ("pred_len", "sample_count", "lookback", "max_body_bytes", "max_bars",
                     "max_pred_len", "max_samples", "max_reply_paths", "max_quantiles",
                     "max_instruments", "max_batch", "max_pending", "max_decisions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeSettings.{name} must be an integer >= 1, got {value!r}")
        for default, limit in (("pred_len", "max_pred_len"), ("sample_count", "max_samples"),
                               ("lookback", "max_bars")):
            if getattr(self, default) > getattr(self, limit):
                raise ValueError(f"ServeSettings.{default}={getattr(self, default)} is above "
                                 f"{limit}={getattr(self, limit)}")
        if self.batch_window_ms < 0 or self.refresh_s <= 0:
            raise ValueError("batch_window_ms must be >= 0 and refresh_s > 0")


def check_limit(name: str, value: int, limit: int, *, setting: str) -> int:
    """``value`` if it is within ``limit``, else a :class:`LimitError` naming both."""
    if value > limit:
        raise LimitError(f"{name} {value} exceeds this server's limit {setting}={limit}")
    return value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token (the one binding rule)."""
    if not is_loopback(host) and not token:
        raise ValueError(f"--host {host} is reachable from other machines; set a token "
                         "(--token or the KRONOS_QUANT_TOKEN environment variable) to serve "
                         "beyond 127.0.0.1")

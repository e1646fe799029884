"""What every ccxt error means to a loop that must not lose a candle: one table and one retry.

ccxt raises one exception hierarchy for every exchange (``ccxt.base.errors``):
``OperationFailed`` is the base of everything a retry can fix (``NetworkError`` and its
children, ``BadResponse``, ``CancelPending``; Binance's ``-1000`` "An unknown error occurred
while processing the request." and ``-1001`` "Internal error; unable to process your request.
Please try again." arrive as ``OperationFailed`` itself), ``ExchangeError`` the base of what the
exchange refused. :data:`ERROR_RULES` maps classes of that hierarchy to an action; an error
takes the rule of the most specific class it derives from (its MRO is walked), so a subclass a
future ccxt adds is still handled by its parent's rule.

:class:`RetryPolicy` applies the table: exponential backoff with jitter, ``Retry-After`` on
418/429 (and no request at all before it has passed), a longer backoff while the exchange is
down for maintenance, a clock resync before retrying ``InvalidNonce`` (``-1021`` timestamp
outside recvWindow), and an optional deadline (the live loop's: a little before the next candle
closes) after which it gives up instead of deciding a candle too late. What no retry fixes
raises at once; the ``stop`` rules as :class:`FatalExchangeError`, whose message is one line.

Needs the ``[crypto]`` extra: ``pip install "kronos-quant[crypto]"``.
"""
from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import require_engine

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Actions a rule can take. ``retry``: back off and try again; ``rate_limit``: wait at least
#: ``Retry-After``; ``maintenance``: back off four steps longer; ``resync``: measure the clock
#: offset again, then retry; ``stop``: raise :class:`FatalExchangeError` (the loop stops);
#: ``reject``: the order is refused, not retried (recorded, the loop goes on); ``duplicate``:
#: the exchange already has this client order id (look it up); ``fail``: not retried, the
#: candle is recorded as skipped with the error.
RETRY_ACTIONS: tuple[str, ...] = ("retry", "rate_limit", "maintenance", "resync")


@dataclass(frozen=True)
class ErrorRule:
    error: str  # a ccxt exception class name
    action: str
    examples: str  # what raises it on Binance / OKX, for the docs


ERROR_RULES: tuple[ErrorRule, ...] = (
    ErrorRule("AuthenticationError", "stop", "Binance -2014, -2015, -1022, HTTP 401; "
              "OKX 50111-50114"),
    ErrorRule("PermissionDenied", "stop", "Binance -1002, 'This account may not place or "
              "cancel orders.'; OKX 50027"),
    ErrorRule("AccountSuspended", "stop", "OKX 50007, 50009; Binance 'This action is disabled "
              "on this account.'"),
    ErrorRule("BadSymbol", "stop", "Binance -1121 'Invalid symbol.'; OKX 51001"),
    ErrorRule("NotSupported", "stop", "a method the exchange does not offer in ccxt"),
    ErrorRule("InsufficientFunds", "reject", "Binance -2010 'Account has insufficient balance "
              "for requested action.'; OKX 51008"),
    ErrorRule("DuplicateOrderId", "duplicate", "a client order id the exchange already holds "
              "(also Binance -2010 'Duplicate order sent.', OKX 51016)"),
    ErrorRule("InvalidOrder", "reject", "Binance -2010 NEW_ORDER_REJECTED, LOT_SIZE, "
              "PRICE_FILTER; -2011 unknown order"),
    ErrorRule("InvalidNonce", "resync", "Binance -1021 'Timestamp for this request is outside "
              "of the recvWindow.'; OKX 50102"),
    ErrorRule("DDoSProtection", "rate_limit", "Binance HTTP 418 (IP ban) and 429 with -1003, "
              "both with Retry-After"),
    ErrorRule("RateLimitExceeded", "rate_limit", "Binance -1003, -1015; OKX 50011 "
              "'Too Many Requests'"),
    ErrorRule("OnMaintenance", "maintenance", "OKX 50001; Binance 'System is under "
              "maintenance.'"),
    ErrorRule("ExchangeNotAvailable", "maintenance", "HTTP 500/502/503/520 pages (a 503 HTML "
              "maintenance page); OKX 50013, 50026"),
    ErrorRule("OperationFailed", "retry", "Binance -1000, -1001, -1006, -1007; timeouts, "
              "connection resets, BadResponse"),
    ErrorRule("ExchangeError", "fail", "any other refusal (e.g. an unknown error code)"),
)
RULES: dict[str, ErrorRule] = {rule.error: rule for rule in ERROR_RULES}
# Words exchanges use for "this client order id is taken" when ccxt maps the code to the
# plain InvalidOrder (Binance -2010 "Duplicate order sent.", OKX 51016 "Duplicated clOrdId").
DUPLICATE_WORDS: tuple[str, ...] = ("duplicate order", "duplicated", "clordid already")


class MalformedResponse(Exception):
    """An exchange answer that parsed but holds no usable candle (e.g. a truncated body)."""


class FatalExchangeError(RuntimeError):
    """What no retry fixes (a ``stop`` rule): the message is one line, safe to print."""


def classify(err: BaseException) -> ErrorRule | None:
    """The rule of the most specific class ``err`` derives from (None: not an exchange error)."""
    if isinstance(err, MalformedResponse):
        return RULES["OperationFailed"]
    for cls in type(err).__mro__:
        rule = RULES.get(cls.__name__)
        if rule is not None and cls.__module__.startswith("ccxt"):
            if rule.action == "reject" and cls.__name__ == "InvalidOrder" and any(
                    word in str(err).lower() for word in DUPLICATE_WORDS):
                return RULES["DuplicateOrderId"]
            return rule
    return None


def short(err: BaseException, limit: int = 160) -> str:
    """The error's text on one line, at most ``limit`` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "…"


def fatal_message(err: BaseException, *, what: str, key_vars: Sequence[str] = ()) -> str:
    """One line for a ``stop`` error: what failed, the exchange's words, what to check."""
    name = type(err).__name__
    line = f"{what}: {name}: {short(err, 200)}"
    if isinstance(err, require_engine("ccxt").AuthenticationError) and key_vars:
        line += (f" -- check the API key variables {', '.join(key_vars)} (key, secret, "
                 "IP whitelist and permissions; values are never shown)")
    return line


def retry_after_seconds(headers: Mapping[str, str] | None, *,
                        now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    """Retries by :data:`ERROR_RULES`: backoff with jitter, Retry-After, a deadline.

    Attempt ``k`` (0-based) waits ``min(max_delay, base_delay · 2**k) · (1 + jitter · u)``,
    ``u`` uniform in [0, 1); during maintenance four steps longer (``k + 2``); on 418/429 at
    least the ``Retry-After`` header (capped at ``max_retry_after``), and no call is made before
    it has passed. Without a deadline at most ``attempts`` tries; inside :meth:`until` (the
    live loop: a little before the next candle closes) up to ``attempts_in_candle`` tries, and
    none whose wait would end after the deadline. ``clock``/``sleep`` are injectable (tests,
    an accelerated clock).
    """

    attempts: int = 6
    attempts_in_candle: int = 100
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.25
    max_retry_after: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    deadline: float | None = None  # clock seconds; set by until()
    blocked_until: float = 0.0  # clock seconds: a Retry-After still running

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.attempts_in_candle < 1:
            raise ValueError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.jitter < 0:
            raise ValueError("retry delays and jitter must be >= 0")

    @contextmanager
    def until(self, deadline: float | None) -> Iterator[RetryPolicy]:
        """Calls inside give up rather than wait past ``deadline`` (clock seconds)."""
        previous, self.deadline = self.deadline, deadline
        try:
            yield self
        finally:
            self.deadline = previous

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2.0 ** attempt)
        backoff *= 1.0 + self.jitter * self.rng.random()
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_retry_after))
        return backoff

    def _wait_out_ban(self, what: str) -> None:
        """Honour a running Retry-After before the next request (or give up now)."""
        wait = self.blocked_until - self.clock()
        if wait <= 0:
            return
        if self.deadline is not None and self.clock() + wait > self.deadline:
            ccxt = require_engine("ccxt")
            raise ccxt.RateLimitExceeded(f"{what}: Retry-After runs {wait:.1f}s more, past the "
                                         "candle's deadline; not calling the exchange")
        self.sleep(wait)

    def _wait(self, err: BaseException, rule: ErrorRule, attempt: int, exchange: Any) -> float:
        if rule.action == "rate_limit":
            headers = getattr(exchange, "last_response_headers", None)
            wait = self.delay(attempt, retry_after_seconds(headers))
            self.blocked_until = max(self.blocked_until, self.clock() + wait)
            return wait
        if rule.action == "maintenance":
            return self.delay(attempt + 2)
        return self.delay(attempt)

    def call(self, fn: Callable[[], T], *, what: str, exchange: Any = None,
             resync: Callable[[], None] | None = None, key_vars: Sequence[str] = ()) -> T:
        """``fn()`` retried by the rules; what is not retried (or runs out of time) propagates.

        ``resync`` is called before retrying an ``InvalidNonce`` (the caller's clock offset).
        A ``stop`` error is raised as :class:`FatalExchangeError` (one line, ``from`` the
        original; an authentication error names ``key_vars``, the credential variables).
        """
        limit = self.attempts if self.deadline is None else self.attempts_in_candle
        pending_resync = False
        for attempt in range(limit):
            if attempt == 0:  # a retry below has already slept its Retry-After
                self._wait_out_ban(what)
            try:
                if pending_resync and resync is not None:
                    resync()  # its own faults are classified and retried like fn's
                pending_resync = False
                return fn()
            except Exception as err:
                rule = classify(err)
                if rule is None or rule.action not in RETRY_ACTIONS:
                    if rule is not None and rule.action == "stop":
                        raise FatalExchangeError(fatal_message(err, what=what,
                                                               key_vars=key_vars)) from err
                    raise
                wait = 0.0 if rule.action == "resync" else self._wait(err, rule, attempt,
                                                                      exchange)
                late = self.deadline is not None and self.clock() + wait > self.deadline
                if attempt + 1 == limit or late:
                    logger.error("%s failed after %d attempt(s)%s: %s: %s", what, attempt + 1,
                                 " (candle deadline)" if late else "", type(err).__name__,
                                 short(err))
                    raise
                logger.warning("%s: %s (%s); %s %d in %.3fs", what, type(err).__name__,
                               short(err), "clock resync, retry" if rule.action == "resync"
                               else "retry", attempt + 1, wait)
                pending_resync = pending_resync or rule.action == "resync"
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

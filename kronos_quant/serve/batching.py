"""Concurrent forecast requests sharing settings → one generation call.

The first request of a batch waits for others only while more requests are on their way
(read and checked, not yet queued: :meth:`ForecastBatcher.arriving`), and at most
``window_s``; a lone request starts at once. While the model runs, new requests queue up and
form the next batch, so the batch size (and throughput) grows with the load. Requests are
grouped by their settings (pred_len and sampling); each group is one
:meth:`KronosPredictor.forecast_arrays` call per context length, one seed per series: the
generation step of :meth:`KronosPredictor.forecast_batch`, fed the series each request
already checked and prepared with :func:`~kronos_quant.inputs.prepare_series`. The group's
replies are then built together (``reply``, e.g.
:func:`~kronos_quant.serve.requests.forecast_payloads`): quantiles and scores of the whole
group in a few array operations.

Why a batched reply equals a single call: with one seed per series, every series draws from
its own ``torch.Generator`` (:func:`kronos_quant.generation.sample_tokens`), so its tokens do
not depend on its batch-mates; the network's arithmetic per row is the same as in a batch of
one up to float rounding (bit-identical on the CPU builds tested here, see
``tests/test_serve.py``). A group whose call fails is retried one request at a time, so one
failing request cannot fail its batch-mates.

All model calls (forecast batches and ``/score``) run on one worker thread: the model is
never used by two threads at once.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ..forecast import Forecast
from ..inputs import BAR_COLUMNS
from .requests import ForecastJob

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Overloaded(RuntimeError):
    """More forecasts are pending than the server accepts (answered with 503)."""


class ForecastBatcher:
    """Collects :class:`ForecastJob` objects and runs them in batches (see module docs)."""

    def __init__(self, predictor: Any, *, window_s: float, max_batch: int, max_pending: int,
                 reply: Callable[[list[Forecast], list[ForecastJob]], list[Any]]) -> None:
        self.predictor, self.window_s, self.max_batch = predictor, window_s, max_batch
        self.max_pending, self.pending, self.reply = max_pending, 0, reply
        self.incoming = 0  # requests being read and checked (see arriving)
        self.expected = 1  # the size of the last batch collected (see _gather)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kq-model")
        self.batches = 0  # model calls made for forecasts (for tests and the benchmark)
        self.largest = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    # -- the model thread ----------------------------------------------------------------
    async def run_in_model_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the one model thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _generate(self, jobs: list[ForecastJob]) -> list[Forecast]:
        """One ``forecast_arrays`` call per context length: the generation step of
        ``forecast_batch``, on series the request threads already prepared."""
        s = jobs[0].sampling
        out: list[Forecast | None] = [None] * len(jobs)
        for length in sorted({len(j.series.raw) for j in jobs}):
            members = [i for i, j in enumerate(jobs) if len(j.series.raw) == length]
            prepared = [jobs[i].series for i in members]
            paths = self.predictor.forecast_arrays(
                np.stack([p.raw for p in prepared]),
                np.stack([p.x_index.to_numpy("datetime64[ns]") for p in prepared]),
                np.stack([pd.DatetimeIndex(p.y_index).to_numpy("datetime64[ns]")
                          for p in prepared]),
                sample_count=s.sample_count, T=s.T, top_k=s.top_k, top_p=s.top_p,
                seed=[jobs[i].seed for i in members])  # (n, S, P, 6) price units
            for i, p, bars in zip(members, prepared, paths, strict=True):
                out[i] = Forecast(paths=bars, index=p.y_index, name=jobs[i].name,
                                  history=pd.DataFrame(p.raw, index=p.x_index,
                                                       columns=list(BAR_COLUMNS)),
                                  model_label=self.predictor.model_label)
        return out

    def _run_group(self, jobs: list[ForecastJob]) -> list[Any]:
        """Replies of one settings group; on failure each job alone gets its own outcome
        (its reply or the exception)."""
        self.batches += 1
        self.largest = max(self.largest, len(jobs))
        try:
            return self.reply(self._generate(jobs), jobs)
        except Exception as err:
            if len(jobs) == 1:
                return [err]
            logger.warning("a batch of %d forecasts failed (%s); retrying one by one",
                           len(jobs), type(err).__name__)
        outcomes: list[Any] = []
        for job in jobs:
            try:
                outcomes.append(self.reply(self._generate([job]), [job])[0])
            except Exception as err:
                outcomes.append(err)
        return outcomes

    # -- the event loop ------------------------------------------------------------------
    def _ensure_worker(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._collect(self._queue))
        assert self._queue is not None
        return self._queue

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Count a request while it is read and checked: a batch being collected waits for
        requests on their way (up to ``window_s``), and only for them. Submit the job right
        after leaving the block (no ``await`` between), so the count never drops early."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    async def submit(self, job: ForecastJob) -> Any:
        """Queue ``job``; returns its reply or raises what its model call raised
        (:class:`Overloaded` when ``max_pending`` forecasts are already waiting)."""
        if self.pending >= self.max_pending:
            raise Overloaded(f"{self.pending} forecasts are pending (this server's limit "
                             f"max_pending={self.max_pending}); retry shortly")
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            self._ensure_worker().put_nowait((job, future))
            return await future
        finally:
            self.pending -= 1

    async def _gather(self, queue: asyncio.Queue) -> list[tuple[ForecastJob, asyncio.Future]]:
        """The next batch: the first queued request, then whatever joins it.

        It waits (at most ``window_s``) only while others are known to be coming: requests
        being read and checked (:meth:`arriving`), or fewer than the previous batch held
        (clients that were served together tend to return together, each after its own
        round trip). A lone client is therefore never kept waiting, and under load the
        batches stay as large as the load.
        """
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline, want = loop.time() + self.window_s, min(self.expected, self.max_batch)
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0 or (len(batch) >= want and not self.incoming):
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:
                break
        self.expected = len(batch)
        return batch

    async def _collect(self, queue: asyncio.Queue) -> None:
        while True:
            batch = await self._gather(queue)
            groups: dict[tuple, list[tuple[ForecastJob, asyncio.Future]]] = {}
            for job, future in batch:
                if not future.done():  # a client that went away is not computed
                    groups.setdefault(job.key, []).append((job, future))
            for members in groups.values():
                try:
                    outcomes = await self.run_in_model_thread(
                        self._run_group, [job for job, _ in members])
                except Exception as err:  # the executor itself failed
                    outcomes = [err] * len(members)
                logger.debug("forecast batch of %d request(s)", len(members))
                for (_, future), outcome in zip(members, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)

    def close(self) -> None:
        if self._worker is not None and self._loop is not None and not self._loop.is_closed():
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

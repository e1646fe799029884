"""Concurrent forecast requests sharing settings → one generation call.

The first request of a batch waits for others only while more requests are on their way
(read and checked, not yet queued: :meth:`ForecastBatcher.arriving`), and at most
``window_s``; a lone request starts at once. While the model runs, new requests queue up and
form the next batch, so the batch size (and throughput) grows with the load. Requests are
grouped by their settings (pred_len and sampling); each group is one
:meth:`KronosPredictor.sample_prepared` call, one seed per series: the generation step
of :meth:`KronosPredictor.forecast_batch`, fed the series each request
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

All model calls (forecast batches and ``/score``) run in one place, one at a time: the
model thread, or with ``process=True`` a model process of its own
(:mod:`~kronos_quant.serve.model_worker`), restarted if it dies.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

import torch

from . import model_worker
from .model_worker import Reply, group_paths, group_replies
from .requests import ForecastJob

logger = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """More forecasts are pending than the server accepts (answered with 503)."""


class ForecastBatcher:
    """Collects :class:`ForecastJob` objects and runs them in batches (see module docs).

    ``reply`` builds a group's replies from its forecasts
    (:func:`~kronos_quant.serve.requests.forecast_payloads`); ``process`` runs the model in
    a process of its own instead of a thread (:mod:`~kronos_quant.serve.model_worker`).
    """

    def __init__(self, predictor: Any, *, window_s: float, max_batch: int, max_pending: int,
                 reply: Reply, process: bool = False) -> None:
        self.predictor, self.window_s, self.max_batch = predictor, window_s, max_batch
        self.max_pending, self.pending, self.reply = max_pending, 0, reply
        self.process = process
        self.incoming = 0  # requests being read and checked (see arriving)
        self.expected = 1  # the size of the last batch collected (see _gather)
        self.executor = self._executor()
        self.batches = 0  # model calls made for forecasts (for tests and the benchmark)
        self.largest = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._answering: set[asyncio.Task] = set()

    # -- where the model runs ------------------------------------------------------------
    def _executor(self) -> Executor:
        if not self.process:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kq-model")
        return ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=model_worker.worker_start,
            initargs=(self.predictor, torch.get_num_threads()))

    def start(self) -> None:
        """Start the model process now (it loads the model once, in a few seconds), so the
        first request does not wait for it. Nothing to do for the model thread."""
        if self.process:
            self.executor.submit(model_worker.worker_ready).result()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        executor = self.executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BrokenProcessPool:
            if self.executor is executor:  # the first call to notice replaces it, once
                logger.error("the model process died; starting a new one")
                executor.shutdown(wait=False, cancel_futures=True)
                self.executor = self._executor()
            raise RuntimeError("the model process died during this call; it was restarted, "
                               "retry") from None

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(predictor, *args, **kwargs)`` where the model lives (``fn`` module-level, so
        that a model process can receive it), one call at a time."""
        if self.process:
            return await self._run(model_worker.worker_call, fn, args, kwargs)
        return await self._run(lambda: fn(self.predictor, *args, **kwargs))

    async def _paths(self, jobs: list[ForecastJob]) -> list[Any]:
        """A group's paths (or exceptions), generated where the model lives."""
        self.batches += 1
        self.largest = max(self.largest, len(jobs))
        if self.process:
            return await self._run(model_worker.worker_paths, jobs)
        return await self._run(group_paths, self.predictor, jobs)

    async def _answer(self, members: list[tuple[ForecastJob, asyncio.Future]],
                      outcomes: list[Any]) -> None:
        """Build a group's replies on a thread of this process, beside the model (which
        starts on the next batch meanwhile), and hand each to its request."""
        jobs = [job for job, _ in members]
        try:
            replies = await asyncio.to_thread(
                group_replies, self.reply, jobs, outcomes,
                model_label=getattr(self.predictor, "model_label", None))
        except Exception as err:
            replies = [err] * len(members)
        for (_, future), outcome in zip(members, replies, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

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
                    outcomes = await self._paths([job for job, _ in members])
                except Exception as err:  # the executor itself failed
                    outcomes = [err] * len(members)
                logger.debug("forecast batch of %d request(s)", len(members))
                task = asyncio.create_task(self._answer(members, outcomes))
                self._answering.add(task)  # keep a reference until it is done
                task.add_done_callback(self._answering.discard)

    def close(self) -> None:
        if self._worker is not None and self._loop is not None and not self._loop.is_closed():
            self._worker.cancel()
        # A model process finishes its batch and exits; the model thread is left to finish.
        self.executor.shutdown(wait=self.process, cancel_futures=True)

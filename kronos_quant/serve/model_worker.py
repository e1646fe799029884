"""What runs where the model lives: batched generation and replies, in the server's model
thread or in a model process of its own.

On a small CPU machine the model thread and the request threads share one interpreter lock:
while the model runs its many small tensor operations, reading and checking other requests
waits, and the other way round. ``kronos-quant serve --model-process`` therefore runs the
model in a child process (started with ``spawn``, so no thread state is inherited): the
server process reads, checks and answers requests (quantiles, scores, JSON) while the child
only generates paths, each on its own core. :func:`group_paths` is what runs where the model
lives; :func:`group_replies` runs in the server; the ``worker_*`` functions are the child's
entry points (module-level, so that they can be pickled by reference).
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..forecast import Forecast
from ..inputs import BAR_COLUMNS
from .requests import ForecastJob

logger = logging.getLogger(__name__)
Reply = Callable[[list[Forecast], list[ForecastJob]], list[Any]]


def generate_paths(predictor: Any, jobs: list[ForecastJob]) -> list[np.ndarray]:
    """Sample paths (sample_count, pred_len, 6) in price units per job (jobs share their
    settings), from the series the server already checked and prepared: the generation step
    of ``forecast_batch`` (:meth:`~kronos_quant.KronosPredictor.sample_prepared`), one seed
    per series."""
    return predictor.sample_prepared([job.series for job in jobs], sampling=jobs[0].sampling,
                                     seed=[job.seed for job in jobs])


def group_paths(predictor: Any, jobs: list[ForecastJob]) -> list[np.ndarray | Exception]:
    """Paths of one settings group; if the group's call fails, each job is retried alone
    and gets its own outcome (its paths or the exception), so one bad request cannot fail
    its batch-mates."""
    try:
        return list(generate_paths(predictor, jobs))
    except Exception as err:
        if len(jobs) == 1:
            return [err]
        logger.warning("a batch of %d forecasts failed (%s); retrying one by one",
                       len(jobs), type(err).__name__)
    outcomes: list[np.ndarray | Exception] = []
    for job in jobs:
        try:
            outcomes.append(generate_paths(predictor, [job])[0])
        except Exception as err:
            outcomes.append(err)
    return outcomes


def group_replies(reply: Reply, jobs: list[ForecastJob], outcomes: list[Any], *,
                  model_label: str | None) -> list[Any]:
    """Replies of a group from its :func:`group_paths` outcomes: the forecasts built and
    answered together (``reply``); a failed job keeps its exception."""
    done = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
    forecasts = [Forecast(paths=outcomes[i], index=jobs[i].series.y_index, name=jobs[i].name,
                          history=pd.DataFrame(jobs[i].series.raw,
                                               index=jobs[i].series.x_index,
                                               columns=list(BAR_COLUMNS)),
                          model_label=model_label) for i in done]
    replies = list(outcomes)
    if done:
        for i, answer in zip(done, reply(forecasts, [jobs[i] for i in done]), strict=True):
            replies[i] = answer
    return replies


# -- the model process's side ------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def worker_start(predictor: Any, threads: int) -> None:
    """Initializer of the model process: keep the predictor, use the server's thread count,
    and leave when the server does, however it ends (even killed, it cannot say goodbye)."""
    torch.set_num_threads(threads)
    _WORKER["predictor"] = predictor
    threading.Thread(target=_exit_with_parent, name="kq-parent-watch", daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])  # ready once the server is gone
        os._exit(0)


def worker_ready() -> bool:
    return "predictor" in _WORKER


def worker_paths(jobs: list[ForecastJob]) -> list[np.ndarray | Exception]:
    return group_paths(_WORKER["predictor"], jobs)


def worker_call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    return fn(_WORKER["predictor"], *args, **kwargs)

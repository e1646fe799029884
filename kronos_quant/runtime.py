"""Where a process runs: its device, and its place in a ``torchrun`` job.

:func:`resolve_device` turns a ``--device`` value into a torch device; :func:`init_distributed`
joins the ``torchrun`` process group if there is one (``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; without them the job is one process) and gives each rank its device.
Walk-forward scoring (:mod:`kronos_quant.signals.distributed`) and fine-tuning
(:mod:`kronos_quant.finetune.train`) both run on it; only rank 0 writes files.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks cuda, then mps, then cpu; anything unknown or unavailable is an error."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; "
                         "use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev



@dataclass
class DistEnv:
    """Where this process runs within the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` (picklable), in rank order, on rank 0; None elsewhere."""
        if not self.distributed:
            return [value]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values


def init_distributed(device: str | None = None, *, timeout: timedelta | None = None,
                     group_of_one: bool = False) -> DistEnv:
    """Join the ``torchrun`` process group if there is one (NCCL on CUDA, gloo on CPU).

    Under ``torchrun`` each process uses ``cuda:LOCAL_RANK`` when CUDA is available and
    ``device`` is not ``"cpu"``; otherwise the CPU. ``timeout`` is the group's collective
    timeout (None: torch's default for the backend). A one-process job joins no group,
    unless ``group_of_one`` and it runs under ``torchrun``: then it joins one anyway, so one
    process runs the same collectives (and backend) as many.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        env = DistEnv(0, 1, 0, resolve_device(device))
        if group_of_one and "TORCHELASTIC_RUN_ID" in os.environ and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if env.device.type == "cuda" else "gloo",
                                    timeout=timeout)
        return env
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or not str(device).startswith("cpu"))
    if use_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
    logger.info("rank %d/%d on %s", rank, world, dev)
    return DistEnv(rank, world, local, dev)


def close_distributed(env: DistEnv | None = None) -> None:
    """Leave the process group: ``env``'s when it is a distributed job; with no ``env``,
    whichever group this process joined (a group of one included)."""
    if (env is None or env.distributed) and dist.is_initialized():
        dist.destroy_process_group()


def backend_name() -> str:
    """The process group's backend (``nccl``, ``gloo``), or ``"no process group"``."""
    return dist.get_backend() if dist.is_initialized() else "no process group"

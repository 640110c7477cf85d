"""torch.distributed setup from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Only setup/teardown helpers: every collective is torch.distributed's own (DDP all-reduce, barrier,
all_reduce). The backend is chosen from the device: gloo on CPU, nccl on CUDA. Without torchrun's
variables everything runs as a single process (rank 0 of 1) and these helpers are no-ops.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from vla_flow.errors import UserError

        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: torch.device, timeout_s: float = 600.0) -> None:
    """init_process_group from torchrun's env vars (nccl on CUDA, gloo on CPU); no-op without torchrun."""
    if not launched_by_torchrun() or is_initialized() or int(os.environ["WORLD_SIZE"]) == 1:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def teardown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """All-reduce average of a tensor (a copy); identity in a single process."""
    if not is_initialized():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()

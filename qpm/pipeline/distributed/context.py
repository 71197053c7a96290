"""The process group: where this process sits in a torchrun job, or a plain single process.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``
in the environment) :func:`get_context` initialises ``torch.distributed`` with NCCL when the
process has a GPU and gloo otherwise; without them the context is ``world_size == 1``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from qpm.errors import QPMError

TIMEOUT_ENV = "QPM_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; ``world_size == 1`` for a plain run."""

    rank: int
    world_size: int
    local_rank: int
    is_main: bool
    device: torch.device
    backend: str | None  # None when torch.distributed is not initialised

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_CONTEXT: DistContext | None = None
_OWNS_GROUP = False  # whether cleanup() should destroy the process group


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise QPMError(
            f"environment variable {name}={raw!r} is not an integer.",
            "Launch with torchrun, which sets it, or unset it.",
        ) from None


def _pick_device(local_rank: int, want: str | None, world: int = 1) -> torch.device:
    if want is not None and want.startswith("cuda:") and world > 1:
        raise QPMError(f"--device {want} would put all {world} processes on one GPU.",
                       "Use --device cuda (process i takes GPU LOCAL_RANK i); choose the GPUs "
                       "with CUDA_VISIBLE_DEVICES.")
    if want is not None and want != "auto":
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise QPMError(f"device {want!r} requested but no CUDA GPU is visible.",
                           "Use --device cpu or run on a machine with a GPU.")
        if want == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(want)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def get_context(device: str | None = None) -> DistContext:
    """Return the process context, initialising ``torch.distributed`` once if launched by torchrun.

    ``device``: ``None``/``"auto"`` (GPU ``LOCAL_RANK`` when CUDA is available, else CPU),
    ``"cpu"`` or ``"cuda"``. NCCL is used for GPU devices, gloo for CPU.
    """
    global _CONTEXT, _OWNS_GROUP
    if _CONTEXT is not None:
        return _CONTEXT

    if dist.is_available() and dist.is_initialized():
        # Someone (a test, an outer framework) already set up the group: adopt it.
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = env_int("LOCAL_RANK", rank)
        dev = _pick_device(local_rank, device, world)
        backend = str(dist.get_backend())
    else:
        world = env_int("WORLD_SIZE", 1)
        rank = env_int("RANK", 0)
        local_rank = env_int("LOCAL_RANK", 0)
        dev = _pick_device(local_rank, device, world)
        backend = None
        if world > 1:
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if not os.environ.get(name):
                    raise QPMError(
                        f"WORLD_SIZE={world} but {name} is not set.",
                        "Launch with `torchrun --nproc_per_node N -m qpm ...`.",
                    )
            if dev.type == "cuda":
                if local_rank >= torch.cuda.device_count():
                    raise QPMError(
                        f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs "
                        "are visible.",
                        "Use --nproc_per_node at most the number of GPUs per node.",
                    )
                torch.cuda.set_device(dev)
            backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
            timeout = datetime.timedelta(seconds=env_int(TIMEOUT_ENV, 1800))
            kwargs = {"device_id": dev} if backend == "nccl" else {}
            dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                    timeout=timeout, **kwargs)
            _OWNS_GROUP = True
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    _CONTEXT = DistContext(rank=rank, world_size=world, local_rank=local_rank,
                           is_main=rank == 0, device=dev, backend=backend)
    return _CONTEXT


def active() -> bool:
    """True when several processes share an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cleanup() -> None:
    """Tear down the process group this module created and forget the cached context."""
    global _CONTEXT, _OWNS_GROUP
    if _OWNS_GROUP and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNS_GROUP = False
    _CONTEXT = None


def main_only(iterable: Iterable, ctx: DistContext | None = None, **tqdm_kwargs):
    """A tqdm progress bar shown on rank 0 only, and only where bars belong (a terminal or
    --progress, not TQDM_DISABLE: :func:`qpm.logs.show_bars`); the loops log one plain line
    per epoch or stage either way."""
    ctx = ctx or get_context()
    from tqdm.auto import tqdm

    from qpm.logs import show_bars

    # Always a tqdm object (disabled off rank 0) so callers may use set_postfix() freely.
    disable = (not ctx.is_main) or bool(tqdm_kwargs.pop("disable", False)) or not show_bars()
    return tqdm(iterable, disable=disable, **tqdm_kwargs)


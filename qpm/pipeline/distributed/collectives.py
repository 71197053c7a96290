"""Collectives that are identities in a single process, so pipeline code is written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from qpm.errors import QPMError
from qpm.pipeline.distributed.context import active as _active
from qpm.pipeline.distributed.replicas import unwrap

T = TypeVar("T")


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Return ``src``'s ``obj`` on every rank (any picklable value produced in this job)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_main(fn: Callable[..., T], *args, what: str = "a rank-0 step", **kwargs) -> T | None:
    """Run ``fn`` on rank 0 only while the others wait; return its result there, None elsewhere.

    If ``fn`` raises on rank 0, the waiting ranks raise :class:`QPMError` instead of blocking
    at a barrier until the time-out, and rank 0 re-raises the original exception.
    """
    if not _active():
        return fn(*args, **kwargs)
    result, failure = None, None
    if dist.get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised below, after telling the others
            failure = exc
    if broadcast_object(failure is not None):  # doubles as the barrier
        if failure is not None:
            raise failure
        raise QPMError(f"Rank 0 failed in {what}.", "See rank 0's error message above.")
    return result


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(value: float | int | torch.Tensor) -> float | torch.Tensor:
    """Sum of ``value`` over ranks; a Python number comes back as a float."""
    is_tensor = isinstance(value, torch.Tensor)
    if not _active():
        return value if is_tensor else float(value)
    t = value.detach() if is_tensor else torch.tensor(float(value), dtype=torch.float64)
    orig_device, orig_dtype = t.device, t.dtype
    t = t.to(_comm_device(), dtype=torch.float64 if not t.is_floating_point() else t.dtype)
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    if is_tensor:
        return t.to(orig_device, dtype=orig_dtype)
    return float(t.item())


def all_reduce_mean(value: float | int | torch.Tensor) -> float | torch.Tensor:
    """Unweighted mean over ranks; for exact metrics all-reduce sums and counts instead."""
    world = dist.get_world_size() if _active() else 1
    total = all_reduce_sum(value)
    return total / world


def broadcast_state(model: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank's ``model`` in place.

    DDP keeps parameters in step, but BatchNorm running statistics drift apart on each rank
    after the last forward pass; call this after training so every rank holds exactly the
    weights rank ``src`` saves.
    """
    if not _active():
        return
    comm = _comm_device()
    with torch.no_grad():
        for t in list(unwrap(model).parameters()) + list(unwrap(model).buffers()):
            buf = t.detach().to(comm).clone()
            dist.broadcast(buf, src=src)
            t.copy_(buf.to(t.device))


def gather_in_order(local: torch.Tensor, local_indices: torch.Tensor, total: int) -> torch.Tensor:
    """Assemble per-rank rows into a ``(total, ...)`` tensor in dataset order, on every rank.

    ``local_indices[i]`` is the dataset index of ``local[i]``. Duplicates (DistributedSampler
    pads the last shard by repeating samples) are written twice with the same value.
    """
    local_indices = local_indices.to(torch.long).reshape(-1)
    if local.shape[0] != local_indices.shape[0]:
        raise ValueError(f"{local.shape[0]} rows but {local_indices.shape[0]} indices")
    out_device = local.device
    if not _active():
        parts, idx_parts = [local], [local_indices.to(out_device)]
    else:
        comm = _comm_device()
        world = dist.get_world_size()
        n = torch.tensor([local.shape[0]], dtype=torch.long, device=comm)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        counts = [int(s.item()) for s in sizes]
        width = max(counts)
        # all_gather needs equal shapes: pad every shard to the longest one.
        pad_rows = width - local.shape[0]
        data = local.detach().to(comm)
        idx = local_indices.to(comm)
        if pad_rows:
            data = torch.cat([data, data.new_zeros((pad_rows, *data.shape[1:]))])
            idx = torch.cat([idx, idx.new_full((pad_rows,), -1)])
        data_all = [torch.empty_like(data) for _ in range(world)]
        idx_all = [torch.empty_like(idx) for _ in range(world)]
        dist.all_gather(data_all, data.contiguous())
        dist.all_gather(idx_all, idx.contiguous())
        parts = [d[:c].to(out_device) for d, c in zip(data_all, counts, strict=True)]
        idx_parts = [i[:c].to(out_device) for i, c in zip(idx_all, counts, strict=True)]
    rows = torch.cat(parts)
    indices = torch.cat(idx_parts)
    if indices.numel() and (indices.min() < 0 or indices.max() >= total):
        raise ValueError(f"indices out of range for a dataset of {total} samples")
    out = rows.new_zeros((total, *rows.shape[1:]))
    seen = torch.zeros(total, dtype=torch.bool, device=out_device)
    out[indices] = rows
    seen[indices] = True
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise ValueError(f"{missing} of {total} samples were produced by no rank")
    return out



"""The model side of data parallelism: DDP wrapping, and the GPU-only speed-ups
(bf16 autocast, channels_last) that are no-ops on a CPU."""

from __future__ import annotations

import contextlib

import torch

from qpm.pipeline.distributed.context import DistContext, get_context


def wrap_model(model: torch.nn.Module, find_unused_parameters: bool | None = None,
               ctx: DistContext | None = None) -> torch.nn.Module:
    """DDP-wrap ``model`` when several processes run, identity otherwise.

    A backbone whose classifier was replaced can keep trainable parameters that the forward
    never touches (torchvision ResNets keep their 1000-class ``fc``); DDP would wait for their
    gradients forever. The default (``None``) declares the graph static instead: DDP finds
    the unused parameters in the first iteration and skips them afterwards, without
    ``find_unused_parameters=True``'s graph traversal every step. Pass True for models whose
    set of used parameters changes between iterations.
    """
    ctx = ctx or get_context()
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    if find_unused_parameters is None:
        return DDP(model, device_ids=device_ids, static_graph=True)
    return DDP(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (the module itself if not wrapped)."""
    return getattr(model, "module", model)


def autocast_context(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on CUDA (no loss scaling needed), a no-op context on CPU."""
    dev = torch.device(device)
    if enabled and dev.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(obj, device: torch.device | str):
    """Switch a module or a 4-D batch to channels_last on CUDA (faster convs); else unchanged."""
    if torch.device(device).type != "cuda":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj
    return obj.to(memory_format=torch.channels_last)



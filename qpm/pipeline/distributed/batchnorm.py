"""BatchNorm over the global batch while several processes train together (torchrun).

``--batch-size`` is the global batch, split over the processes. Plain BatchNorm would then
normalise each process's slice on its own: a different model from the one-process run with
the same batch, with noisier statistics (on the offline default, 2 CPU processes scored
0.7-1.5 points lower). :func:`batch_norm_over_processes` picks the tool for the job:

- NCCL (GPUs): torch's ``SyncBatchNorm``, swapped in for the block by :func:`sync_batch_norm`.
- gloo (CPUs): ``SyncBatchNorm`` takes GPU tensors only, so :func:`global_batch_norm` does the
  same with its own forward: per-channel sums are all-reduced with a differentiable
  all-reduce, so the backward pass sees the global statistics too and the N-process step
  equals the one-process step on the whole batch.
- one process: nothing to do.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce
from torch.nn.modules.batchnorm import _BatchNorm

from qpm.pipeline.distributed.context import active as _several_processes


def _global_forward(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not bn.training or not _several_processes():
        return type(bn).forward(bn, x)
    C = x.shape[1]
    dims = [0, *range(2, x.dim())]
    # Sums in float64: E[x^2] - E[x]^2 loses digits in float32 when |mean| >> std.
    xd = x.double()
    count = xd.new_tensor([x.numel() / C])
    stats = all_reduce(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
    n = stats[-1]
    mean = stats[:C] / n
    var = (stats[C:2 * C] / n - mean * mean).clamp_min(0.0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = var * n / (n - 1).clamp_min(1.0)
            bn.running_mean.mul_(1 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
            bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.dtype), alpha=m)
    shape = [1, C] + [1] * (x.dim() - 2)
    scale = torch.rsqrt(var + bn.eps).float().view(shape)
    y = (x.float() - mean.float().view(shape)) * scale
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


@contextlib.contextmanager
def global_batch_norm(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s BatchNorm layers use the statistics of the global batch.

    Outside torchrun this changes nothing. The layers keep their class, parameters and
    state-dict keys (only their ``forward`` is swapped for the block), so checkpoints written
    during training load into a plain model.
    """
    if not _several_processes():
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for layer in layers:
        layer.forward = types.MethodType(_global_forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


@contextlib.contextmanager
def sync_batch_norm(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s BatchNorm layers are torch's ``SyncBatchNorm``.

    Each layer is converted by ``SyncBatchNorm.convert_sync_batchnorm``, which shares the
    layer's parameters and buffers, so the optimizer keeps updating the same tensors; after
    the block the original layers (with the trained values) are put back, so the model keeps
    its classes and loads and runs as a plain model. Wrap the model in DDP inside the block.
    """
    swapped = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, _BatchNorm)]
    for parent, name, child in swapped:
        setattr(parent, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)  # net.train()/eval() inside the block
            setattr(parent, name, child)


def batch_norm_over_processes(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """BatchNorm over the global batch for the block: SyncBatchNorm on NCCL, our own forward
    on other backends (gloo), unchanged in a single process."""
    if not _several_processes():
        return contextlib.nullcontext()
    if dist.get_backend() == "nccl":
        return sync_batch_norm(model)
    return global_batch_norm(model)

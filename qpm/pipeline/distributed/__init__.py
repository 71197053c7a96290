"""Multi-process (torchrun) support that degrades to a plain single process.

Every helper here is safe to call without ``torchrun``: with one process the context is
``world_size == 1`` and collectives are identities, so pipeline code is written once.

- :mod:`.context`: the process group (:func:`get_context`, :func:`cleanup`), rank-0 bars;
- :mod:`.collectives`: barrier, broadcasts, all-reduce, gathering rows in dataset order;
- :mod:`.loaders` (with :mod:`.seeded`): sharded, seeded loaders; the global batch's split;
- :mod:`.replicas`: DDP wrapping and the GPU-only autocast / channels_last;
- :mod:`.batchnorm`: BatchNorm over the global batch (SyncBatchNorm on NCCL, our own on gloo).

Callers import the package (``from qpm.pipeline import distributed as dist``) and use the
names below.
"""

from qpm.pipeline.distributed.batchnorm import batch_norm_over_processes
from qpm.pipeline.distributed.collectives import (
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_state,
    gather_in_order,
    run_on_main,
)
from qpm.pipeline.distributed.context import DistContext, cleanup, get_context, main_only
from qpm.pipeline.distributed.loaders import (
    ShardSampler,
    auto_workers,
    loader_indices,
    make_loader,
    per_process_batch,
    set_epoch,
)
from qpm.pipeline.distributed.replicas import autocast_context, channels_last, unwrap, wrap_model

__all__ = [
    "DistContext", "ShardSampler", "all_reduce_mean", "all_reduce_sum", "auto_workers",
    "autocast_context", "barrier", "batch_norm_over_processes", "broadcast_object",
    "broadcast_state", "channels_last", "cleanup", "gather_in_order", "get_context",
    "loader_indices", "main_only", "make_loader", "per_process_batch", "run_on_main",
    "set_epoch", "unwrap", "wrap_model",
]

"""Loaders whose samplers shard the dataset over the processes of a job.

Batch sizes given to :func:`make_loader` are *per process*; training settings hold the
*global* batch, which :func:`per_process_batch` splits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from qpm.errors import QPMError
from qpm.pipeline.distributed.context import DistContext, env_int, get_context
from qpm.pipeline.distributed.seeded import SeededReads, SeededSampler


class ShardSampler(Sampler[int]):
    """The strided ``rank::world_size`` shard of ``range(len(dataset))`` without padding.

    For inference only: shards may differ in length by one, so ranks run different numbers of
    batches, which is fine without DDP collectives in the forward pass.
    """

    def __init__(self, length: int, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    drop_last: bool = False,
    pad: bool = True,
    ctx: DistContext | None = None,
) -> DataLoader:
    """A loader whose sampler shards ``dataset`` over ranks; ``batch_size`` is per process.

    The order is a deterministic function of ``(seed, epoch)`` in single-process runs too, so a
    resumed run sees the same batches; call :func:`set_epoch` before every epoch.
    ``pad=False`` (inference only) shards without repeating samples; see :class:`ShardSampler`.
    Shuffled (training) loaders seed every sample's augmentation from ``(seed, epoch, index)``
    (:mod:`qpm.pipeline.distributed.seeded`), so it does not depend on the number of processes.
    ``workers < 0`` picks :func:`auto_workers` on a GPU; CPU runs always load in-process.
    """
    ctx = ctx or get_context()
    sampler: Sampler
    if pad or shuffle:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = ShardSampler(len(dataset), ctx.world_size, ctx.rank)
    if shuffle:  # training: augment each sample the same way whoever reads it
        sampler = SeededSampler(sampler, seed)
        dataset = SeededReads(dataset)
    on_gpu = ctx.device.type == "cuda"
    # Workers and pinned memory pay off only when a GPU consumes batches asynchronously;
    # on a CPU the processes already share the cores among themselves.
    workers = (auto_workers() if workers < 0 else int(workers)) if on_gpu else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=on_gpu,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )


def per_process_batch(global_batch: int, world_size: int) -> int:
    """The share of one process of the global training batch (the same number of optimizer
    steps, hence the same training, on any number of processes)."""
    if global_batch % world_size:
        raise QPMError(
            f"--batch-size {global_batch} is the global batch and does not split evenly over "
            f"{world_size} processes.",
            f"Pass a multiple of {world_size}, e.g. --batch-size "
            f"{max(world_size, global_batch // world_size * world_size)}.")
    return global_batch // world_size


def auto_workers(limit: int = 8) -> int:
    """Loader processes for one GPU process: this node's CPUs split over its processes."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    per_process = cpus // max(1, env_int("LOCAL_WORLD_SIZE", 1))
    return max(1, min(limit, per_process - 1))


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle a :func:`make_loader` loader for ``epoch`` (a no-op for unshuffled ones)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def loader_indices(loader: DataLoader) -> torch.Tensor:
    """Dataset indices this rank's loader visits, in iteration order (unshuffled loaders)."""
    return torch.tensor(list(iter(loader.sampler)), dtype=torch.long)



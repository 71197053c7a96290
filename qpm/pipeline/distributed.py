"""Multi-process (torchrun) support that degrades to a plain single process.

Every helper here is safe to call without ``torchrun``: with one process the context is
``world_size == 1`` and collectives are identities, so pipeline code is written once.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``
in the environment) :func:`get_context` initialises ``torch.distributed`` with NCCL when the
process has a GPU and gloo otherwise. Batch sizes given to :func:`make_loader` are *per
process*; training settings hold the *global* batch, which :func:`per_process_batch` splits.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from qpm.errors import QPMError
from qpm.pipeline.seeded import SeededReads, SeededSampler

_TIMEOUT_ENV = "QPM_DIST_TIMEOUT_S"
T = TypeVar("T")


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


def _env_int(name: str, default: int) -> int:
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
        local_rank = _env_int("LOCAL_RANK", rank)
        dev = _pick_device(local_rank, device, world)
        backend = str(dist.get_backend())
    else:
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
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
            timeout = datetime.timedelta(seconds=_env_int(_TIMEOUT_ENV, 1800))
            kwargs = {"device_id": dev} if backend == "nccl" else {}
            dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                    timeout=timeout, **kwargs)
            _OWNS_GROUP = True
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    _CONTEXT = DistContext(rank=rank, world_size=world, local_rank=local_rank,
                           is_main=rank == 0, device=dev, backend=backend)
    return _CONTEXT


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cleanup() -> None:
    """Tear down the process group this module created and forget the cached context."""
    global _CONTEXT, _OWNS_GROUP
    if _OWNS_GROUP and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNS_GROUP = False
    _CONTEXT = None


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
    (:mod:`qpm.pipeline.seeded`), so it does not depend on the number of processes.
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
    per_process = cpus // max(1, _env_int("LOCAL_WORLD_SIZE", 1))
    return max(1, min(limit, per_process - 1))


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle a :func:`make_loader` loader for ``epoch`` (a no-op for unshuffled ones)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def loader_indices(loader: DataLoader) -> torch.Tensor:
    """Dataset indices this rank's loader visits, in iteration order (unshuffled loaders)."""
    return torch.tensor(list(iter(loader.sampler)), dtype=torch.long)


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


STATE_DUMP_ENV = "QPM_DIST_STATE_DIR"


def dump_state_for_tests(model: torch.nn.Module, tag: str, params_only: bool = False) -> None:
    """Test mode only (``QPM_DIST_STATE_DIR`` set): write a per-tensor checksum of ``model``.

    Each rank writes ``<tag>.rank<R>.json`` so a test can check that all ranks hold the same
    weights; without the variable this does nothing.
    """
    out_dir = os.environ.get(STATE_DUMP_ENV)
    if not out_dir:
        return
    import hashlib

    from qpm.io import write_json

    ctx = get_context()
    module = unwrap(model)
    tensors = dict(module.named_parameters()) if params_only else module.state_dict()
    sums = {name: hashlib.sha256(
                t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            ).hexdigest() for name, t in tensors.items()}
    write_json(os.path.join(out_dir, f"{tag}.rank{ctx.rank}.json"), dict(sorted(sums.items())))

"""qpm.pipeline.distributed: single-process behaviour and a real 2-process gloo job."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from qpm.errors import QPMError
from qpm.pipeline import distributed as D

torch.set_num_threads(1)

_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _fresh_context(monkeypatch):
    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    D.cleanup()
    yield
    D.cleanup()


def test_single_process_context_is_plain():
    ctx = D.get_context(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    assert ctx.is_main and not ctx.distributed
    assert ctx.backend is None and ctx.device == torch.device("cpu")
    assert D.get_context() is ctx  # cached
    assert not torch.distributed.is_initialized()


def test_single_process_collectives_are_identities():
    D.get_context(device="cpu")
    D.barrier()
    assert D.broadcast_object({"k": [1, 2]}) == {"k": [1, 2]}
    assert D.all_reduce_sum(3) == 3.0
    assert D.all_reduce_mean(torch.tensor([2.0, 4.0])).tolist() == [2.0, 4.0]
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model) is model
    assert D.unwrap(model) is model
    D.broadcast_state(model)  # no-op without a process group
    assert D.run_on_main(lambda x: x * 2, 21) == 42
    with pytest.raises(ValueError):
        D.run_on_main(_explode)


def test_world_size_without_master_is_a_user_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(QPMError, match="MASTER_ADDR"):
        D.get_context(device="cpu")


def test_one_gpu_index_for_several_processes_is_a_user_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(QPMError, match="one GPU"):
        D.get_context(device="cuda:0")


def test_single_process_loader_is_seeded_per_epoch():
    D.get_context(device="cpu")
    ds = TensorDataset(torch.arange(20))
    loader = D.make_loader(ds, batch_size=4, shuffle=True, seed=3, workers=4)
    assert loader.num_workers == 0 and not loader.pin_memory  # CPU: no workers, no pinning

    def order(epoch):
        D.set_epoch(loader, epoch)
        return torch.cat([b[0] for b in loader]).tolist()

    first, second = order(0), order(1)
    assert sorted(first) == list(range(20)) and sorted(second) == list(range(20))
    assert first != second  # reshuffled per epoch
    assert order(0) == first  # and reproducible, so a resumed run sees the same batches
    again = D.make_loader(ds, batch_size=4, shuffle=True, seed=3)
    D.set_epoch(again, 1)
    assert torch.cat([b[0] for b in again]).tolist() == second


def test_auto_workers_split_the_node_over_its_processes(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert D.auto_workers() == max(1, min(8, cpus - 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus * 4))
    assert D.auto_workers() == 1  # never zero on a GPU: loading would stall the device
    D.get_context(device="cpu")
    loader = D.make_loader(TensorDataset(torch.arange(4)), 2, shuffle=False, workers=-1)
    assert loader.num_workers == 0  # CPU processes load in-process


def test_single_process_gather_restores_dataset_order():
    D.get_context(device="cpu")
    idx = torch.tensor([3, 0, 2, 1])
    rows = (idx.float() * 10).unsqueeze(1)
    out = D.gather_in_order(rows, idx, total=4)
    assert out[:, 0].tolist() == [0.0, 10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="produced by no rank"):
        D.gather_in_order(rows[:3], idx[:3], total=4)


def test_cpu_helpers_are_no_ops():
    model = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 5, 5)
    assert D.channels_last(model, "cpu") is model
    assert D.channels_last(x, "cpu") is x
    with D.autocast_context("cpu"):
        assert model(x).dtype == torch.float32
    ctx = D.get_context(device="cpu")
    bar = D.main_only(range(3), ctx=ctx, desc="x")
    assert list(bar) == [0, 1, 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _explode() -> None:
    raise ValueError("solver exploded")


class _ReplacedHead(torch.nn.Module):
    """Like a torchvision ResNet with a new classifier: ``old_fc`` is trainable but unused."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        self.old_fc = torch.nn.Linear(4, 1000)
        self.classifier = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def _bn_net() -> tuple[torch.nn.Module, torch.Tensor]:
    """A small BatchNorm net and a global batch of 16, the same on every rank."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    x = torch.randn(16, 2, 5, 5) * 3 + 1
    model(x[:2])  # materialise the lazy layer identically everywhere
    return model, x


def _sgd_steps(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    for _ in range(3):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


def _global_bn_steps(rank: int, world: int) -> tuple[list[torch.Tensor], str]:
    """Three SGD steps of a BatchNorm net on this rank's slice of one global batch of 16;
    with ``world == 1`` the whole batch in one process. Returns the state afterwards and how
    the BatchNorm layer ran inside the block (its class, and whether its forward was ours)."""
    model, x = _bn_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with D.batch_norm_over_processes(model):  # what training uses
        net = D.wrap_model(model)
        inside = f"{type(model[1]).__name__} own-forward={'forward' in vars(model[1])}"
        _sgd_steps(net, opt, x.chunk(world)[rank])
    assert type(model[1]).forward is torch.nn.BatchNorm2d.forward and "forward" not in vars(
        model[1])  # the plain layer is back after the block
    return [t.detach().clone() for t in model.state_dict().values()], inside


def test_sync_batch_norm_trains_the_model_s_own_layers():
    """On NCCL training swaps torch's SyncBatchNorm in for the block. In one process it
    computes what BatchNorm does, so the swapped model takes the plain model's steps, and the
    original layers, trained, are back afterwards."""
    from qpm.pipeline.distributed.batchnorm import sync_batch_norm

    plain, x = _bn_net()
    _sgd_steps(plain, torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9), x)
    model, x = _bn_net()
    bn = model[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # built before the swap
    with sync_batch_norm(model):
        assert type(model[1]) is torch.nn.SyncBatchNorm
        _sgd_steps(model, opt, x)
        model.eval()
    assert model[1] is bn and type(bn) is torch.nn.BatchNorm2d and not bn.training
    assert int(bn.num_batches_tracked) == 4  # the lazy layer's first pass and three steps
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        ctx = D.get_context(device="cpu")
        result: dict = {"ctx": (ctx.rank, ctx.world_size, ctx.is_main, ctx.backend)}

        result["bcast"] = D.broadcast_object({"solved": [4, 2]} if ctx.is_main else None)
        result["on_main"] = D.run_on_main(lambda: ctx.rank + 10)
        try:
            D.run_on_main(_explode, what="the solve")
        except QPMError as exc:
            result["failure"] = ("QPMError", exc.problem)
        except ValueError as exc:
            result["failure"] = ("ValueError", str(exc))
        result["sum"] = D.all_reduce_sum(ctx.rank + 1)
        result["mean"] = D.all_reduce_mean(torch.tensor([float(ctx.rank)])).item()

        # 7 samples over 2 ranks: DistributedSampler pads rank 1 with a repeated sample.
        n = 7
        ds = TensorDataset(torch.arange(n))
        for pad in (True, False):
            loader = D.make_loader(ds, batch_size=2, shuffle=False, pad=pad)
            feats = torch.cat([torch.stack([b[0].float() * 10, -b[0].float()], 1)
                               for b in loader])
            result[f"gather_pad{pad}"] = D.gather_in_order(feats, D.loader_indices(loader), n)
            result[f"local_pad{pad}"] = D.loader_indices(loader).tolist()

        shuffled = D.make_loader(ds, batch_size=2, shuffle=True, seed=5)
        for epoch in (0, 1):
            D.set_epoch(shuffled, epoch)
            result[f"epoch{epoch}"] = torch.cat([b[0] for b in shuffled]).tolist()

        # DDP keeps parameters in step; BatchNorm buffers need broadcast_state.
        torch.manual_seed(ctx.rank)  # different init per rank: DDP must broadcast rank 0's
        model = _ReplacedHead()
        ddp = D.wrap_model(model)  # must not hang on old_fc's missing gradients
        result["wrapped"] = type(ddp).__name__
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        x = torch.randn(8, 3) + ctx.rank  # different data on each rank
        for _ in range(3):
            opt.zero_grad()
            ddp(x).pow(2).mean().backward()
            opt.step()
        result["global_bn"], result["bn_inside"] = _global_bn_steps(ctx.rank, world)
        result["params"] = [p.detach().clone() for p in D.unwrap(ddp).parameters()]
        result["bn_before"] = model.body[1].running_mean.clone()
        D.broadcast_state(ddp)
        result["bn_after"] = model.body[1].running_mean.clone()
        D.barrier()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        D.cleanup()


def test_two_process_gloo_job(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world))

    assert r0["ctx"] == (0, 2, True, "gloo") and r1["ctx"] == (1, 2, False, "gloo")
    assert r0["bcast"] == r1["bcast"] == {"solved": [4, 2]}
    assert (r0["on_main"], r1["on_main"]) == (10, None)
    # Rank 0 re-raises its own error; rank 1 stops too instead of waiting for the time-out.
    assert r0["failure"] == ("ValueError", "solver exploded")
    assert r1["failure"] == ("QPMError", "Rank 0 failed in the solve.")
    assert r0["sum"] == r1["sum"] == 3.0
    assert r0["mean"] == r1["mean"] == 0.5

    expected = torch.stack([torch.arange(7.0) * 10, -torch.arange(7.0)], 1)
    for pad in (True, False):
        # Each rank saw only part of the data, yet both hold all rows in dataset order.
        assert len(r0[f"local_pad{pad}"]) < 7
        assert torch.equal(r0[f"gather_pad{pad}"], expected)
        assert torch.equal(r1[f"gather_pad{pad}"], expected)
    assert len(r1["local_padTrue"]) == 4  # padded with a duplicate that gather dropped
    assert sorted(r0["local_padFalse"] + r1["local_padFalse"]) == list(range(7))

    for epoch in (0, 1):
        assert set(r0[f"epoch{epoch}"]) | set(r1[f"epoch{epoch}"]) == set(range(7))
    assert r0["epoch0"] != r0["epoch1"]  # per-epoch reshuffle

    assert r0["wrapped"] == "DistributedDataParallel"
    for p0, p1 in zip(r0["params"], r1["params"], strict=True):
        assert torch.equal(p0, p1)
    assert not torch.equal(r0["bn_before"], r1["bn_before"])  # drifted on different data
    assert torch.equal(r0["bn_after"], r1["bn_after"])
    assert torch.equal(r1["bn_after"], r0["bn_before"])
    # BatchNorm over the global batch: two processes take exactly the one-process steps on
    # the whole batch (weights, running mean/var, step count).
    assert r0["bn_inside"] == "BatchNorm2d own-forward=True"  # gloo: ours, not SyncBatchNorm
    single, inside = _global_bn_steps(0, 1)
    assert inside == "BatchNorm2d own-forward=False"  # one process: plain BatchNorm
    for a, b, ref in zip(r0["global_bn"], r1["global_bn"], single, strict=True):
        torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b, ref, rtol=1e-5, atol=1e-6)


def test_global_batch_is_split_evenly_over_processes():
    assert D.per_process_batch(64, 1) == 64
    assert D.per_process_batch(64, 2) == 32  # same optimizer steps per epoch as one process
    with pytest.raises(QPMError, match="multiple of 4"):
        D.per_process_batch(30, 4)


class _RandomReads(torch.utils.data.Dataset):
    """Each read returns its index and one draw from torch's global generator."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return i, torch.rand(())


def test_augmentation_depends_on_seed_epoch_and_sample_only():
    def draws(world: int, epoch: int, seed: int = 3) -> dict[int, float]:
        out = {}
        for rank in range(world):
            ctx = D.DistContext(rank, world, rank, rank == 0, torch.device("cpu"), None)
            loader = D.make_loader(_RandomReads(), 2, shuffle=True, seed=seed, ctx=ctx)
            D.set_epoch(loader, epoch)
            torch.manual_seed(100 + rank)  # whatever the reader's own generator holds
            for idx, val in loader:
                out.update(zip(idx.tolist(), val.tolist(), strict=True))
        return out

    one = draws(1, 0)
    assert one == draws(2, 0)  # two processes augment every sample as one process does
    assert one != draws(1, 1) and one != draws(1, 0, seed=4)  # new epoch or seed: new draws
    assert len(set(one.values())) == 10
    from qpm.pipeline.distributed.seeded import SeededReads

    state = torch.get_rng_state()
    SeededReads(_RandomReads())[(4, 123)]
    assert torch.equal(torch.get_rng_state(), state)  # a read leaves the generator as it was

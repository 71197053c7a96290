"""Images per second of `qpm train`'s dense epoch against a bare PyTorch loop, in one run.

    python benchmarks/training.py                      # CPU: mnist-5k, small-cnn (the default run)
    python benchmarks/training.py --device cuda --arch resnet50 --image-size 224 --batch-size 64

"qpm" is the dense stage as `qpm train` runs it: ``fit``, the one training loop, for one
epoch with the settings of the run configuration (seeded loader, the training step, progress
bookkeeping, the epoch's reduction, log line and checkpoint). "bare" is the loop one writes
by hand with the same model, the same dataset object (same augmentation), the same batch,
loss (cross-entropy plus the feature-diversity loss) and optimizer: a shuffled DataLoader,
forward, backward, step, nothing else. On a GPU both use the same loader workers, pinned
memory, bf16 autocast and channels_last, so the ratio measures the training loop, not the
numerics. The two alternate (qpm-bare, then bare-qpm) for
``--repeats`` rounds after a short warm-up of each, so a machine whose load changes treats
both alike; the load average is printed before and after. Target: ratio >= 0.9.

Without ``--dataset``, small-cnn trains on mnist-5k and any other architecture on a generated
image folder (``--images`` RGB images in 10 classes, written as JPEG files to a temporary
folder and read back by the `imagefolder` dataset, as a real folder would be).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

GENERATED_CLASSES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--arch", default="small-cnn", help="backbone, as qpm train --arch "
                   "(default small-cnn)")
    p.add_argument("--dataset", help="a qpm dataset (default: mnist-5k for small-cnn, "
                   "else a generated image folder)")
    p.add_argument("--data-root", help="the dataset's folder, if it needs one")
    p.add_argument("--image-size", type=int, help="input size (default: the dataset's)")
    p.add_argument("--batch-size", type=int, help="training batch (default: the dataset's)")
    p.add_argument("--images", type=int, default=4096, help="images in a generated "
                   "folder (default 4096)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of (qpm, bare) "
                   "epochs (default 5)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=-1,
                   help="loader processes on a GPU (-1: as qpm train picks them)")
    return p.parse_args(argv)


def fail(problem: str, fix: str) -> None:
    print(f"benchmarks/training.py: {problem} {fix}", file=sys.stderr)
    sys.exit(2)


def generate_folder(root: Path, images: int, size: int) -> None:
    """``root/train/<class>/`` with ``images`` random JPEGs (and one test image per class)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("test", GENERATED_CLASSES)):
        for i in range(count):
            folder = root / split / f"class{i % GENERATED_CLASSES:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def bare_epoch(model, loader, cfg, device) -> int:
    """The hand-written loop: forward, the same loss, backward, step. Returns images seen."""
    import torch
    import torch.nn.functional as F

    from qpm.models.diversity_loss import diversity_loss

    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    gpu = device.type == "cuda"
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    seen = 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if gpu:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
            out = model(images)
            weight, used = model.classifier.class_feature_weights()
            maps = out.feature_maps if used is None else out.feature_maps[:, used]
            loss = F.cross_entropy(out.logits.float(), labels) + diversity_loss(
                maps.float(), out.logits.float(), weight, cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += labels.shape[0]
    if gpu:
        torch.cuda.synchronize()
    return seen


class Clock:
    """Wall-clock and this process's CPU seconds since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class Bench:
    """Both loops on one configuration; each call trains one epoch and returns (images,
    wall seconds, CPU seconds of this process)."""

    def __init__(self, cfg, run_dir: Path) -> None:
        import torch

        from qpm.pipeline import distributed as dist
        from qpm.pipeline.stages import RunContext

        self.torch = torch
        self.cfg, self.dist = cfg, dist
        self.ctx = RunContext(cfg, run_dir, log=lambda _m: None)
        self.device = dist.get_context(cfg.device).device
        self.data = self.ctx.data()

    def model(self):
        from qpm.models.backbones import create_backbone

        self.torch.manual_seed(self.cfg.seed)
        return create_backbone(self.cfg.arch, self.cfg.weights, self.cfg.reduced_strides,
                               self.data.in_channels, self.data.num_classes).to(self.device)

    def qpm(self, dataset=None) -> tuple[int, float, float]:
        from qpm.pipeline.training import fit

        settings = replace(self.ctx.fit_settings(finetune=False), epochs=1)
        dataset = self.data.train if dataset is None else dataset
        model = self.model()
        ckpt = self.ctx.ckpt_path("dense")
        ckpt.unlink(missing_ok=True)  # never resume: every call trains its epoch
        clock = Clock()
        fit(model, dataset, settings, ckpt_path=ckpt, desc="dense", log=logging.info)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        return len(dataset) // settings.batch_size * settings.batch_size, *clock.read()

    def bare(self, dataset=None) -> tuple[int, float, float]:
        from torch.utils.data import DataLoader

        dataset = self.data.train if dataset is None else dataset
        gpu = self.device.type == "cuda"
        workers = (self.dist.auto_workers() if self.cfg.workers < 0 else self.cfg.workers) \
            if gpu else 0
        model = self.model()
        clock = Clock()
        loader = DataLoader(dataset, batch_size=self.cfg.batch_size, shuffle=True,
                            drop_last=True, num_workers=workers, pin_memory=gpu,
                            persistent_workers=workers > 0)
        seen = bare_epoch(model, loader, self.cfg, self.device)
        return seen, *clock.read()


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def report(rates: dict[str, list[tuple[float, float]]], cpu_too: bool) -> None:
    """Medians of both loops and their ratio, per wall-clock second and (on a CPU, where other
    processes' load inflates wall time) per CPU second of this process."""
    kinds = [("wall-clock second", 0)] + ([("CPU second", 1)] if cpu_too else [])
    repeats = len(rates["qpm"])
    print("\n| loop | " + " | ".join(f"images per {k} (median of {repeats})" for k, _ in kinds)
          + " |\n|---|" + "---|" * len(kinds))
    for name, label in (("qpm", "qpm train, dense epoch"), ("bare", "bare PyTorch loop")):
        cells = [f"{statistics.median(r[i] for r in rates[name]):.1f}" for _, i in kinds]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for kind, i in kinds:
        ratio = (statistics.median(r[i] for r in rates["qpm"])
                 / statistics.median(r[i] for r in rates["bare"]))
        rounds = [q[i] / b[i] for q, b in zip(rates["qpm"], rates["bare"], strict=True)]
        print(f"ratio qpm / bare per {kind}: {ratio:.3f} (rounds {min(rounds):.3f}-"
              f"{max(rounds):.3f}); target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}")


def make_bench(args: argparse.Namespace, tmp: Path) -> Bench:
    """The run configuration `qpm train` would resolve for these flags, in a scratch folder."""
    from qpm.run_folder.config import TrainConfig

    dataset, root = args.dataset, args.data_root
    if dataset is None:
        dataset = "mnist-5k" if args.arch == "small-cnn" else "imagefolder"
    if dataset == "imagefolder" and root is None:
        root = str(tmp / "data")
        generate_folder(Path(root), args.images, args.image_size or 224)
    cfg = TrainConfig(dataset=dataset, data_root=root, arch=args.arch,
                      image_size=args.image_size, batch_size=args.batch_size,
                      device=args.device, workers=args.workers,
                      run_dir=str(tmp / "run")).resolve()
    Path(cfg.run_dir).mkdir()
    return Bench(cfg, Path(cfg.run_dir))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from torch.utils.data import Subset

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device} needs a CUDA GPU and none is visible.",
             "Run it on a machine with a GPU, or use --device cpu.")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="qpm-bench-") as tmp:
        bench = make_bench(args, Path(tmp))
        cfg = bench.cfg
        print(f"{cfg.dataset}, {cfg.arch}, {cfg.image_size} px, batch {cfg.batch_size}, "
              f"{len(bench.data.train)} training images, device {bench.device}, "
              f"{torch.get_num_threads()} torch threads")
        print(f"before: {load_line()}")
        warm = Subset(bench.data.train, range(min(len(bench.data.train), 4 * cfg.batch_size)))
        bench.qpm(warm), bench.bare(warm)
        rates: dict[str, list[tuple[float, float]]] = {"qpm": [], "bare": []}
        for r in range(args.repeats):
            for name in (("qpm", "bare") if r % 2 == 0 else ("bare", "qpm")):
                images, wall, cpu = getattr(bench, name)()
                rates[name].append((images / wall, images / cpu))
                print(f"  round {r + 1} {name:>4}: {images} images in {wall:6.2f} s "
                      f"({cpu:6.2f} CPU s): {images / wall:7.1f} images/s", flush=True)
        print(f"after:  {load_line()}")
    report(rates, cpu_too=bench.device.type == "cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())

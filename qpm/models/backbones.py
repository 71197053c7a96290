"""Backbones by name: a feature extractor plus a linear classifier.

Every backbone's forward returns a :class:`BackboneOutput` with the logits, the final
feature maps (B, F, H, W) and their average-pooled features (B, F). The classifier is a
plain attribute (``model.classifier``) that the QPM stage swaps for a :class:`QPMLayer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from qpm.errors import QPMError
from qpm.models.heads import register_head
from qpm.models.vit import PRETRAINED, adapt_state, pretrained_file, timm_model
from qpm.models.weights import (
    WEIGHT_SUFFIXES,
    load_backbone_weights,
    read_state_dict,
    refuse_reference_model,
    weights_cache_path,
)


class BackboneOutput(NamedTuple):
    logits: torch.Tensor
    feature_maps: torch.Tensor
    features: torch.Tensor


DENSE_DROPOUT = 0.2  # the reference's dropout on the pooled features of the dense model


@register_head("linear")
class Classifier(nn.Module):
    """The dense head: a linear layer on the pooled features, with feature dropout."""

    def __init__(self, n_features: int, num_classes: int, dropout: float = DENSE_DROPOUT) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))

    def class_feature_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(C, n) weights and the indices of the n features they act on (None: all)."""
        return self.linear.weight, None

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Classifier:
        c, f = state["linear.weight"].shape
        return cls(f, c)


class Backbone(nn.Module):
    """``body`` maps images to non-negative feature maps; ``classifier`` maps pooled features."""

    def __init__(self, body: nn.Module, n_features: int, num_classes: int, arch: str) -> None:
        super().__init__()
        self.body = body
        self.n_features = int(n_features)
        self.num_classes = int(num_classes)
        self.arch = arch
        self.classifier: nn.Module = Classifier(n_features, num_classes)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        maps = self.body(x)
        features = maps.mean(dim=(2, 3))
        return BackboneOutput(self.classifier(features), maps, features)


# --- torchvision ResNets ------------------------------------------------------------------


class _ResNetBody(nn.Module):
    """A torchvision ResNet without its pooling and fc layers (keys stay torchvision's)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


def _reduce_strides(net: nn.Module) -> None:
    """Stride 1 in layer3 and layer4, as the reference's ``changed_strides``: final maps four
    times as large per side (28 x 28 at 224 px instead of 7 x 7), same parameters."""
    for layer in (net.layer3, net.layer4):
        block = layer[0]
        for conv in (block.conv1, block.conv2):
            conv.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def _adapt_input_channels(net: nn.Module, in_channels: int) -> None:
    if in_channels == 3:
        return
    old = net.conv1
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=False)
    with torch.no_grad():
        # Keep pretrained filters meaningful: average over RGB, repeat for the new channels.
        new.weight.copy_(old.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
    net.conv1 = new


def _resnet(name: str) -> Callable[..., tuple[nn.Module, int, nn.Module]]:
    def build(in_channels: int, reduced_strides: bool) -> tuple[nn.Module, int, nn.Module]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        n_features = net.fc.in_features
        if reduced_strides:
            _reduce_strides(net)
        return _ResNetBody(net), n_features, net

    return build


# --- a small CNN for the offline digit sets -----------------------------------------------


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three conv stages (32, 64, 128 channels), pooling after the first two: 28x28 input
    gives 7x7 maps (14x14 with reduced strides). Cheap enough to train on 2 CPU cores."""

    widths = (32, 64, 128)

    def __init__(self, in_channels: int = 1, reduced_strides: bool = False) -> None:
        super().__init__()
        w1, w2, w3 = self.widths
        layers: list[nn.Module] = [*_conv_block(in_channels, w1), nn.MaxPool2d(2)]
        layers += _conv_block(w1, w2)
        if not reduced_strides:
            layers.append(nn.MaxPool2d(2))
        layers += _conv_block(w2, w3)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _small_cnn(in_channels: int, reduced_strides: bool) -> tuple[nn.Module, int, nn.Module]:
    body = SmallCNN(in_channels, reduced_strides)
    return body, SmallCNN.widths[-1], body


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[[int, bool], tuple[nn.Module, int, nn.Module]]
    torchvision_name: str | None = None  # for weight enums
    description: str = ""


_ARCHS: dict[str, ArchSpec] = {}


def register_backbone(name: str, build: Callable, torchvision_name: str | None = None,
                      description: str = "") -> None:
    """``build(in_channels, reduced_strides) -> (body, n_features, weight_target)``."""
    _ARCHS[name] = ArchSpec(name, build, torchvision_name, description)


for _n in ("resnet18", "resnet34", "resnet50"):
    register_backbone(_n, _resnet(_n), _n, f"torchvision {_n}")
register_backbone("small-cnn", _small_cnn, None, "3-stage CNN, 128 features (offline demo)")


def backbone_names() -> list[str]:
    return sorted(_ARCHS) + ["timm:<name>"]


def arch_spec(name: str) -> ArchSpec | None:
    if name.startswith("timm:"):
        return None
    if name not in _ARCHS:
        raise QPMError(f"Unknown architecture {name!r}.",
                       f"Choose one of: {', '.join(backbone_names())}.")
    return _ARCHS[name]


def create_backbone(
    name: str,
    weights: str = "none",
    reduced_strides: bool = False,
    in_channels: int = 3,
    num_classes: int = 10,
    pretrained_head: bool = False,
) -> Backbone:
    """Build backbone ``name`` with a fresh ``num_classes`` classifier and load ``weights``.

    ``weights``: ``none``; a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT`` or
    ``ResNet50_Weights.IMAGENET1K_V1``), downloaded on first use; or a local file.
    ``pretrained_head``: also take the classifier from the weights (their ``fc``), as the
    reference does for ImageNet, where the pretrained model is the dense model.
    """
    spec = arch_spec(name)
    state = resolve_weights(name, weights)  # before building: bad weights fail fast
    if spec is None:
        body, n_features, target = timm_model(name.split(":", 1)[1], in_channels,
                                              reduced_strides)
        state = None if state is None else adapt_state(target, state)
    else:
        body, n_features, target = spec.build(in_channels if spec.torchvision_name is None else 3,
                                              reduced_strides)
    if state is not None:
        load_backbone_weights(target, state, name, weights)
    if spec is not None and spec.torchvision_name is not None:
        _adapt_input_channels(target, in_channels)
    model = Backbone(body, n_features, num_classes, name)
    if pretrained_head:
        _load_pretrained_head(model, state, weights)
    return model


def _load_pretrained_head(model: Backbone, state: dict | None, weights: str) -> None:
    w, b = (None, None) if state is None else (state.get("fc.weight"), state.get("fc.bias"))
    shape = (model.num_classes, model.n_features)
    if w is None or b is None or tuple(w.shape) != shape:
        found = "no weights" if state is None else (
            "no classifier" if w is None else f"a classifier of shape {tuple(w.shape)}")
        raise QPMError(
            f"Skipping dense training needs weights with a classifier for this dataset's "
            f"{model.num_classes} classes ({shape}); --weights {weights} has {found}.",
            "Train the dense model (drop --no-dense-training), or pass weights trained on "
            "this dataset (the ImageNet weights fit --dataset imagenet).")
    with torch.no_grad():
        model.classifier.linear.weight.copy_(w)
        model.classifier.linear.bias.copy_(b)


def backbone_feature_count(name: str, in_channels: int = 3) -> int:
    """F, the number of features of ``name``, without loading weights."""
    return create_backbone(name, "none", False, in_channels, 2).n_features


# --- weights by name (the registry knows which an architecture has) -------------------------


def _weights_source(arch: str, weights: str):
    """None (no weights), a local Path, or the torchvision weights enum entry ``weights`` names."""
    if weights in (None, "", "none"):
        return None
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if any(sep in weights for sep in "/\\") or weights.endswith(WEIGHT_SUFFIXES):
        raise QPMError(f"Weights file {weights} does not exist.",
                       "Check the path, or use --weights none to train from scratch.")
    spec = arch_spec(arch)
    if spec is None and weights == PRETRAINED:
        return pretrained_file(arch)
    if spec is None or spec.torchvision_name is None:
        named = f", {PRETRAINED} (timm's file, read from disk)" if spec is None else ""
        raise QPMError(f"Unknown weights {weights!r} for {arch}: it has no named weights.",
                       f"Use --weights none{named} or pass a local state_dict file.")
    import torchvision

    enum = torchvision.models.get_model_weights(spec.torchvision_name)
    member = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[member]
    except KeyError:
        names = ", ".join(["DEFAULT", *[w.name for w in enum]])
        raise QPMError(f"Unknown weights {weights!r} for {arch}.",
                       f"Choose one of: {names}, none, or a local file.") from None


def check_weights(arch: str, weights: str) -> None:
    """Raise QPMError for an unknown architecture or weights name, or a local weights file
    that is unreadable or a whole reference model, without downloading."""
    arch_spec(arch)
    source = _weights_source(arch, weights)
    if isinstance(source, Path):
        refuse_reference_model(read_state_dict(source), weights)


def resolve_weights(arch: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict that ``weights`` names, or None for ``none``."""
    source = _weights_source(arch, weights)
    if source is None:
        return None
    if isinstance(source, Path):
        return read_state_dict(source)
    cached = weights_cache_path(source.url)
    if cached.is_file():  # torchvision's own cache: no network needed
        return read_state_dict(cached)
    try:
        return source.get_state_dict(progress=True, check_hash=False)
    except OSError as exc:  # URLError, socket errors and the like are OSErrors
        raise QPMError(
            f"The {arch} weights {source} are not on disk ({cached}) and could not be "
            f"downloaded ({exc}).",
            f"Download {source.url} where the network allows and put it at {cached} (or pass "
            "it with --weights /path/to/file.pth), or use --weights none.",
        ) from None


def weights_on_disk(arch: str, weights: str) -> bool:
    """Whether ``weights`` for ``arch`` need no download: a local file, or a torchvision
    weights name whose file is in torchvision's cache. False for unknown names."""
    try:
        source = _weights_source(arch, weights)
    except QPMError:
        return False
    if source is None or isinstance(source, Path):
        return source is not None
    return weights_cache_path(source.url).is_file()

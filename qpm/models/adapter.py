"""The DINO-QPM adapter on a frozen backbone (Zimmermann et al., CVPRW 2026).

The backbone (a timm ViT's patch tokens on the patch grid, or the maps of any convolutional
backbone) stays as it is; a small MLP, the same for every patch, maps each patch embedding
to the model's features: ``layers`` times Linear -> BatchNorm (over the batch and the
positions) -> ReLU, the first from the backbone's width to ``hidden``, the last to
``features`` (the reference's configs: 4 layers, 2048 hidden, 512 features, ReLU). The
feature maps are the adapter's outputs on the grid and the feature vector is their average
over the patches (not the CLS token), so every feature keeps a map, as a CNN's does.

:class:`AdaptedBody` is the body of such a model (:class:`qpm.models.backbones.Backbone`):
``encoder`` (frozen: no gradients, always in eval mode) then ``adapter``. With
``from_cache`` set it reads the encoder's outputs instead of images: the token cache of the
training pipeline, so the backbone runs once per image, not once per epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from qpm.errors import QPMError
from qpm.models.backbones import Backbone, create_backbone


@dataclass(frozen=True)
class AdapterSpec:
    """The MLP's shape: ``layers`` linear layers (0: none), ``hidden`` units between them,
    ``features`` outputs (the model's features F)."""

    layers: int
    hidden: int
    features: int

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (
                    0 if name == "layers" else 1):
                raise QPMError(f"--adapter-{name} must be a "
                               f"{'non-negative' if name == 'layers' else 'positive'} integer, "
                               f"got {value!r}.", "Use e.g. --adapter-layers 4 "
                               "--adapter-hidden 2048 --adapter-features 512 (the reference's).")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def of(cls, config) -> AdapterSpec | None:
        """The adapter a resolved TrainConfig asks for (None: no adapter)."""
        if not config.adapter_layers:
            return None
        return cls(config.adapter_layers, config.adapter_hidden, config.adapter_features)

    @classmethod
    def from_dict(cls, data: dict | None) -> AdapterSpec | None:
        return None if not data else cls(int(data["layers"]), int(data["hidden"]),
                                         int(data["features"]))


class Adapter(nn.Module):
    """Per-patch MLP from (B, D, h, w) maps to (B, features, h, w) non-negative maps."""

    def __init__(self, in_features: int, spec: AdapterSpec) -> None:
        super().__init__()
        if spec.layers < 1:
            raise ValueError("an adapter needs at least one layer")
        widths = [in_features] + [spec.hidden] * (spec.layers - 1) + [spec.features]
        blocks: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            # BatchNorm1d on (tokens, channels): statistics over the batch and the positions,
            # as the reference's BatchNorm1dPermuted; ReLU after the last layer too.
            blocks += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*blocks)
        self.spec = spec

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        b, d, h, w = maps.shape
        tokens = maps.permute(0, 2, 3, 1).reshape(b * h * w, d)
        out = self.layers(tokens)
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


class AdaptedBody(nn.Module):
    """``encoder`` (a backbone body: images -> maps) followed by the ``adapter`` (or None)."""

    def __init__(self, encoder: nn.Module, adapter: Adapter | None, frozen: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.frozen = bool(frozen)
        self.from_cache = False  # True: forward gets the encoder's outputs (the token cache)
        if self.frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's maps of ``images`` (what the token cache holds)."""
        if self.frozen:
            with torch.no_grad():
                return self.encoder(images)
        return self.encoder(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = x if self.from_cache else self.encode(x)
        return maps if self.adapter is None else self.adapter(maps)

    def train(self, mode: bool = True) -> AdaptedBody:
        super().train(mode)
        if self.frozen:  # a frozen backbone's BatchNorm statistics and dropout stay as loaded
            self.encoder.eval()
        return self


def create_model(arch: str, weights: str = "none", reduced_strides: bool = False,
                 in_channels: int = 3, num_classes: int = 10, pretrained_head: bool = False,
                 adapter: AdapterSpec | None = None, frozen: bool = False) -> Backbone:
    """:func:`create_backbone`, with the backbone ``frozen`` and/or an ``adapter`` on it.

    Without either it is the plain backbone. A frozen backbone needs an adapter (nothing
    else would learn); the adapter's features are the model's.
    """
    plain = adapter is None or adapter.layers == 0
    if plain and not frozen:
        return create_backbone(arch, weights, reduced_strides, in_channels, num_classes,
                               pretrained_head)
    if plain:
        raise QPMError("A frozen backbone needs the adapter: nothing else would learn.",
                       "Pass --adapter-layers 1 or more (the dino recipe: 4), or drop "
                       "--frozen-backbone.")
    if pretrained_head:
        raise QPMError("--no-dense-training keeps the pretrained classifier, which an adapter "
                       "replaces.", "Drop --no-dense-training (the dense stage trains the "
                       "adapter and its classifier).")
    base = create_backbone(arch, weights, reduced_strides, in_channels, num_classes)
    body = AdaptedBody(base.body, Adapter(base.n_features, adapter), frozen)
    return Backbone(body, adapter.features, num_classes, arch)


def adapter_fields(model: nn.Module) -> dict:
    """What a model file records to rebuild ``model``'s body (empty for a plain backbone)."""
    body = getattr(model, "body", None)
    if not isinstance(body, AdaptedBody):
        return {}
    spec = None if body.adapter is None else body.adapter.spec.to_dict()
    return {"adapter": spec, "frozen": body.frozen}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state without a frozen backbone's (which never changes): what an epoch
    checkpoint needs, not the hundreds of megabytes of a ViT every epoch."""
    state = model.state_dict()
    if not is_frozen(model):
        return state
    return {k: v for k, v in state.items() if not k.startswith("body.encoder.")}


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a :func:`trainable_state` into ``model``: every key but a frozen backbone's."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys
               if not (is_frozen(model) and k.startswith("body.encoder."))]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not fit the model: missing {missing[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]}")


def is_frozen(model: nn.Module) -> bool:
    body = getattr(model, "body", None)
    return isinstance(body, AdaptedBody) and body.frozen


def set_cache_input(model: nn.Module, on: bool) -> nn.Module:
    """Make ``model`` (a Backbone with an :class:`AdaptedBody`) read the token cache."""
    body = getattr(model, "body", None)
    if isinstance(body, AdaptedBody):
        body.from_cache = bool(on)
    elif on:
        raise ValueError("only a model with a frozen backbone reads the token cache")
    return model

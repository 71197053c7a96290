"""timm backbones by name (``--arch timm:<name>``): convolutional models and vision transformers.

A convolutional timm model gives its final feature maps. A vision transformer (ViT, DINO,
DINOv2, DeiT, EVA, ... anything with patch tokens) gives its last layer's patch tokens after
the final norm, with the prefix tokens (CLS, registers) dropped, laid out on the patch grid:
(B, D, H/p, W/p). These are the maps the DINO-QPM adapter (:mod:`qpm.models.adapter`) reads,
as the reference reads DINOv2's ``x_norm_patchtokens``. ViTs are built with
``dynamic_img_size``: any input size works (cropped to whole patches, as the reference
does), the position embedding is interpolated, and a weights file for the model's default
size loads as it is.

Weights: a local file (a ``.safetensors`` file of timm, or a torch state_dict, e.g. the DINOv2
release ``dinov2_vits14_pretrain.pth``; the model module's own checkpoint filter converts it),
or ``pretrained``: timm's file for the name, read from :func:`timm_weights_path` only. Nothing
downloads; without the file one line says which file to put where.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from qpm.errors import QPMError

PRETRAINED = "pretrained"  # --weights pretrained: timm's own file for the name, from disk


def _timm():
    try:
        import timm
    except ImportError:
        raise QPMError("Architecture timm:<name> needs the timm package, which is not installed.",
                       "Install it with `pip install timm` or choose --arch resnet50.") from None
    return timm


def is_vit(net: nn.Module) -> bool:
    """A model with patch tokens: a patch embedding and prefix tokens to drop."""
    return hasattr(net, "patch_embed") and hasattr(net, "num_prefix_tokens")


class TimmMaps(nn.Module):
    """A convolutional timm model: its final feature maps."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.net.forward_features(x)
        if maps.dim() != 4:
            raise QPMError(
                f"timm model {type(self.net).__name__} gives {maps.dim()}-D features, neither "
                "maps nor patch tokens.",
                "Use a convolutional timm model (e.g. timm:resnet50d) or a ViT.")
        return maps


class PatchGrid(nn.Module):
    """A timm vision transformer: its last layer's normed patch tokens on the patch grid."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def grid(self, height: int, width: int) -> tuple[int, int]:
        ph, pw = self.net.patch_embed.patch_size
        return height // ph, width // pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.grid(*x.shape[-2:])
        if h < 1 or w < 1:
            raise QPMError(f"A {tuple(x.shape[-2:])} image is smaller than one patch of "
                           f"{type(self.net).__name__}.", "Pass a larger --image-size.")
        # As the reference: the image cropped to whole patches (right and bottom edges).
        ph, pw = self.net.patch_embed.patch_size
        x = x[..., : h * ph, : w * pw]
        tokens = self.net.forward_features(x)  # (B, prefix + N, D), after the final norm
        patches = tokens[:, self.net.num_prefix_tokens:]
        if patches.shape[1] != h * w:
            raise QPMError(f"timm model {type(self.net).__name__} gives {patches.shape[1]} patch "
                           f"tokens, not the {h} x {w} grid of a {tuple(x.shape[-2:])} image.",
                           "Use a plain ViT (e.g. timm:vit_small_patch14_dinov2).")
        return patches.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def timm_model(name: str, in_channels: int, reduced_strides: bool
               ) -> tuple[nn.Module, int, nn.Module]:
    """(body, n_features, the timm model weights load into) for ``timm:<name>``."""
    timm = _timm()
    if reduced_strides:
        raise QPMError("--reduced-strides is only implemented for resnet18/34/50.",
                       "Drop --reduced-strides for timm models.")
    if not timm.is_model(name):
        raise QPMError(f"timm does not know the model {name!r}.",
                       "List models with timm.list_models(), e.g. 'vit_small_patch14_dinov2'.")
    kwargs = {"pretrained": False, "num_classes": 0, "in_chans": in_channels}
    try:  # ViTs: any image size (the position embedding is interpolated per input)
        net = timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError:  # models without that option (convolutional ones)
        net = timm.create_model(name, **kwargs)
    body = PatchGrid(net) if is_vit(net) else TimmMaps(net)
    return body, int(net.num_features), net


def adapt_state(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in the layout of ``net``: the model module's own checkpoint filter (e.g. the
    DINOv2 release's keys, a position embedding for another size), when it has one."""
    convert = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return state
    try:
        return convert(state, net)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError):
        return state  # the match check that follows names the problem


def timm_weights_path(name: str) -> Path:
    """Where ``--weights pretrained`` looks for timm's file of ``timm:<name>``: beside
    torchvision's weights, named after timm's pretrained tag (one file per model)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{_hub_id(name).split('/')[-1]}.safetensors"


def _hub_id(name: str) -> str:
    try:
        cfg = _timm().models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub or f"timm/{name}"


def pretrained_file(arch: str) -> Path:
    """The file of ``--weights pretrained``, or one line saying which file to put where."""
    name = arch.split(":", 1)[1]
    path = timm_weights_path(name)
    if path.is_file():
        return path
    url = f"https://huggingface.co/{_hub_id(name)}/resolve/main/model.safetensors"
    raise QPMError(f"The pretrained weights of {arch} are not on disk ({path}); qpm downloads "
                   "nothing.",
                   f"Download {url} and save it as {path} (or pass any local weights file with "
                   "--weights FILE), or use --weights none for random weights.")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (a format without code: safe to read)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise QPMError(f"Reading {path} needs the safetensors package.",
                       "Install it with `pip install safetensors` (timm brings it).") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - a corrupt header shows up as several types
        raise QPMError(f"Cannot load weights file {path} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}).",
                       "Pass the model.safetensors file of the timm model.") from None

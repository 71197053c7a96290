"""Weights files of backbones: where named weights come from (torchvision's cache, timm's
file on disk, a local ``.pth``/``.safetensors``), read safely, and loaded exactly (every
tensor the backbone has, of its shape, and nothing else)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qpm.errors import QPMError
from qpm.models.torch_files import load_torch
from qpm.models.vit import read_safetensors

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _local_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = load_torch(path, f"Cannot load weights file {path}",
                     "Pass a state_dict saved with torch.save (weights only).")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise QPMError(f"Weights file {path} does not hold a state_dict of tensors.",
                       "Save the weights with torch.save(model.state_dict(), path).")
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (a plain or wrapped state_dict), loaded safely."""
    return _local_state(Path(path))


def weights_cache_path(url: str) -> Path:
    """Where torchvision keeps (and looks for) the weights file of ``url``."""
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def refuse_reference_model(state: dict[str, torch.Tensor], weights: str) -> None:
    """A model of the QPM reference code (its final layer under ``linear.*``) is no backbone
    file: taking only its backbone would silently drop the final layer it was trained with."""
    if any(k.removeprefix("module.").startswith("linear.") for k in state):
        raise QPMError(
            f"Weights {weights} are a model of the QPM reference code with its final layer "
            "(linear.*); as --weights only the backbone would be used.",
            f"Import the whole model: qpm import-reference {weights} --dataset DATASET "
            "--data-root DIR --run-dir NEW_DIR.")


# Keys a weights file may lack: BatchNorm's batch counters (absent from the older torchvision
# files, e.g. resnet50-0676ba61.pth); they only matter for momentum=None.
OPTIONAL_KEYS = ("num_batches_tracked",)


def load_backbone_weights(target: nn.Module, state: dict[str, torch.Tensor], arch: str,
                          weights: str) -> None:
    """Load ``state`` into ``target`` exactly: every tensor the backbone has, of its shape,
    and nothing else (classifier keys are ignored: the classes differ). Weights of another
    architecture (resnet34's extra blocks into a resnet18) are refused, naming the keys."""
    refuse_reference_model(state, weights)
    # The backbone's own classifier (torchvision's fc) is replaced anyway: not compared.
    heads = tuple(f"{name}." for name in ("fc", "classifier", "head")
                  if isinstance(getattr(target, name, None), nn.Linear))
    own = {k: v for k, v in target.state_dict().items() if not heads or not k.startswith(heads)}
    # Our own dense.pt stores the torchvision net under body.net. (a frozen run's under
    # body.encoder.net. or body.encoder.)
    for prefix in ("body.encoder.net.", "body.encoder.", "body.net.", "body.", "net.", "module."):
        if not (state.keys() & own.keys()) and any(k.startswith(prefix) for k in state):
            # the backbone's tensors; the rest of that model (its classifier, a frozen run's
            # adapter) is not the backbone's
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    # The classifier of the weights is not the backbone's (a timm head's own norm layer is).
    state = {k: v for k, v in state.items()
             if k in own or not k.startswith(("fc.", "classifier.", "head."))}
    missing = [k for k in own if k not in state and not k.endswith(OPTIONAL_KEYS)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{what} {len(keys)} ({_first(keys)})" for what, keys in (
            ("missing", missing), ("unexpected", unexpected), ("of another shape", wrong))
            if keys]
        raise QPMError(f"Weights {weights} do not fit {arch}: tensors {'; '.join(parts)}.",
                       f"Pass weights saved from a {arch} model (or --arch of the model they "
                       "were saved from).")
    target.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def _first(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... {len(keys) - n} more" if len(keys) > n else "")

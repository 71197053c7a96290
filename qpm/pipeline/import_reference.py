"""Checkpoints of the QPM reference implementation (ThomasNorr/QPM) as qpm run folders.

The reference saves ``model.state_dict()`` of its ResNet (``architectures/resnet.py``): the
backbone under torchvision's names without ``fc`` (``conv1.*``, ``bn1.*``, ``layer1.*`` ...
``layer4.*``), and its final layer under ``linear``:

- dense model: ``linear.weight`` (C, F) and ``linear.bias`` (C,);
- QPM: ``linear.selection`` (n,) feature indices, ``linear.mean`` and ``linear.std`` (n,) the
  frozen normalisation, ``linear.layer.weight`` (C, n) the 0/1 assignment;
- Q-SENN / SLDD: the same plus ``linear.layer.bias`` (C,) and real-valued weights.

Its forward is: ReLU maps of layer4, the selected maps average-pooled, normalised with
``(x - mean) / clamp(std, 1e-6)`` and multiplied by the weights, which is what qpm's QPM
layer (and the baselines' sparse head) compute, so the imported model predicts the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qpm.errors import QPMError
from qpm.models.backbones import Backbone, Classifier, create_backbone
from qpm.models.qpm_layer import QPMLayer
from qpm.models.weights import read_state_dict

SPARSE_KEYS = ("linear.selection", "linear.mean", "linear.std", "linear.layer.weight")
DENSE_KEYS = ("linear.weight", "linear.bias")
# torchvision ResNets the reference builds: (bottleneck blocks, blocks in layer3) -> name
ARCHS = {(True, 6): "resnet50", (False, 6): "resnet34", (False, 2): "resnet18"}
FIX = "Pass a state_dict saved by the reference code (torch.save(model.state_dict(), path))."


@dataclass
class ReferenceModel:
    model: Backbone
    model_type: str  # qpm, qsenn, sldd or dense
    arch: str
    n_features: int  # features the final layer reads
    per_class: int  # largest number of features a class uses


def detect_arch(state: dict[str, torch.Tensor]) -> str:
    """resnet18/34/50 from the backbone keys (bottleneck blocks have conv3)."""
    bottleneck = "layer1.0.conv3.weight" in state
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
    arch = ARCHS.get((bottleneck, len(blocks)))
    if arch is None:
        raise QPMError(
            "The checkpoint holds no ResNet-18/34/50 backbone under the reference's names "
            f"({'bottleneck' if bottleneck else 'basic'} blocks, {len(blocks)} in layer3).",
            FIX)
    return arch


def _model_type(state: dict[str, torch.Tensor], given: str | None) -> str:
    sparse = [k for k in SPARSE_KEYS if k in state]
    if sparse and len(sparse) < len(SPARSE_KEYS):
        missing = ", ".join(k for k in SPARSE_KEYS if k not in state)
        raise QPMError(f"The checkpoint's sparse final layer is incomplete: {missing} missing.",
                       FIX)
    if sparse:
        w = state["linear.layer.weight"]
        binary = bool(torch.all((w == 0) | (w == 1)))
        found = "qpm" if binary and "linear.layer.bias" not in state else "qsenn"
        if given == "dense" or (given == "qpm" and found != "qpm"):
            raise QPMError(f"--model-type {given} does not fit the checkpoint's final layer "
                           f"({'binary' if binary else 'real-valued'} weights"
                           f"{', a bias' if 'linear.layer.bias' in state else ''}).",
                           "Drop --model-type to detect it.")
        return given or found
    if all(k in state for k in DENSE_KEYS):
        if given not in (None, "dense"):
            raise QPMError(f"The checkpoint holds a dense final layer, not a {given} one.",
                           "Drop --model-type to import it as the dense model.")
        return "dense"
    raise QPMError("The checkpoint has no final layer under the reference's names "
                   f"({', '.join(SPARSE_KEYS)} or {', '.join(DENSE_KEYS)}).", FIX)


def _load_backbone(model: Backbone, state: dict[str, torch.Tensor], arch: str) -> None:
    net = model.body.net
    own = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    backbone = {k: v for k, v in state.items() if not k.startswith("linear.")}
    missing = [k for k in own if k not in backbone]
    wrong = [k for k in own if k in backbone and backbone[k].shape != own[k].shape]
    extra = [k for k in backbone if k not in own]
    if missing or wrong or extra:
        what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else
                f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})" if wrong else
                f"{len(extra)} unknown (e.g. {extra[0]})")
        raise QPMError(f"The checkpoint's backbone does not fit a {arch}: tensors {what}.", FIX)
    net.load_state_dict(backbone, strict=False)


def _sparse_head(state: dict[str, torch.Tensor], model_type: str, n_total: int):
    raw = state["linear.selection"]
    for key in ("linear.layer.weight", "linear.mean", "linear.std", "linear.layer.bias"):
        if key in state and not state[key].is_floating_point():
            raise QPMError(f"The checkpoint's {key} is a {state[key].dtype} tensor, not real "
                           "numbers.", FIX)
    if raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool:
        raise QPMError(f"The checkpoint's linear.selection is a {raw.dtype} tensor; the "
                       "reference stores feature indices as integers (torch.long).", FIX)
    selection = raw.long().flatten()
    weight = state["linear.layer.weight"].float()
    mean, std = state["linear.mean"].float().flatten(), state["linear.std"].float().flatten()
    n = selection.numel()
    if n == 0:
        raise QPMError("The checkpoint's linear.selection is empty: the final layer reads no "
                       "feature.", FIX)
    if len(set(selection.tolist())) != n:
        raise QPMError(f"The checkpoint's linear.selection repeats feature indices ({n} "
                       f"entries, {len(set(selection.tolist()))} distinct).", FIX)
    if weight.dim() != 2:
        raise QPMError(f"The checkpoint's linear.layer.weight has shape "
                       f"{tuple(weight.shape)}, not (classes, {n}).", FIX)
    if mean.numel() == n_total and n != n_total:  # statistics of every feature: pick ours
        in_range = selection.min() >= 0 and selection.max() < n_total
        if in_range:
            mean, std = mean[selection], std[selection]
    if (weight.shape[1] != n or mean.numel() != n or std.numel() != n
            or selection.min() < 0 or selection.max() >= n_total):
        raise QPMError(
            f"The checkpoint's final layer is inconsistent: {n} selected features (indices "
            f"{int(selection.min())}..{int(selection.max())} of {n_total}), weights "
            f"{tuple(weight.shape)}, mean {mean.numel()}, std {std.numel()}.", FIX)
    bias = state.get("linear.layer.bias")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise QPMError(f"The checkpoint's linear.layer.bias has shape {tuple(bias.shape)}, "
                       f"not ({weight.shape[0]},) (one per class).", FIX)
    if model_type == "qpm":
        return QPMLayer(selection, weight, mean, std, dropout=0.1)
    from qpm.models.sparse_head import SparseHead

    return SparseHead(selection, weight, bias, mean, std)


def _dense_head(state: dict[str, torch.Tensor], model: Backbone) -> Classifier:
    weight, bias = state["linear.weight"], state["linear.bias"]
    c, f = model.num_classes, model.n_features
    if tuple(weight.shape) != (c, f) or tuple(bias.shape) != (c,):
        raise QPMError(f"The checkpoint's dense layer has weight {tuple(weight.shape)} and "
                       f"bias {tuple(bias.shape)}, not ({c}, {f}) and ({c},).", FIX)
    if not (weight.is_floating_point() and bias.is_floating_point()):
        raise QPMError(f"The checkpoint's dense layer is {weight.dtype} / {bias.dtype}, not "
                       "real numbers.", FIX)
    head = Classifier(f, c)
    with torch.no_grad():
        head.linear.weight.copy_(weight)
        head.linear.bias.copy_(bias)
    return head


def reference_model(state: dict[str, torch.Tensor], reduced_strides: bool = True,
                    model_type: str | None = None) -> ReferenceModel:
    """qpm's model holding the reference checkpoint ``state`` (its backbone and final layer)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    arch = detect_arch(state)
    kind = _model_type(state, model_type)
    weight = state["linear.weight" if kind == "dense" else "linear.layer.weight"]
    if weight.dim() != 2 or weight.shape[0] < 1:
        raise QPMError(f"The checkpoint's final layer weight has shape {tuple(weight.shape)}, "
                       "not (classes, features).", FIX)
    model = create_backbone(arch, "none", reduced_strides, 3, int(weight.shape[0]))
    _load_backbone(model, state, arch)
    if kind == "dense":
        head = _dense_head(state, model)
        n, k = model.n_features, model.n_features
    else:
        head = _sparse_head(state, kind, model.n_features)
        n = head.n_features
        k = int((head.weight != 0).sum(dim=1).max())
    model.classifier = head
    return ReferenceModel(model.eval(), kind, arch, n, k)


def import_reference(checkpoint: str | Path, dataset: str, data_root: str | None,
                     run_dir: str | Path, *, crop_gt: bool | None = None,
                     reduced_strides: bool = True, image_size: int | None = None,
                     model_type: str | None = None) -> ReferenceModel:
    """Write ``run_dir`` as ``qpm train`` would have: config.json (the paper recipe with the
    checkpoint's sizes), data.json, the model file and its stage record."""
    from qpm import run_folder as rf
    from qpm.data import build_data
    from qpm.data.profile import profile_split
    from qpm.io import write_json
    from qpm.models.checkpoint import model_state
    from qpm.models.torch_files import save_torch
    from qpm.pipeline.stages.base import DENSE_FIELDS
    from qpm.pipeline.stages.qpm import FINETUNE_FIELDS
    from qpm.run_folder.config import TrainConfig
    from qpm.text import printable

    path, folder = Path(checkpoint), Path(run_dir)
    rf.check_run_dir(folder, new=True)  # before the work; claimed (locked) before writing
    ref = reference_model(read_state_dict(path), reduced_strides, model_type)
    sizes = {} if ref.model_type == "dense" else {"n_features": ref.n_features,
                                                   "per_class": ref.per_class}
    cfg = TrainConfig(dataset=dataset, data_root=data_root, recipe="paper", crop_gt=crop_gt,
                      image_size=image_size, arch=ref.arch, weights=str(path),
                      reduced_strides=reduced_strides, model_type=ref.model_type,
                      device="cpu", run_dir=str(folder), **sizes).resolve()
    data = build_data(cfg.dataset, cfg.data_root, cfg.image_size, cfg.crop_gt)
    if data.num_classes != ref.model.num_classes:
        raise QPMError(f"The checkpoint has {ref.model.num_classes} classes but {dataset} at "
                       f"{printable(data_root)} has {data.num_classes}.",
                       "Import it with the dataset it was trained on.")
    name = ref.model_type
    meta = {"class_names": data.class_names, "dataset": dataset, "image_size": cfg.image_size,
            "imported_from": str(path), "n_features": ref.n_features,
            "per_class": ref.per_class, "inputs": profile_split(data.train.split).to_dict()}
    if hasattr(ref.model.classifier, "assignment"):
        meta["assignment"] = {str(c): f for c, f in ref.model.classifier.assignment().items()}
    with rf.claim(folder, "qpm import-reference", new=True):
        fingerprint = rf.data_fingerprint(data, cfg.data_root)
        write_json(folder / rf.DATA, fingerprint)
        write_json(folder / rf.CONFIG, cfg.to_dict())
        file = folder / rf.model_file(name)
        save_torch(file, model_state(ref.model, 3, reduced_strides, meta))
        fields = DENSE_FIELDS if name == "dense" else FINETUNE_FIELDS
        rf.write_record(folder, rf.StageRecord(
            stage=name, artifact=file.name, fields=cfg.fingerprint(fields),
            inputs={"data": rf.fingerprint_hash(fingerprint)}, output=rf.file_hash(file),
            extra={"imported_from": str(path), "checkpoint_sha256": rf.file_hash(path)}))
    return ref

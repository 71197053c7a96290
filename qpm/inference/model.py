"""A trained model of a run folder as a ``torch.nn.Module`` whose forward returns logits.

    model = qpm.load("runs/mnist-5k/small-cnn/0")       # qpm.pt; also dense, sldd, qsenn
    model.predict(["digit.png"]).names                   # -> ['7']
    model.explain("digit.png").save("why.png")            # features, runner-up, maps
    model.global_explanation().classes                   # class -> its features

The model reads only the run folder's ordinary files (config.json and the model file), with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qpm.conformal import Hierarchy, Outputs, build_hierarchy
from qpm.conformal.paths import is_hierarchical
from qpm.conformal.quantile import check_coverage
from qpm.data import eval_transform, get_dataset
from qpm.errors import QPMError
from qpm.explain.structure import FeatureCounts, class_features, feature_label
from qpm.inference.conformal import Calibration, default_method, load_calibration
from qpm.inference.inputs import to_batch
from qpm.inference.results import (
    ConformalSets,
    FeatureEvidence,
    GlobalExplanation,
    LocalExplanation,
    MarginTerm,
    Predictions,
)
from qpm.text import printable


class QPMModel(nn.Module):
    """A run's backbone and final layer; ``forward(x)`` returns the (N, C) logits.

    ``x`` is a batch after the run's test transform (``model.transform``); :meth:`predict`
    and :meth:`explain` also take files, PIL images and uint8 arrays and transform them.
    """

    def __init__(self, network: nn.Module, class_names: list[str], *, model_type: str,
                 dataset: str, image_size: int | None = None, per_class: int = 5,
                 run_dir: str | os.PathLike | None = None, meta: dict | None = None,
                 crop_gt: bool = False, variant: str | None = None) -> None:
        super().__init__()
        spec = get_dataset(dataset)
        self.network = network
        self.class_names = [printable(n) for n in class_names]
        self.model_type, self.dataset = model_type, dataset
        self.image_size = int(spec.image_size if image_size is None else image_size)
        self.per_class = int(per_class)
        self.kind, self.mean, self.std = spec.kind, spec.mean, spec.std
        self.in_channels = len(spec.mean)
        self.transform = eval_transform(spec, self.image_size, crop_gt)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.variant = variant  # the run's variant folder it came from (None: dense, older)
        self.meta = dict(meta or {})
        self._calibration: Calibration | None = None
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).logits

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # --- the final layer ------------------------------------------------------------------

    def layer(self) -> tuple[np.ndarray, np.ndarray]:
        """The (C, n) final-layer weights and the n backbone features they read."""
        weight, selected = self.network.classifier.class_feature_weights()
        w = weight.detach().cpu().numpy().astype(np.float64)
        sel = np.arange(w.shape[1]) if selected is None else selected.detach().cpu().numpy()
        return w, sel.astype(np.int64)

    def feature_values(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, n) values the final layer multiplies by its weights, from (N, F) pooled
        backbone features: logits = values @ weight.T (+ the layer's bias)."""
        head = self.network.classifier
        if hasattr(head, "layer_input"):  # QPM and CHiQPM layers, the baselines' sparse head
            return head.layer_input(pooled)
        return pooled  # the dense linear head reads every feature

    def class_columns(self, c: int, values: np.ndarray | None = None,
                      weight: np.ndarray | None = None) -> np.ndarray:
        """Columns of class ``c``'s features: its non-zero weights, or for the dense model
        the ``per_class`` largest contributions on an image with layer inputs ``values``.
        ``weight``: :meth:`layer`'s weights, if the caller has them already."""
        w = self.layer()[0] if weight is None else weight
        cols = np.flatnonzero(w[c])
        if self.model_type == "dense" and values is not None:
            cols = np.argsort(-(w[c] * values), kind="stable")[: self.per_class]
        return cols

    def _evidence(self, c: int, values: np.ndarray, w: np.ndarray, sel: np.ndarray
                  ) -> list[FeatureEvidence]:
        out = [FeatureEvidence(int(sel[j]), feature_label(int(sel[j])), float(values[j]),
                               float(w[c, j])) for j in self.class_columns(c, values, w)]
        return sorted(out, key=lambda f: -f.contribution)

    # --- using the model ------------------------------------------------------------------

    @torch.no_grad()
    def _run(self, x: torch.Tensor):
        was_training = self.training
        self.eval()
        try:
            out = self.network(x.to(self.device))
            return out.logits.float(), self.feature_values(out.features).float(), out.feature_maps
        finally:
            self.train(was_training)

    def predict(self, images, batch_size: int = 64, skip_unreadable: bool = False,
                coverage: float | None = None, method: str | None = None) -> Predictions:
        """Class, name, probabilities and the predicted class's features for each image, and
        how it differs from the training images (``warnings``; see :mod:`qpm.data.profile`).

        ``images``: file paths, PIL images, (H, W[, 3]) uint8 arrays (one or a list), or a
        transformed tensor batch (N, C, H, W). ``skip_unreadable``: a file that cannot be
        read goes to ``failed`` (path, why) instead of stopping the whole call. With
        ``coverage`` (e.g. 0.9) also each image's conformal prediction set (``.sets``) from
        the stored calibration (``qpm calibrate``); ``method``: hierarchical (default where
        the layer allows it), thr or aps.
        """
        if batch_size < 1:
            raise QPMError(f"batch_size must be positive, got {batch_size}.", "Use e.g. 64.")
        if isinstance(images, (list, tuple)) and images:  # a long list: load it bit by bit
            chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        else:
            chunks = [images]
        logits, values, sources, warnings, failed = [], [], [], [], []
        for chunk in chunks:
            batch = to_batch(chunk, self.transform, self.kind, self.in_channels,
                             first=len(sources) + len(failed), skip_unreadable=skip_unreadable)
            failed += batch.failed
            if batch.x is None:
                continue
            for start in range(0, batch.x.shape[0], batch_size):
                lg, val, _ = self._run(batch.x[start:start + batch_size])
                logits.append(lg.cpu())
                values.append(val.cpu())
            sources += batch.sources
            warnings += [self.input_warnings(s) for s in batch.stats]
        if not sources:
            names = ", ".join(printable(path) for path, _ in failed[:3])
            raise QPMError(f"None of the {len(failed)} images could be read ({names}"
                           f"{', ...' if len(failed) > 3 else ''}: {failed[0][1]}).",
                           "Replace or remove the broken files.")
        lg = torch.cat(logits)
        val = torch.cat(values).numpy().astype(np.float64)
        probs = torch.softmax(lg, dim=1).numpy().astype(np.float64)
        classes = lg.argmax(dim=1).numpy()
        w, sel = self.layer()
        evidence = [self._evidence(int(c), v, w, sel) for c, v in zip(classes, val, strict=True)]
        sets = None if coverage is None else self.prediction_sets(
            Outputs(lg.numpy().astype(np.float64), val, w), coverage, method)
        return Predictions(sources, classes, [self.class_names[c] for c in classes], probs,
                           lg.numpy(), evidence, warnings, failed, sets)

    def input_warnings(self, stats) -> list[str]:
        """How an image (its :class:`~qpm.data.profile.ImageStats`) differs from the training
        images; nothing for a model file without their profile, or a tensor input."""
        from qpm.data.profile import InputProfile, differences

        prof = InputProfile.from_dict(self.meta.get("inputs"))
        return [] if prof is None or stats is None else differences(stats, prof)

    # --- conformal sets and the hierarchy -----------------------------------------------

    def calibration(self) -> Calibration:
        """The conformal calibration ``qpm calibrate`` stored next to this model's file."""
        if self._calibration is None:
            if self.run_dir is None:
                raise QPMError("This model was not loaded from a run folder, so it has no "
                               "calibration.", "Load it with qpm.load(run_dir).")
            from qpm import run_folder as rf

            found = rf.open_run(self.run_dir).find(self.model_type, self.variant)
            fix = (f"Run qpm calibrate {printable(self.run_dir)} --model-type "
                   f"{self.model_type}" + (f" --variant {self.variant}" if self.variant
                                           else "") + " first.")
            self._calibration = load_calibration(found.folder, self.model_type,
                                                 self.layer()[0], fix)
        return self._calibration

    def outputs(self, images) -> Outputs:
        """What the conformal methods read for ``images`` (as :meth:`predict` takes them):
        the logits, the final layer's inputs and its weights."""
        x = to_batch(images, self.transform, self.kind, self.in_channels).x
        lg, val, _ = self._run(x)
        return Outputs(lg.cpu().numpy().astype(np.float64),
                       val.cpu().numpy().astype(np.float64), self.layer()[0])

    def prediction_sets(self, outputs: Outputs, coverage: float,
                        method: str | None = None) -> ConformalSets:
        """The conformal sets of images whose ``outputs`` this model gave."""
        try:
            check_coverage(coverage)
        except ValueError as exc:
            raise QPMError(str(exc), "Pass a coverage such as 0.9.") from None
        method = method or default_method(outputs.weight)
        return self.calibration().sets(outputs, method, coverage, self.class_names)

    def hierarchy(self, values: np.ndarray, predicted: int, also=()) -> Hierarchy | None:
        """CHiQPM's tree of one image from its layer input (None for a layer without the same
        number of binary features per class: dense, sldd, qsenn)."""
        w, sel = self.layer()
        if is_hierarchical(w) is not None:
            return None
        return build_hierarchy(values, w, predicted, sel, also=also)

    def explain(self, image, coverage: float | None = None,
                method: str | None = None) -> LocalExplanation:
        """The local explanation of one image (a path, PIL image, uint8 array or tensor):
        the predicted class's features, the runner-up and what separates them, and for a
        binary layer with k features per class CHiQPM's tree of class paths
        (``.hierarchy``). With ``coverage``: also the image's conformal prediction set
        (``.sets``; its classes are added to the tree)."""
        from qpm.explain.figures import displayable

        batch = to_batch(image, self.transform, self.kind, self.in_channels)
        x, sources = batch.x, batch.sources
        if x.shape[0] != 1:
            raise QPMError(f"explain takes one image, got {x.shape[0]}.",
                           "Call explain once per image.")
        lg, val, maps = self._run(x)
        probs = torch.softmax(lg[0], dim=0).cpu().numpy().astype(np.float64)
        values = val[0].cpu().numpy().astype(np.float64)
        order = np.argsort(-lg[0].cpu().numpy(), kind="stable")
        p = int(order[0])
        r = int(order[1]) if order.size > 1 else p
        w, sel = self.layer()
        mine, theirs = self.class_columns(p, values, w), self.class_columns(r, values, w)
        cols = list(dict.fromkeys([*mine.tolist(), *theirs.tolist()]))
        terms = [MarginTerm(int(sel[j]), feature_label(int(sel[j])), float(values[j]),
                            float(w[p, j]), float(w[r, j])) for j in cols if w[p, j] != w[r, j]]
        fmap = maps[0].float().cpu().numpy()
        sets = None if coverage is None else self.prediction_sets(
            Outputs(lg.cpu().numpy().astype(np.float64), values[None], w), coverage, method)
        also = sets.classes[0] if sets is not None else ()
        return LocalExplanation(
            source=sources[0],
            image=displayable(x[0].cpu().numpy(), self.mean, self.std),
            predicted=p, predicted_name=self.class_names[p], probability=float(probs[p]),
            features=self._evidence(p, values, w, sel),
            runner_up=r, runner_up_name=self.class_names[r],
            runner_up_probability=float(probs[r]),
            runner_up_features=self._evidence(r, values, w, sel),
            separating=sorted(terms, key=lambda t: -t.margin),
            maps={int(sel[j]): fmap[int(sel[j])] for j in cols},
            logit=float(lg[0, p]), runner_up_logit=float(lg[0, r]),
            hierarchy=self.hierarchy(values, p, also), sets=sets,
            class_names=list(self.class_names),
        )

    def global_explanation(self) -> GlobalExplanation:
        """Classes -> features, features -> classes, and class pairs by shared features."""
        w, sel = self.layer()
        feats = {c: sorted(f for f, _ in fs) for c, fs in class_features(w, sel).items()}
        users = {int(f): [c for c in sorted(feats) if f in feats[c]] for f in sel}
        pairs = []
        for a in sorted(feats):
            for b in sorted(feats):
                shared = sorted(set(feats[a]) & set(feats[b])) if a < b else []
                if shared:
                    pairs.append((a, b, shared))
        pairs.sort(key=lambda t: (-len(t[2]), t[0], t[1]))
        return GlobalExplanation(list(self.class_names), [int(f) for f in sel], feats, users,
                                 pairs, FeatureCounts.of(w))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise QPMError(f"Unknown device {device!r}.", "Use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QPMError(f"Device {device!r} was requested but no CUDA GPU is visible.",
                       "Use device='cpu' (or 'auto').")
    return dev


def load(run_dir: str | os.PathLike, model_type: str = "qpm",
         device: str | torch.device = "auto", variant: str | None = None) -> QPMModel:
    """The trained ``model_type`` model of a run folder, in eval mode on ``device``.

    ``variant`` picks one of the run's settings (its folder name under variants/, or a
    unique start of it such as ``"qpm-n30"``); by default the most recently trained one.
    Reads config.json and the model file, after the run folder's one trust check
    (:func:`qpm.run_folder.check_model_file`): the model file must be the one its stage
    recorded in its folder, so a mixed, edited or unrecorded model is refused.
    """
    from qpm import run_folder as rf
    from qpm.io import ArtifactError
    from qpm.models.checkpoint import load_model

    run = rf.open_run(run_dir)
    found = run.find(model_type, variant)
    config = run.config_of(found)
    rf.check_model_file(found.folder, model_type, run.path)
    dev = resolve_device(device)
    network, meta = load_model(found.file, "cpu")
    names = meta.get("class_names")
    if not names:
        try:
            names = rf.class_names(run.path)
        except ArtifactError:
            names = [str(c) for c in range(network.num_classes)]
    if len(names) != network.num_classes:
        raise QPMError(f"{printable(found.file)} has {network.num_classes} classes but names "
                       f"{len(names)}.", f"Re-run qpm train in {printable(run.path)}.")
    model = QPMModel(network, [str(n) for n in names], model_type=model_type,
                     dataset=config.dataset, image_size=config.image_size,
                     per_class=config.per_class, run_dir=run.path, meta=meta,
                     crop_gt=bool(config.crop_gt), variant=found.variant)
    return model.to(dev)

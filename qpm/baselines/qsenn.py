"""Q-SENN (Norrenbrock et al., 2024): iterated glm-saga sparsification and quantisation.

Each of ``rounds`` (4) rounds: glm-saga path on the current (selected) features -> take its
least regularised solution -> keep the ``C * per_class`` largest weights -> quantise them to
{-v, 0, +v} (v = mean magnitude of the kept weights) with a class bias from each class's
count of positive minus negative weights -> fine-tune the backbone with the learning rate
scaled by 0.9 per round, for 10 epochs in every round but the last, which runs the full
fine-tuning schedule (the reference's QSENNScheduler: 10, 10, 10, 40 epochs with the
paper's 40). Feature selection (as in SLDD) happens in the first round only.

``reference_quirks=True`` reproduces two things the reference does differently:
- its rounds 2-4 fit on what its head returns, the selected features normalised by the
  fine-tuned head, and give the next head *their* mean and std, which it then applies to the
  raw features (so later rounds run almost without normalisation); by default every round
  standardises the backbone's raw features;
- its last threshold: with at most ``C * per_class`` non-zero weights it thresholds at the
  smallest magnitude, so the smallest positive weight(s) drop out, and a weight of exactly
  ``-max`` becomes ``+v`` (``torch.bucketize``'s boundaries); by default every non-zero weight
  stays, with its sign.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from qpm.baselines.glm import GLMConfig, glm_path, standardise
from qpm.baselines.layer import SparseLayer, keep_largest
from qpm.baselines.selection import select_features


def quantise(
    weight: np.ndarray, bias: np.ndarray, n_keep: int, reference_quirks: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Q-SENN's ternary layer: (weights in {-v, 0, +v}, class bias, v).

    Keep the ``n_keep`` largest-magnitude weights, v = their mean magnitude. With
    d_c = (#positive - #negative weights of class c) - min over classes, the bias is
    b_c = B - d_c * 2B / max(d), B = max |bias| of the unquantised layer: the class with the
    fewest net positive weights gets +B, the one with the most gets -B, so that classes with
    many positive features do not win by count alone (all zero when every d_c is equal; the
    reference divides by zero there). ``reference_quirks``: the reference's thresholds
    (:func:`reference_ternary`).
    """
    if reference_quirks:
        wq, v = reference_ternary(weight, n_keep)
    else:
        kept = keep_largest(weight, n_keep)
        nz = kept != 0
        v = float(np.abs(kept[nz]).mean()) if nz.any() else 0.0
        wq = np.sign(kept) * v
    net = (wq > 0).sum(axis=1) - (wq < 0).sum(axis=1)
    d = net - net.min()
    big = float(np.max(np.abs(bias))) if np.size(bias) else 0.0
    if d.max() == 0:
        bq = np.zeros(wq.shape[0])
    else:
        bq = big - d * (2.0 * big / d.max())
    return wq, bq.astype(np.float64), v


def reference_ternary(weight: np.ndarray, n_keep: int) -> tuple[np.ndarray, float]:
    """The reference's ``discretize_2_bins_to_threshold``: (weights in {-v, 0, +v}, v).

    With the non-zero magnitudes m_1 >= m_2 >= ... (float32), the threshold t is the midpoint
    of m_n_keep and m_(n_keep+1), or m_last when there are no more than ``n_keep``. It buckets
    as ``torch.bucketize`` with boundaries (-m_1, -t, t, m_1): w > t -> +v, -m_1 < w <= -t ->
    -v, w <= -m_1 -> +v (its sign flips), the rest 0; v is the mean magnitude of the first
    two kinds (m_1 when there are none, its starting value).
    """
    w = np.asarray(weight, dtype=np.float32)
    mags = np.sort(np.abs(w[w != 0]))[::-1]
    if mags.size == 0:
        return np.zeros(w.shape), 0.0
    t = (mags[n_keep - 1] + mags[n_keep]) / 2 if n_keep < mags.size else mags[-1]
    top = mags[0]
    pos, neg, flip = w > t, (w <= -t) & (w > -top), w <= -top
    kept = np.abs(w[pos | neg])
    v = float(kept.mean()) if kept.size else float(top)
    return (pos.astype(np.float64) - neg + flip) * v, v


def qsenn_layer(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    per_class: int = 5,
    selection: np.ndarray | None = None,
    n_features: int = 50,
    cfg: GLMConfig | None = None,
    reference_quirks: bool = False,
) -> SparseLayer:
    """One Q-SENN sparsification: select features if ``selection`` is None, fit, quantise
    (with the reference's thresholds when ``reference_quirks``)."""
    cfg = cfg or GLMConfig()
    st = standardise(features)
    if selection is None:
        n_select = min(n_features, st.X.shape[1])
        selection = select_features(features, labels, n_select, n_classes, cfg)
    selection = np.asarray(selection, dtype=np.int64)
    path = glm_path(st.X[:, selection], labels, n_classes, cfg)
    wq, bq, v = quantise(path.weights[-1], path.biases[-1], n_classes * per_class,
                         reference_quirks)
    return SparseLayer(
        selection=selection,
        weight=wq,
        bias=bq,
        mean=st.mean[selection].astype(np.float64),
        std=st.std[selection].astype(np.float64),
        sparsifier="qsenn",
        info={
            "v": v,
            "lambda": path.lambdas[-1],
            "path_length": len(path.weights),
            "nonzeros_per_class_before_quantising": float(path.nonzeros_per_class()[-1]),
            "train_acc_glm": path.train_acc[-1],
            **({"reference_quirks": True} if reference_quirks else {}),
        },
    )


ROUND_EPOCHS = 10  # fine-tuning epochs of every round but the last (reference)


@dataclass
class QSENNRound:
    round: int
    lr_scale: float
    epochs: int
    layer: SparseLayer
    finetune_info: dict


def qsenn_schedule(
    ft_epochs: int, rounds: int = 4, lr_decay: float = 0.9, round_epochs: int = ROUND_EPOCHS
) -> list[tuple[int, float]]:
    """(epochs, learning-rate scale) of each round: lr x ``lr_decay``**round; every round
    but the last fine-tunes ``round_epochs`` epochs, the last the full ``ft_epochs``.

    With the paper's 40 fine-tuning epochs: 10, 10, 10, 40. A run whose whole fine-tuning is
    shorter than ``round_epochs`` caps the earlier rounds at ``ft_epochs`` too (the reference
    has no such runs).
    """
    if ft_epochs < 1 or rounds < 1:
        raise ValueError(f"need ft_epochs >= 1 and rounds >= 1, got {ft_epochs}, {rounds}")
    early = min(round_epochs, ft_epochs)
    return [(ft_epochs if r == rounds - 1 else early, lr_decay**r) for r in range(rounds)]


def run_qsenn(
    extract: Callable[[SparseLayer | None], tuple[np.ndarray, np.ndarray]],
    finetune: Callable[[SparseLayer, int, float, int], dict],
    n_classes: int,
    per_class: int = 5,
    n_features: int = 50,
    schedule: list[tuple[int, float]] | None = None,
    cfg: GLMConfig | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    reference_quirks: bool = False,
) -> list[QSENNRound]:
    """The Q-SENN loop over callbacks, independent of any model code.

    ``extract(layer)`` returns the current training features (N, F) of the backbone (all F
    of them) and labels; ``finetune(layer, round, lr_scale, epochs)`` installs the layer,
    fine-tunes the backbone ``epochs`` epochs with the learning rate multiplied by
    ``lr_scale``, and returns diagnostics. ``schedule`` holds (epochs, lr_scale) per round
    (default :func:`qsenn_schedule` of 40 epochs). The last round's layer is the model's.

    ``reference_quirks``: from the second round on, ``extract(layer)`` returns the installed,
    fine-tuned head's input instead (N, n: its ``layer_input``, the selected features
    normalised by the head, which the reference's ``SLDDLevel`` returns), and each round's
    layer keeps the statistics of that input as its mean and std, as the reference's do.
    """
    schedule = schedule or qsenn_schedule(40)
    history: list[QSENNRound] = []
    layer: SparseLayer | None = None
    for r, (epochs, scale) in enumerate(schedule):
        X, y = extract(layer)
        layer = _next_layer(X, y, layer, n_classes, per_class, n_features, cfg,
                            reference_quirks)
        log(f"Q-SENN round {r + 1}/{len(schedule)}: v={layer.info['v']:.4g}, fine-tune "
            f"{epochs} epochs at lr x {scale:.3g}")
        info = finetune(layer, r, scale, epochs)
        history.append(QSENNRound(r, scale, epochs, layer, dict(info or {})))
    return history


def _next_layer(X: np.ndarray, y: np.ndarray, layer: SparseLayer | None, n_classes: int,
                per_class: int, n_features: int, cfg: GLMConfig | None,
                reference_quirks: bool) -> SparseLayer:
    if layer is None or not reference_quirks:
        selection = None if layer is None else layer.selection
        return qsenn_layer(X, y, n_classes, per_class, selection, n_features, cfg,
                           reference_quirks)
    if X.shape[1] != layer.selection.size:
        raise ValueError(f"with reference_quirks, extract(layer) must return the head's input "
                         f"({layer.selection.size} columns), got {X.shape[1]}")
    fitted = qsenn_layer(X, y, n_classes, per_class, np.arange(X.shape[1]), n_features, cfg,
                         reference_quirks=True)
    return replace(fitted, selection=layer.selection)


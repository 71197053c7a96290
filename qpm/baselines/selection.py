"""SLDD / Q-SENN feature selection as the reference does it: features enter one at a time.

The reference (ThomasNorr/QPM, sparsification/FeatureSelection.py) adapts glm-saga's group
lasso: its proximal step keeps every feature admitted so far and lets at most ONE more
feature (the one with the largest column norm among the others, if that norm exceeds the
threshold) become non-zero. It walks the lambda path from the top, solving to convergence at
each lambda (warm started); as soon as a solve ends with a new non-zero feature, that
feature is admitted and the walk restarts from the top of the path, until ``n`` features
are in. Written here from that description (proximal SAGA, as glm-saga implements it).

Lambdas: ``lambda_factor`` (0.1) times a log-uniform path from lambda_max to ``epsilon``
times it (``n_lambdas`` steps), then 0; lambda_max is glm-saga's group maximum
regularisation divided by alpha, computed like the reference from the RAW (unstandardised)
features while the solves run on standardised ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from qpm.baselines.glm import BatchLoader, GLMConfig, one_thread, standardise
from qpm.errors import QPMError

log = logging.getLogger(__name__)

# The reference adds this to each column norm before dividing by it.
NORM_EPS = 1e-6


@dataclass
class SelectionPath:
    """Features in the order they entered, the lambda each entered at, and the work done."""

    order: list[int] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    solves: int = 0  # SAGA solves (one per lambda visited)
    epochs: int = 0  # SAGA epochs over all solves

    @property
    def selection(self) -> np.ndarray:
        """The selected feature indices, sorted (as the reference returns them)."""
        return np.sort(np.asarray(self.order, dtype=np.int64))


def max_group_lambda(X: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """glm-saga's smallest group-lasso lambda that keeps every feature at zero:
    max over features f of || X[:, f]^T (Y - mean(Y)) ||_2 / N, Y the one-hot labels."""
    Y = np.eye(n_classes)[np.asarray(y, dtype=np.int64)]
    inner = np.asarray(X, dtype=np.float64).T @ (Y - Y.mean(axis=0))  # (F, C)
    return float(np.linalg.norm(inner, axis=1).max() / X.shape[0])


def one_new_feature_prox(selected: torch.Tensor) -> Callable:
    """The reference's proximal step of the elastic group lasso with the admission rule.

    Column j of W is scaled by (1 - t / (||W_j|| + 1e-6)) if j is admitted, else zeroed
    (no clamp at 0: an admitted column with norm below t flips sign, as in the reference);
    then W is divided by (1 + shrink). Admitted: the features in ``selected`` and the
    largest-norm other feature if its norm exceeds t.
    """

    def prox(W: torch.Tensor, t: float, shrink: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(W, dim=0) + NORM_EPS
        masked = torch.where(selected, norm.min(), norm)
        allowed = selected.clone()
        best = int(torch.argmax(masked))
        if norm[best] > t:
            allowed[best] = True
        return (W - t * W / norm) * allowed / (1 + shrink)

    return prox


@dataclass
class _Saga:
    """A multinomial GLM W x + b fitted by proximal SAGA; the gradient table persists
    across solves (warm start), as glm-saga's ``state``."""

    X: torch.Tensor
    y: torch.Tensor
    n_classes: int
    loader: BatchLoader

    def __post_init__(self) -> None:
        n, f = self.X.shape
        self.W = torch.zeros(self.n_classes, f)
        self.b = torch.zeros(self.n_classes)
        self.table = torch.zeros(n, self.n_classes)
        self.w_avg = torch.zeros_like(self.W)
        self.b_avg = torch.zeros_like(self.b)
        self.eye = torch.eye(self.n_classes)

    def solve(self, lam: float, alpha: float, lr: float, prox: Callable, max_epochs: int,
              tol: float, lookbehind: int) -> int:
        """Run epochs until the objective has not improved by ``tol`` for ``lookbehind``
        epochs (or ``max_epochs``); returns the number of epochs."""
        n = self.X.shape[0]
        best, stale = None, 0
        for epoch in range(1, max_epochs + 1):
            total = 0.0
            for Xb, yb, idx in self.loader:
                out = Xb @ self.W.t() + self.b
                total += float(F.cross_entropy(out, yb, reduction="sum"))
                a = torch.softmax(out, dim=1) - self.eye[yb]
                a_prev = self.table[idx]
                bs = Xb.shape[0]
                w_grad, w_prev = a.t() @ Xb / bs, a_prev.t() @ Xb / bs
                b_grad, b_prev = a.mean(0), a_prev.mean(0)
                W_new = self.W - lr * (w_grad - w_prev + self.w_avg)
                self.W = prox(W_new, lr * lam * alpha, lr * lam * (1 - alpha))
                self.b = self.b - lr * (b_grad - b_prev + self.b_avg)
                self.table[idx] = a
                self.w_avg += (w_grad - w_prev) * bs / n
                self.b_avg += (b_grad - b_prev) * bs / n
            obj = (total / n + lam * alpha * float(self.W.abs().sum())
                   + 0.5 * lam * (1 - alpha) * float((self.W**2).sum()))
            if best is None or obj + tol < best:
                best, stale = obj, 0
            else:
                stale += 1
            if stale >= lookbehind:
                return epoch
        return max_epochs


def selection_path(
    features: np.ndarray,
    labels: np.ndarray,
    n_select: int,
    n_classes: int,
    cfg: GLMConfig | None = None,
    on_solve: Callable[[float, np.ndarray], None] | None = None,
) -> SelectionPath:
    """Admit ``n_select`` of the raw ``features`` (N, F) one at a time (see the module doc).

    ``on_solve(lambda, weight)`` is called after every solve with the (C, F) weights.
    """
    cfg = cfg or GLMConfig()
    raw = np.asarray(features, dtype=np.float64)
    n_total = raw.shape[1]
    if not 0 < n_select <= n_total:
        raise ValueError(f"cannot select {n_select} of {n_total} features")
    if n_select == n_total:  # the reference skips the selection then
        return SelectionPath(order=list(range(n_total)))
    alpha = cfg.selection_alpha
    top = max_group_lambda(raw, labels, n_classes) / max(1e-3, alpha)
    lams = np.logspace(math.log10(top), math.log10(top * cfg.epsilon), cfg.n_lambdas)
    lams = np.append(lams, 0.0) * cfg.selection_lambda_factor
    X = torch.as_tensor(standardise(raw).X)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    saga = _Saga(X, y, n_classes, BatchLoader(X, y, cfg.batch_size, cfg.seed))
    selected = torch.zeros(n_total, dtype=torch.bool)
    prox = one_new_feature_prox(selected)
    path = SelectionPath()
    with one_thread(), torch.no_grad():
        while len(path.order) < n_select:
            for lam in lams:
                path.epochs += saga.solve(float(lam), alpha, cfg.lr, prox, cfg.max_epochs,
                                          cfg.tol, cfg.selection_lookbehind)
                path.solves += 1
                if on_solve is not None:
                    on_solve(float(lam), saga.W.numpy().copy())
                used = (saga.W != 0).any(dim=0)
                new = torch.nonzero(used & ~selected).flatten().tolist()
                if new:
                    selected |= used  # in place: the prox sees the admitted features
                    path.order.extend(new)
                    path.lambdas.extend([float(lam)] * len(new))
                    log.debug("feature selection: %d/%d in (feature %s, lambda %.3g, %d solves)",
                              len(path.order), n_select, new, lam, path.solves)
                    break
            else:
                raise QPMError(
                    f"The feature selection found only {len(path.order)} of {n_select} "
                    "features that help the classifier (the others are constant).",
                    f"Use --n-features {len(path.order)} or fewer.",
                )
    return path


def select_features(
    features: np.ndarray, labels: np.ndarray, n_select: int, n_classes: int,
    cfg: GLMConfig | None = None,
) -> np.ndarray:
    """The sorted indices of the ``n_select`` raw features the reference would select."""
    return selection_path(features, labels, n_select, n_classes, cfg).selection

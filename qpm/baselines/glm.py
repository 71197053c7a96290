"""Thin, quiet wrappers around the glm-saga package (elastic-net GLMs by proximal SAGA).

glm-saga prints every step and warns about an implicit softmax dimension; we capture its
output into a log string instead. Its loaders must yield ``(X, y, index)``; features are
standardised here (glm-saga assumes standardised inputs).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qpm.errors import QPMError


def require_glm_saga():
    """Import ``glm_saga.elasticnet`` or raise a QPMError saying how to install it."""
    try:
        import tqdm  # noqa: F401  (glm-saga imports it without declaring it)
        from glm_saga import elasticnet
    except ImportError as exc:
        raise QPMError(
            f"The Q-SENN and SLDD baselines need the glm-saga package ({exc.name} is missing).",
            "Install it into this environment: pip install glm-saga tqdm",
        ) from None
    return elasticnet


@dataclass
class Standardised:
    """Features standardised per column, with the statistics to undo or reapply it."""

    X: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def standardise(X: np.ndarray) -> Standardised:
    X = np.asarray(X, dtype=np.float32)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    return Standardised(((X - mean) / std).astype(np.float32), mean, std)


@dataclass
class GLMConfig:
    """Settings of the glm-saga solves (defaults follow the Q-SENN / SLDD reference)."""

    lr: float = 0.1
    max_epochs: int = 2000
    alpha: float = 0.99
    n_lambdas: int = 100
    epsilon: float = 1e-3  # smallest lambda = epsilon * largest
    tol: float = 1e-4
    lookbehind: int = 5
    batch_size: int = 256
    seed: int = 0
    # the one-at-a-time feature selection (qpm.baselines.selection)
    selection_alpha: float = 0.8
    selection_lookbehind: int = 3
    selection_lambda_factor: float = 0.1


@dataclass
class GLMPath:
    """Solutions along a regularisation path, strongest regularisation first."""

    lambdas: list[float] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)  # each (C, F)
    biases: list[np.ndarray] = field(default_factory=list)  # each (C,)
    train_acc: list[float] = field(default_factory=list)
    log: str = ""

    def nonzeros_per_class(self) -> np.ndarray:
        return np.array([np.count_nonzero(w) / w.shape[0] for w in self.weights])


@contextlib.contextmanager
def one_thread():
    """glm-saga's many tiny tensor ops run several times faster on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Quiet(contextlib.ExitStack):
    """Capture glm-saga's prints and its softmax warning; run on one thread."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = io.StringIO()

    def __enter__(self):
        super().__enter__()
        self.enter_context(one_thread())
        self.enter_context(contextlib.redirect_stdout(self.buffer))
        self.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*Implicit dimension choice.*")
        return self


class BatchLoader:
    """Shuffled mini-batches ``(X, y, index)`` as glm-saga expects, sliced from tensors.

    A torch DataLoader over an IndexedTensorDataset does the same item by item, which costs
    most of glm-saga's time on small feature matrices.
    """

    def __init__(self, X, y, batch_size: int, seed: int) -> None:
        import torch

        self.X, self.y, self.batch_size = X, y, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.X.shape[0] // self.batch_size)

    def __iter__(self):
        import torch

        order = torch.randperm(self.X.shape[0], generator=self.gen)
        for start in range(0, order.numel(), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.X[idx], self.y[idx], idx


def _setup(X: np.ndarray, y: np.ndarray, n_classes: int, cfg: GLMConfig):
    import torch

    en = require_glm_saga()
    Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    loader = BatchLoader(Xt, yt, cfg.batch_size, cfg.seed)
    linear = torch.nn.Linear(X.shape[1], n_classes)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    return en, Xt, yt, loader, linear


def _accuracy(linear, Xt, yt) -> float:
    import torch

    with torch.no_grad():
        return float((linear(Xt).argmax(1) == yt).float().mean())


def glm_path(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: GLMConfig | None = None,
    stop: Callable[[np.ndarray], bool] | None = None,
) -> GLMPath:
    """An (element-wise) elastic-net regularisation path with glm-saga's proximal SAGA.

    lambdas go log-uniformly from the smallest value that zeroes all weights down to
    ``epsilon`` times it (``n_lambdas`` steps, warm started). ``stop(weight)`` may end the
    path early after a step (its solution is kept). ``X`` should be standardised.
    """
    cfg = cfg or GLMConfig()
    en, Xt, yt, loader, linear = _setup(X, y, n_classes, cfg)
    path = GLMPath()
    with _Quiet() as quiet:
        max_lam = en.maximum_reg_loader(loader, group=False) / max(1e-3, cfg.alpha)
        lams = np.logspace(math.log10(max_lam), math.log10(max_lam * cfg.epsilon), cfg.n_lambdas)
        state = None
        for lam in lams:
            state = en.train_saga(
                linear, loader, cfg.lr, cfg.max_epochs, float(lam), cfg.alpha, group=False,
                state=state, n_ex=X.shape[0], n_classes=n_classes, tol=cfg.tol,
                lookbehind=cfg.lookbehind, logger=print,
            )
            w = linear.weight.detach().numpy().copy()
            path.lambdas.append(float(lam))
            path.weights.append(w)
            path.biases.append(linear.bias.detach().numpy().copy())
            path.train_acc.append(_accuracy(linear, Xt, yt))
            if stop is not None and stop(w):
                break
    path.log = quiet.buffer.getvalue()
    return path

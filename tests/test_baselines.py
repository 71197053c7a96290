"""SLDD and Q-SENN sparsifiers (glm-saga) end to end at tiny size, plus their pure parts."""

import sys

import numpy as np
import pytest
import torch

from qpm.baselines import (
    GLMConfig,
    keep_largest,
    qsenn_layer,
    quantise,
    require_glm_saga,
    run_qsenn,
    sldd_sparsify,
)
from qpm.errors import QPMError
from qpm.metrics import accuracy, features_per_class

FAST = GLMConfig(n_lambdas=12, max_epochs=25, batch_size=128)
C, K, N_SEL = 4, 2, 8


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _data(seed=0, n=300, f=20):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    proto = np.zeros((C, f))
    for c in range(C):
        proto[c, rng.choice(f, 3, replace=False)] = 3.0
    X = np.maximum(proto[y] + rng.normal(0, 1, (n, f)), 0)
    return X, y


def test_keep_largest_keeps_exactly_n_by_magnitude():
    w = np.array([[3.0, -1, 0.5], [0, 2, -4]])
    assert keep_largest(w, 3).tolist() == [[3, 0, 0], [0, 2, -4]]
    assert keep_largest(w, 10).tolist() == w.tolist()
    ties = keep_largest(np.ones((2, 2)), 3)
    assert np.count_nonzero(ties) == 3


def test_quantise_known_case():
    w = np.array([[3.0, -1, 0.5], [0, 2, -4]])
    wq, bq, v = quantise(w, np.array([0.5, -1.0]), 3)
    # kept: 3, 2, -4 -> v = 3; net positive-minus-negative: class 0 -> 1, class 1 -> 0
    assert v == pytest.approx(3.0)
    assert wq.tolist() == [[3, 0, 0], [0, 3, -3]]
    assert bq.tolist() == [-1.0, 1.0]  # B = 1: most net-positive class gets -B
    _, flat_bias, _ = quantise(np.eye(2), np.array([2.0, 1.0]), 2)
    assert flat_bias.tolist() == [0.0, 0.0]


def test_sldd_end_to_end_k_per_class_on_average():
    X, y = _data()
    layer = sldd_sparsify(X, y, C, n_features=N_SEL, per_class=K, cfg=FAST)
    assert layer.sparsifier == "sldd"
    assert layer.selection.shape == (N_SEL,) and len(set(layer.selection.tolist())) == N_SEL
    assert layer.weight.shape == (C, N_SEL)
    assert features_per_class(layer.weight) == K  # C*K weights kept in total
    assert layer.info["nonzeros_per_class_before_pruning"] <= 2 * K
    assert accuracy(layer.logits(X), y) > 0.6  # chance is 0.25


def test_sparse_head_computes_the_layer_and_round_trips():
    from qpm.baselines.head import SparseHead
    from qpm.models.checkpoint import _HEADS

    X, y = _data()
    layer = sldd_sparsify(X, y, C, n_features=N_SEL, per_class=K, cfg=FAST)
    head = SparseHead.from_layer(layer).eval()
    with torch.no_grad():
        out = head(torch.as_tensor(X, dtype=torch.float32)).numpy()
    assert np.allclose(out, layer.logits(X), atol=1e-4)
    again = _HEADS["sparse"][1](head.state_dict())
    again.load_state_dict(head.state_dict())
    assert torch.equal(again.bias, head.bias) and torch.equal(again.weight, head.weight)


def test_qsenn_layer_is_ternary_with_k_per_class_on_average():
    X, y = _data()
    layer = qsenn_layer(X, y, C, per_class=K, n_features=N_SEL, cfg=FAST)
    v = layer.info["v"]
    assert v > 0
    assert set(np.unique(layer.weight).tolist()) <= {-v, 0.0, v}
    assert features_per_class(layer.weight) == K
    assert accuracy(layer.logits(X), y) > 0.5


def test_run_qsenn_rounds_reuse_selection_and_decay_lr():
    X, y = _data()
    seen = []

    def extract(layer):
        shift = 0.0 if layer is None else 0.1 * len(seen)
        return X + shift, y

    def finetune(layer, r, scale):
        seen.append((r, scale, layer.selection.copy()))
        return {"epochs": 10}

    history = run_qsenn(extract, finetune, C, per_class=K, n_features=N_SEL, rounds=3, cfg=FAST)
    assert [h.round for h in history] == [0, 1, 2]
    assert [s for _, s, _ in seen] == pytest.approx([1.0, 0.9, 0.81])
    assert all(np.array_equal(sel, seen[0][2]) for _, _, sel in seen)
    assert history[-1].finetune_info == {"epochs": 10}
    assert all(features_per_class(h.layer.weight) == K for h in history)


def test_missing_glm_saga_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "glm_saga", None)
    monkeypatch.delitem(sys.modules, "glm_saga.elasticnet", raising=False)
    with pytest.raises(QPMError, match="glm-saga"):
        require_glm_saga()

"""SLDD and Q-SENN sparsifiers (glm-saga) end to end at tiny size, plus their pure parts."""

import sys

import numpy as np
import pytest
import torch

from qpm.baselines import (
    GLMConfig,
    keep_largest,
    qsenn_layer,
    qsenn_schedule,
    quantise,
    require_glm_saga,
    run_qsenn,
    select_features,
    selection_path,
    sldd_sparsify,
)
from qpm.baselines.selection import max_group_lambda, one_new_feature_prox
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
    from qpm.models.heads import head_from_state

    X, y = _data()
    layer = sldd_sparsify(X, y, C, n_features=N_SEL, per_class=K, cfg=FAST)
    head = layer.head().eval()
    with torch.no_grad():
        out = head(torch.as_tensor(X, dtype=torch.float32)).numpy()
    assert np.allclose(out, layer.logits(X), atol=1e-4)
    again = head_from_state("sparse", head.state_dict())
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


def test_qsenn_schedule_is_10_10_10_then_full_with_lr_decay():
    epochs, scales = zip(*qsenn_schedule(40), strict=True)
    assert epochs == (10, 10, 10, 40)
    assert scales == pytest.approx([1.0, 0.9, 0.81, 0.729])
    assert [e for e, _ in qsenn_schedule(25)] == [10, 10, 10, 25]
    # a run whose whole fine-tuning is shorter than 10 epochs caps the early rounds too
    assert [e for e, _ in qsenn_schedule(6)] == [6, 6, 6, 6]
    with pytest.raises(ValueError):
        qsenn_schedule(0)


def test_run_qsenn_rounds_reuse_selection_epochs_and_decay_lr():
    X, y = _data()
    seen = []

    def extract(layer):
        shift = 0.0 if layer is None else 0.1 * len(seen)
        return X + shift, y

    def finetune(layer, r, scale, epochs):
        seen.append((r, scale, epochs, layer.selection.copy()))
        return {"epochs": epochs}

    history = run_qsenn(extract, finetune, C, per_class=K, n_features=N_SEL,
                        schedule=qsenn_schedule(12), cfg=FAST)
    assert [h.round for h in history] == [0, 1, 2, 3]
    assert [s for _, s, _, _ in seen] == pytest.approx([1.0, 0.9, 0.81, 0.729])
    assert [e for _, _, e, _ in seen] == [10, 10, 10, 12]
    assert all(np.array_equal(sel, seen[0][3]) for *_, sel in seen)
    assert history[-1].finetune_info == {"epochs": 12}
    assert all(features_per_class(h.layer.weight) == K for h in history)


def test_quantise_keeps_the_sign_of_a_negative_largest_weight():
    # The reference's bucketing maps exactly -max to +v (a bug); we keep the sign.
    w = np.array([[-5.0, 1.0, 0.2], [2.0, 0.0, -3.0]])
    wq, _, v = quantise(w, np.zeros(2), 4)
    assert v == pytest.approx((5 + 1 + 2 + 3) / 4)
    assert (np.sign(wq) == np.sign(keep_largest(w, 4))).all() and wq[0, 0] == -v


# --- the reference's one-at-a-time feature selection -------------------------------------------


def test_prox_admits_selected_features_and_at_most_one_more():
    W = torch.tensor([[3.0, 0.1, 2.0, 0.5, 0.0], [4.0, 0.0, 0.0, 0.5, 0.0]])
    # column norms: 5, 0.1, 2, 0.71, 0; feature 1 is admitted already
    selected = torch.tensor([False, True, False, False, False])
    out = one_new_feature_prox(selected)(W, 1.0, 0.0)
    nonzero = (out != 0).any(dim=0).tolist()
    assert nonzero == [True, True, False, False, False]  # 1 kept, 0 (largest) admitted
    # admitted column scaled by (1 - t / (norm + 1e-6)); a kept column below t flips sign
    assert out[:, 0].tolist() == pytest.approx((W[:, 0] * (1 - 1 / (5 + 1e-6))).tolist())
    assert out[0, 1].item() == pytest.approx(0.1 * (1 - 1 / (0.1 + 1e-6)))
    assert out[0, 1].item() < 0
    # no other feature above the threshold: only the admitted ones stay; shrinkage divides
    out = one_new_feature_prox(selected)(W, 10.0, 1.0)
    assert (out != 0).any(dim=0).tolist() == [False, True, False, False, False]
    assert out[0, 1].item() == pytest.approx(0.1 * (1 - 10 / (0.1 + 1e-6)) / 2)


def _graded_problem(n=240, seed=0):
    """Two classes; feature 3 separates them strongly, 1 less, 5 weakly; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(0, 1, (n, 6))
    X[:, 3] += 3.0 * y
    X[:, 1] += 1.5 * y
    X[:, 5] += 0.7 * y
    return X * 4 + 2, y  # raw scale: the lambdas come from the raw features


def test_selection_admits_one_feature_per_walk_and_restarts_the_path():
    X, y = _graded_problem()
    cfg = GLMConfig(n_lambdas=15, max_epochs=60, batch_size=64, selection_lambda_factor=1.0)
    solves = []
    path = selection_path(X, y, 3, 2, cfg, on_solve=lambda lam, w: solves.append(
        (lam, frozenset(np.flatnonzero((w != 0).any(axis=0)).tolist()))))
    assert path.order == [3, 1, 5]
    # lambdas: from lambda_max (raw features) / alpha down, then 0
    top = max_group_lambda(X, y, 2) / cfg.selection_alpha
    lams = np.append(np.logspace(np.log10(top), np.log10(top * cfg.epsilon), 15), 0.0)
    # each walk starts at the top of the path and ends at the first solve with a new feature
    walks, admitted = [], set()
    for lam, used in solves:
        if lam == pytest.approx(lams[0]):
            walks.append([])
        walks[-1].append(lam)
        if used - admitted:
            assert len(used - admitted) == 1
            admitted |= used
    assert len(walks) == 3 and path.solves == len(solves)
    for walk, entered in zip(walks, path.lambdas, strict=True):
        assert walk == pytest.approx(lams[: len(walk)].tolist())
        assert walk[-1] == pytest.approx(entered)
    # at lambda_max itself nothing enters
    assert len(walks[0]) > 1


def test_select_features_is_sorted_and_all_when_n_equals_f():
    X, y = _graded_problem()
    cfg = GLMConfig(n_lambdas=10, max_epochs=40, batch_size=64)
    assert select_features(X, y, 2, 2, cfg).tolist() == [1, 3]
    assert select_features(X, y, 6, 2, cfg).tolist() == list(range(6))


def test_selection_stops_with_a_user_error_when_only_constant_features_remain():
    X, y = _graded_problem()
    X[:, [0, 2, 4]] = 1.0
    cfg = GLMConfig(n_lambdas=5, max_epochs=30, batch_size=64)
    with pytest.raises(QPMError, match="found only 3 of 4"):
        selection_path(X, y, 4, 2, cfg)


def test_sparse_head_input_reproduces_its_logits():
    from qpm.metrics.model_eval import head_input

    X, y = _data()
    layer = sldd_sparsify(X, y, C, n_features=N_SEL, per_class=K, cfg=FAST)
    head = layer.head().eval()
    with torch.no_grad():  # move the learned normalisation away from its start
        head.mean.normal_(0, 0.3)
        head.log_scale.normal_(0, 0.3)
        f = torch.as_tensor(X, dtype=torch.float32)
        logits = head_input(head, f) @ head.weight.t() + head.bias
        assert torch.allclose(logits, head(f), atol=1e-4)


def test_missing_glm_saga_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "glm_saga", None)
    monkeypatch.delitem(sys.modules, "glm_saga.elasticnet", raising=False)
    with pytest.raises(QPMError, match="glm-saga"):
        require_glm_saga()

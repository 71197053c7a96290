"""Each metric on a hand-built case whose value follows from its definition."""

import math

import numpy as np
import pytest

from qpm.errors import QPMError
from qpm.metrics import (
    accuracy,
    class_independence,
    class_similarity_from_weights,
    contrastiveness,
    correlation,
    features_per_class,
    load_cub_class_attributes,
    n_features,
    sid_at_k,
    structural_grounding,
)
from qpm.metrics.features import gmm_overlap


def test_accuracy_from_indices_and_scores():
    labels = np.array([0, 1, 1, 1])
    assert accuracy(np.array([0, 1, 2, 1]), labels) == 0.75
    scores = np.array([[2.0, 1, 0], [0, 3, 1], [0, 0, 1], [0, 1, 0]])
    assert accuracy(scores, labels) == 0.75


def test_feature_counts():
    w = np.array([[1.0, 0, 0, 0], [0, -2, 0, 0], [1, 0, 0, 0]])
    assert n_features(w) == 2
    assert features_per_class(w) == 1.0
    assert features_per_class(np.array([[1.0, 1, 0], [0, 1, 0]])) == 1.5


def _one_hot_maps(amplitudes, side=3):
    """One image, map i = amplitude_i at location i, 0 elsewhere."""
    k = len(amplitudes)
    maps = np.zeros((1, k, side, side))
    for i, a in enumerate(amplitudes):
        maps[0, i].flat[i] = a
    return maps


def test_sid_disjoint_is_one_identical_is_one_over_k():
    w = np.ones((1, 5))
    pred = np.array([0])
    disjoint = _one_hot_maps([60.0] * 5)
    assert sid_at_k(disjoint, w, pred, k=5) == pytest.approx(1.0, abs=1e-9)
    same = np.repeat(_one_hot_maps([60.0])[:, :1], 5, axis=1)
    assert sid_at_k(same, w, pred, k=5) == pytest.approx(0.2, abs=1e-12)


def test_sid_exact_value_two_maps():
    # softmax([0, ln3]) = [1/4, 3/4] and its mirror: max per location 3/4 + 3/4, / k=2
    maps = np.array([[[[0.0, math.log(3)]], [[math.log(3), 0.0]]]])  # (1, 2, 1, 2)
    assert sid_at_k(maps, np.ones((1, 2)), np.array([0]), k=2) == pytest.approx(0.75)


def test_sid_relative_mean_scaling_penalises_weak_features():
    maps = _one_hot_maps([100.0, 100, 100, 50, 50])
    w, pred = np.ones((1, 5)), np.array([0])
    # r = [1, 1, 1, .5, .5]: (3 + .5 + .5) / 5
    assert sid_at_k(maps, w, pred, k=5) == pytest.approx(0.8, abs=1e-9)
    assert sid_at_k(maps, w, pred, k=5, scale="none") == pytest.approx(1.0, abs=1e-9)
    # relative to the image's most active feature, also when it is not among the top k
    six = _one_hot_maps([100.0] * 5 + [200.0])
    w6 = np.array([[1.0, 1, 1, 1, 1, 0.5]])
    assert sid_at_k(six, w6, pred, k=5) == pytest.approx(0.5, abs=1e-9)


def test_sid_uses_top_weighted_features_of_predicted_class_and_skips_small_classes():
    maps = _one_hot_maps([60.0, 60.0, 60.0])
    maps[0, 2] = maps[0, 0]  # feature 2 duplicates feature 0
    w = np.array([[3.0, 2.0, 1.0], [3.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    assert sid_at_k(maps, w, np.array([0]), k=2) == pytest.approx(1.0, abs=1e-9)
    assert sid_at_k(maps, w, np.array([1]), k=2) == pytest.approx(0.5, abs=1e-9)
    assert sid_at_k(maps, w, np.array([2]), k=2) is None  # class 2 has one feature only
    both = np.concatenate([maps, maps])
    assert sid_at_k(both, w, np.array([0, 1]), k=2) == pytest.approx(0.75, abs=1e-9)


def test_class_independence_known_value():
    labels = np.array([0, 0, 1, 1])
    feats = np.array(
        [
            [1.0, 5.0, 3.0],
            [1.0, 5.0, 1.0],
            [0.0, 5.0, 2.0],
            [0.0, 5.0, 2.0],
        ]
    )
    # feature 0: class 0 owns everything (share 1); feature 1 constant (left out);
    # feature 2 shifted [2, 0, 1, 1]: each class owns 2/4
    assert class_independence(feats, labels) == pytest.approx(1 - (1.0 + 0.5) / 2)
    assert class_independence(np.ones((4, 2)), labels) is None


def test_gmm_overlap_and_contrastiveness():
    rng = np.random.default_rng(0)
    separated = np.concatenate([rng.normal(0, 0.01, 500), rng.normal(10, 0.01, 500)])
    assert gmm_overlap(separated) < 1e-6
    # two unit Gaussians 3 apart: OVL = 2 * Phi(-1.5) = 0.1336
    mixed = np.concatenate([rng.normal(0, 1, 4000), rng.normal(3, 1, 4000)])
    assert gmm_overlap(mixed) == pytest.approx(0.1336, abs=0.03)
    feats = np.stack([separated, np.full(1000, 2.0)], axis=1)
    # overlaps ~0 and 1 (constant) -> 1 - 0.5
    assert contrastiveness(feats) == pytest.approx(0.5, abs=1e-6)


def test_correlation_known_value():
    f0 = np.array([1.0, 2, 3, 4])
    f1 = 2 * f0 + 1
    f2 = np.array([1.0, -1, 1, -1])
    # corr(f0, f1) = 1, corr(f2, f0) = corr(f2, f1) = -2 / (sqrt(5) * 2)
    expected = (1 + 1 - 2 / (math.sqrt(5) * 2)) / 3
    assert correlation(np.stack([f0, f1, f2], axis=1)) == pytest.approx(expected)
    assert correlation(np.stack([f0, np.ones(4)], axis=1)) is None


def test_class_similarity_and_structural_grounding():
    w = np.zeros((3, 5))
    w[0, [0, 1]] = w[1, [0, 2]] = w[2, [3, 4]] = 1
    sim = class_similarity_from_weights(w)
    assert sim[0, 1] == pytest.approx(0.5) and sim[0, 2] == 0 and sim[1, 1] == 0
    attrs = np.array([[1.0, 0], [1.0, 0], [0.0, 1]])
    assert structural_grounding(w, attrs, top=1) == pytest.approx(0.5)
    attrs = np.array([[1.0, 0], [1.0, 0], [1.0, 1]])  # cos(0,2) = cos(1,2) = 1/sqrt(2)
    assert structural_grounding(w, attrs, top=2) == pytest.approx(0.5 / (1 + 2**-0.5))


def test_load_cub_class_attributes(tmp_path):
    (tmp_path / "attributes").mkdir()
    (tmp_path / "attributes" / "class_attribute_labels_continuous.txt").write_text(
        "1.5 0 2\n0 3 4\n"
    )
    assert load_cub_class_attributes(tmp_path).tolist() == [[1.5, 0, 2], [0, 3, 4]]
    with pytest.raises(QPMError, match="attribute file"):
        load_cub_class_attributes(tmp_path / "nowhere")

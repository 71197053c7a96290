"""Each metric on a hand-built case whose value follows from its definition."""

import math

import numpy as np
import pytest

from qpm.errors import QPMError
from qpm.metrics import (
    ImageAttributes,
    accuracy,
    class_independence,
    class_similarity_from_weights,
    contrastiveness,
    correlation,
    cub_alignment,
    dependence,
    diversity_at_k,
    features_per_class,
    load_cub_class_attributes,
    n_features,
    read_cub_image_attributes,
    sid_at_k,
    structural_grounding,
)
from qpm.metrics.diversity import top_k_features
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


# A one-hot 3x3 map divided by its mean absolute value has 9 at its spot, 0 elsewhere; its
# softmax is PEAK there and REST at each of the other 8 locations.
PEAK = math.exp(9) / (math.exp(9) + 8)
REST = 1 / (math.exp(9) + 8)


def test_sid_disjoint_and_identical_maps():
    w = np.ones((1, 5))
    pred = np.array([0])
    disjoint = _one_hot_maps([60.0] * 5)
    # 5 locations hold a peak, 4 only the rest
    assert sid_at_k(disjoint, w, pred, k=5) == pytest.approx((5 * PEAK + 4 * REST) / 5)
    same = np.repeat(_one_hot_maps([60.0])[:, :1], 5, axis=1)
    assert sid_at_k(same, w, pred, k=5) == pytest.approx(0.2, abs=1e-12)
    # Q-SENN's diversity: the plain softmax of amplitude 60 is a peak of 1 (to 1e-20)
    assert diversity_at_k(disjoint, w, pred, k=5) == pytest.approx(1.0, abs=1e-12)
    assert diversity_at_k(same, w, pred, k=5) == pytest.approx(0.2, abs=1e-12)


def test_sid_exact_value_two_maps():
    # maps [0, ln3] and its mirror; divided by their mean |.| = ln3 / 2: [0, 2] and [2, 0];
    # softmax [1, e^2] / (1 + e^2), max per location e^2 / (1 + e^2) twice, / k=2
    maps = np.array([[[[0.0, math.log(3)]], [[math.log(3), 0.0]]]])  # (1, 2, 1, 2)
    w, pred = np.ones((1, 2)), np.array([0])
    e2 = math.exp(2)
    assert sid_at_k(maps, w, pred, k=2) == pytest.approx(e2 / (1 + e2))
    # without the division: softmax([0, ln3]) = [1/4, 3/4]
    assert diversity_at_k(maps, w, pred, k=2) == pytest.approx(0.75)


def test_sid_is_invariant_to_the_scale_of_each_map_diversity_is_not():
    rng = np.random.default_rng(0)
    maps = rng.gamma(1.0, 1.0, (4, 6, 5, 5))
    w = (rng.random((3, 6)) > 0.3).astype(float)
    w[:, :3] = 1
    pred = np.array([0, 1, 2, 0])
    scaled = maps * np.array([1, 7, 0.1, 3, 20, 0.5])[None, :, None, None]
    assert sid_at_k(scaled, w, pred, k=3) == pytest.approx(sid_at_k(maps, w, pred, k=3))
    assert diversity_at_k(scaled, w, pred, k=3) != pytest.approx(diversity_at_k(maps, w, pred, 3))


def test_top_k_by_signed_weight_among_used_features():
    # feature 4 is used by no class; class 0 has 3 non-zero weights, one negative
    w = np.array([[3.0, 2.0, 0.0, -1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0], [0, 0, 0, 5.0, 0]])
    top, eligible = top_k_features(w, 3)
    assert top[0].tolist() == [0, 1, 2]  # the zero of feature 2 ranks above the -1
    assert top[1].tolist() == [0, 1, 2]  # ties: lower index first
    assert eligible.tolist() == [True, True, False]


def test_sid_uses_top_weighted_features_of_predicted_class_and_skips_small_classes():
    maps = _one_hot_maps([60.0, 60.0, 60.0])
    maps[0, 2] = maps[0, 0]  # feature 2 duplicates feature 0
    w = np.array([[3.0, 2.0, 1.0], [3.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    distinct = (2 * PEAK + 7 * REST) / 2
    assert sid_at_k(maps, w, np.array([0]), k=2) == pytest.approx(distinct)
    assert sid_at_k(maps, w, np.array([1]), k=2) == pytest.approx(0.5)
    assert sid_at_k(maps, w, np.array([2]), k=2) is None  # class 2 has one feature only
    both = np.concatenate([maps, maps, maps])
    assert sid_at_k(both, w, np.array([0, 1, 2]), k=2) == pytest.approx((distinct + 0.5) / 2)


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
    # feature 0: class 0 owns everything (share 1); feature 1 constant (share 0, as the
    # reference's 1e-8 floor gives); feature 2 shifted [2, 0, 1, 1]: each class owns 2/4
    assert class_independence(feats, labels) == pytest.approx(1 - (1.0 + 0.0 + 0.5) / 3)
    # invariant to a positive scale and shift per feature (raw vs normalised features)
    assert class_independence(feats * [2, 1, 0.5] - 3, labels) == pytest.approx(0.5)


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
    f1 = 2 * f0 + 1  # [3, 5, 7, 9]
    f2 = np.array([1.0, -1, 1, -1])
    # uncentred cosines: cos(f0, f1) = 70 / sqrt(30 * 164); f2 is negative to both, so its
    # best is the zeroed diagonal
    c01 = 70 / math.sqrt(30 * 164)
    assert correlation(np.stack([f0, f1, f2], axis=1)) == pytest.approx((c01 + c01 + 0) / 3)
    # an all-zero feature has similarity 0 to everything; a single feature gives None
    assert correlation(np.stack([f0, np.zeros(4)], axis=1)) == 0.0
    assert correlation(f0[:, None]) is None


def test_dependence_known_value():
    feats = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
    w = np.array([[1.0, 1.0], [2.0, -1.0]])
    # image 0 (class 0): |1|, |2| -> 2/3; image 1: no contribution, left out;
    # image 2 (class 1): |6|, |-1| -> 6/7
    assert dependence(feats, w, np.array([0, 0, 1])) == pytest.approx((2 / 3 + 6 / 7) / 2)
    assert dependence(np.zeros((2, 2)), w, np.array([0, 1])) is None


def test_cub_alignment_known_value():
    feats = np.array([[4.0, 1.0], [2.0, 1.0], [0.0, 3.0], [2.0, 3.0]])
    # attribute 0 present on images 0, 1, absent on 2, 3; attribute 1 present on image 2
    # only and absent on 0; attribute 2 has no absent annotation (D = 0)
    labels = ImageAttributes(rows=np.array([0, 1, 2, 3, 2, 0, 3]),
                             attribute=np.array([0, 0, 0, 0, 1, 1, 2]),
                             present=np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool))
    # feature 0: D = (3 - 1, 0 - 4, 0) / mean(f - min) = (2, -4, 0) / 2 -> best 1
    # feature 1: D = (1 - 3, 3 - 1, 0) / mean([0, 0, 2, 2]) = (-2, 2, 0) / 1 -> best 2
    assert cub_alignment(feats, labels) == pytest.approx((1 + 2) / 2)
    assert cub_alignment(feats * [3, 0.5] + 1, labels) == pytest.approx(1.5)


def test_read_cub_image_attributes_keeps_certain_training_annotations(tmp_path):
    (tmp_path / "attributes").mkdir()
    (tmp_path / "attributes" / "image_attribute_labels.txt").write_text(
        "1 1 1 4 0.5\n"  # image 1, certain
        "1 2 0 3 1.0\n"
        "1 3 1 2 1.0\n"  # guessing: dropped
        "2 1 0 4 1.0\n"  # a test image: dropped
        "3 2 1 4 2 9\n"  # malformed (six fields): skipped
        "3 1 0 4 3.5\n"
    )
    got = read_cub_image_attributes(tmp_path, train_ids=[1, 3])
    assert got.rows.tolist() == [0, 0, 1]
    assert got.attribute.tolist() == [0, 1, 0]
    assert got.present.tolist() == [True, False, False]
    with pytest.raises(QPMError, match="image_attribute_labels"):
        read_cub_image_attributes(tmp_path / "nowhere", [1])


def test_class_similarity_and_structural_grounding():
    w = np.zeros((3, 5))
    w[0, [0, 1]] = w[1, [0, 2]] = w[2, [3, 4]] = 1
    sim = class_similarity_from_weights(w)
    assert sim[0, 1] == pytest.approx(0.5) and sim[0, 2] == 0 and sim[1, 1] == 0
    attrs = np.array([[1.0, 0], [1.0, 0], [0.0, 1]])
    # top entries of the flattened symmetric matrices: (0, 1) and (1, 0)
    assert structural_grounding(w, attrs, top=2) == pytest.approx(0.5)
    attrs = np.array([[1.0, 0], [1.0, 0], [1.0, 1]])  # cos(0,2) = cos(1,2) = 1/sqrt(2)
    # all six off-diagonal entries: model 0.5 + 0.5, attributes 1 + 1 + 4 / sqrt(2)
    assert structural_grounding(w, attrs, top=6) == pytest.approx(1 / (2 + 2 * 2**0.5))


def test_load_cub_class_attributes(tmp_path):
    (tmp_path / "attributes").mkdir()
    (tmp_path / "attributes" / "class_attribute_labels_continuous.txt").write_text(
        "1.5 0 2\n0 3 4\n"
    )
    assert load_cub_class_attributes(tmp_path).tolist() == [[1.5, 0, 2], [0, 3, 4]]
    with pytest.raises(QPMError, match="attribute file"):
        load_cub_class_attributes(tmp_path / "nowhere")

"""The conformal room: the reference's hierarchical score, torchcp's THR / APS and quantile,
the calibration splits, SetCoherence and the tree of one image.

Recorded values (REFERENCE, TORCHCP below) were obtained by running the reference's and
torchcp's own code on the inputs the generators here make. To regenerate them:

1. REFERENCE (the CHiQPM reference, ThomasNorr/CHiQPM at its fetched HEAD): in a scratch folder
   outside this repository, ``git show HEAD:conformalPrediction/cleanScoreFunction.py >
   ref_score.py`` from the reference's clone; its only import, ``torchcp.classification.
   scores.base.BaseScore`` (torchcp 0.1.x), is replaced by a stand-in module with an empty
   ``BaseScore`` class (``sys.modules``). For each seed: ``W, f, logits, y`` =
   :func:`reference_inputs` as float64 tensors, ``s = HieraDiffNonConformityScore(W)``; for
   level in 0..3: ``s.level = level; s(logits, f)`` (all classes), rounded to 12 significant
   digits; ``s.get_adaptive_level(logits, y, alpha, f)`` for each alpha of ``levels`` and
   ``s.total_accs`` (float32 there, rounded to 6 digits) for ``path_accuracy``.
2. TORCHCP (torchcp 1.2.1): ``SplitPredictor(LAC())`` and ``SplitPredictor(APS(randomized=
   False))`` on :func:`torchcp_inputs`, ``calculate_threshold(logits, y, alpha=1 - coverage)``
   then ``predict_with_logits(logits)``: q_hat rounded to 12 digits and each set's size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qpm.conformal import (
    Bound,
    Outputs,
    build_hierarchy,
    conformal_quantile,
    evaluate,
    get_method,
    make_split,
    methods_for,
    threshold_from_dict,
)
from qpm.conformal.evaluation import cosine_similarity, set_coherence, set_metrics
from qpm.conformal.paths import class_columns, path_accuracy, shared_depth, sorted_paths
from qpm.conformal.scores import aps_scores, hierarchical_parts, hierarchical_scores, softmax
from qpm.conformal.splits import reference_split, stratified_split
from qpm.errors import QPMError


def reference_inputs(seed: int):
    """values (8, 7) without ties, a binary (5, 7) layer with 3 features per class and no two
    classes alike, logits = values @ W.T, labels (60% the prediction)."""
    rng = np.random.default_rng(seed)
    n_img, n, c, k = 8, 7, 5, 3
    rows = set()
    while len(rows) < c:
        rows.add(tuple(sorted(rng.choice(n, k, replace=False).tolist())))
    weight = np.zeros((c, n))
    for i, r in enumerate(sorted(rows)):
        weight[i, list(r)] = 1
    weight = weight[rng.permutation(c)]
    values = rng.random((n_img, n)) * 2
    logits = values @ weight.T
    labels = np.where(rng.random(n_img) < 0.6, logits.argmax(1), rng.integers(0, c, n_img))
    return values, weight, logits, labels


def torchcp_inputs(seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 30)
    logits = rng.normal(0, 1, (30, 6))
    logits[np.arange(30), labels] += 2.0
    return logits, labels


REFERENCE = {
    0: {
        "scores": [  # level 0, 1, 2, 3: (8 images, 5 classes)
            [
                [-1.29437902315, -1.94067261046, -2.82058560535, -3.41739349475, -1.29437902315],
                [-1.37689346114, -1.37108396896, -1.37108396896, -4.07318127207, -1.37689346114],
                [-3.64706270061, -0.971670717664, -2.83975774958, -4.28273442996, -3.64706270061],
                [-3.75238676547, -1.1886000604, -3.64497121542, -2.92360836547, -2.56378670507],
                [-3.89699564291, -1.66528829531, -4.99245337191, -3.3271650766, -2.23170734761],
                [-0.900678733299, -2.61046334348, -2.597369876, -2.26488266167, -0.461284417987],
                [-2.90368541582, -1.16066477197, -1.16066477197, -0.597392265638, -2.15309343556],
                [-3.16739729046, -1.88422622101, -5.0217063966, -4.49371043001, -3.79340720839],
            ],
            [
                [0.0, -0.599423781075, -1.47933677596, -2.07614466536, 0.0],
                [0.0, 0.0, 0.0, -2.07876140049, 0.0],
                [-1.7789756687, 0.0, -0.971670717664, -2.41464739805, -1.7789756687],
                [-1.97183806146, 0.0, -1.86442251141, -1.14305966146, -0.783238001056],
                [-2.14402718129, 0.0, -3.23948491028, -1.57419661498, -0.478738885986],
                [0.0, -1.01781480291, -1.00472133543, -0.672234121091, 0.0],
                [-1.55969565991, 0.0, 0.0, 0.0, -0.809103679643],
                [-1.25821630308, 0.0, -3.11252540922, -2.58452944263, -1.88422622101],
            ],
            [
                [0.0, 0.0, -0.248566552999, -0.845374442395, 0.0],
                [0.0, 0.0, 0.0, -0.777842847958, 0.0],
                [0.0, 0.0, 0.0, -0.971670717664, 0.0],
                [-0.783238001056, 0.0, -0.675822451014, 0.0, 0.0],
                [-0.478738885986, 0.0, -1.57419661498, 0.0, 0.0],
                [0.0, -0.11713606961, -0.104042602129, 0.0, 0.0],
                [-0.399030887936, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, -1.25821630308, -0.73022033649, 0.0],
            ],
            [
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
            ],
        ],
        "path_accuracy": [0.75, 0.5, 0.5],
        "levels": {0.05: 0, 0.2: 0, 0.4: 1, 0.6: 3, 0.9: 3},
    },
    1: {
        "scores": [  # level 0, 1, 2, 3: (8 images, 5 classes)
            [
                [-0.806225972894, -0.806225972894, -0.906995778961, -2.06154686123, -2.71386579951],
                [-1.92331438733, -4.96724249802, -1.08245371109, -1.08245371109, -1.92331438733],
                [-1.83459540958, -1.55336622868, -5.3278124647, -1.83459540958, -1.24697951108],
                [-1.18588203621, -1.28265633828, -1.28265633828, -4.17380405145, -2.62393744273],
                [-1.63925343824, -4.20481522051, -1.63925343824, -1.63925343824, -1.02177776893],
                [-3.69841478888, -1.57419388311, -3.07702776058, -2.09310180069, -1.60472832227],
                [-1.43981876702, -1.75307419283, -3.17656941658, -1.43981876702, -1.29144179115],
                [-1.27866276013, -1.61010966629, -1.671138433, -3.83850107282, -3.20600450582],
            ],
            [
                [0.0, 0.0, 0.0, -0.560817515972, -1.21313645425],
                [0.0, -3.00576809842, 0.0, 0.0, 0.0],
                [0.0, 0.0, -3.38796163827, 0.0, 0.0],
                [0.0, 0.0, 0.0, -2.46853837449, -0.918671765771],
                [0.0, -2.52505217845, 0.0, 0.0, 0.0],
                [-1.98796084031, 0.0, -1.36657381201, -0.382647852114, 0.0],
                [0.0, 0.0, -1.45400242422, 0.0, 0.0],
                [0.0, 0.0, 0.0, -1.91115932713, -1.27866276013],
            ],
            [
                [0.0, 0.0, 0.0, 0.0, -0.406910481352],
                [0.0, -1.08245371109, 0.0, 0.0, 0.0],
                [0.0, 0.0, -1.55336622868, 0.0, 0.0],
                [0.0, 0.0, 0.0, -1.18588203621, 0.0],
                [0.0, -1.01899176304, 0.0, 0.0, 0.0],
                [-0.38323251804, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, -0.0141836572063, 0.0, 0.0],
                [0.0, 0.0, 0.0, -0.301049660842, 0.0],
            ],
            [
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
            ],
        ],
        "path_accuracy": [0.625, 0.625, 0.625],
        "levels": {0.05: 0, 0.2: 0, 0.4: 3, 0.6: 3, 0.9: 3},
    },
    2: {
        "scores": [  # level 0, 1, 2, 3: (8 images, 5 classes)
            [
                [-1.36612964462, -1.02213194714, -2.95700385213, -3.9844903697, -3.57574584298],
                [-1.782418819, -1.3875176844, -3.39956167796, -5.18198049696, -1.782418819],
                [-1.76889934738, -3.80042998099, -1.35962292297, -1.35962292297, -2.10228754229],
                [-3.50871618975, -4.67062634835, -1.65871225161, -1.18688703551, -2.97136725545],
                [-0.996112109834, -0.432446782038, -2.50790153135, -3.42680538134, -2.38114837349],
                [-1.79546829419, -1.94735753941, -2.85449043154, -3.98712660392, -1.40389895277],
                [-1.92410645237, -1.20761103452, -0.814388716959, -2.68970937555, -2.70856779785],
                [-0.976997146168, -1.24054481677, -3.57519196428, -2.56716299948, -2.64299107454],
            ],
            [
                [0.0, 0.0, -1.02213194714, -2.04961846471, -1.64087393799],
                [0.0, 0.0, -1.55112788495, -3.33354670395, 0.0],
                [0.0, -2.10195733376, 0.0, 0.0, -0.403814895059],
                [-1.72423596982, -2.88614612842, 0.0, 0.0, -1.18688703551],
                [0.0, 0.0, -1.12286526769, -2.04176911768, -0.996112109834],
                [0.0, 0.0, -1.18412402216, -2.31676019454, 0.0],
                [-0.392339823937, 0.0, 0.0, -1.15794274712, -1.17680116942],
                [0.0, 0.0, -1.90919803591, -0.901169071104, -0.976997146168],
            ],
            [
                [0.0, 0.0, 0.0, -0.78324966616, -0.37450513944],
                [0.0, 0.0, 0.0, -1.55112788495, 0.0],
                [0.0, -0.813084795351, 0.0, 0.0, 0.0],
                [0.0, -1.22743387681, 0.0, 0.0, 0.0],
                [0.0, 0.0, -0.0772082598419, -0.996112109834, 0.0],
                [0.0, 0.0, 0.0, -0.912861241763, 0.0],
                [0.0, 0.0, 0.0, -0.343554030164, -0.362412452462],
                [0.0, 0.0, -0.901169071104, 0.0, 0.0],
            ],
            [
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
            ],
        ],
        "path_accuracy": [0.875, 0.625, 0.625],
        "levels": {0.05: 0, 0.2: 1, 0.4: 3, 0.6: 3, 0.9: 3},
    },
}

# torchcp 1.2.1: method -> coverage -> (q_hat, size of each image's set)
TORCHCP = {
    0: {
        "thr": {
            0.88: (0.751693353291, [
                1, 1, 1, 1, 0, 1, 1, 2, 1, 2, 2, 1, 2, 1, 1,
                1, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2]),
            0.9: (0.751693353291, [
                1, 1, 1, 1, 0, 1, 1, 2, 1, 2, 2, 1, 2, 1, 1,
                1, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2]),
            0.925: (0.807281522104, [
                2, 1, 1, 1, 3, 3, 2, 2, 2, 2, 2, 1, 3, 2, 1,
                1, 1, 1, 2, 2, 1, 1, 2, 1, 2, 1, 1, 1, 1, 2]),
            0.95: (0.886128615191, [
                3, 2, 4, 2, 5, 5, 5, 2, 3, 4, 3, 1, 4, 2, 2,
                2, 2, 2, 3, 2, 1, 5, 2, 3, 2, 2, 2, 1, 1, 2]),
        },
        "aps": {
            0.88: (0.839762462831, [
                2, 1, 3, 3, 4, 4, 3, 1, 2, 3, 2, 1, 3, 2, 1,
                1, 2, 3, 3, 2, 2, 3, 2, 3, 2, 1, 2, 1, 0, 1]),
            0.9: (0.839762462831, [
                2, 1, 3, 3, 4, 4, 3, 1, 2, 3, 2, 1, 3, 2, 1,
                1, 2, 3, 3, 2, 2, 3, 2, 3, 2, 1, 2, 1, 0, 1]),
            0.925: (0.851013296753, [
                2, 1, 4, 3, 4, 4, 4, 1, 2, 3, 2, 1, 3, 2, 1,
                1, 2, 3, 3, 2, 2, 3, 2, 3, 2, 2, 2, 1, 1, 2]),
            0.95: (0.929289733785, [
                4, 3, 4, 4, 5, 4, 4, 2, 3, 4, 3, 2, 3, 3, 2,
                2, 3, 4, 4, 3, 3, 4, 3, 3, 3, 3, 3, 2, 2, 3]),
        },
    },
    1: {
        "thr": {
            0.88: (0.833151594006, [
                2, 2, 2, 2, 1, 1, 4, 2, 1, 1, 1, 3, 1, 2, 3,
                1, 2, 1, 2, 2, 2, 2, 3, 2, 1, 1, 1, 2, 1, 3]),
            0.9: (0.833151594006, [
                2, 2, 2, 2, 1, 1, 4, 2, 1, 1, 1, 3, 1, 2, 3,
                1, 2, 1, 2, 2, 2, 2, 3, 2, 1, 1, 1, 2, 1, 3]),
            0.925: (0.847812935158, [
                2, 2, 2, 2, 1, 2, 4, 2, 2, 1, 1, 3, 1, 2, 3,
                2, 2, 1, 2, 2, 2, 2, 4, 2, 2, 1, 2, 2, 1, 3]),
            0.95: (0.943065703988, [
                5, 5, 4, 4, 3, 5, 5, 5, 3, 2, 2, 5, 4, 4, 6,
                4, 5, 1, 3, 6, 6, 6, 5, 4, 4, 1, 4, 4, 1, 5]),
        },
        "aps": {
            0.88: (0.905562578437, [
                4, 3, 3, 3, 3, 4, 4, 4, 2, 2, 2, 3, 4, 2, 4,
                3, 4, 1, 2, 4, 4, 4, 4, 3, 3, 1, 3, 3, 0, 3]),
            0.9: (0.905562578437, [
                4, 3, 3, 3, 3, 4, 4, 4, 2, 2, 2, 3, 4, 2, 4,
                3, 4, 1, 2, 4, 4, 4, 4, 3, 3, 1, 3, 3, 0, 3]),
            0.925: (0.96672833463, [
                5, 4, 5, 4, 4, 5, 5, 5, 4, 4, 4, 4, 5, 3, 5,
                5, 5, 2, 3, 5, 5, 5, 5, 4, 4, 3, 4, 4, 1, 4]),
            0.95: (0.98246766072, [
                5, 5, 5, 4, 5, 5, 5, 5, 4, 4, 4, 5, 5, 4, 5,
                5, 5, 2, 4, 5, 5, 5, 5, 4, 5, 4, 4, 5, 1, 4]),
        },
    },
}


# --- the hierarchical score ----------------------------------------------------------------

def _hand_example(values=(5.0, 4.0, 3.0, 2.0, 1.0, 0.5)):
    """c0 {0,1,2}, c1 {0,1,3}, c2 {0,4,5}, c3 {3,4,5}; with these values c0 is predicted and
    shares 3, 2, 1, 0 path positions with c0..c3."""
    w = np.zeros((4, 6))
    for c, cols in enumerate([(0, 1, 2), (0, 1, 3), (0, 4, 5), (3, 4, 5)]):
        w[c, list(cols)] = 1
    v = np.asarray(values, dtype=np.float64)[None]
    return v, w


def test_paths_and_shared_depth_by_hand():
    v, w = _hand_example()
    feats, acts = sorted_paths(v, class_columns(w))
    assert feats[0].tolist() == [[0, 1, 2], [0, 1, 3], [0, 4, 5], [3, 4, 5]]
    assert acts[0, 3].tolist() == [2.0, 1.0, 0.5]
    assert shared_depth(feats, np.array([0]))[0].tolist() == [3, 2, 1, 0]
    # ties are ordered by column, lower first
    feats, _ = sorted_paths(np.zeros((1, 6)), class_columns(w))
    assert feats[0, 3].tolist() == [3, 4, 5]


def test_hierarchical_score_by_hand():
    v, w = _hand_example()
    depth, acts = hierarchical_parts(v, class_columns(w), np.array([0]))
    # minus the activation where the path leaves c0's, minus the shared ones from `level` on
    expected = {0: [-12, -11, -6, -2], 1: [-7, -6, -1, 0], 2: [-3, -2, 0, 0], 3: [0, 0, 0, 0]}
    for level, want in expected.items():
        assert hierarchical_scores(depth, acts, level)[0].tolist() == want
    with pytest.raises(ValueError):
        hierarchical_scores(depth, acts, 4)


@pytest.mark.parametrize("seed", sorted(REFERENCE))
def test_hierarchical_score_matches_the_reference(seed):
    values, weight, logits, labels = reference_inputs(seed)
    depth, acts = hierarchical_parts(values, class_columns(weight), logits.argmax(1))
    for level, want in enumerate(REFERENCE[seed]["scores"]):
        got = hierarchical_scores(depth, acts, level)
        np.testing.assert_allclose(got, np.array(want), rtol=1e-10, atol=1e-11)
    acc = path_accuracy(depth[np.arange(len(labels)), labels], 3)
    np.testing.assert_allclose(acc, REFERENCE[seed]["path_accuracy"], atol=1e-6)
    out = Outputs(logits, values, weight)
    for alpha, level in REFERENCE[seed]["levels"].items():
        th = get_method("hierarchical").calibrate(out, labels, 1 - alpha, None)
        assert th.reference_level == level
        # qpm's level needs ceil((n+1)(1-alpha)) images on the path: never deeper
        assert th.level <= level
        need = math.ceil((len(labels) + 1) * (1 - alpha) - 1e-9)
        on_path = depth[np.arange(len(labels)), labels]
        assert th.level == max([lv for lv in range(4) if (on_path >= lv).sum() >= need],
                               default=0)


def test_hierarchical_sets_stay_under_the_predicted_path():
    rng = np.random.default_rng(3)
    values, weight, _, _ = reference_inputs(0)
    values = rng.random((400, 7))
    logits = values @ weight.T
    labels = np.where(rng.random(400) < 0.8, logits.argmax(1), rng.integers(0, 5, 400))
    out = Outputs(logits, values, weight)
    m = get_method("hierarchical")
    depth, _ = hierarchical_parts(values, class_columns(weight), logits.argmax(1))
    for cov in (0.5, 0.7, 0.9):
        th = m.calibrate(out.take(np.arange(200)), labels[:200], cov, None)
        sets = m.sets(out.take(np.arange(200, 400)), th, None)
        assert np.all(depth[200:][sets] >= th.level)
        assert th.level > 0 or cov == 0.9
        # the predicted class has the lowest score among the classes on its path
        pred = logits[200:].argmax(1)
        assert sets[np.arange(200), pred].mean() > 0.95


# --- THR, APS and the quantile against torchcp -----------------------------------------------

@pytest.mark.parametrize("seed", sorted(TORCHCP))
@pytest.mark.parametrize("name", ["thr", "aps"])
def test_thr_and_aps_match_recorded_torchcp(seed, name):
    logits, labels = torchcp_inputs(seed)
    out = Outputs(logits, np.zeros((30, 1)), np.zeros((6, 1)))
    m = get_method(name)
    for cov, (q_hat, sizes) in TORCHCP[seed][name].items():
        th = m.calibrate(out, labels, cov, None) if name == "thr" else \
            _aps_deterministic(out, labels, cov)
        assert th.q_hat == pytest.approx(q_hat, abs=1e-11)
        if name == "thr":
            sets = m.sets(out, th, None)
        else:
            sets = aps_scores(softmax(logits)) <= th.q_hat
        assert sets.sum(axis=1).tolist() == sizes


def _aps_deterministic(out, labels, cov):
    from qpm.conformal.methods import Threshold

    s = aps_scores(softmax(out.logits))[np.arange(len(labels)), labels]
    return Threshold("aps", cov, len(labels), conformal_quantile(s, cov))


def test_quantile_rank_and_edges():
    s = np.arange(1.0, 100.0)  # 99 scores: (n + 1) * 0.9 = 90 exactly -> the 90th smallest
    assert conformal_quantile(s, 0.9) == 90.0
    assert conformal_quantile(s, 0.905) == 91.0
    assert conformal_quantile(np.arange(5.0), 0.9) == math.inf  # K = 6 > n = 5
    assert conformal_quantile(np.zeros(0), 0.5) == math.inf
    with pytest.raises(ValueError):
        conformal_quantile(s, 1.0)
    b = Bound(0.9, 99)
    assert b.expected == pytest.approx(0.9) and b.upper == pytest.approx(0.91)


def _torchcp():
    """The live comparisons need torchcp, which is not a dependency (it builds torchsort)."""
    pytest.importorskip("torch")
    return pytest.importorskip("torchcp")


def test_quantile_matches_live_torchcp():
    _torchcp()
    import torch
    from torchcp.utils.common import calculate_conformal_value

    rng = np.random.default_rng(0)
    for n in (1, 7, 50, 333, 1000):
        s = rng.normal(size=n)
        for cov in (0.5, 0.88, 0.9, 0.925, 0.95, 0.99):
            if abs((n + 1) * cov - round((n + 1) * cov)) < 1e-6:
                continue  # torchcp's float ceil may round up there; qpm counts 90 as 90
            with pytest.warns(UserWarning) if math.ceil((n + 1) * cov) > n else _nothing():
                want = float(calculate_conformal_value(torch.tensor(s), 1 - cov))
            assert conformal_quantile(s, cov) == want


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_scores_match_live_torchcp():
    _torchcp()
    import torch
    from torchcp.classification.score import APS, LAC

    logits, labels = torchcp_inputs(0)
    t = torch.tensor(logits)
    probs = softmax(logits)
    np.testing.assert_allclose(1 - probs, LAC()(t).numpy(), atol=1e-12)
    np.testing.assert_allclose(aps_scores(probs), APS(randomized=False)(t).numpy(), atol=1e-12)
    torch.manual_seed(5)
    randomised = APS()(t).numpy()
    torch.manual_seed(5)
    u = torch.rand(probs.shape).numpy().astype(np.float64)  # torchcp: one u per rank
    by_class = np.empty_like(u)
    np.put_along_axis(by_class, np.argsort(-probs, axis=1, kind="stable"), u, axis=1)
    np.testing.assert_allclose(aps_scores(probs, by_class), randomised, atol=1e-6)


def test_methods_for_each_layer():
    _, weight, _, _ = reference_inputs(0)
    assert methods_for(weight) == ["thr", "aps", "hierarchical"]
    real = weight * np.linspace(0.5, 2, weight.shape[1])
    assert methods_for(real) == ["thr", "aps"]
    assert "binary" in get_method("hierarchical").unusable(real)
    uneven = weight.copy()
    uneven[0, :] = 1
    assert "same number" in get_method("hierarchical").unusable(uneven)


def test_threshold_round_trip_keeps_inf():
    th = get_method("thr").calibrate(Outputs(np.zeros((3, 2)), np.zeros((3, 1)),
                                            np.zeros((2, 1))), np.array([0, 1, 0]), 0.9, None)
    assert th.q_hat == math.inf
    d = th.to_dict()
    assert d["q_hat"] is None
    assert threshold_from_dict(d) == th


# --- coverage, splits, SetCoherence ----------------------------------------------------------

def test_coverage_over_random_splits_is_within_the_bound():
    """Exchangeable data: averaged over many calibration draws, the coverage lies in
    [1 - alpha, 1 - alpha + 1/(n+1)) up to the average's own noise (THR, APS)."""
    rng = np.random.default_rng(0)
    n_img, c = 400, 8
    labels = rng.integers(0, c, n_img)
    logits = rng.normal(0, 1, (n_img, c))
    logits[np.arange(n_img), labels] += 1.5
    out = Outputs(logits, np.zeros((n_img, 1)), np.zeros((c, 1)))
    for name in ("thr", "aps"):
        cov = []
        for r in range(200):
            split = stratified_split(labels, 0.5, seed=r)
            rep = evaluate(out, labels, split, [name], (0.9,), seed=r)
            cov.append(rep.results[name][0.9].coverage)
        n = len(split.calibration)
        se = np.std(cov) / np.sqrt(len(cov))
        assert 0.9 - 3 * se <= np.mean(cov) < 0.9 + 1 / (n + 1) + 3 * se


def test_stratified_split_is_disjoint_and_balanced():
    labels = np.repeat(np.arange(4), [10, 11, 2, 1])
    s = stratified_split(labels, 0.5, seed=1)
    assert not set(s.calibration) & set(s.evaluation)
    assert sorted([*s.calibration, *s.evaluation]) == list(range(24))
    per_class = np.bincount(labels[s.calibration], minlength=4)
    assert per_class.tolist() == [5, 6, 1, 1]
    assert np.array_equal(stratified_split(labels, 0.5, seed=1).calibration, s.calibration)
    assert not np.array_equal(stratified_split(labels, 0.5, seed=2).calibration,
                              s.calibration)
    assert "seed 1" in s.describe() and "13 images" in s.describe()
    with pytest.raises(QPMError):
        stratified_split(labels, 1.0)


def test_reference_split_is_the_modulo_rule():
    s = reference_split(5794, 200)  # CUB's test set: blocks of 28, the first 10 calibrate
    assert len(s.calibration) == 206 * 10 + 10  # 5794 = 206 * 28 + 26
    assert all(i % 28 < 10 for i in s.calibration)
    assert all(i % 28 >= 10 for i in s.evaluation)
    assert len(s.calibration) + len(s.evaluation) == 5794
    with pytest.raises(QPMError, match="stratified"):
        reference_split(100, 10)  # 10 per class: nothing left
    assert make_split("reference", np.zeros(300), 10).rule == "reference"


def test_set_coherence_pools_pairs_as_the_reference():
    attrs = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    sim = cosine_similarity(attrs)
    sets = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=bool)
    # set 0: pairs (0,1),(1,0); set 1: all 6 ordered pairs; set 2: fewer than two classes
    pairs = [sim[0, 1]] * 2 + [sim[i, j] for i in range(3) for j in range(3) if i != j]
    assert set_coherence(sets, sim) == pytest.approx(np.mean(pairs))
    assert set_coherence(np.eye(3, dtype=bool), sim) is None
    m = set_metrics(sets, np.array([1, 2, 0]), sim)
    assert (m.coverage, m.size, m.n) == (pytest.approx(2 / 3), 2.0, 3)


# --- the tree of one image -------------------------------------------------------------------

def test_tree_by_hand():
    v, w = _hand_example()
    tree = build_hierarchy(v[0], w, predicted=0, selected=np.array([10, 11, 12, 13, 14, 15]))
    assert tree.classes == [0, 1, 2]  # c3 does not share c0's first feature
    [f0] = tree.root.children
    assert (f0.feature, f0.activation, f0.classes) == (10, 5.0, [0, 1, 2])
    assert [(n.feature, n.classes) for n in f0.children] == [(11, [0, 1]), (14, [2])]
    assert tree.node_of(0).path == (10, 11, 12) and tree.node_of(1).path == (10, 11, 13)
    assert tree.node_of(2).path == (10, 14, 15)
    assert [[n.feature for n in lv] for lv in tree.levels()] == [[10], [11, 14], [12, 13, 15]]
    assert [n.feature for n in tree.predicted_path()] == [None, 10, 11, 12]
    assert tree.shared == {0: 3, 1: 2, 2: 1}
    assert build_hierarchy(v[0], w, 0, scope="all").classes == [0, 1, 2, 3]
    assert build_hierarchy(v[0], w, 0, also=[3]).node_of(3).path == (3, 4, 5)
    d = tree.to_dict()
    assert d["classes"]["1"]["path"] == [[10, 5.0], [11, 4.0], [13, 2.0]]
    assert d["levels"][0][0]["classes"] == [0, 1, 2]


def test_tree_stops_at_absent_features_and_groups_classes():
    w = np.zeros((5, 6))
    for c, cols in enumerate([(0, 1, 2), (0, 1, 3), (0, 4, 5), (3, 4, 5), (0, 1, 4)]):
        w[c, list(cols)] = 1
    v = np.array([5.0, 4.0, 3.0, 0.0, 0.0, 0.0])  # features 3, 4, 5 absent (after a ReLU)
    tree = build_hierarchy(v, w, predicted=0)
    f1 = tree.root.children[0].children[0]
    assert f1.feature == 1 and f1.ending == [1, 4]  # both stop after feature 1: one group
    assert tree.root.children[0].ending == [2]
    assert tree.node_of(0).path == (0, 1, 2)
    assert tree.classes == [0, 1, 2, 4]


def test_method_scores_are_the_reference_score_with_a_shift():
    """The fast path (PathStats, prefix sums) equals the faithful score on shifted
    activations, on every level and for any subset of images."""
    from qpm.conformal.outputs import path_scores

    values, weight, logits, _ = reference_inputs(1)
    values = values - 0.7  # negative activations, as in a QPM layer
    out = Outputs(logits, values, weight)
    sub = out.take(np.array([5, 1, 6, 2]))
    depth, acts = hierarchical_parts(values, class_columns(weight), logits.argmax(1))
    for level in range(4):
        want = hierarchical_scores(depth, acts + 0.7, level)  # shift -0.7 back
        want = np.where(depth >= level, want, np.inf)
        got = path_scores(out.path_stats(), sub.rows, None, level, -0.7)
        np.testing.assert_allclose(got, want[[5, 1, 6, 2]], atol=1e-12)
        labels = np.array([0, 4, 2, 2])
        got = path_scores(out.path_stats(), sub.rows, labels, level, -0.7)
        np.testing.assert_allclose(got, want[[5, 1, 6, 2], labels], atol=1e-12)
    assert np.array_equal(sub.depth(), depth[[5, 1, 6, 2]])

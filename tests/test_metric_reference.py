"""The metrics against the numbers the QPM reference implementation computes on the same
synthetic inputs (the project's reference_values.json for metric_inputs.py 0 600 20 10 7).

The generator below makes the same seeded numpy draws in the same order as the project's
metric_inputs.py, so the arrays are identical; the expected values are the reference's.
"""

import numpy as np
import pytest

from qpm.metrics import (
    class_independence,
    contrastiveness,
    correlation,
    diversity_at_k,
    sid_at_k,
    structural_grounding,
)

TOL = 0.002
REFERENCE = {
    "class_independence": 0.84172,
    "contrastiveness": 0.6201,  # Gaussian mixture fits: +-0.005 between fits
    "sid@5": 0.94088,
    "qsenn_diversity@5": 0.95087,
    "correlation_raw": 0.96975,
    "correlation_zscored": 0.24716,
    "structural_grounding": 0.15804,
}


def reference_inputs(seed=0, n_samples=600, n_features=20, n_classes=10, side=7, k=5):
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % n_classes
    weights = np.zeros((n_classes, n_features), np.float32)
    for c in range(n_classes):
        weights[c, rng.choice(n_features, k, replace=False)] = 1
    maps = rng.gamma(1.0, 1.0, (n_samples, n_features, side, side)).astype(np.float32)
    for f in range(n_features):  # a class's features peak at one spot per feature
        r, col = rng.integers(0, side, 2)
        boost = rng.gamma(2, 1, n_samples).astype(np.float32)
        maps[:, f, r, col] += 8 * weights[labels, f] * boost
    features = maps.mean(axis=(2, 3))
    predictions = (features @ weights.T).argmax(1)
    weights200 = np.zeros((200, 50), np.float32)
    for c in range(200):
        weights200[c, rng.choice(50, k, replace=False)] = 1
    attributes = rng.random((200, 312)) ** 3
    return {"maps": maps, "features": features, "labels": labels, "weights": weights,
            "predictions": predictions, "weights200": weights200, "attributes": attributes}


@pytest.fixture(scope="module")
def inputs():
    return reference_inputs()


def test_sid_and_diversity_match_reference(inputs):
    args = inputs["maps"], inputs["weights"], inputs["predictions"]
    assert sid_at_k(*args, k=5) == pytest.approx(REFERENCE["sid@5"], abs=TOL)
    assert diversity_at_k(*args, k=5) == pytest.approx(REFERENCE["qsenn_diversity@5"], abs=TOL)


def test_correlation_matches_reference_on_raw_and_normalised_features(inputs):
    x = inputs["features"]
    assert correlation(x) == pytest.approx(REFERENCE["correlation_raw"], abs=TOL)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    assert correlation(z) == pytest.approx(REFERENCE["correlation_zscored"], abs=TOL)


def test_class_independence_matches_reference(inputs):
    got = class_independence(inputs["features"], inputs["labels"])
    assert got == pytest.approx(REFERENCE["class_independence"], abs=TOL)


def test_contrastiveness_matches_reference(inputs):
    got = contrastiveness(inputs["features"])
    assert got == pytest.approx(REFERENCE["contrastiveness"], abs=0.01)


def test_structural_grounding_matches_reference(inputs):
    got = structural_grounding(inputs["weights200"], inputs["attributes"])
    assert got == pytest.approx(REFERENCE["structural_grounding"], abs=TOL)

"""The paper's A/R preprocessing, the synthetic instances and `qpm similarities`."""

from __future__ import annotations

import numpy as np
import pytest

from qpm.assignment.cache import load_similarities
from qpm.assignment.similarities import compute_similarities
from qpm.assignment.synthetic import SIZES, make_features, make_instance
from qpm.cli import main
from qpm.errors import QPMError


def _data(seed=0, N=40, F=7, C=4):
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % C
    X = rng.normal(size=(N, F)) + 0.8 * (labels[:, None] == (np.arange(F) % C)[None, :])
    return X, labels


def test_A_is_pearson_correlation_with_class_indicators_scaled():
    X, y = _data()
    A, R = compute_similarities(X, y)
    ref = np.array(
        [[np.corrcoef(X[:, f], (y == c).astype(float))[0, 1] for c in range(4)] for f in range(7)]
    )
    assert np.allclose(A, ref / np.abs(ref).max())
    assert np.abs(A).max() == pytest.approx(1.0)


def test_R_is_upper_triangle_cosine_of_rows_of_A():
    X, y = _data(1)
    A, R = compute_similarities(X, y)
    unit = A / np.linalg.norm(A, axis=1, keepdims=True)
    cos = unit @ unit.T
    upper = np.triu(cos, k=1)
    expected = np.clip(upper / np.abs(upper).max(), 0, None)
    assert np.allclose(R, expected)
    assert np.all(np.tril(R) == 0)  # diagonal and lower triangle are zero
    assert R.min() >= 0


def test_constant_feature_gives_zero_not_nan():
    X, y = _data()
    X[:, 2] = 3.0
    X[:, 5] = 0.0
    A, R = compute_similarities(X, y)
    assert np.all(np.isfinite(A)) and np.all(np.isfinite(R))
    assert np.all(A[[2, 5]] == 0) and np.all(R[2] == 0) and np.all(R[:, 5] == 0)


@pytest.mark.parametrize(
    "features, labels, match",
    [
        (np.ones(5), np.zeros(5, int), "2-D"),
        (np.ones((5, 3)), np.zeros(4, int), "one entry per sample"),
        (np.array([[np.nan, 1.0], [1.0, 2.0]]), np.array([0, 1]), "NaN or infinite"),
        (np.ones((3, 2)), np.array([0.5, 1.0, 0.0]), "integer class indices"),
        (np.ones((3, 2)), np.array(["a", "b", "a"]), "integer class indices"),
        (np.ones((3, 2)), np.array([0, -1, 1]), "negative class index"),
        (np.ones((3, 2)), np.array([0, 2, 2]), "no sample: 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(features, labels, match):
    with pytest.raises(QPMError, match=match):
        compute_similarities(features, labels)


def test_n_classes_argument_checks_range_and_missing_classes():
    X, y = _data()
    with pytest.raises(QPMError, match="only 3 classes"):
        compute_similarities(X, y, n_classes=3)
    with pytest.raises(QPMError, match="no sample"):
        compute_similarities(X, y, n_classes=6)
    A, _ = compute_similarities(X, y.astype(float), n_classes=4)  # integral floats are fine
    assert A.shape == (7, 4)


def test_synthetic_features_are_seeded_nonnegative_and_redundant():
    X, y = make_features(64, 10, seed=3)
    X2, y2 = make_features(64, 10, seed=3)
    X3, _ = make_features(64, 10, seed=4)
    assert np.array_equal(X, X2) and np.array_equal(y, y2) and not np.array_equal(X, X3)
    assert X.min() >= 0 and X.dtype == np.float32
    assert np.bincount(y).tolist() == [24] * 10
    _, R = compute_similarities(X, y)
    assert (R > 0.9).sum() >= 2  # near-duplicate features really are redundant


def test_make_instance_sizes_and_bias():
    p = make_instance("tiny", seed=1)
    s = SIZES["tiny"]
    assert p.A.shape == (s.n_total, s.n_classes)
    assert (p.n_features, p.per_class) == (s.n_features, s.per_class)
    assert np.abs(p.b).max() == pytest.approx(0.316)
    assert p.tau is not None and len(p.pairs()) > 0
    q = make_instance("tiny", seed=1, preset="unbalanced", n_features=12)
    assert np.array_equal(p.A, q.A) and q.n_features == 12 and q.preset == "unbalanced"
    with pytest.raises(QPMError, match="Unknown synthetic size"):
        make_instance("huge")


def test_cli_similarities_writes_the_cache(tmp_path, capsys):
    X, y = make_features(32, 5, samples_per_class=6, seed=0)
    feats = tmp_path / "features.npz"
    np.savez(feats, features=X, labels=y, b=np.linspace(0, 0.3, 32))
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"bird {c}" for c in range(5)) + "\n")
    out = tmp_path / "sims.npz"
    code = main(["similarities", str(feats), "-o", str(out), "--class-names", str(names)])
    assert code == 0
    assert "32 features x 5 classes" in capsys.readouterr().out
    sims = load_similarities(out)
    A, R = compute_similarities(X, y)
    assert np.allclose(sims.A, A) and np.allclose(sims.R, R)
    assert np.allclose(sims.b, np.linspace(0, 0.3, 32))
    assert sims.class_names == tuple(f"bird {c}" for c in range(5))


def test_cli_similarities_bias_defaults_to_zero_and_errors_exit_2(tmp_path, capsys):
    X, y = make_features(16, 3, samples_per_class=4, seed=0)
    feats = tmp_path / "f.npz"
    np.savez(feats, features=X, labels=y)
    out = tmp_path / "s.npz"
    assert main(["similarities", str(feats), "-o", str(out)]) == 0
    assert np.all(load_similarities(out).b == 0)
    assert main(["similarities", str(tmp_path / "missing.npz"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    names = tmp_path / "two.txt"
    names.write_text("a\nb\n")  # labels go up to 2: three classes
    assert main(["similarities", str(feats), "-o", str(out), "--class-names", str(names)]) == 2
    assert "only 2 classes" in capsys.readouterr().err
    np.savez(feats, features=X)
    assert main(["similarities", str(feats), "-o", str(out)]) == 2
    assert "no array 'labels'" in capsys.readouterr().err


@pytest.mark.parametrize("factor", [1e300, 1e-300, 2.0**-1000])
def test_A_is_scale_free_even_at_extreme_magnitudes(factor):
    X, y = _data(2)
    A, R = compute_similarities(X, y)
    A2, R2 = compute_similarities(X * factor, y)
    assert np.abs(A2).max() == pytest.approx(1.0)  # not all zero, not NaN
    assert np.allclose(A2, A, atol=1e-12) and np.allclose(R2, R, atol=1e-12)


def test_A_agrees_for_float32_input_and_per_feature_offsets():
    X, y = _data(3)
    A, _ = compute_similarities(X, y)
    A32, _ = compute_similarities(X.astype(np.float32), y)
    assert np.allclose(A32, A, atol=1e-6)
    # A huge common offset is no reason to lose the correlation (no E[x^2] - m^2 cancellation).
    A_off, _ = compute_similarities(X + 1e9, y)
    assert np.allclose(A_off, A, atol=1e-6)


def test_per_class_sums_match_the_dense_one_hot_product():
    from qpm.assignment.similarities import class_statistics

    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.integers(0, 5, size=50)
    y[:5] = np.arange(5)
    onehot = np.eye(5)[y]
    sums, squares = class_statistics(X, y, 5)
    assert np.allclose(sums, onehot.T @ X.astype(np.float64))
    assert np.allclose(squares, ((X - X.astype(np.float64).mean(0)) ** 2).sum(0))


@pytest.mark.parametrize("family", ["default", "sparse", "lowrank", "heavytail", "groups"])
def test_every_family_is_seeded_and_gives_a_usable_instance(family):
    from qpm.assignment.synthetic import make_features

    X, y = make_features(48, 6, samples_per_class=5, seed=1, family=family)
    X2, _ = make_features(48, 6, samples_per_class=5, seed=1, family=family)
    assert np.array_equal(X, X2) and X.dtype == np.float32 and X.min() >= 0
    A, R = compute_similarities(X, y)
    assert A.shape == (48, 6) and np.abs(A).max() == pytest.approx(1.0) and R.max() > 0


def test_families_differ_and_unknown_family_is_refused():
    a = make_instance("tiny", seed=0, family="groups")
    b = make_instance("tiny", seed=0, family="sparse")
    assert not np.allclose(a.A, b.A)
    with pytest.raises(QPMError, match="Unknown instance family"):
        make_features(16, 3, family="nope")


def test_expand_features_makes_subclasses_of_real_classes():
    from qpm.assignment.synthetic import expand_features

    X, y = _data(5, N=60, F=5, C=3)
    X2, y2 = expand_features(X, y, n_total=20, n_classes=9, seed=0)
    assert X2.shape == (60, 20) and X2.min() >= 0
    assert set(np.unique(y2)) == set(range(9))
    for sub in range(9):  # every sub-class lies inside one real class
        assert np.unique(y[y2 == sub]).size == 1

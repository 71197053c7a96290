"""SIMS.npz / FEATURES.npz: round trips and every way a file can be unusable."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from qpm.assignment.cache import load_features, load_similarities, save_similarities
from qpm.errors import QPMError


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, size=(6, 3))
    R = np.triu(rng.uniform(0, 1, size=(6, 6)), k=1)
    b = rng.uniform(0, 0.3, size=6)
    return A, R, b


def test_round_trip_with_names(tmp_path, arrays):
    A, R, b = arrays
    path = tmp_path / "sub" / "sims.npz"
    save_similarities(path, A, R, b, class_names=["Black footed Albatross", "Gull", "Ñandú"],
                      feature_names=[f"f{i}" for i in range(6)])
    sims = load_similarities(path)
    assert np.array_equal(sims.A, A) and np.array_equal(sims.R, R) and np.array_equal(sims.b, b)
    assert sims.class_names == ("Black footed Albatross", "Gull", "Ñandú")
    assert sims.feature_names == tuple(f"f{i}" for i in range(6))
    with np.load(path, allow_pickle=False) as raw:  # names are plain unicode arrays
        assert raw["class_names"].dtype.kind == "U" and int(raw["format_version"]) == 1
    assert [p.name for p in path.parent.iterdir()] == ["sims.npz"]  # no temp file left
    problem = sims.problem(n_features=4, per_class=2)
    assert problem.class_names == sims.class_names and problem.tau is not None


def test_optional_arrays_may_be_missing(tmp_path, arrays):
    A, _, _ = arrays
    save_similarities(tmp_path / "a.npz", A)
    sims = load_similarities(tmp_path / "a.npz")
    assert sims.R is None and sims.b is None and sims.class_names is None
    assert sims.problem(n_features=3, per_class=1, preset="unbalanced").tau is None


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(QPMError, match="does not exist"):
        load_similarities(tmp_path / "nope.npz")
    with pytest.raises(QPMError, match="is a folder"):
        load_similarities(tmp_path)


def test_not_an_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(QPMError, match="not an .npz file"):
        load_similarities(bad)
    npy = tmp_path / "one.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(QPMError, match="single .npy array"):
        load_similarities(npy)


def test_truncated_and_corrupt_zip(tmp_path, arrays):
    A, R, b = arrays
    good = tmp_path / "good.npz"
    save_similarities(good, A, R, b)
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(QPMError, match="corrupt or truncated"):
        load_similarities(cut)
    # A valid zip whose member is not a .npy array.
    junk = tmp_path / "junk.npz"
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("A.npy", b"garbage bytes")
        zf.writestr("format_version.npy", b"garbage")
    with pytest.raises(QPMError, match="Similarity file"):
        load_similarities(junk)


def test_object_arrays_needing_pickle_are_refused(tmp_path, arrays):
    path = tmp_path / "pickled.npz"
    np.savez(path, A=arrays[0], format_version=1,
             class_names=np.array(["a", None, "c"], dtype=object))
    with pytest.raises(QPMError, match="need pickle"):
        load_similarities(path)


def test_missing_A_and_unknown_version(tmp_path, arrays):
    A, R, _ = arrays
    path = tmp_path / "s.npz"
    np.savez(path, R=R, format_version=1)
    with pytest.raises(QPMError, match="no array 'A'"):
        load_similarities(path)
    np.savez(path, A=A, format_version=7)
    with pytest.raises(QPMError, match="format_version 7"):
        load_similarities(path)
    np.savez(path, A=A)
    with pytest.raises(QPMError, match="no integer format_version"):
        load_similarities(path)


def test_load_features(tmp_path):
    path = tmp_path / "f.npz"
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    np.savez(path, features=X, labels=y, b=np.zeros(3))
    f = load_features(path)
    assert np.array_equal(f.features, X) and np.array_equal(f.labels, y) and f.b.shape == (3,)
    np.savez(path, features=X)
    with pytest.raises(QPMError, match="no array 'labels'"):
        load_features(path)
    np.savez(path, features=np.array([X, "x"], dtype=object), labels=y)
    with pytest.raises(QPMError, match="need pickle"):
        load_features(path)
    with pytest.raises(QPMError, match="does not exist"):
        load_features(tmp_path / "none.npz")

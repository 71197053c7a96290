"""Explanation files (JSON, PNG, HTML) from hand-built layers; the page in headless Chromium."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from qpm.explain import (
    choose_examples,
    class_features,
    closest_pairs,
    displayable,
    explanation_dict,
    similar_pairs,
    write_explanations,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["zero", "one", "two <&>", "three"]


def _layer():
    """4 classes, k=3, on 7 selected backbone features (indices 10..16)."""
    sets = [(0, 1, 2), (0, 1, 3), (4, 5, 6), (0, 4, 5)]
    w = np.zeros((4, 7))
    for c, cols in enumerate(sets):
        w[c, list(cols)] = 1.0
    return w, np.arange(10, 17)


def test_class_features_and_similar_pairs():
    w, sel = _layer()
    w[0, 2] = -2.0  # largest magnitude comes first, sign kept
    feats = class_features(w, sel)
    assert feats[0] == [(12, -2.0), (10, 1.0), (11, 1.0)]
    pairs = similar_pairs(feats)
    assert [(p.a, p.b) for p in pairs] == [(0, 1), (2, 3)]
    p = pairs[0]
    assert p.shared == (10, 11) and p.only_a == (12,) and p.only_b == (13,)
    assert p.ordered_features() == [12, 10, 11, 13]


def test_closest_pairs_for_classes_without_a_near_twin():
    w = np.zeros((3, 8))
    w[0, [0, 1, 2]] = w[1, [0, 3, 4]] = w[2, [5, 6, 7]] = 1
    feats = class_features(w)
    assert similar_pairs(feats) == []
    pairs = closest_pairs(feats, covered=set())
    assert [(p.a, p.b, p.shared) for p in pairs] == [(0, 1, (0,))]  # class 2 shares nothing
    assert closest_pairs(feats, covered={0, 1}) == []
    expl = explanation_dict(w, None, ["a", "b", "c"])
    assert expl["similar_pairs"] == [] and expl["closest_pairs"][0]["classes"] == [0, 1]


def test_explanation_dict_names_and_pairs():
    w, sel = _layer()
    expl = explanation_dict(w, sel, NAMES, feature_names={10: "loop"}, model_type="qpm")
    assert expl["n_classes"] == 4 and expl["n_features"] == 7
    assert expl["classes"][0]["features"][0] == {"index": 10, "name": "loop", "weight": 1.0}
    assert expl["classes"][1]["features"][2]["name"] == "feature 13"
    assert expl["similar_pairs"][1] == {
        "classes": [2, 3],
        "names": ["two <&>", "three"],
        "shared": [14, 15],
        "distinguishing": {"2": [16], "3": [10]},
    }
    assert expl["closest_pairs"] == []  # every class has a pair sharing all but one


def test_choose_examples_prefers_correct_high_scores():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([[5.0, 0], [9, 10], [3, 0], [4, 1], [0, 2]])
    # class 0: image 1 has the top class-0 score but is wrong -> image 0
    assert choose_examples(labels, scores) == {0: 0, 1: 4}
    assert choose_examples(np.array([0, 0]), np.array([[0.0, 1], [0, 2]])) == {0: 0}


def test_displayable_undoes_normalisation():
    img = (np.full((1, 2, 2), 0.5) - 0.1) / 0.2
    assert np.allclose(displayable(img, (0.1,), (0.2,)), 0.5)
    rgb = displayable(np.zeros((3, 4, 5)))
    assert rgb.shape == (4, 5, 3)


def _write(tmp_path):
    w, sel = _layer()
    rng = np.random.default_rng(0)
    examples = {c: 10 + c for c in range(4)}
    images = {i: rng.random((12, 12)) for i in examples.values()}
    maps = {i: rng.random((7, 3, 3)) for i in examples.values()}
    return write_explanations(tmp_path / "explain", w, sel, NAMES, examples=examples,
                              images=images, maps=maps, title="Test explanation")


def test_write_explanations_files(tmp_path):
    paths = _write(tmp_path)
    out = tmp_path / "explain"
    expl = json.loads((out / "explanation.json").read_text())
    assert [p["figure"] for p in expl["similar_pairs"]] == [
        "figures/pair_0_1.png",
        "figures/pair_2_3.png",
    ]
    for rel in ("assignment.png", "figures/pair_0_1.png", "figures/pair_2_3.png"):
        assert (out / rel).read_bytes()[:8] == PNG_MAGIC
    page = paths["html"].read_text()
    assert page.count('<details class="class-entry"') == 4
    assert "two &lt;&amp;&gt;" in page and "two <&>" not in page
    assert 'src="figures/pair_2_3.png"' in page and "http" not in page
    assert not list(out.glob("**/*.tmp"))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args, user_dir):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={user_dir}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_index_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    paths = _write(tmp_path)
    url = paths["html"].resolve().as_uri()
    shot = tmp_path / "shot.png"
    res = _chromium("--window-size=1000,1400", f"--screenshot={shot}", url,
                    user_dir=tmp_path / "profile1")
    assert shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1400, 1000) and pixels.std() > 5  # not a blank page
    dom = _chromium("--dump-dom", url, user_dir=tmp_path / "profile2").stdout
    assert dom.count('class="class-entry"') == 4
    assert 'data-images-ok="true"' in dom  # assignment.png and both figures loaded

"""Explanation files (JSON, PNG, HTML) from hand-built layers; the page in headless Chromium."""

import json

import numpy as np
import pytest
from pagecheck import CHROMIUM, browser_checks, static_checks

from qpm.explain import (
    FeatureCounts,
    choose_examples,
    class_features,
    closest_pairs,
    displayable,
    example_quality,
    explanation_dict,
    similar_pairs,
    top_activating,
    write_explanations,
)
from qpm.explain.heatmaps import colour, overlay, scale_maps, upsample
from qpm.explain.writer import GalleryImage

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
    # with a quality, the best correctly classified image wins
    assert choose_examples(labels, scores, np.array([0, 9, 5, 1, 0])) == {0: 2, 1: 4}


def test_example_quality_prefers_strong_features_in_different_places():
    apart = np.zeros((2, 3, 3))
    apart[0, 0, 0] = apart[1, 2, 2] = 5.0
    together = np.zeros((2, 3, 3))
    together[0, 0, 0] = together[1, 0, 0] = 5.0
    maps = np.stack([apart, together, apart * 0.2])
    pooled = maps.mean(axis=(2, 3))
    q = example_quality(maps, pooled, [np.array([0, 1])] * 3)
    assert q[0] > q[1]  # same activation, but the two maps peak in different places
    assert q[0] > q[2]  # same places, more activation
    assert top_activating(np.array([[1, 5], [3, 2], [2, 9]]), 2).tolist() == [[1, 2], [2, 0]]


def test_displayable_undoes_normalisation():
    img = (np.full((1, 2, 2), 0.5) - 0.1) / 0.2
    assert np.allclose(displayable(img, (0.1,), (0.2,)), 0.5)
    rgb = displayable(np.zeros((3, 4, 5)))
    assert rgb.shape == (4, 5, 3)


def _write(tmp_path):
    w, sel = _layer()
    rng = np.random.default_rng(0)
    examples = {c: 10 + c for c in range(4)}
    keys = list(examples.values()) + [20, 21]
    images = {i: rng.random((12, 12)) for i in keys}
    maps = {i: rng.random((7, 3, 3)) for i in keys}
    gallery = {f: [GalleryImage(k, f"image {k}", {"index": k, "activation": 1.0})
                   for k in (20, 21, 10)] for f in (10, 11, 14)}
    return write_explanations(tmp_path / "explain", w, sel, NAMES, examples=examples,
                              images=images, maps=maps, gallery=gallery,
                              title="Test explanation")


def test_write_explanations_files(tmp_path):
    paths = _write(tmp_path)
    out = tmp_path / "explain"
    expl = json.loads((out / "explanation.json").read_text())
    assert [p["figure"] for p in expl["similar_pairs"]] == [
        "figures/pair_0_1.png",
        "figures/pair_2_3.png",
    ]
    gallery = {f["index"]: [g["image"] for g in f.get("gallery", [])] for f in expl["features"]}
    assert gallery[10] == [f"gallery/feature_10_{r}.png" for r in (1, 2, 3)]
    assert gallery[12] == []  # no gallery images given for it
    for rel in ("assignment.png", "figures/pair_0_1.png", "figures/pair_2_3.png",
                *gallery[10], *gallery[14]):
        assert (out / rel).read_bytes()[:8] == PNG_MAGIC
    page, _ = static_checks(out)
    assert page == paths["html"].read_text()
    assert "two &lt;&amp;&gt;" in page and "two <&>" not in page
    # each class card shows its features with the gallery's first image as thumbnail
    card = page[page.index('id="class-0"'):page.index('id="class-1"')]
    assert 'src="gallery/feature_10_1.png"' in card and 'href="#pair-0-1"' in card
    assert not list(out.glob("**/*.tmp"))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_index_renders_in_headless_chromium(tmp_path):
    _write(tmp_path)
    browser_checks(tmp_path / "explain", tmp_path)


def test_feature_counts_and_warning():
    w = np.zeros((3, 10))
    w[0, [0, 1]] = w[1, [1, 2]] = w[2, [0, 3]] = 1
    counts = FeatureCounts.of(w)
    assert (counts.selected, counts.used, counts.classes, counts.per_class) == (10, 4, 3, 2)
    assert counts.line().startswith("10 features selected, 4 used")
    assert "at most 6: 4 must stay unused" in counts.warning()
    assert FeatureCounts.of(w[:, :6]).warning() is None  # 6 selected, 3 x 2 could use all
    expl = explanation_dict(w, np.arange(100, 110), ["a", "b", "c"])
    assert expl["n_selected"] == 10 and expl["n_features"] == 4
    assert expl["unused"] == [104, 105, 106, 107, 108, 109]
    assert expl["features"][0] == {"index": 100, "name": "feature 100", "classes": [0, 2]}


def test_heatmaps_follow_the_reference_scaling():
    weak = np.array([[0.0, 0.1], [0.1, 0.2]])
    strong = np.array([[0.0, 1.0], [2.0, 4.0]])
    a, b = scale_maps([weak, strong], [(4, 4), (4, 4)], gamma=3)
    # min-max per image, then dimmed by sqrt(mean) relative to the stronger image, then the
    # gamma keeps each image's own maximum
    ratio = np.sqrt(weak.mean() / strong.mean())
    assert b.max() == pytest.approx(1.0, abs=1e-6)
    assert a.max() == pytest.approx(ratio ** 4, rel=1e-5)
    assert a.shape == (4, 4) and a.min() == 0
    up = upsample(np.array([[0.0, 1.0]]), 1, 4)
    assert np.allclose(up, [[0, 0.25, 0.75, 1]])  # pixel centres aligned, edges clamped
    img = np.zeros((4, 4))
    out = overlay(img, b, colour(0))
    assert out.shape == (4, 4, 3) and out.max() == pytest.approx(1)
    # where the feature is absent the panel is the light-grey image, at its peak the colour
    assert np.allclose(out[0, 0], out[0, 0][0]) and out[3, 3, 0] > out[3, 3, 1]


def test_palette_reads_on_white_and_is_never_grey():
    from qpm.explain.heatmaps import PALETTE

    def luminance(rgb):
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    for rgb in PALETTE:
        assert 1.05 / (luminance(rgb) + 0.05) >= 4.5, rgb  # WCAG contrast with white
        assert max(rgb) - min(rgb) >= 0.4, rgb  # a colour, visible on a greyscale image
    assert len(set(PALETTE)) == len(PALETTE)


def test_gallery_keeps_colour_images_in_colour(tmp_path):
    from PIL import Image

    from qpm.explain.gallery import save_feature_images

    green = np.zeros((8, 8, 3))
    green[..., 1] = 0.8  # a green image, the feature active in one corner only
    heat = np.zeros((2, 2))
    heat[0, 0] = 1.0
    names = save_feature_images(tmp_path, 3, [green, np.full((8, 8), 0.5)],
                                [heat, heat], px=8)
    first = np.asarray(Image.open(tmp_path / names[0])).astype(int)
    assert first[7, 7, 1] > 150 and first[7, 7, 0] < 30  # where inactive: still green
    assert first[0, 0, 0] > first[0, 0, 1]  # where active: tinted with the feature's red
    grey = np.asarray(Image.open(tmp_path / names[1])).astype(int)
    assert abs(grey[7, 7, 0] - grey[7, 7, 1]) <= 1  # a greyscale image stays grey


def test_assignment_figure_has_gridlines_between_cells(tmp_path, monkeypatch):
    from qpm.explain import figures

    saved = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.setdefault("fig", fig))
    w, sel = _layer()
    figures.plot_assignment(w, sel, NAMES, tmp_path / "a.png")
    ax = saved["fig"].axes[0]
    assert list(ax.xaxis.get_minorticklocs()) == [-0.5, 0.5, 1.5, 2.5, 3.5]
    assert list(ax.yaxis.get_minorticklocs()) == [-0.5 + i for i in range(8)]
    assert all(t.gridline.get_visible() for t in ax.xaxis.get_minor_ticks())
    assert not any(t.gridline.get_visible() for t in ax.xaxis.get_major_ticks())


def test_class_pairs_section_says_why_it_is_empty(tmp_path):
    from qpm.explain.html import write_index

    w = np.eye(3)  # three classes, one feature each: no two share one
    expl = explanation_dict(w, np.arange(3), ["a", "b", "c"])
    page = write_index(tmp_path, expl).read_text()
    section = page[page.index('<section id="pairs">'):page.index('<section id="features">')]
    assert "No two classes share a feature" in section
    # pairs that share features but no figure drawn (--max-figures 0): said as well
    w2, sel = _layer()
    page = write_index(tmp_path, explanation_dict(w2, sel, NAMES)).read_text()
    section = page[page.index('<section id="pairs">'):page.index('<section id="features">')]
    assert "no comparison figure was drawn" in section and "<figure" not in section

"""``qpm calibrate``, ``qpm predict --coverage``, the conformal table of ``qpm evaluate``, the
tree in ``model.explain`` and on the ``qpm explain`` page, on the tiny trained run."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import variant

import qpm
from qpm import run_folder as rf
from qpm.cli import main
from qpm.conformal import make_split

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def calibrated(trained_run, tmp_path_factory):
    import shutil

    run = tmp_path_factory.mktemp("cal") / "run"
    shutil.copytree(trained_run, run)
    assert main(["calibrate", str(run), "--device", "cpu", "--coverage", "0.8",
                 "--repeats", "5"]) == 0
    return run


def _one_line_error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_calibrate_stores_the_split_and_the_thresholds(calibrated, capsys):
    folder = variant(calibrated)
    summary, arrays = rf.read_calibration(folder, "qpm", "")
    assert summary["coverage"] == 0.8 and summary["variant"] == folder.name
    assert summary["methods"] == ["thr", "aps", "hierarchical"]
    labels = np.repeat(np.arange(3), 3)  # the tiny test set: 3 classes x 3 images, in order
    split = make_split("stratified", labels, 3, seed=0, fraction=0.5)
    assert np.array_equal(arrays["indices"], split.calibration)  # 2 of each class's 3
    assert len(arrays["labels"]) == 6 and arrays["logits"].shape == (6, 3)
    assert np.array_equal(arrays["labels"], labels[split.calibration])
    th = summary["thresholds"]["hierarchical"]
    assert th["n"] == 6 and 0 <= th["level"] <= 2 and len(th["path_accuracy"]) == 2
    assert "stratified" in summary["split_text"] and "seed 0" in summary["split_text"]
    assert summary["bound"].startswith("split conformal: 0.8 <= E[coverage]")


def test_calibrate_prints_split_bound_and_refuses_bad_input(calibrated, tmp_path, capsys):
    capsys.readouterr()
    assert main(["calibrate", str(calibrated), "--device", "cpu", "--coverage", "0.6",
                 "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    assert "calibration: a stratified random 50% of each class (seed 0)" in out
    assert "coverage measured on the other 3" in out and "bound:" in out
    assert "mean of 3 splits" in out
    assert "level" in out and "the reference's rule" in out
    for bad in ("0", "1", "1.5", "nan"):
        err = _one_line_error(capsys, ["calibrate", str(calibrated), "--coverage", bad])
        assert "--coverage" in err
    err = _one_line_error(capsys, ["calibrate", str(calibrated), "--calibration",
                                   "reference"])
    assert "stratified" in err  # 3 images per class: the reference's 10 leave nothing
    assert main(["calibrate", str(calibrated), "--device", "cpu", "--coverage", "0.8",
                 "--repeats", "0"]) == 0  # back to what the other tests expect


def test_predict_prints_each_images_set(calibrated, tiny_imagefolder, tmp_path, capsys):
    images = sorted((tiny_imagefolder / "test").rglob("*.png"))
    capsys.readouterr()
    assert main(["predict", str(calibrated), *map(str, images), "--coverage", "0.95",
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    model = qpm.load(calibrated, device="cpu")
    want = model.predict(images, coverage=0.95)
    assert want.sets.method == "hierarchical"
    for row, names, classes in zip(rows, want.sets.names, want.sets.classes, strict=True):
        assert row["prediction_set"] == "; ".join(names)
        assert int(row["set_size"]) == len(classes)
        assert "hierarchical at 0.95" in row["conformal"] and "seed 0" in row["conformal"]
    # coverage 0.95 with 6 calibration images: K = ceil(7 * 0.95) = 7 > 6, every class
    assert all(len(c) == 3 for c in want.sets.classes)
    assert math.isinf(want.sets.threshold.q_hat)
    low = model.predict(images, coverage=0.5, method="thr")
    assert low.sets.method == "thr" and low.sets.threshold.level is None
    assert sum(map(len, low.sets.classes)) < sum(map(len, want.sets.classes))


def test_hierarchical_sets_stay_on_the_predicted_path(calibrated, tiny_imagefolder):
    model = qpm.load(calibrated, device="cpu")
    images = sorted((tiny_imagefolder / "test").rglob("*.png"))
    out = model.outputs(images)
    depth = out.depth()
    for cov in (0.5, 0.6, 0.8):
        sets = model.prediction_sets(out, cov)
        level = sets.threshold.level
        for i, members in enumerate(sets.classes):
            assert all(depth[i, c] >= level for c in members)


def test_predict_coverage_needs_a_calibration(run_copy, tiny_imagefolder, capsys):
    image = str(next((tiny_imagefolder / "test").rglob("*.png")))
    err = _one_line_error(capsys, ["predict", str(run_copy), image, "--coverage", "0.9"])
    assert "qpm calibrate" in err
    assert main(["calibrate", str(run_copy), "--device", "cpu", "--repeats", "0"]) == 0
    model_file = variant(run_copy) / "qpm.pt"
    model_file.write_bytes(model_file.read_bytes() + b"")  # same content: still fine
    assert main(["predict", str(run_copy), image, "--coverage", "0.9"]) == 0
    js, data = rf.calibration_paths(variant(run_copy), "qpm")
    data.write_bytes(data.read_bytes()[:-10])  # a damaged .npz is found out by its hash
    err = _one_line_error(capsys, ["predict", str(run_copy), image, "--coverage", "0.9"])
    assert "qpm calibrate" in err
    err = _one_line_error(capsys, ["predict", str(run_copy), image, "--coverage", "2"])
    assert "coverage" in err


def test_evaluate_reports_every_method_at_four_targets(calibrated, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(calibrated), "--device", "cpu", "--repeats", "4"]) == 0
    out = capsys.readouterr().out
    for title in ("THR (LAC)", "APS", "CHiQPM (hierarchical)"):
        for t in ("0.88", "0.9", "0.925", "0.95"):
            assert any(line.startswith(title) and f" {t} " in line
                       for line in out.splitlines()), (title, t)
    assert out.count("calibration: a stratified random 50%") == 2  # dense and qpm
    assert "mean of 4 splits" in out and "bound:" in out
    dense = [line for line in out.split("dense: conformal")[1].splitlines()
             if line.startswith("CHiQPM")]
    assert not dense.count("hierarchical")  # a dense layer has no hierarchy
    metrics = json.loads((variant(calibrated) / "metrics.json").read_text())
    conformal = metrics["qpm"]["conformal"]
    assert conformal["split"]["n_calibration"] == 6
    row = conformal["methods"]["hierarchical"]["0.9"]
    assert {"coverage", "size", "target", "threshold", "bound", "repeated"} <= set(row)
    assert {"q_hat", "level"} <= set(row["threshold"]) and row["target"] == 0.9
    assert row["coverage"] * 3 == pytest.approx(round(row["coverage"] * 3))  # 3 images


def test_explain_returns_the_tree_as_data(calibrated, tiny_imagefolder, tmp_path):
    model = qpm.load(calibrated, device="cpu")
    image = sorted((tiny_imagefolder / "test").rglob("*.png"))[0]
    expl = model.explain(image, coverage=0.95)
    tree = expl.hierarchy
    assert tree.predicted == expl.predicted and tree.per_class == 2
    assert set(expl.prediction_set) <= set(tree.classes)  # the set's classes are in the tree
    w, sel = model.layer()
    for c, path in tree.paths.items():  # each path: the class's features, strongest first
        assert sorted(f for f, _ in path) == sorted(int(sel[j]) for j in np.flatnonzero(w[c]))
        acts = [a for _, a in path]
        assert acts == sorted(acts, reverse=True)
    d = expl.to_dict()
    assert d["hierarchy"]["predicted"] == expl.predicted
    assert d["prediction_set"]["coverage"] == 0.95
    json.dumps(d)  # JSON-ready
    assert expl.save(tmp_path / "why.png").read_bytes()[:8] == PNG_MAGIC
    dense = qpm.load(calibrated, "dense", device="cpu").explain(image)
    assert dense.hierarchy is None


def test_explain_page_shows_local_trees(calibrated, tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["explain", str(calibrated), "--device", "cpu", "--out", str(out),
                 "--local-examples", "2"]) == 0
    expl = json.loads((out / "explanation.json").read_text())
    local = expl["local"]
    assert len(local["examples"]) == 2 and local["coverage"] == 0.8
    page = (out / "index.html").read_text()
    assert 'id="local"' in page and "tree of class paths" in page
    for ex in local["examples"]:
        assert (out / ex["figure"]).read_bytes()[:8] == PNG_MAGIC
        assert f'src="{ex["figure"]}"' in page
        assert ex["prediction_set"] is not None
    assert Path(out / "local").is_dir()


def test_demo_callbacks_without_a_calibration(run_copy, tiny_imagefolder):
    """The demo's callbacks (no browser, no Gradio): without qpm calibrate it still shows the
    class and the tree, and says how to get prediction sets."""
    from qpm.demo.app import Demo

    model = qpm.load(run_copy, device="cpu")
    demo = Demo(model)
    image = str(sorted((tiny_imagefolder / "test").rglob("*.png"))[0])
    features, tree, text, state = demo.classify(image, 0.9)
    assert Path(features).read_bytes()[:8] == PNG_MAGIC
    assert Path(tree).read_bytes()[:8] == PNG_MAGIC
    assert "Predicted:" in text and "qpm calibrate" in text
    assert demo.update(0.5, None) == (None, "")

"""Using a trained model: qpm.load / predict / explain / global_explanation, `qpm predict`
and `qpm explain` on a (shrunk) default run and on the generated CUB layout."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import variant
from pagecheck import CHROMIUM, browser_checks, static_checks
from PIL import Image

import qpm
from qpm import run_folder as rf
from qpm.cli import main
from qpm.data import build_data
from qpm.errors import QPMError
from qpm.pipeline.run import run_pipeline
from qpm.run_folder.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """The default run (mnist-5k, small-cnn) made cheap: 12-pixel inputs, one dense epoch,
    no fine-tuning."""
    run_dir = tmp_path_factory.mktemp("mnist") / "run"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run_pipeline(TrainConfig(image_size=12, epochs=1, ft_epochs=0, solver="greedy",
                             device="cpu", run_dir=str(run_dir)), log=lambda _m: None)
    return run_dir


@pytest.fixture(scope="module")
def mnist_test():
    """The default run's test images (as the model sees them) and labels."""
    data = build_data("mnist-5k", None, 12)
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    return x, data.test.split.labels, data.test.split.images[:, 0].numpy()


def _export(images: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.png" for i in range(len(images))]
    for img, p in zip(images, paths, strict=True):
        Image.fromarray(img).save(p)
    return paths


def test_readme_example_runs(mnist_run, mnist_test, tmp_path, monkeypatch, capsys):
    text = README.read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 5
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mnist-5k" / "small-cnn").mkdir(parents=True)
    (tmp_path / "runs" / "mnist-5k" / "small-cnn" / "0").symlink_to(mnist_run)
    Image.fromarray(mnist_test[2][0]).save(tmp_path / "digit.png")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed[0] in [str(d) for d in range(10)] and 0 < float(printed[1]) <= 1
    assert (tmp_path / "why.png").read_bytes()[:8] == PNG_MAGIC


def test_predict_reproduces_the_recorded_test_accuracy(mnist_run, mnist_test):
    x, y, _ = mnist_test
    metrics = {**json.loads((mnist_run / "metrics.json").read_text()),
               **json.loads((variant(mnist_run) / "metrics.json").read_text())}
    for model_type in ("qpm", "dense"):
        pred = qpm.load(mnist_run, model_type, device="cpu").predict(x, batch_size=256)
        acc = 100.0 * float(np.mean(pred.classes == y))
        assert acc == pytest.approx(metrics[model_type]["accuracy"], abs=1e-9)
    assert metrics["qpm"]["accuracy"] > 50  # a trained model, not chance


def test_model_is_a_module_whose_forward_returns_logits(mnist_run, mnist_test):
    x = mnist_test[0][:16]
    for model_type, has_bias in (("qpm", False), ("dense", True)):
        model = qpm.load(mnist_run, model_type, device="cpu")
        assert isinstance(model, torch.nn.Module) and not model.training
        with torch.no_grad():
            logits = model(x)
            out = model.network(x)
            values = model.feature_values(out.features)
        assert logits.shape == (16, 10) and torch.equal(logits, out.logits)
        weight, _ = model.layer()
        bias = model.network.classifier.linear.bias.detach().numpy() if has_bias else 0
        assert np.allclose(values.numpy() @ weight.T + bias, logits.numpy(), atol=1e-4)
        model.train()  # predict evaluates in eval mode whatever the module's mode
        pred = model.predict(x)
        assert model.training
        assert np.allclose(pred.logits, logits.numpy(), atol=1e-5)
        assert np.allclose(pred.probabilities.sum(axis=1), 1)
        assert pred.names == [str(c) for c in pred.classes]


def test_predict_takes_paths_pil_images_arrays_and_tensors(mnist_run, mnist_test, tmp_path):
    x, _, raw = mnist_test
    paths = _export(raw[:3], tmp_path / "imgs")
    model = qpm.load(mnist_run, device="cpu")
    ref = model.predict(x[:3])
    # 16-bit files and images hold the same grey levels (x 257) and must be rescaled, as
    # training reads them, not clipped to white
    wide = [Image.fromarray(img.astype(np.uint16) * 257) for img in raw[:3]]
    paths16 = [tmp_path / f"wide{i}.png" for i in range(3)]
    for im, p in zip(wide, paths16, strict=True):
        im.save(p)
    assert Image.open(paths16[0]).mode.startswith("I")
    for images in (paths, [str(p) for p in paths], [Image.open(p) for p in paths],
                   list(raw[:3]), [x[0], x[1], x[2]], paths16, wide):
        pred = model.predict(images, batch_size=2)
        assert pred.classes.tolist() == ref.classes.tolist()
        assert np.allclose(pred.probabilities, ref.probabilities, atol=1e-5)
    assert model.predict(paths[0]).sources == [str(paths[0])]
    assert model.predict(list(raw[:3]), batch_size=2).sources[2] == "<image 2>"
    k = model.per_class
    assert all(len(f) == k for f in ref.features)
    assert all(f[0].contribution >= f[-1].contribution for f in ref.features)
    (tmp_path / "notes.png").write_text("not an image")
    bad = [[tmp_path / "missing.png"], [tmp_path / "notes.png"], [raw[0].astype(float)],
           torch.zeros(2, 3, 12, 12), []]
    for images in bad:
        with pytest.raises(QPMError):
            model.predict(images)


def test_local_explanation_adds_up(mnist_run, mnist_test, tmp_path):
    x = mnist_test[0][:1]
    model = qpm.load(mnist_run, device="cpu")
    logits = model(x)[0].detach().numpy()
    e = model.explain(x)
    top = np.argsort(-logits)
    assert (e.predicted, e.runner_up) == (int(top[0]), int(top[1]))
    assert (e.logit, e.runner_up_logit) == pytest.approx((logits[top[0]], logits[top[1]]))
    assert {f.index for f in e.features} == set(model.global_explanation().classes[e.predicted])
    # the QPM layer has no bias: a class's logit is the sum of its features' parts
    assert sum(f.contribution for f in e.features) == pytest.approx(logits[top[0]], abs=1e-3)
    margin = sum(t.margin for t in e.separating)
    assert margin == pytest.approx(logits[top[0]] - logits[top[1]], abs=1e-3)
    assert e.separating[0].margin >= e.separating[-1].margin
    assert set(e.maps) == {f.index for f in e.features + e.runner_up_features}
    assert e.image.shape == (12, 12) and 0 <= e.image.min() and e.image.max() <= 1
    json.dumps(e.to_dict())
    assert e.save(tmp_path / "why.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(QPMError, match="one image"):
        model.explain(mnist_test[0][:2])


def test_global_explanation_is_the_assignment(mnist_run):
    model = qpm.load(mnist_run, device="cpu")
    g = model.global_explanation()
    layer = model.network.classifier
    assert g.classes == layer.assignment()
    assert g.selected == layer.selected.tolist()
    for f, users in g.features.items():
        assert users == [c for c, feats in g.classes.items() if f in feats]
    for a, b, shared in g.pairs:
        assert shared == sorted(set(g.classes[a]) & set(g.classes[b])) and shared
    assert len(g.pairs) == sum(1 for a in g.classes for b in g.classes
                               if a < b and set(g.classes[a]) & set(g.classes[b]))
    assert g.counts.selected == 50 and g.counts.used == len(g.used) <= 50
    assert g.counts.per_class == 5
    json.dumps(g.to_dict())


def test_load_refuses_what_it_cannot_use(mnist_run, tmp_path):
    with pytest.raises(QPMError, match="not a qpm run folder"):
        qpm.load(tmp_path)
    with pytest.raises(QPMError, match="qpm train --model-type sldd"):
        qpm.load(mnist_run, "sldd")
    with pytest.raises(QPMError, match="holds no finished nonsense model"):
        qpm.load(mnist_run, "nonsense")
    with pytest.raises(QPMError, match="no qpm variant 'qpm-n7'"):
        qpm.load(mnist_run, variant="qpm-n7")
    with pytest.raises(QPMError, match="Unknown device"):
        qpm.load(mnist_run, device="bogus")


def test_predict_and_explain_commands_on_the_default_run(mnist_run, mnist_test, tmp_path,
                                                         capsys):
    _, y, raw = mnist_test
    folder = tmp_path / "test-images"
    _export(raw, folder)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(mnist_run), str(folder), "--out", str(out),
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(p) for p in sorted(folder.glob("*.png"))]
    acc = 100.0 * float(np.mean([int(r["class_index"]) == t for r, t in zip(rows, y,
                                                                            strict=True)]))
    metrics = json.loads((variant(mnist_run) / "metrics.json").read_text())
    assert acc == pytest.approx(metrics["qpm"]["accuracy"], abs=1e-9)  # from the files
    assert all(len(r["features"].split("; ")) == 5 for r in rows)
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    capsys.readouterr()
    assert main(["predict", str(mnist_run), str(folder / "0000.png"), str(folder / "0001.png"),
                 "--explain", str(tmp_path / "why"), "--device", "cpu"]) == 0
    printed = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["class_index"] for r in printed] == [r["class_index"] for r in rows[:2]]
    for r in printed:
        assert Path(r["explanation"]).read_bytes()[:8] == PNG_MAGIC
    page = tmp_path / "page"
    assert main(["explain", str(mnist_run), "--out", str(page), "--device", "cpu",
                 "--max-figures", "3", "--gallery-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "qpm: 50 features selected, " in printed
    _, expl = static_checks(page)
    assert 1 <= len([p for p in expl["similar_pairs"] + expl["closest_pairs"]
                     if "figure" in p]) <= 3
    assert all(len(f["gallery"]) == 4 for f in expl["features"])
    assert all(g["split"] == "train" for f in expl["features"] for g in f["gallery"])
    assert main(["predict", str(mnist_run), str(tmp_path / "nothing-here")]) == 2
    assert main(["predict", str(mnist_run), str(folder), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "is a folder" in err[1]


def test_predict_flags_inputs_unlike_the_training_images(mnist_run, mnist_test, tmp_path,
                                                        capsys):
    # The case: a colour photo through a digits model was a digit at p=1.0, no word.
    _, _, raw = mnist_test
    folder = tmp_path / "inputs"
    digits = _export(raw[:3], folder)
    rng = np.random.default_rng(0)
    photo = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    photo[..., 0] = np.linspace(0, 255, 640, dtype=np.uint8)  # a colour gradient
    Image.fromarray(photo).save(folder / "photo.png")
    Image.fromarray(255 - raw[3]).save(folder / "inverted.png")  # black ink on white
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(mnist_run), str(folder), "--out", str(out),
                 "--device", "cpu"]) == 0
    rows = {Path(r["path"]).name: r["input_warning"] for r in csv.DictReader(out.open())}
    assert [rows[p.name] for p in digits] == ["", "", ""]  # digits like the training ones
    assert rows["photo.png"].startswith("size 640x480 (training: 28x28); colour (training: "
                                        "greyscale); brightness ")
    assert rows["inverted.png"].startswith("brightness 0.8")
    assert "2 of 5 images differ from the training images" in capsys.readouterr().err
    model = qpm.load(mnist_run, device="cpu")
    assert model.predict([raw[0], photo]).warnings[1][0] == "size 640x480 (training: 28x28)"
    assert model.predict(mnist_test[0][:2]).warnings == [[], []]  # transformed: not judged


def test_predict_lists_broken_images_and_predicts_the_rest(mnist_run, mnist_test, tmp_path,
                                                           capsys):
    _, _, raw = mnist_test
    folder = tmp_path / "mixed"
    good = _export(raw[:3], folder)
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:40])
    out = tmp_path / "p.csv"
    capsys.readouterr()
    code = main(["predict", str(mnist_run), str(folder), "--out", str(out), "--device", "cpu",
                 "--explain", str(tmp_path / "why")])
    err = capsys.readouterr().err
    assert code == 3  # some images failed; the others are predicted (README: exit codes)
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(p) for p in good]
    assert sorted(p.name for p in (tmp_path / "why").iterdir()) == [
        "0000.png", "0001.png", "0002.png"]
    assert "2 of 5 images could not be read and were not predicted (exit code 3)" in err
    assert f"  {folder / 'broken.png'}: Cannot read image" in err
    assert f"  {folder / 'truncated.png'}: Cannot read image" in err
    # nothing readable at all: one line, exit code 2
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.png").write_bytes(b"junk")
    assert main(["predict", str(mnist_run), str(only_broken), "--device", "cpu"]) == 2
    last = capsys.readouterr().err.strip().splitlines()
    assert len(last) == 1 and "None of the 1 images could be read" in last[0]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_cub_page_in_headless_chromium(cub_qpm_run, tmp_path):
    out = tmp_path / "page"
    assert main(["explain", str(cub_qpm_run), "--out", str(out), "--device", "cpu",
                 "--split", "train"]) == 0
    dom = browser_checks(out, tmp_path)
    assert 'class="warning"' in dom  # 8 selected, 3 classes x 2 can use at most 6


@pytest.fixture(scope="module")
def cub_qpm_run(tiny_cub, tmp_path_factory):
    """A QPM run on the generated CUB layout, through the command line (8 of 2 x 3)."""
    run_dir = tmp_path_factory.mktemp("cubqpm") / "run"
    torch.manual_seed(0)
    rc = main(["train", "--dataset", "cub2011", "--data-root", str(tiny_cub), "--image-size",
               "32", "--arch", "small-cnn", "--epochs", "1", "--ft-epochs", "1",
               "--batch-size", "8", "--n-features", "8", "--per-class", "2", "--solver",
               "greedy", "--device", "cpu", "--run-dir", str(run_dir)])
    assert rc == 0
    return run_dir


def test_commands_on_the_cub_layout_report_counts(cub_qpm_run, tiny_cub, tmp_path, capsys):
    assert main(["train", "--dataset", "cub2011", "--data-root", str(tiny_cub),
                 "--image-size", "32", "--arch", "small-cnn", "--epochs", "1", "--ft-epochs",
                 "1", "--batch-size", "8", "--n-features", "8", "--per-class", "2",
                 "--solver", "greedy", "--device", "cpu", "--run-dir", str(cub_qpm_run)]) == 0
    summary = capsys.readouterr().out
    assert "global explanation: 8 features selected, " in summary
    assert "warning: 8 features selected but 3 classes x 2 features can use at most 6" in summary
    images = tiny_cub / "CUB_200_2011" / "images"
    out = tmp_path / "p.csv"
    assert main(["predict", str(cub_qpm_run), str(images), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 27 and {r["class"] for r in rows} <= {
        "001.red_disc", "002.green_bar", "003.blue_cross"}
    assert main(["evaluate", str(cub_qpm_run), "--device", "cpu"]) == 0
    assert f"{variant(cub_qpm_run).name}: 8 features selected" in capsys.readouterr().out
    page = tmp_path / "page"
    assert main(["explain", str(cub_qpm_run), "--out", str(page), "--device", "cpu"]) == 0
    page_text, expl = static_checks(page)
    assert expl["n_selected"] == 8 and expl["counts_warning"] in page_text


def test_drawing_runs_only_after_the_stage_is_recorded(cub_qpm_run, tmp_path, monkeypatch):
    import shutil

    import qpm.explain.figures as figures

    run_dir = tmp_path / "run"
    shutil.copytree(cub_qpm_run, run_dir)
    own = variant(run_dir)
    (own / "qpm.pt").unlink()
    (own / "assignment.png").unlink()
    cfg = TrainConfig.from_dict({**json.loads((run_dir / "config.json").read_text()),
                                 "run_dir": str(run_dir)})
    seen = []

    def broken(*_args, **_kwargs):
        rec, _ = rf.read_record(own, "qpm")  # the stage is recorded before any drawing
        seen.append(rec.output == rf.file_hash(own / "qpm.pt"))
        raise ValueError("mathtext exploded")

    monkeypatch.setattr(figures, "plot_assignment", broken)
    lines = []
    summary = run_pipeline(cfg, log=lines.append)
    assert [s.status for s in summary.stages] == ["skipped"] * 4 + ["ran"]
    assert seen == [True]
    assert any("could not draw assignment.png (ValueError: mathtext exploded); qpm.pt is kept"
               in line for line in lines)
    monkeypatch.undo()
    lines.clear()
    summary = run_pipeline(cfg, log=lines.append)  # nothing to recompute; the picture is drawn
    assert [s.status for s in summary.stages] == ["skipped"] * 5
    assert (own / "assignment.png").read_bytes()[:8] == PNG_MAGIC

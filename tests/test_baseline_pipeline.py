"""Q-SENN and SLDD as model types of a run folder, then `qpm evaluate` and `qpm explain`,
on the generated 3-class CUB layout (with a generated attribute file)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import variant

from qpm.baselines import GLMConfig
from qpm.cli import main
from qpm.metrics import features_per_class
from qpm.metrics.cub import class_attributes_for
from qpm.models.checkpoint import load_model
from qpm.models.sparse_head import SparseHead
from qpm.pipeline.run import run_pipeline
from qpm.run_folder.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
N, K = 8, 2
GLM = GLMConfig(n_lambdas=20, max_epochs=20, batch_size=16)  # a short glm-saga path


@pytest.fixture(scope="module")
def cub_run(tiny_cub, tmp_path_factory):
    """One run folder with dense, qpm, sldd and qsenn models (1 epoch each)."""
    root = tmp_path_factory.mktemp("cubattr")
    shutil.copytree(tiny_cub, root, dirs_exist_ok=True)
    attrs = root / "CUB_200_2011" / "attributes"
    attrs.mkdir()
    # classes 0 and 1 alike, class 2 different
    (attrs / "class_attribute_labels_continuous.txt").write_text(
        "90 10 50\n80 20 40\n5 95 0\n")
    # per image (ids 1..27, 9 per class): attribute c present on class c's images
    (attrs / "image_attribute_labels.txt").write_text("".join(
        f"{i} {a} {int((i - 1) // 9 == a - 1)} 4 1.0\n" for i in range(1, 28)
        for a in (1, 2, 3)))
    run_dir = tmp_path_factory.mktemp("run") / "cub"
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)  # the dense model's initialisation draws from the global generator
    for model_type in ("qpm", "sldd", "qsenn"):
        cfg = TrainConfig(dataset="cub2011", data_root=str(root), image_size=32,
                          arch="small-cnn", epochs=1, ft_epochs=1, batch_size=8,
                          n_features=N, per_class=K, solver="greedy", device="cpu",
                          model_type=model_type, run_dir=str(run_dir))
        run_pipeline(cfg, log=lambda _m: None, glm=GLM)
    return run_dir


def metrics_of(run_dir, name: str) -> dict:
    folder = run_dir if name == "dense" else variant(run_dir, name)
    return json.loads((folder / "metrics.json").read_text())[name]


def test_baseline_models_are_sparse_and_recorded(cub_run):
    for name in ("sldd", "qsenn"):
        model, meta = load_model(variant(cub_run, name) / f"{name}.pt")
        head = model.classifier
        assert isinstance(head, SparseHead)
        w = head.weight.numpy()
        assert w.shape == (3, N)
        assert features_per_class(w) == K  # K per class on average
        assert meta["sparsifier"] == name
        assert metrics_of(cub_run, name)["sparsifier"].startswith(name)
        assert metrics_of(cub_run, name)["per_class"] == K
    q = load_model(variant(cub_run, "qsenn") / "qsenn.pt")[0].classifier.weight.numpy()
    v = np.abs(q[q != 0])
    assert np.allclose(v, v[0])  # ternary {-v, 0, +v}
    rounds = metrics_of(cub_run, "qsenn")["rounds"]
    assert [r["lr_scale"] for r in rounds] == pytest.approx([1, 0.9, 0.81, 0.729])
    assert not list(cub_run.rglob("*.ckpt"))
    for name, png in (("qpm", "assignment.png"), ("sldd", "sldd_assignment.png"),
                      ("qsenn", "qsenn_assignment.png")):
        assert (variant(cub_run, name) / png).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_table_and_metrics_json(cub_run, capsys):
    assert main(["evaluate", str(cub_run), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header[-4:] == ["dense", variant(cub_run, "qpm").name, "qsenn-n8-k2", "sldd-n8-k2"]
    for label in ("SID@5", "Diversity@5", "Dependence", "Structural Grounding", "Alignment"):
        assert label in table
    metrics = {name: metrics_of(cub_run, name) for name in ("dense", "qpm", "qsenn", "sldd")}
    for name in ("dense", "qpm", "qsenn", "sldd"):
        m = metrics[name]
        for key in ("accuracy", "n_features", "per_class", "class_independence",
                    "contrastiveness", "correlation", "dependence", "structural_grounding",
                    "alignment"):
            assert m[key] is not None, (name, key)
        assert 0 <= m["class_independence"] <= 1 and 0 <= m["contrastiveness"] <= 1
        assert 1 / m["n_features"] <= m["dependence"] <= 1
    assert metrics["qpm"]["n_features"] <= N and metrics["qpm"]["per_class"] == K
    assert metrics["dense"]["per_class"] == metrics["dense"]["n_features"]


def test_qsenn_fine_tunes_10_10_10_then_the_full_epochs(cub_run, tmp_path, monkeypatch):
    import qpm.pipeline.stages.base as stages

    run_dir = tmp_path / "qsenn"
    shutil.copytree(cub_run, run_dir)
    (variant(run_dir, "qsenn") / "qsenn.pt").unlink()  # dense.pt and features.npz are reused
    epochs, lrs = [], {}
    real_fit = stages.fit

    def spy(model, data, settings, **kw):
        lrs[kw["desc"]] = settings.lr
        return real_fit(model, data, settings, **kw)

    monkeypatch.setattr(stages, "fit", spy)

    cfg = json.loads((cub_run / "config.json").read_text())
    cfg.update(model_type="qsenn", ft_epochs=11, run_dir=str(run_dir))
    run_pipeline(TrainConfig.from_dict(cfg), log=lambda _m: None, glm=GLM,
                 on_epoch_end=lambda stage, epoch: epochs.append(stage))
    rounds = [f"qsenn-round{r}" for r in range(1, 5)]
    assert [epochs.count(r) for r in rounds] == [10, 10, 10, 11]
    ft_lr = TrainConfig.from_dict(cfg).ft_lr
    assert [lrs[r] / ft_lr for r in rounds] == pytest.approx([1, 0.9, 0.81, 0.729])


def test_explain_writes_json_figures_and_page(cub_run, capsys):
    out = cub_run / "page"
    assert main(["explain", str(cub_run), "--out", str(out), "--device", "cpu"]) == 0
    expl = json.loads((out / "explanation.json").read_text())
    assert expl["model_type"] == "qpm" and len(expl["classes"]) == 3
    assert all(len(c["features"]) == K for c in expl["classes"])
    for p in expl["similar_pairs"]:
        assert (out / p["figure"]).read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert page.count('class="class-entry"') == 3
    assert main(["explain", str(cub_run), "--model-type", "sldd", "--device", "cpu",
                 "--split", "train"]) == 0
    assert (variant(cub_run, "sldd") / "explain" / "index.html").exists()


def test_no_finished_model_and_missing_glm_saga_exit_2(cub_run, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((cub_run / "config.json").read_text())
    assert main(["evaluate", str(empty)]) == 2
    assert main(["explain", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no finished model" in err[0]
    monkeypatch.setitem(sys.modules, "glm_saga", None)
    monkeypatch.delitem(sys.modules, "glm_saga.elasticnet", raising=False)
    cfg = json.loads((cub_run / "config.json").read_text())
    other = tmp_path / "other"
    shutil.copytree(cub_run, other)
    shutil.rmtree(variant(other, "sldd"))
    rc = main(["train", "--dataset", "cub2011", "--data-root", cfg["data_root"],
               "--image-size", "32", "--arch", "small-cnn", "--epochs", "1", "--ft-epochs", "1",
               "--batch-size", "8", "--n-features", str(N), "--per-class", str(K),
               "--device", "cpu", "--model-type", "sldd", "--run-dir", str(other)])
    assert rc == 2
    assert "glm-saga" in capsys.readouterr().err


def test_structural_grounding_only_for_cub():
    assert class_attributes_for(TrainConfig(dataset="digits")) is None

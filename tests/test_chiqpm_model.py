"""CHiQPM's model side: the Feature Grounding Loss, the ReLU head, the training step and the
model type end to end on the tiny run (train, closing table, evaluate, load, predict,
explain, a given chiqpm assignment)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import train, variant

import qpm
from qpm import run_folder as rf
from qpm.cli import main
from qpm.models.backbones import create_backbone
from qpm.models.checkpoint import build_model, model_state
from qpm.models.diversity_loss import diversity_loss
from qpm.models.grounding_loss import feature_grounding_loss, off_epoch
from qpm.models.qpm_layer import ChiQPMLayer, QPMLayer
from qpm.pipeline.training import FitSettings, training_step

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_fgl(features: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    """The reference's get_FeatureGroundingLoss (FeatureGroundingLoss.py), one image at a
    time in plain Python: mean over the others x (1 + 1) minus mean over the own features,
    over max(max |f|, 0.01), averaged."""
    out = []
    for f, t in zip(features, target, strict=True):
        own = weight[t]
        n_own = own.sum()
        mean_own = (f * own).sum() / n_own
        mean_rest = (f * (1 - own)).sum() / (weight.shape[1] - n_own) * (1 + 1)
        out.append((mean_rest - mean_own) / max(np.abs(f).max(), 0.01))
    return float(np.mean(out))


def test_grounding_loss_is_the_reference_formula():
    rng = np.random.default_rng(0)
    weight = np.zeros((6, 10))
    for c in range(6):
        weight[c, rng.choice(10, 3, replace=False)] = 1
    feats = np.maximum(rng.normal(size=(16, 10)), 0)
    feats[3] = 0.001  # an image whose features are all tiny: the 0.01 floor
    target = rng.integers(0, 6, 16)
    got = feature_grounding_loss(torch.tensor(feats), torch.tensor(target), torch.tensor(weight))
    assert float(got) == pytest.approx(reference_fgl(feats, target, weight), rel=1e-12)


def test_switch_off_epoch_scales_the_references_30_of_40():
    assert off_epoch(40) == 30 and off_epoch(6) == 5 and off_epoch(10) == 8
    assert off_epoch(2) == 2  # a 2-epoch round keeps it throughout
    s = FitSettings(6, 0.1, 0.9, 0.0, 1, 0.5, 8, grounding=3.0, grounding_off=5)
    assert [s.grounding_at(e) for e in range(6)] == [3.0] * 5 + [0.0]
    assert FitSettings(6, 0.1, 0.9, 0.0, 1, 0.5, 8).grounding_at(0) == 0.0


def _layers(seed: int = 0):
    rng = np.random.default_rng(seed)
    F, C, n = 12, 4, 6
    selected = np.sort(rng.choice(F, n, replace=False))
    matrix = np.zeros((F, C), dtype=np.uint8)
    for c in range(C):
        matrix[rng.choice(selected, 2, replace=False), c] = 1
    train = rng.normal(size=(50, F))
    return (QPMLayer.from_assignment(matrix, selected, train),
            ChiQPMLayer.from_assignment(matrix, selected, train), rng.normal(size=(5, F)))


def test_chiqpm_head_is_the_qpm_layer_with_a_relu():
    plain, chi, x = _layers()
    x = torch.tensor(x, dtype=torch.float32)
    plain.eval(), chi.eval()
    z = plain.layer_input(x)
    assert torch.allclose(chi.layer_input(x), torch.relu(z))
    assert torch.allclose(chi(x), torch.relu(z) @ chi.weight.t())
    assert chi.last_values is None  # kept only in training
    chi.train()
    chi.dropout.p = 0.0
    chi(x)
    assert torch.equal(chi.last_values, chi.layer_input(x))
    assert not any(p.requires_grad for p in chi.parameters())  # normalisation frozen


def test_chiqpm_head_survives_a_model_file():
    _, chi, _ = _layers()
    net = create_backbone("small-cnn", "none", False, 1, 4)
    net.classifier = chi
    rebuilt = build_model(model_state(net, 1, False))
    assert type(rebuilt.classifier) is ChiQPMLayer
    assert torch.equal(rebuilt.classifier.weight, chi.weight)


def test_training_step_adds_the_grounding_loss_on_the_values_it_used():
    _, chi, _ = _layers()
    torch.manual_seed(0)
    net = create_backbone("small-cnn", "none", False, 1, 4)
    net.classifier = chi
    net.train()
    chi.dropout.p = 0.0
    images, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,))
    with_fgl, logits = training_step(net, images, labels, 0.196, grounding=3.0)
    out = net(images)
    maps = out.feature_maps[:, chi.selected]
    expected = (torch.nn.functional.cross_entropy(out.logits, labels)
                + diversity_loss(maps, out.logits, chi.weight, 0.196)
                + 3.0 * feature_grounding_loss(chi.layer_input(out.features), labels, chi.weight))
    assert with_fgl.item() == pytest.approx(expected.item(), rel=1e-5)
    without, _ = training_step(net, images, labels, 0.196)
    assert (with_fgl - without).item() == pytest.approx(
        3.0 * feature_grounding_loss(chi.last_values, labels, chi.weight).item(), rel=1e-4)


# --- the model type end to end ---------------------------------------------------------------


def test_chiqpm_trains_beside_qpm_and_every_command_takes_it(run_copy, tiny_imagefolder,
                                                            tmp_path, capsys):
    code = main(["train", *_flags(), "--data-root", str(tiny_imagefolder), "--run-dir",
                 str(run_copy), "--model-type", "chiqpm"])
    out = capsys.readouterr()
    assert code == 0, out.err
    folder = variant(run_copy, "chiqpm")
    assert folder.name.startswith("chiqpm-n6-k2-chiqpm-highs-")
    result = json.loads((folder / rf.ASSIGNMENT).read_text())
    assert result["preset"] == "chiqpm" and result["rho"] == 0.5 and result["verified"]
    (a, b), = result["forced_pairs"]  # 3 classes: int(0.5 * 3) = 1 pair
    assert len(set(result["assignment"][str(a)]) & set(result["assignment"][str(b)])) == 1
    metrics = json.loads((folder / rf.METRICS).read_text())["chiqpm"]
    assert [r["epochs"] for r in metrics["rounds"]] == [1, 1, 1, 1]
    assert metrics["grounding_loss"] == {"weight": 3.0, "off_epoch": 1}
    # the closing table: CHiQPM beside the run's QPM model, the figures the issue asks for
    table = out.out[out.out.index("CHiQPM beside QPM"):]
    for row in ("Accuracy (%)", "Class pairs sharing k-1", "Forced pairs sharing k-1", "SID@5",
                "Class-Independence", "Contrastiveness", "Correlation"):
        assert row in table
    assert folder.name in table and variant(run_copy).name in table
    assert "1 of 1" in table.split("Forced pairs sharing k-1")[1].splitlines()[0]

    model = qpm.load(run_copy, model_type="chiqpm", device="cpu")
    assert type(model.network.classifier) is ChiQPMLayer and model.variant == folder.name
    images = tiny_imagefolder / "test"
    pred = model.predict(sorted(images.rglob("*.png"))[:2])
    assert all(f.activation >= 0 for f in pred.features[0])  # after the ReLU
    assert main(["predict", str(run_copy), str(images), "--model-type", "chiqpm",
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert main(["explain", str(run_copy), "--model-type", "chiqpm", "--max-figures", "1"]) == 0
    assert (folder / rf.EXPLAIN / "index.html").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run_copy), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "Forced pairs sharing k-1" in table and folder.name in table
    assert "chiqpm" in json.loads((folder / rf.METRICS).read_text())


def test_a_chiqpm_solve_result_trains_and_reverifies(run_copy, tiny_imagefolder, tmp_path,
                                                    capsys):
    sims = run_copy / rf.SIMILARITIES
    result = tmp_path / "r.json"
    assert main(["solve", str(sims), "--solver", "greedy", "--preset", "chiqpm", "--rho", "0.7",
                 "--n-features", "6", "--per-class", "2", "--out", str(result)]) == 0
    saved = json.loads(result.read_text())
    assert saved["rho"] == 0.7 and len(saved["forced_pairs"]) == 2
    code, err = train(run_copy, tiny_imagefolder, capsys, "--model-type", "chiqpm",
                      "--assignment", str(result), "--rho", "0.5")
    assert code == 2 and "--rho 0.5 contradicts --assignment" in err
    code, err = train(run_copy, tiny_imagefolder, capsys, "--model-type", "chiqpm",
                      "--assignment", str(result))
    assert code == 0, err
    given = variant(run_copy, "chiqpm")
    assert given.name.startswith("chiqpm-n6-k2-chiqpm-given-")
    kept = json.loads((given / rf.ASSIGNMENT).read_text())
    assert kept["assignment"] == saved["assignment"] and kept["rho"] == 0.7
    # the same result with other pairs recorded: refused with one line
    saved["forced_pairs"] = [[0, 1]]
    (tmp_path / "other.json").write_text(json.dumps(saved))
    code, err = train(run_copy, tiny_imagefolder, capsys, "--model-type", "qpm",
                      "--assignment", str(tmp_path / "other.json"))
    assert code == 2
    assert "records other forced class pairs" in err.strip().splitlines()[-1]


def _flags() -> list[str]:
    from conftest import TINY_RUN_FLAGS

    return list(TINY_RUN_FLAGS)


def test_rho_needs_a_preset_with_pairs_and_a_sane_value(run_copy, tiny_imagefolder, capsys):
    sims = run_copy / rf.SIMILARITIES
    assert main(["solve", str(sims), "--rho", "0.5", "--solver", "greedy"]) == 2
    assert "--rho applies to presets with forced class pairs" in capsys.readouterr().err
    assert main(["solve", str(sims), "--preset", "chiqpm", "--per-class", "1",
                 "--solver", "greedy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "k = 1" in err[0]
    code, err = train(run_copy, tiny_imagefolder, capsys, "--model-type", "chiqpm", "--rho", "2")
    assert code == 2 and "--rho must be in [0, 1]" in err
    code, err = train(run_copy, tiny_imagefolder, capsys, "--model-type", "chiqpm",
                      "--preset", "qpm")
    assert code == 2 and "needs a preset with forced class pairs" in err

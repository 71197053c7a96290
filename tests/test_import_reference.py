"""qpm import-reference: a checkpoint in the QPM reference's layout becomes a run folder whose
qpm evaluate (and qpm.load) predict what the checkpoint's own forward pass predicts."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from qpm.cli import main
from qpm.data import build_data

pytestmark = pytest.mark.usefixtures("one_thread")

SELECTION = [40, 3, 2047, 17, 900, 5]  # the reference keeps them in its own order
ASSIGN = [[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 1]]  # 3 classes, k = 2


def _reference_net() -> torch.nn.Module:
    """A ResNet-50 as the reference builds it: stride 1 in layer3 and layer4 (its
    ``changed_strides``), so written here independently of qpm's backbone code."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    for layer in (net.layer3, net.layer4):
        layer[0].conv2.stride = (1, 1)
        layer[0].downsample[0].stride = (1, 1)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _reference_forward(net, state, x: torch.Tensor) -> torch.Tensor:
    """The reference's forward: ReLU maps of layer4, selected, average-pooled, normalised with
    (x - mean) / clamp(std, 1e-6), times the weights (no bias for QPM)."""
    n = net
    maps = n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))))
    pooled = maps[:, state["linear.selection"]].mean(dim=(2, 3))
    z = (pooled - state["linear.mean"]) / state["linear.std"].clamp(min=1e-6)
    return z @ state["linear.layer.weight"].t()


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory):
    net = _reference_net()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    gen = torch.Generator().manual_seed(1)
    state.update({
        "linear.selection": torch.tensor(SELECTION),
        "linear.mean": torch.rand(6, generator=gen) * 0.5,
        "linear.std": torch.rand(6, generator=gen) + 0.2,
        "linear.layer.weight": torch.tensor(ASSIGN, dtype=torch.float32),
    })
    path = tmp_path_factory.mktemp("ref") / "qpm_resnet50_cub.pth"
    torch.save(state, path)
    return path, net, state


def test_import_round_trip_gives_the_checkpoints_predictions(reference_checkpoint, tiny_cub,
                                                              tmp_path, capsys):
    path, net, state = reference_checkpoint
    run_dir = tmp_path / "imported"
    assert main(["import-reference", str(path), "--dataset", "cub2011", "--data-root",
                 str(tiny_cub), "--run-dir", str(run_dir), "--image-size", "64"]) == 0
    assert "imported a resnet50 qpm model (3 classes, 6 features" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["recipe"], config["arch"], config["reduced_strides"], config["crop_gt"],
            config["n_features"], config["per_class"]) == ("paper", "resnet50", True, True, 6, 2)

    data = build_data("cub2011", tiny_cub, 64, crop_gt=True)
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    labels = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    with torch.no_grad():
        expected = _reference_forward(net, state, x)
    import qpm

    model = qpm.load(run_dir, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    assert model.global_explanation().classes is not None

    assert main(["evaluate", str(run_dir), "--device", "cpu", "--model-type", "qpm"]) == 0
    capsys.readouterr()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    reference_acc = 100.0 * float((expected.argmax(1) == labels).float().mean())
    assert metrics["qpm"]["accuracy"] == pytest.approx(reference_acc)

    # qpm train would replace the imported model: refused in one line
    assert main(["train", "--dataset", "cub2011", "--data-root", str(tiny_cub), "--image-size",
                 "64", "--n-features", "6", "--per-class", "2", "--run-dir", str(run_dir)]) == 2
    assert "imported from" in capsys.readouterr().err


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_incomplete_or_misplaced_reference_checkpoints_are_one_clear_error(
        reference_checkpoint, tiny_cub, tmp_path, capsys):
    path, _, state = reference_checkpoint
    broken = dict(state)
    del broken["linear.std"]
    bad = tmp_path / "broken.pth"
    torch.save(broken, bad)
    args = ["--dataset", "cub2011", "--data-root", str(tiny_cub)]
    assert main(["import-reference", str(bad), *args, "--run-dir", str(tmp_path / "a")]) == 2
    assert "incomplete: linear.std missing" in _one_line(capsys)
    # as --weights the head would be silently dropped: refused, pointing at the import
    assert main(["train", *args, "--weights", str(path), "--epochs", "1", "--image-size", "32",
                 "--run-dir", str(tmp_path / "b")]) == 2
    assert "qpm import-reference" in _one_line(capsys)
    five = dict(state, **{"linear.layer.weight": torch.eye(5, 6)})
    other = tmp_path / "five.pth"
    torch.save(five, other)
    assert main(["import-reference", str(other), *args, "--run-dir", str(tmp_path / "c")]) == 2
    assert "has 5 classes but cub2011" in _one_line(capsys)


def test_qsenn_layout_with_bias_and_real_weights(reference_checkpoint):
    from qpm.models.sparse_head import SparseHead
    from qpm.pipeline.import_reference import reference_model

    _, net, state = reference_checkpoint
    gen = torch.Generator().manual_seed(2)
    qsenn = dict(state, **{"linear.layer.weight": torch.randn(3, 6, generator=gen),
                           "linear.layer.bias": torch.randn(3, generator=gen)})
    ref = reference_model(qsenn)
    assert ref.model_type == "qsenn" and isinstance(ref.model.classifier, SparseHead)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        expected = _reference_forward(net, qsenn, x) + qsenn["linear.layer.bias"]
        torch.testing.assert_close(ref.model(x).logits, expected, rtol=1e-4, atol=1e-4)

"""The sparse heads' learned normalisation (SLDD, Q-SENN) stays well defined, and diverged
training fails loudly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from qpm.errors import QPMError
from qpm.models.backbones import create_backbone
from qpm.models.qpm_layer import QPMLayer
from qpm.pipeline.training import FitSettings, check_finite_loss, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _layer_with_a_dead_feature(seed: int = 0) -> tuple[QPMLayer, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = rng.random((200, 6)) + 0.5
    feats[:, 0] = 1.0 + 1e-4 * rng.standard_normal(200)  # (nearly) dead on the train set
    feats[:, 1] = 2.0  # exactly constant
    matrix = np.zeros((6, 3), dtype=np.int64)
    for c in range(3):
        matrix[[c, c + 3], c] = 1
    layer = QPMLayer.from_assignment(matrix, range(6), feats, dropout=0.0,
                                     learn_normalisation=True)
    return layer, feats


def _fine_tune(layer: QPMLayer, feats: np.ndarray, shift: float, noise: float
               ) -> tuple[list[float], torch.Tensor]:
    """60 SGD steps (the digits fine-tuning settings) on features ``shift`` times larger than
    the statistics were taken from, as with train-mode BatchNorm after a barely trained
    backbone; the two dead features get ``noise``. Returns the losses and the lowest
    effective std seen, relative to the data's std."""
    torch.manual_seed(0)
    x = shift * torch.tensor(feats, dtype=torch.float32)
    x[:, :2] += noise * torch.rand(len(feats), 2)
    y = torch.randint(0, 3, (len(feats),))
    opt = torch.optim.SGD(layer.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)
    losses, lowest = [], torch.full((layer.n_features,), float("inf"))
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(layer(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        lowest = torch.minimum(lowest, layer.normalisation()[1] / layer.data_std)
    return losses, lowest


def test_dead_features_get_a_floor_relative_to_the_feature_scale():
    layer, _ = _layer_with_a_dead_feature()
    median = layer.data_std.median()
    assert torch.all(layer.data_std[:2] >= 0.05 * median)
    assert torch.all(layer.data_std[:2] < 0.06 * median)  # floored, not left at ~0
    assert torch.all(layer.data_std[2:] > 0.2)  # the live features keep their own spread


def test_learned_scale_never_collapses_under_huge_gradients():
    # z-scores up to ~1e4: a raw std parameter was stepped below zero here and then frozen
    # at its 1e-3 clamp, which multiplied the logits by 1000 (losses ~1e5-1e9).
    layer, feats = _layer_with_a_dead_feature()
    losses, lowest = _fine_tune(layer, feats, shift=30.0, noise=5.0)
    assert all(np.isfinite(losses))
    assert torch.all(lowest >= 0.05 - 1e-6), f"the learned scale collapsed: {lowest}"
    assert torch.all(layer.scale > 0) and torch.all(layer.scale <= 1e3 + 1e-3)


def test_fine_tuning_undoes_a_moderate_shift():
    layer, feats = _layer_with_a_dead_feature()
    losses, _ = _fine_tune(layer, feats, shift=3.0, noise=0.1)
    assert losses[0] > 50  # the shift makes the start bad...
    assert losses[-1] < 1.5  # ...and the scale learns it away (the raw-std layer: 2.6)


def test_weight_decay_pulls_the_scale_to_one_not_zero():
    layer, _ = _layer_with_a_dead_feature()
    opt = torch.optim.SGD(layer.parameters(), lr=1.0, weight_decay=0.1)
    with torch.no_grad():
        layer.log_scale.fill_(1.0)
    for _ in range(100):
        opt.zero_grad()
        (0.0 * layer.mean.sum() + 0.0 * layer.log_scale.sum()).backward()
        opt.step()
    torch.testing.assert_close(layer.scale, torch.ones(6), atol=0.01, rtol=0)


def test_files_with_the_old_std_parameter_still_load():
    layer, feats = _layer_with_a_dead_feature()
    state = layer.state_dict()
    state.pop("log_scale")
    state["std"] = torch.full((6,), 2.0)
    again = QPMLayer.from_state_dict(state)
    again.load_state_dict(state)
    torch.testing.assert_close(again.scale, torch.full((6,), 2.0))
    x = torch.tensor(feats[:4], dtype=torch.float32)
    z = (x - again.data_mean) / again.data_std / 2.0
    torch.testing.assert_close(again.eval()(x), z @ again.weight.t())


def test_check_finite_loss_names_the_stage_and_the_flag():
    check_finite_loss(3.5, "qpm", 1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(QPMError, match=r"'qpm' diverged.*epoch 2") as info:
            check_finite_loss(bad, "qpm", 2)
        assert "--ft-lr" in info.value.fix


def test_diverged_fine_tuning_raises_and_writes_no_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("small-cnn", in_channels=1, num_classes=3)
    matrix = np.zeros((128, 3), dtype=np.int64)
    for c in range(3):
        matrix[[c, c + 3], c] = 1
    model.classifier = QPMLayer.from_assignment(matrix, range(6))
    with torch.no_grad():
        model.classifier.mean[0] = float("nan")  # what an exploded step leaves behind
    data = TensorDataset(torch.randn(16, 1, 28, 28), torch.randint(0, 3, (16,)))
    earlier = tmp_path / "dense.pt"
    earlier.write_bytes(b"finished earlier stage")
    settings = FitSettings(epochs=2, lr=0.01, momentum=0.9, weight_decay=0.0, step_size=1,
                           gamma=1.0, batch_size=8, beta=0.0)
    ckpt = tmp_path / "qpm.ckpt"
    with pytest.raises(QPMError, match="'qpm' diverged") as info:
        fit(model, data, settings, ckpt_path=ckpt, desc="qpm", log=lambda _: None)
    assert "--ft-lr" in info.value.fix
    assert not ckpt.exists()
    assert earlier.read_bytes() == b"finished earlier stage"

"""The QPM head as the reference builds it: frozen training statistics, dropout before them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from qpm.models.backbones import DENSE_DROPOUT, create_backbone
from qpm.models.qpm_layer import QPMLayer
from qpm.pipeline.training import FitSettings, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _assignment(F: int = 128, C: int = 3) -> np.ndarray:
    matrix = np.zeros((F, C), dtype=np.int64)
    for c in range(C):
        matrix[[c, c + 3, 7], c] = 1
    return matrix


def test_mean_and_std_are_the_training_statistics_and_stay_fixed_during_fine_tuning(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("small-cnn", in_channels=1, num_classes=3)
    images = torch.randn(24, 1, 28, 28)
    labels = torch.arange(24) % 3
    with torch.no_grad():
        feats = model.eval()(images).features.numpy()
    layer = QPMLayer.from_assignment(_assignment(), [0, 1, 2, 3, 4, 5, 7], feats)
    chosen = feats[:, [0, 1, 2, 3, 4, 5, 7]]
    np.testing.assert_allclose(layer.mean.numpy(), chosen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.std.numpy(), chosen.std(0), rtol=1e-5)  # population std
    assert list(layer.parameters()) == []  # nothing in the head can be trained
    model.classifier = layer
    mean0, std0 = layer.mean.clone(), layer.std.clone()
    body0 = [p.detach().clone() for p in model.body.parameters()]
    settings = FitSettings(epochs=2, lr=0.05, momentum=0.95, weight_decay=5e-4, step_size=1,
                           gamma=0.4, batch_size=8, beta=0.196)
    fit(model, TensorDataset(images, labels), settings, ckpt_path=tmp_path / "qpm.ckpt",
        desc="qpm", log=lambda _: None)
    assert torch.equal(layer.mean, mean0) and torch.equal(layer.std, std0)
    # ... while the backbone did learn
    assert any(not torch.equal(p, q) for p, q in zip(model.body.parameters(), body0, strict=True))
    mean1, std1 = layer.normalisation()
    assert torch.equal(mean1, mean0) and torch.equal(std1, std0)


def test_dropout_acts_on_the_raw_selected_features_before_normalising():
    rng = np.random.default_rng(0)
    feats = rng.random((50, 10)) * 3 + 1
    matrix = np.zeros((10, 2), dtype=np.int64)
    matrix[[1, 4], 0] = matrix[[4, 8], 1] = 1
    layer = QPMLayer.from_assignment(matrix, [1, 4, 8], feats, dropout=0.5).train()
    x = torch.tensor(feats[:6], dtype=torch.float32)
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    kept = torch.nn.functional.dropout(x[:, [1, 4, 8]], 0.5, training=True)
    expected = ((kept - layer.mean) / layer.std) @ layer.weight.t()
    torch.testing.assert_close(out, expected)
    # A dropped feature contributes (0 - mean) / std, not 0: normalising first would differ.
    assert (kept == 0).any()
    z = (x[:, [1, 4, 8]] - layer.mean) / layer.std
    other = torch.where(kept == 0, torch.zeros_like(z), 2 * z) @ layer.weight.t()
    assert not torch.allclose(out, other)
    assert QPMLayer.from_assignment(matrix, [1, 4, 8], feats).dropout.p == 0.1
    # In eval mode there is no dropout at all.
    torch.testing.assert_close(layer.eval()(x), z @ layer.weight.t())


def test_dense_head_has_dropout_0_2():
    model = create_backbone("small-cnn", in_channels=1, num_classes=3)
    assert DENSE_DROPOUT == 0.2 and model.classifier.dropout.p == 0.2


def test_qpm_head_saves_and_loads_its_statistics():
    from qpm.models.checkpoint import build_model, model_state

    rng = np.random.default_rng(1)
    model = create_backbone("small-cnn", in_channels=1, num_classes=3)
    model.classifier = QPMLayer.from_assignment(_assignment(), [0, 1, 2, 3, 4, 5, 7],
                                                rng.random((40, 128)))
    again = build_model(model_state(model, 1, False))
    assert isinstance(again.classifier, QPMLayer) and not again.classifier.learn_normalisation
    assert torch.equal(again.classifier.std, model.classifier.std)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(again.eval()(x).logits, model.eval()(x).logits)

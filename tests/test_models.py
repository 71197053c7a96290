"""Backbones, the QPM layer, model files and the feature-diversity loss."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from qpm.errors import QPMError
from qpm.models.backbones import backbone_feature_count, create_backbone
from qpm.models.checkpoint import build_model, model_state
from qpm.models.diversity_loss import diversity_loss, relative_softmax_maps
from qpm.models.qpm_layer import QPMLayer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "arch, in_channels, size, reduced, hw, n_features",
    [("small-cnn", 1, 28, False, 7, 128), ("small-cnn", 1, 28, True, 14, 128),
     ("resnet18", 3, 64, False, 2, 512),
     # reduced strides: stride 1 in layer3 and layer4 (2x2 -> 8x8 at 64 px)
     ("resnet18", 1, 64, True, 8, 512)],
)
@torch.no_grad()
def test_backbone_outputs_and_reduced_strides(arch, in_channels, size, reduced, hw, n_features):
    model = create_backbone(arch, "none", reduced, in_channels, num_classes=7).eval()
    out = model(torch.randn(2, in_channels, size, size))
    assert out.logits.shape == (2, 7)
    assert out.feature_maps.shape == (2, n_features, hw, hw)
    assert out.features.shape == (2, n_features)
    torch.testing.assert_close(out.features, out.feature_maps.mean(dim=(2, 3)))
    assert float(out.feature_maps.min()) >= 0  # after ReLU: the locality terms need it
    if arch == "small-cnn":
        assert backbone_feature_count(arch, in_channels) == n_features


def test_unknown_arch_and_missing_timm():
    with pytest.raises(QPMError, match="Unknown architecture"):
        create_backbone("resnet9000")
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(QPMError, match="timm"):
            create_backbone("timm:resnet18")


def test_local_weights_file_round_trip(tmp_path):
    src = create_backbone("resnet18", num_classes=5)
    path = tmp_path / "r18.pth"
    torch.save(src.body.net.state_dict(), path)  # a plain torchvision state dict
    dst = create_backbone("resnet18", weights=str(path), num_classes=9)
    torch.testing.assert_close(dst.body.net.conv1.weight, src.body.net.conv1.weight)
    torch.testing.assert_close(dst.body.net.layer4[1].bn2.running_var,
                               src.body.net.layer4[1].bn2.running_var)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(QPMError, match="Cannot load weights"):
        create_backbone("small-cnn", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(QPMError, match="does not exist"):
        create_backbone("small-cnn", weights=str(tmp_path / "missing.pth"))
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(QPMError, match="do not fit"):
        create_backbone("small-cnn", weights=str(tmp_path / "foreign.pth"))


def test_weights_of_another_architecture_are_refused_naming_the_keys(tmp_path):
    import torchvision

    r34 = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), r34)
    # resnet18's tensors are all in resnet34's file: the extra blocks were dropped silently
    with pytest.raises(QPMError, match=r"do not fit resnet18: tensors unexpected \d+ "
                       r"\(layer1\.2\.conv1\.weight, "):
        create_backbone("resnet18", weights=str(r34))
    r18 = tmp_path / "resnet18.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, r18)
    with pytest.raises(QPMError, match=r"do not fit resnet34: tensors missing \d+ "):
        create_backbone("resnet34", weights=str(r18))
    # torchvision's older files lack BatchNorm's batch counters: still the same network
    old = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    create_backbone("resnet18", weights=str(old), num_classes=3)
    resized = dict(state, **{"layer4.1.bn2.weight": torch.ones(7)})
    torch.save(resized, tmp_path / "resized.pth")
    with pytest.raises(QPMError, match=r"of another shape 1 \(layer4\.1\.bn2\.weight\)"):
        create_backbone("resnet18", weights=str(tmp_path / "resized.pth"))
    # a small-cnn saved by qpm (dense.pt's layout: body., classifier.) loads into a small-cnn
    from qpm.models.checkpoint import model_state

    small = create_backbone("small-cnn", in_channels=1, num_classes=4)
    torch.save(model_state(small, 1, False), tmp_path / "dense.pt")
    again = create_backbone("small-cnn", weights=str(tmp_path / "dense.pt"), in_channels=1)
    torch.testing.assert_close(again.body.layers[0].weight, small.body.layers[0].weight)


def test_named_weights_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: a download would be needed

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(QPMError) as info:
        create_backbone("resnet18", weights="IMAGENET1K_V1")
    assert "--weights /path/to/file.pth" in str(info.value)
    with pytest.raises(QPMError, match="Unknown weights"):
        create_backbone("resnet18", weights="IMAGENET9K")
    with pytest.raises(QPMError, match="no named weights"):
        create_backbone("small-cnn", weights="IMAGENET1K_V1")


def _assignment(F: int = 12, C: int = 4, k: int = 2) -> tuple[np.ndarray, list[int]]:
    selected = [1, 3, 4, 7, 10]
    matrix = np.zeros((F, C))
    for c in range(C):
        matrix[[selected[c], selected[(c + 1) % len(selected)]][:k], c] = 1
    return matrix, selected


def test_qpm_layer_forward_is_the_fixed_binary_sum():
    matrix, selected = _assignment()
    feats = np.random.default_rng(0).random((50, 12))
    layer = QPMLayer.from_assignment(matrix, selected, feats).eval()
    assert layer.n_features == 5 and layer.num_classes == 4
    assert torch.equal(layer.weight.sum(1), torch.full((4,), 2.0))
    assert not any(p is layer.weight for p in layer.parameters())  # fixed, never trained
    x = torch.tensor(feats[:3], dtype=torch.float32)
    z = (x[:, selected] - torch.tensor(feats[:, selected].mean(0), dtype=torch.float32)) \
        / torch.tensor(feats[:, selected].std(0), dtype=torch.float32)
    expected = z @ torch.tensor(matrix[selected], dtype=torch.float32)
    torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)
    assert layer.assignment() == {c: sorted(np.flatnonzero(matrix[:, c]).tolist())
                                  for c in range(4)}


def test_qpm_layer_rejects_bad_assignments():
    with pytest.raises(ValueError, match="0/1"):
        QPMLayer([0, 1], torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="distinct"):
        QPMLayer([2, 2], torch.tensor([[1.0, 1.0]]))
    matrix, selected = _assignment()
    with pytest.raises(QPMError, match="outside its selection"):
        QPMLayer.from_assignment(matrix, selected[:-1])


def test_model_file_round_trip_keeps_the_qpm_layer():
    model = create_backbone("small-cnn", in_channels=1, num_classes=4)
    matrix, selected = _assignment(F=128)
    model.classifier = QPMLayer.from_assignment(matrix, selected)
    with torch.no_grad():
        model.classifier.mean.add_(0.25)
    state = model_state(model, in_channels=1, reduced_strides=False, meta={"accuracy": 1.0})
    again = build_model(state).eval()
    model.eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(again(x).logits, model(x).logits)
    assert isinstance(again.classifier, QPMLayer)
    assert again.classifier.assignment() == model.classifier.assignment()


def test_diversity_loss_matches_definition_and_prefers_spread_features():
    torch.manual_seed(0)
    maps = torch.rand(2, 3, 4, 4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    weight = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, 0.5]])
    # Direct transcription of the definition, one image at a time.
    total = 0.0
    for b in range(2):
        w = weight[logits[b].argmax()].abs()
        w = w / (w.norm() + 1e-5)
        soft = torch.softmax(maps[b].flatten(1), dim=1)
        means = maps[b].flatten(1).mean(1)
        scaled = soft * (means / means.max())[:, None] * w[:, None]
        total += scaled.max(dim=0).values.sum()
    torch.testing.assert_close(diversity_loss(maps, logits, weight, beta=0.5), -0.5 * total / 2)

    def peaked(*spots):
        m = torch.zeros(1, len(spots), 4, 4)
        for f, (i, j) in enumerate(spots):
            m[0, f, i, j] = 8.0
        return m

    w2 = torch.ones(1, 2)
    same = diversity_loss(peaked((1, 1), (1, 1)), torch.zeros(1, 1), w2)
    apart = diversity_loss(peaked((0, 0), (3, 3)), torch.zeros(1, 1), w2)
    assert apart < same  # features of one class at different places lower the loss
    assert diversity_loss(maps, logits, weight, beta=0.0) == 0
    assert relative_softmax_maps(maps).shape == maps.shape

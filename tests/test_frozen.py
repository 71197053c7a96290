"""Frozen backbones: timm ViT patch grids, the DINO-QPM adapter, model files, the token cache,
the L1 penalties and the schedule-free optimizer (tiny timm ViTs, random weights, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qpm.errors import QPMError
from qpm.models.adapter import (
    Adapter,
    AdapterSpec,
    create_model,
    load_trainable,
    set_cache_input,
    trainable_state,
)
from qpm.models.backbones import create_backbone
from qpm.models.checkpoint import build_model, model_state

pytest.importorskip("timm")
pytestmark = pytest.mark.usefixtures("one_thread")

VIT = "timm:vit_tiny_patch16_224"  # 5.5M parameters: a 3 x 3 patch grid at 56 px
SPEC = AdapterSpec(2, 16, 8)


@torch.no_grad()
def test_vit_maps_are_the_normed_patch_tokens_on_the_grid():
    model = create_backbone(VIT, "none", False, 3, 4).eval()
    net = model.body.net
    x = torch.randn(2, 3, 56, 56)
    out = model(x)
    assert out.feature_maps.shape == (2, 192, 3, 3)  # 56 // 16 = 3 patches a side
    tokens = net.forward_features(x[..., :48, :48])[:, net.num_prefix_tokens:]  # CLS dropped
    torch.testing.assert_close(out.feature_maps.flatten(2).transpose(1, 2), tokens)
    torch.testing.assert_close(out.features, tokens.mean(1))  # patch average, not CLS
    big = model(torch.randn(1, 3, 96, 80))  # any size: the position embedding follows
    assert big.feature_maps.shape[2:] == (6, 5)


@torch.no_grad()
def test_adapter_is_one_mlp_per_patch_with_batchnorm_over_patches():
    torch.manual_seed(0)
    adapter = Adapter(6, AdapterSpec(3, 10, 4)).eval()
    for m in adapter.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    maps = torch.randn(2, 6, 3, 5)
    out = adapter(maps)
    assert out.shape == (2, 4, 3, 5) and float(out.min()) >= 0  # ReLU after the last layer
    token = maps[1, :, 2, 4][None]  # one patch through the MLP alone
    torch.testing.assert_close(out[1, :, 2, 4], adapter.layers(token)[0])
    layers = [type(m).__name__ for m in adapter.layers]
    assert layers == ["Linear", "BatchNorm1d", "ReLU"] * 3
    assert [m.out_features for m in adapter.layers if isinstance(m, torch.nn.Linear)] == [10, 10,
                                                                                          4]


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval_mode():
    model = create_model(VIT, "none", False, 3, 4, adapter=SPEC, frozen=True)
    model.train()
    assert not model.body.encoder.training and model.body.adapter.training
    assert all(not p.requires_grad for p in model.body.encoder.parameters())
    before = {k: v.clone() for k, v in model.body.encoder.state_dict().items()}
    out = model(torch.randn(4, 3, 56, 56))
    assert out.feature_maps.shape == (4, 8, 3, 3) and out.features.shape == (4, 8)
    out.logits.sum().backward()
    assert all(p.grad is None for p in model.body.encoder.parameters())
    assert model.body.adapter.layers[0].weight.grad is not None
    assert all(torch.equal(v, model.body.encoder.state_dict()[k]) for k, v in before.items())
    with pytest.raises(QPMError, match="needs the adapter"):
        create_model(VIT, "none", False, 3, 4, adapter=None, frozen=True)


@torch.no_grad()
def test_reading_the_cache_gives_what_the_images_give():
    torch.manual_seed(0)
    model = create_model(VIT, "none", False, 3, 4, adapter=SPEC, frozen=True).eval()
    x = torch.randn(3, 3, 56, 56)
    from_images = model(x).logits
    tokens = model.body.encode(x)
    set_cache_input(model, True)
    torch.testing.assert_close(model(tokens).logits, from_images)
    # float16 tokens, as the cache stores them, change the logits only slightly
    again = model(tokens.half().float()).logits
    torch.testing.assert_close(again, from_images, rtol=2e-2, atol=2e-2)


def test_model_file_round_trip_and_epoch_checkpoints_without_the_backbone():
    torch.manual_seed(0)
    model = create_model(VIT, "none", False, 3, 4, adapter=SPEC, frozen=True).eval()
    state = model_state(model, 3, False, {})
    assert state["adapter"] == SPEC.to_dict() and state["frozen"] is True
    again = build_model(state).eval()
    x = torch.randn(2, 3, 56, 56)
    torch.testing.assert_close(again(x).logits, model(x).logits)
    assert again.body.frozen and not any(p.requires_grad for p in again.body.encoder.parameters())
    light = trainable_state(model)
    assert light and not any(k.startswith("body.encoder.") for k in light)
    other = create_model(VIT, "none", False, 3, 4, adapter=SPEC, frozen=True).eval()
    load_trainable(other, light)
    torch.testing.assert_close(other.body.adapter(model.body.encode(x)),
                               model.body.adapter(model.body.encode(x)))
    with pytest.raises(RuntimeError, match="does not fit"):
        load_trainable(other, {k: v for k, v in light.items() if "adapter" not in k})


def test_weights_pretrained_and_safetensors_files(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from qpm.models.vit import timm_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(QPMError) as info:
        create_backbone("timm:vit_small_patch14_dinov2", "pretrained")
    text = str(info.value)
    path = timm_weights_path("vit_small_patch14_dinov2")
    assert path.name == "vit_small_patch14_dinov2.lvd142m.safetensors"
    assert f"save it as {path}" in text and "downloads nothing" in text
    assert "https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/" \
           "model.safetensors" in text
    src = create_backbone(VIT, "none", False, 3, 2)
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in src.body.net.state_dict().items()},
              str(timm_weights_path("vit_tiny_patch16_224")))
    dst = create_backbone(VIT, "pretrained", False, 3, 2)
    torch.testing.assert_close(dst.body.net.blocks[0].attn.qkv.weight,
                               src.body.net.blocks[0].attn.qkv.weight)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(QPMError, match="Cannot load weights file"):
        create_backbone(VIT, str(tmp_path / "bad.safetensors"))


def test_l1_penalties_add_their_weight_times_the_mean_absolute_value():
    from qpm.models.qpm_layer import QPMLayer
    from qpm.pipeline.training import training_step

    torch.manual_seed(0)
    model = create_model("small-cnn", "none", False, 1, 3, adapter=SPEC, frozen=False).eval()
    matrix = np.zeros((8, 3))
    matrix[[0, 1], 0] = matrix[[2, 3], 1] = matrix[[4, 1], 2] = 1
    model.classifier = QPMLayer.from_assignment(matrix, [0, 1, 2, 3, 4]).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    base, _ = training_step(model, x, y, beta=0.0)
    out = model(x)
    sel = model.classifier.selected
    with_maps, _ = training_step(model, x, y, 0.0, l1_maps=5.0)
    with_both, _ = training_step(model, x, y, 0.0, l1_maps=5.0, l1_features=1.0)
    torch.testing.assert_close(with_maps - base, 5.0 * out.feature_maps[:, sel].abs().mean())
    torch.testing.assert_close(with_both - with_maps, out.features[:, sel].abs().mean())


def test_schedule_free_fit_resumes_exactly_and_ends_on_the_averaged_weights(tmp_path):
    pytest.importorskip("schedulefree")
    from torch.utils.data import TensorDataset

    from qpm.pipeline.training import FitSettings, fit

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 1, 16, 16, generator=g), torch.arange(48) % 3)
    settings = FitSettings(2, 1e-2, 0.9, 1e-4, 1, 0.5, 16, beta=0.1, seed=3,
                           optimizer="adamw-schedulefree")

    def model():
        torch.manual_seed(1)
        return create_model("small-cnn", "none", False, 1, 3, adapter=SPEC)

    straight = model()
    fit(straight, data, settings, ckpt_path=tmp_path / "a.ckpt", log=lambda _: None)
    interrupted = model()  # stopped after its first epoch's checkpoint, then resumed

    class Stop(Exception):
        pass

    def stop(epoch: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        fit(interrupted, data, settings, ckpt_path=tmp_path / "c.ckpt", on_epoch_end=stop,
            log=lambda _: None)
    again = model()
    fit(again, data, settings, ckpt_path=tmp_path / "c.ckpt", log=lambda _: None)
    for (name, a), b in zip(straight.state_dict().items(), again.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, msg=name)
    # fit ends on the evaluation (averaged) weights, not the last step's, which the epoch
    # checkpoint holds (a schedule-free optimizer's training weights)
    from qpm.models.torch_files import load_checkpoint

    stepped = load_checkpoint(tmp_path / "a.ckpt")["model"]["body.adapter.layers.0.weight"]
    assert not torch.allclose(stepped, straight.body.adapter.layers[0].weight)


def _encode_counting(calls: list[int], fail_after: int | None = None):
    """A deterministic "backbone": 2x2 average pooling of the first 3 channels, counting the
    images it sees (and failing once it has seen ``fail_after``)."""

    def encode(x: torch.Tensor) -> torch.Tensor:
        if fail_after is not None and sum(calls) + len(x) > fail_after:
            raise KeyboardInterrupt
        calls.append(len(x))
        return torch.nn.functional.avg_pool2d(x, 2)

    return encode


def test_token_cache_fills_resumes_and_refuses_stale_files(tmp_path, monkeypatch):
    from torch.utils.data import TensorDataset

    from qpm.pipeline import token_cache as tc

    monkeypatch.setattr(tc, "CHUNK", 4)  # a manifest update every 4 images
    images = TensorDataset(torch.randn(10, 3, 8, 8), torch.arange(10) % 2)
    key = {"data": "d1", "weights_sha256": "w1"}
    cache = tc.TokenCache(tmp_path / "tokens", key)
    manifest = {"key": key, "splits": {}}
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):  # killed during the 2nd chunk
        cache.fill(manifest, "train", images, _encode_counting(calls, 6), 2, 0,
                   torch.device("cpu"), lambda _: None)
    found, why = tc.TokenCache(tmp_path / "tokens", key).read_manifest()
    assert why is None and found["splits"]["train"]["done"] == 4  # only finished chunks count
    log: list[str] = []
    calls.clear()
    cache.fill(found, "train", images, _encode_counting(calls), 2, 0, torch.device("cpu"),
               log.append)
    assert sum(calls) == 6 and "images 5-10 of 10" in log[0]  # resumed, not recomputed
    data = cache.dataset("train", found, images.tensors[1].numpy())
    x, y = data[7]
    torch.testing.assert_close(x, torch.nn.functional.avg_pool2d(images.tensors[0][7:8], 2)[0],
                               rtol=1e-3, atol=1e-3)  # float16 on disk
    assert x.dtype == torch.float32 and y == 1 and len(data) == 10
    import pickle

    assert pickle.loads(pickle.dumps(data))[3][1] == 1  # a loader process maps it itself
    other = tc.TokenCache(tmp_path / "tokens", {"data": "d2", "weights_sha256": "w2"})
    assert other.read_manifest() == (None, "the data changed, the weights file changed")
    with open(cache.path("train"), "r+b") as fh:
        fh.truncate(100)
    assert "missing or truncated" in cache.read_manifest()[1]
    cache.clear()
    assert cache.read_manifest() == (None, None) and not cache.path("train").exists()


def test_recipe_dino_is_the_default_for_frozen_backbones_and_vits():
    from qpm.pipeline.stages.base import DENSE_FIELDS, FINETUNE_ONLY
    from qpm.pipeline.stages.qpm import SOLVE_FIELDS
    from qpm.run_folder.config import TrainConfig

    plain = TrainConfig().resolve()
    assert plain.recipe == "scratch" and plain.frozen_backbone is False
    # fields added for frozen backbones are left out of a plain run's records and variant
    # names, so run folders written before them stay valid
    recorded = plain.fingerprint(DENSE_FIELDS + FINETUNE_ONLY + SOLVE_FIELDS)
    assert not {"frozen_backbone", "adapter_layers", "optimizer", "l1_maps", "ft_beta",
                "locality_bias"} & set(recorded)
    frozen = TrainConfig(frozen_backbone=True).resolve()
    assert frozen.recipe == "dino" and frozen.run_dir == "runs/mnist-5k/small-cnn-frozen/0"
    assert frozen.weights == "runs/mnist-5k/small-cnn/0/dense.pt"  # the unfrozen run's
    vit = TrainConfig(dataset="imagefolder", data_root="x", arch=VIT).resolve()
    assert vit.recipe == "dino" and vit.frozen_backbone and vit.weights == "pretrained"
    assert (vit.adapter_layers, vit.adapter_hidden, vit.adapter_features) == (4, 2048, 512)
    assert (vit.optimizer, vit.locality_bias, vit.mip_gap) == ("adamw-schedulefree", "off",
                                                               5e-3)
    assert (vit.beta, vit.ft_beta, vit.l1_maps, vit.l1_features) == (0.5, 1.0, 5.0, 1.0)
    sldd = TrainConfig(dataset="imagefolder", data_root="x", arch=VIT, model_type="sldd")
    assert (sldd.resolve().l1_maps, sldd.resolve().ft_beta) == (0.0, 0.196)
    cnn = TrainConfig(dataset="imagefolder", data_root="x", arch="resnet18").resolve()
    assert cnn.recipe == "scratch" and not cnn.frozen_backbone  # no weights on disk here
    assert TrainConfig(dataset="imagefolder", data_root="x", arch="resnet18",
                       frozen_backbone=True).resolve().weights == "IMAGENET1K_V1"
    with pytest.raises(QPMError, match="needs the adapter"):
        TrainConfig(frozen_backbone=True, adapter_layers=0).resolve()
    with pytest.raises(QPMError, match="--optimizer must be one of"):
        TrainConfig(optimizer="adam").resolve()


def test_a_frozen_runs_model_file_is_a_weights_file_for_its_backbone(tmp_path):
    torch.manual_seed(0)
    model = create_model("small-cnn", "none", False, 1, 3, adapter=SPEC, frozen=True)
    path = tmp_path / "dense.pt"
    torch.save(model_state(model, 1, False, {}), path)
    again = create_model("small-cnn", str(path), False, 1, 5, adapter=SPEC, frozen=True)
    for (name, a), b in zip(model.body.encoder.state_dict().items(),
                            again.body.encoder.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)

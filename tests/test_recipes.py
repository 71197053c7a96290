"""Recipes: the paper's settings per dataset (printed and recorded), strides, transforms."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from qpm.cli import main
from qpm.data import build_data
from qpm.data.transforms import DigitTransform, Lighting
from qpm.errors import QPMError
from qpm.models.backbones import create_backbone
from qpm.models.weights import weights_cache_path
from qpm.run_folder.config import TrainConfig
from qpm.run_folder.recipes import describe, get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_recipe_on_cub_is_printed_and_recorded(tiny_cub, tmp_path, capsys, monkeypatch):
    # No weights on disk and no network: the run records its recipe, then stops at the
    # dense stage with one line saying where the weights file goes.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    run_dir = tmp_path / "run"
    code = main(["train", "--dataset", "cub2011", "--data-root", str(tiny_cub),
                 "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert ("recipe paper for cub2011: resnet50 from weights IMAGENET1K_V1, stride 1 in layer3 "
            "and layer4; images cropped to their boxes, 224 px; train: Resize((224, 224)), "
            "flip, ColorJitter(0.1, 0.1, 0.1), TrivialAugmentWide; test: Resize((224, 224))"
            ) in err
    last = err.strip().splitlines()[-1]
    target = tmp_path / "hub" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert target == weights_cache_path("https://x/resnet50-0676ba61.pth")
    assert last.startswith("qpm train: error:") and f"put it at {target}" in last
    config = json.loads((run_dir / "config.json").read_text())
    expected = {"recipe": "paper", "arch": "resnet50", "weights": "IMAGENET1K_V1",
                "reduced_strides": True, "crop_gt": True, "image_size": 224,
                "transforms": "square", "dense_training": True, "batch_size": 16,
                "epochs": 150, "lr": 0.005, "classifier_lr": 0.01, "step_size": 30,
                "gamma": 0.4, "ft_epochs": 40, "ft_lr": 1e-4, "ft_momentum": 0.95}
    assert {k: config[k] for k in expected} == expected
    assert not (run_dir / "dense.pt").exists()


@torch.no_grad()
def test_resnet50_with_the_papers_strides_gives_28x28_maps_at_224_px():
    model = create_backbone("resnet50", "none", True, 3, num_classes=200).eval()
    net = model.body.net
    for layer in (net.layer3, net.layer4):
        assert layer[0].conv2.stride == (1, 1) and layer[0].downsample[0].stride == (1, 1)
    assert net.layer2[0].conv2.stride == (2, 2)  # only layer3 and layer4 change
    out = model(torch.randn(1, 3, 224, 224))
    assert out.feature_maps.shape == (1, 2048, 28, 28)


def _ops(transform) -> list:
    return list(transform.transforms)


def test_transforms_per_dataset(tiny_cub, tiny_imagefolder):
    cub_stats = ((0.4853, 0.4964, 0.4295), (0.2300, 0.2258, 0.2625))
    cropped = build_data("cub2011", tiny_cub, 224, crop_gt=True)
    train, test = _ops(cropped.train.transform), _ops(cropped.test.transform)
    assert [type(t) for t in train] == [T.Resize, T.RandomHorizontalFlip, T.ColorJitter,
                                        T.TrivialAugmentWide, T.ToTensor, T.Normalize]
    assert train[0].size == (224, 224)  # cropped images: resized to a square, no random crop
    jitter = train[2]
    assert jitter.brightness == jitter.contrast == jitter.saturation == (0.9, 1.1)
    assert jitter.hue is None
    assert tuple(train[-1].mean) == cub_stats[0] and tuple(train[-1].std) == cub_stats[1]
    assert [type(t) for t in test] == [T.Resize, T.ToTensor, T.Normalize]

    for data in (build_data("cub2011", tiny_cub, 224, crop_gt=False),
                 build_data("stanford-cars", tiny_imagefolder, 224)):
        train, test = _ops(data.train.transform), _ops(data.test.transform)
        assert [type(t) for t in train] == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip,
                                            T.ColorJitter, T.TrivialAugmentWide, T.ToTensor,
                                            T.Normalize]
        assert train[0].size == 224 and train[1].padding == 4  # aspect kept, then a crop
        assert [type(t) for t in test] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
        wide = Image.new("RGB", (300, 200), (200, 10, 10))
        assert data.test.transform(wide).shape == (3, 224, 224)

    net = build_data("imagenet", _imagenet_layout(tiny_imagefolder), 224)
    assert [type(t) for t in _ops(net.train.transform)] == [
        T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.ToTensor, Lighting,
        T.Normalize]
    test = _ops(net.test.transform)
    assert [type(t) for t in test] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert test[0].size == 256

    digits = build_data("digits", None, 16)
    assert isinstance(digits.train.transform, DigitTransform) and digits.train.transform.augment


def _imagenet_layout(folder):
    root = folder.parent / "imagenet_layout"
    if not root.exists():
        root.mkdir()
        (root / "train").symlink_to(folder / "train")
        (root / "val").symlink_to(folder / "test")
    return root


def test_recipes_by_dataset_and_the_scratch_default():
    cfg = TrainConfig().resolve()  # the offline default: mnist-5k, from scratch
    assert (cfg.recipe, cfg.arch, cfg.weights, cfg.reduced_strides, cfg.crop_gt,
            cfg.image_size, cfg.transforms, cfg.dense_training, cfg.flip) == (
        "scratch", "small-cnn", "none", False, False, 28, "digits", True, False)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.ft_epochs, cfg.ft_lr) == (
        12, 0.05, 64, 6, 0.005)
    assert TrainConfig(recipe="offline").resolve().recipe == "scratch"  # its earlier name
    imagenet = get_recipe(None, "imagenet")
    assert not imagenet.dense_training and imagenet.schedule["batch_size"] == 64
    assert imagenet.schedule["ft_lr"] == pytest.approx(0.005 * 0.4 ** 4)
    assert get_recipe(None, "stanford-cars").crop_gt is False
    assert get_recipe(None, "travelingbirds").crop_gt is True
    # the recipe's backbone settings apply to ResNets; given values win
    own = TrainConfig(dataset="cub2011", recipe="paper", arch="small-cnn", crop_gt=False,
                      image_size=32, epochs=2).resolve()
    assert (own.weights, own.reduced_strides, own.transforms, own.epochs) == (
        "none", False, "resize-crop", 2)
    with pytest.raises(QPMError, match="Unknown recipe 'fast'"):
        TrainConfig(recipe="fast").resolve()


@pytest.mark.parametrize(("dataset", "arch", "weights", "on_disk", "expected"), [
    ("imagefolder", "small-cnn", None, True, "scratch"),  # the digits folder
    ("imagefolder", None, "none", True, "scratch"),
    ("imagefolder", "timm:resnet18", None, True, "scratch"),
    ("imagefolder", None, None, False, "scratch"),  # pretrained weights not on disk
    ("imagefolder", "resnet18", None, False, "scratch"),
    ("imagefolder", None, None, True, "paper"),  # pretrained weights on disk
    ("imagefolder", None, "IMAGENET1K_V1", False, "paper"),  # asked for: fine-tune them
    ("cub2011", None, None, False, "paper"),  # the paper's datasets keep paper
    ("cub2011", "small-cnn", None, True, "scratch"),
    ("stanford-cars", "resnet50", "none", True, "scratch"),
    ("mnist-5k", None, None, True, "scratch"),
    ("digits", "resnet18", "IMAGENET1K_V1", True, "paper"),
])
def test_the_starting_point_chooses_the_recipe(dataset, arch, weights, on_disk, expected):
    from qpm.run_folder.recipes import choose_recipe

    choice = choose_recipe(dataset, arch, weights, lambda a, w: on_disk)
    assert choice.name == expected and choice.reason
    cfg = TrainConfig(dataset=dataset, arch=arch, weights=weights).resolve(lambda a, w: on_disk)
    assert cfg.recipe == expected
    assert cfg.flip is (expected == "paper")  # the from-scratch recipe never flips
    assert cfg.arch == arch or (arch is None and cfg.arch == (
        "small-cnn" if expected == "scratch" else "resnet50"))


def test_every_recipe_fits_every_dataset():
    from qpm.data import dataset_names
    from qpm.data.transforms import parse
    from qpm.run_folder.recipes import recipe_names

    for dataset in dataset_names():
        for recipe in recipe_names():
            cfg = TrainConfig(dataset=dataset, recipe=recipe).resolve()
            geo, augment, flip = parse(cfg.transforms)
            assert (augment, flip) == {"paper": ("reference", True), "scratch": ("affine", False),
                                       "dino": ("none", False)}[cfg.recipe]
            assert geo == ("digits" if dataset in ("mnist-5k", "digits") else geo)
    # the digits through the reference's PIL transforms (paper on a digit set), and flips
    paper_digits = build_data("digits", None, 32, transforms="digits+reference+flip")
    x, _ = paper_digits.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in paper_digits.train.transform
               .transforms)
    flipped = build_data("digits", None, 16, transforms="digits+affine+flip")
    assert flipped.train.transform.flip and not flipped.test.transform.flip
    with pytest.raises(QPMError, match="do not fit dataset digits"):
        build_data("digits", None, 16, transforms="square")


def test_scratch_on_an_image_folder_does_not_flip_unless_asked(tiny_imagefolder):
    scratch = TrainConfig(dataset="imagefolder", arch="small-cnn").resolve()
    assert scratch.transforms == "resize-crop+affine+noflip"
    ops = _ops(build_data("imagefolder", tiny_imagefolder, 32,
                          transforms=scratch.transforms).train.transform)
    assert [type(t) for t in ops] == [T.Resize, T.CenterCrop, T.RandomAffine, T.ToTensor,
                                      T.Normalize]
    flips = TrainConfig(dataset="imagefolder", arch="small-cnn", flip=True).resolve()
    assert T.RandomHorizontalFlip in [type(t) for t in _ops(build_data(
        "imagefolder", tiny_imagefolder, 32, transforms=flips.transforms).train.transform)]
    # the paper's recipe without its flip (text in natural images), and no augmentation
    paper = TrainConfig(dataset="cub2011", flip=False).resolve()
    assert paper.transforms == "square+reference+noflip"
    assert "no flip" in describe(paper) and "flip," not in describe(paper)
    plain = TrainConfig(dataset="imagefolder", arch="small-cnn", augment="none").resolve()
    assert [type(t) for t in _ops(build_data("imagefolder", tiny_imagefolder, 32,
                                             transforms=plain.transforms).train.transform)] == [
        T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    with pytest.raises(QPMError, match="Unknown augmentation 'wild'"):
        TrainConfig(augment="wild").resolve()


def test_a_run_prints_and_records_its_recipe(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert (config["recipe"], config["augment"], config["flip"], config["transforms"]) == (
        "scratch", "affine", False, "resize-crop+affine+noflip")


def test_skipping_dense_training_takes_the_pretrained_classifier(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None, num_classes=3)
    path = tmp_path / "pretrained.pth"
    torch.save(ref.state_dict(), path)
    model = create_backbone("resnet18", str(path), False, 3, num_classes=3, pretrained_head=True)
    assert torch.equal(model.classifier.linear.weight, ref.fc.weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).logits, ref.eval()(x))
    with pytest.raises(QPMError, match="classifier for this dataset's 5 classes"):
        create_backbone("resnet18", str(path), False, 3, num_classes=5, pretrained_head=True)

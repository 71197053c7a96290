"""Plausibility (DINO-QPM): feature maps against CUB's segmentation masks."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from qpm.data import build_data
from qpm.metrics.cub import segmentations_for
from qpm.metrics.model_eval import evaluate_model, on_grid
from qpm.metrics.plausibility import plausibility, plausibility_per_sample
from qpm.run_folder.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plausibility_is_the_share_of_each_used_maps_peak_inside_the_mask():
    maps = np.zeros((2, 3, 2, 2))
    maps[0, 0] = [[4, 0], [0, 1]]  # peak 4 outside the mask, 1 inside: 0.25
    maps[0, 1] = [[0, 2], [0, 0]]  # peak inside: 1
    maps[0, 2] = [[9, 9], [9, 9]]  # not used by class 0
    maps[1, 0] = -1.0  # never positive: 0
    maps[1, 2] = [[0, 0], [3, 0]]  # peak inside: 1
    mask = np.array([[[False, True], [False, True]], [[False, False], [True, True]]])
    weight = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    scores = plausibility_per_sample(maps, weight, np.array([0, 2]), mask)
    np.testing.assert_allclose(scores, [(0.25 + 1) / 2, (0 + 1) / 2])
    assert plausibility(maps, weight, np.array([0, 2]), mask) == pytest.approx(0.5625)
    # a class without features scores 0
    assert plausibility_per_sample(maps, weight, np.array([1, 1]), mask).tolist() == [0, 0]
    # the reference's cv2.resize(mask) > 0: every cell a bilinear sample touches
    big = torch.zeros(1, 1, 8, 8)
    big[0, 0, 3:5, 3:5] = 1
    assert on_grid(big, (4, 4))[0].tolist() == [[False] * 4, [False, True, True, False],
                                               [False, True, True, False], [False] * 4]


@pytest.fixture
def cub_with_masks(tiny_cub, tmp_path):
    """tiny_cub plus segmentations/: each image's drawn shape (the bright pixels)."""
    root = tmp_path / "cub"
    shutil.copytree(tiny_cub, root)
    base = root / "CUB_200_2011"
    for path in (base / "images").rglob("*.png"):
        pixels = np.asarray(Image.open(path))
        target = base / "segmentations" / path.relative_to(base / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((pixels.max(axis=2) >= 200) * 255).astype(np.uint8)).save(target)
    return root


@pytest.mark.parametrize("crop_gt", [False, True])
def test_masks_land_where_the_test_transform_puts_their_images(cub_with_masks, crop_gt):
    cfg = TrainConfig(dataset="cub2011", data_root=str(cub_with_masks), image_size=32,
                      crop_gt=crop_gt)
    data = build_data("cub2011", cub_with_masks, 32, crop_gt)
    masks = segmentations_for(cfg, data.test)
    assert len(masks) == len(data.test)
    for i in range(len(masks)):
        mask, label = masks[i]
        image, same = data.test[i]
        assert mask.shape == (1, 32, 32) and label == same
        # the object: the bright pixels of the transformed image (un-normalised)
        std = torch.tensor((0.2300, 0.2258, 0.2625))[:, None, None]
        mean = torch.tensor((0.4853, 0.4964, 0.4295))[:, None, None]
        bright = (image * std + mean).amax(0) > 0.6
        agree = ((mask[0] > 0.5) == bright).float().mean()
        assert agree > 0.97


def test_evaluate_reports_plausibility_with_masks_and_a_note_without(cub_with_masks, tiny_cub,
                                                                     caplog):
    from qpm.models.backbones import create_backbone

    cfg = TrainConfig(dataset="cub2011", data_root=str(cub_with_masks), image_size=32)
    data = build_data("cub2011", cub_with_masks, 32)
    torch.manual_seed(0)
    model = create_backbone("small-cnn", "none", False, 3, 3).eval()
    masks = segmentations_for(cfg, data.test)
    result = evaluate_model(model, data.train_eval, data.test, segmentations=masks)
    # the same by hand: the dense head uses every feature
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        out = model(x)
    grid = on_grid(torch.stack([masks[i][0] for i in range(len(masks))]),
                   out.feature_maps.shape[2:])
    expected = plausibility(out.feature_maps.numpy(), model.classifier.linear.weight.detach()
                            .numpy(), out.logits.argmax(1).numpy(), grid)
    assert result["plausibility"] == pytest.approx(expected)
    assert 0 < expected <= 1
    plain = TrainConfig(dataset="cub2011", data_root=str(tiny_cub), image_size=32)
    with caplog.at_level(logging.WARNING):
        assert segmentations_for(plain, build_data("cub2011", tiny_cub, 32).test) is None
    assert "Plausibility skipped" in caplog.text and "segmentations" in caplog.text
    assert segmentations_for(TrainConfig(dataset="digits"), data.test) is None

"""`qpm train --frozen-backbone` end to end on CPU: a tiny timm ViT with random weights at
56 px, every model type on one run folder and one token cache, stale caches recomputed, and
a frozen small CNN from a finished run beside that run's fine-tuned QPM."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_RUN_FLAGS, statuses

pytest.importorskip("timm")
pytest.importorskip("schedulefree")
pytestmark = pytest.mark.usefixtures("one_thread")

VIT_FLAGS = ("--dataset", "imagefolder", "--arch", "timm:vit_tiny_patch16_224",
             "--frozen-backbone", "--image-size", "56", "--epochs", "1", "--ft-epochs", "1",
             "--n-features", "6", "--per-class", "2", "--batch-size", "8", "--solver", "highs",
             "--time-limit", "20", "--adapter-hidden", "32", "--adapter-features", "16",
             "--device", "cpu")


def vit_train(run_dir, data_root, capsys, *extra) -> tuple[int, str]:
    from qpm.cli import main

    capsys.readouterr()
    code = main(["train", *VIT_FLAGS, "--data-root", str(data_root), "--run-dir",
                 str(run_dir), *extra])
    return code, capsys.readouterr().err


def test_frozen_vit_every_model_type_one_token_cache(tiny_imagefolder, tmp_path, capsys):
    from safetensors.torch import save_file

    from qpm.models.backbones import create_backbone

    weights = tmp_path / "vit.safetensors"
    torch.manual_seed(0)
    net = create_backbone("timm:vit_tiny_patch16_224", "none", False, 3, 2).body.net
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    code, err = vit_train(run, tiny_imagefolder, capsys, "--weights", str(weights))
    assert code == 0, err
    assert "recipe dino for imagefolder: frozen timm:vit_tiny_patch16_224" in err
    assert "token cache: computing train tokens, images 1-24 of 24 (192x3x3 per image)" in err
    manifest = json.loads((run / "tokens" / "manifest.json").read_text())
    assert manifest["splits"]["train"] == {"shape": [24, 192, 3, 3], "done": 24}
    assert (run / "tokens" / "train.f16").stat().st_size == 24 * 192 * 9 * 2
    config = json.loads((run / "config.json").read_text())
    assert (config["recipe"], config["optimizer"], config["locality_bias"]) == (
        "dino", "adamw-schedulefree", "off")
    for model_type in ("sldd", "qsenn", "chiqpm"):  # the same dense model, features and tokens
        code, err = vit_train(run, tiny_imagefolder, capsys, "--weights", str(weights),
                              "--model-type", model_type)
        assert code == 0, err
        assert statuses(err)["dense"] == statuses(err)["features"] == "skipped"
        assert "token cache: reusing tokens/ (train 24 x 192x3x3, test 9 x 192x3x3" in err
    # the trained model reads images through the frozen ViT (no cache outside training)
    import qpm

    model = qpm.load(run, device="cpu")
    image = next((tiny_imagefolder / "test").rglob("*.png"))
    expl = model.explain(str(image))
    feature = expl.features[0].index
    assert expl.maps[feature].shape == (3, 3)  # the patch grid
    assert expl.heatmap(feature).shape == (56, 56)  # upsampled to the image
    # new weights in the same file: every stage recomputed, the cache too, and the log says so
    torch.manual_seed(1)
    net = create_backbone("timm:vit_tiny_patch16_224", "none", False, 3, 2).body.net
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    code, err = vit_train(run, tiny_imagefolder, capsys, "--weights", str(weights))
    assert code == 0, err
    assert "[dense] dense.pt was computed from other weights; recomputing" in err
    assert ("token cache: tokens/ does not fit this run (the weights file changed); "
            "recomputing it") in err
    # other data: the run folder (and so its cache) is refused before any work
    other = tmp_path / "other"
    for path in tiny_imagefolder.rglob("*.png"):
        target = other / path.relative_to(tiny_imagefolder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes() + b"\0")  # other file sizes
    code, err = vit_train(run, other, capsys, "--weights", str(weights))
    assert code == 2 and "was trained on other data" in err


def test_frozen_small_cnn_of_a_finished_run_beside_its_fine_tuned_qpm(trained_run, tmp_path,
                                                                      tiny_imagefolder, capsys):
    from qpm.cli import main

    capsys.readouterr()
    code = main(["train", *TINY_RUN_FLAGS, "--data-root", str(tiny_imagefolder), "--run-dir",
                 str(tmp_path / "frozen"), "--frozen-backbone", "--weights",
                 str(trained_run / "dense.pt"), "--adapter-hidden", "32",
                 "--adapter-features", "16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "recipe dino for imagefolder: frozen small-cnn from weights" in out
    assert f"the same backbone fine-tuned ({trained_run}, variant qpm-n6-k2-" in out
    assert "frozen backbone + adapter (this run): dense " in out
    dense = torch.load(tmp_path / "frozen" / "dense.pt", weights_only=True)["state_dict"]
    source = torch.load(trained_run / "dense.pt", weights_only=True)["state_dict"]
    for key, value in source.items():  # the finished run's backbone, unchanged
        if key.startswith("body."):
            torch.testing.assert_close(dense["body.encoder." + key[5:]], value)


def test_frozen_digits_without_the_unfrozen_run_is_one_line(tmp_path, capsys, monkeypatch):
    from qpm.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["train", "--dataset", "digits", "--frozen-backbone"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert ("frozen backbone is the dense model of runs/digits/small-cnn/0, which is not "
            "trained yet") in err[0]
    assert "qpm train --dataset digits --arch small-cnn --run-dir runs/digits/small-cnn/0" \
        in err[0]

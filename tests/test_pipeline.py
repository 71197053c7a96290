"""`qpm train` end to end on generated data: stages, resume, corruption, bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import variant

from qpm.assignment.cache import load_similarities
from qpm.cli import main
from qpm.data import build_data
from qpm.errors import QPMError
from qpm.io import ArtifactError, write_json
from qpm.models.checkpoint import load_model
from qpm.models.qpm_layer import QPMLayer
from qpm.models.torch_files import load_checkpoint, save_torch
from qpm.pipeline.bias import BIAS_SCALE, locality_bias, main_cluster_range
from qpm.pipeline.run import run_pipeline
from qpm.run_folder.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--epochs", "1", "--ft-epochs", "1", "--device", "cpu", "--image-size", "32",
        "--arch", "small-cnn"]


def check_qpm_model(run_dir, n: int, k: int, n_classes: int) -> QPMLayer:
    folder = variant(run_dir)
    model, meta = load_model(folder / "qpm.pt")
    layer = model.classifier
    assert isinstance(layer, QPMLayer)
    w = layer.weight.numpy()
    assert w.shape == (n_classes, n)
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert np.all(w.sum(axis=1) == k)  # exactly k features per class
    assert layer.selected.unique().numel() == n  # n distinct selected features
    if n_classes * k >= n:
        assert np.all(w.sum(axis=0) >= 1)  # every selected feature is used
    assert len({tuple(row) for row in w}) == n_classes  # no two classes alike
    assignment = json.loads((folder / "assignment.json").read_text())
    assert sorted(assignment["selected_features"]) == sorted(layer.selected.tolist())
    assert meta["assignment"] == {str(c): f for c, f in layer.assignment().items()}
    return layer


class Recorder:
    def __init__(self, stop_at: tuple[str, int] | None = None) -> None:
        self.epochs: list[tuple[str, int]] = []
        self.lines: list[str] = []
        self.stop_at = stop_at

    def hook(self, stage: str, epoch: int) -> None:
        self.epochs.append((stage, epoch))
        if (stage, epoch) == self.stop_at:
            raise KeyboardInterrupt

    def run(self, cfg: TrainConfig):
        return run_pipeline(cfg, log=self.lines.append, on_epoch_end=self.hook)


def test_digits_pipeline_resume_skip_corrupt_and_config_guard(tmp_path):
    run_dir = tmp_path / "run"
    # 8x8 inputs and the greedy solver keep the six partial runs below quick.
    cfg = TrainConfig(dataset="digits", image_size=8, epochs=2, ft_epochs=1, n_features=12,
                      per_class=2, batch_size=64, solver="greedy", time_limit=3, device="cpu",
                      run_dir=str(run_dir))

    # 1. Interrupted after the first dense epoch: a checkpoint, no dense.pt.
    first = Recorder(stop_at=("dense", 1))
    with pytest.raises(KeyboardInterrupt):
        first.run(cfg)
    assert (run_dir / "dense.ckpt").exists() and not (run_dir / "dense.pt").exists()
    assert load_checkpoint(run_dir / "dense.ckpt")["epoch"] == 1

    # 2. The re-run resumes at epoch 2 and finishes every stage.
    second = Recorder()
    summary = second.run(cfg)
    assert any("resuming from the checkpoint after epoch 1/2" in line for line in second.lines)
    assert second.epochs == [("dense", 2), ("qpm", 1)]
    assert [s.status for s in summary.stages] == ["ran"] * 5
    assert not (run_dir / "dense.ckpt").exists()
    assert not (variant(run_dir) / "qpm.ckpt").exists()
    check_qpm_model(run_dir, n=12, k=2, n_classes=10)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    own = json.loads((variant(run_dir) / "metrics.json").read_text())
    assert metrics["dense"]["accuracy"] > 30 and own["qpm"]["accuracy"] > 30
    assert set(metrics["seconds"]) == {"dense", "features", "similarities"}
    assert set(own["seconds"]) == {"assignment", "qpm"}
    assert summary.metrics["qpm"] == own["qpm"] and summary.variant_dir == variant(run_dir)
    for folder in (run_dir, variant(run_dir)):
        saved = TrainConfig.from_dict(json.loads((folder / "config.json").read_text()))
        assert saved == cfg.resolve()

    # 3. Same config again: everything skipped, nothing rewritten.
    mtime = (run_dir / "dense.pt").stat().st_mtime_ns
    third = Recorder()
    summary = third.run(cfg)
    assert [s.status for s in summary.stages] == ["skipped"] * 5 and third.epochs == []
    assert (run_dir / "dense.pt").stat().st_mtime_ns == mtime

    # 4. A corrupt features.npz is detected; it and the later stages are recomputed.
    (run_dir / "features.npz").write_bytes(b"PK\x03\x04 truncated")
    fourth = Recorder()
    summary = fourth.run(cfg)
    assert any("features.npz is corrupt" in line for line in fourth.lines)
    assert [s.status for s in summary.stages] == ["skipped"] + ["ran"] * 4
    assert (run_dir / "dense.pt").stat().st_mtime_ns == mtime
    check_qpm_model(run_dir, n=12, k=2, n_classes=10)

    # 5. A config that changes a finished stage is refused with the way out.
    with pytest.raises(QPMError) as info:
        run_pipeline(replace(cfg, epochs=3), log=lambda _: None)
    assert "different config" in str(info.value) and "--force dense" in str(info.value)
    with pytest.raises(QPMError, match="qpm.pt"):
        run_pipeline(replace(cfg, ft_epochs=2), log=lambda _: None)

    # 6. ... and deleting only what the change affects re-runs only that.
    (variant(run_dir) / "qpm.pt").unlink()
    fifth = Recorder()
    summary = fifth.run(replace(cfg, ft_epochs=2))
    assert [s.status for s in summary.stages] == ["skipped"] * 4 + ["ran"]
    assert fifth.epochs == [("qpm", 1), ("qpm", 2)]


def test_cub_layout_with_crop_via_cli(tiny_cub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    import qpm.pipeline.stages.shared as stages

    calls, real_extract = [], stages.extract

    def extract(*args, **kwargs):  # the features A, R and b come from are float32
        calls.append((kwargs.get("desc"), kwargs.get("autocast", True)))
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(stages, "extract", extract)
    run_dir = tmp_path / "cub"
    args = ["train", "--dataset", "cub2011", "--data-root", str(tiny_cub), "--crop-gt",
            *FAST, "--n-features", "6", "--per-class", "2", "--batch-size", "6",
            "--run-dir", str(run_dir)]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0
    # stderr is captured (not a terminal): no progress bar, one plain line per epoch
    assert "\r" not in err and "it/s" not in err
    epochs = [line for line in err.splitlines() if " epoch " in line]
    assert len(epochs) == 2 and all(": loss " in line for line in epochs)  # dense + ft
    assert "[assignment] done in" in err
    assert ("features train", False) in calls and ("features test", False) in calls
    # the run's problem travels with its similarities (qpm solve/compare solve the same one)
    sims = load_similarities(run_dir / "similarities.npz")
    assert sims.settings == {"n_features": 6, "per_class": 2, "preset": "qpm",
                             "tau_rule": "paper"}
    assert main([*args, "-q"]) == 0  # every stage finished: -q says nothing
    assert capsys.readouterr().err == ""
    assert "dense accuracy:" in out and "qpm accuracy:" in out and "seconds per stage:" in out
    assert "class 001.red_disc: features" in out and "shared" in out
    check_qpm_model(run_dir, n=6, k=2, n_classes=3)
    data = build_data("cub2011", tiny_cub, 32, crop_gt=True)
    assert len(data.train) == 18 and len(data.test) == 9 and data.num_classes == 3


def test_imagefolder_with_reduced_strides(tiny_imagefolder, tmp_path):
    run_dir = tmp_path / "folder"
    cfg = TrainConfig(dataset="imagefolder", data_root=str(tiny_imagefolder), arch="small-cnn",
                      reduced_strides=True, image_size=32, epochs=1, ft_epochs=1, n_features=8,
                      per_class=2, batch_size=8, solver="highs", device="cpu",
                      run_dir=str(run_dir))
    summary = run_pipeline(cfg, log=lambda _: None)
    assert [s.status for s in summary.stages] == ["ran"] * 5
    check_qpm_model(run_dir, n=8, k=2, n_classes=3)
    features = np.load(run_dir / "features.npz", allow_pickle=False)
    assert features["features"].shape == (24, 128) and features["test_features"].shape == (9, 128)
    assert tuple(features["map_size"]) == (16, 16)  # 32 px, one pooling left out of two


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("qpm train: error:")
    return err[-1]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cub2011"], "needs --data-root"),
    (["--dataset", "cub2011", "--data-root", "/nonexistent/qpm"], "images.txt"),
    (["--dataset", "imagefolder", "--data-root", "/nonexistent/qpm"], "train/"),
    (["--dataset", "no-such-set"], "Unknown dataset"),
    (["--dataset", "digits", "--arch", "resnet9000"], "Unknown architecture"),
    (["--dataset", "digits", "--weights", "NOPE"], "weights"),
    (["--dataset", "digits", "--n-features", "500"], "larger than the 128 features"),
    (["--dataset", "digits", "--per-class", "1", "--n-features", "2"], "distinct sets"),
    (["--dataset", "digits", "--epochs", "-1"], "--epochs must be positive"),
    (["--dataset", "digits", "--solver", "cplex9"], "invalid choice"),
    (["--dataset", "digits", "--preset", "nope"], "Unknown preset"),
])
def test_bad_inputs_exit_2(args, message, tmp_path, capsys):
    try:
        code = main(["train", *args, "--run-dir", str(tmp_path / "r")])
    except SystemExit as exc:  # argparse refused an argument (e.g. --solver, from choices)
        code = exc.code
    assert code == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "r" / "dense.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--device", "cuda",
                 "--run-dir", str(tmp_path)]) == 2
    assert "no CUDA GPU" in _error_line(capsys)


def test_malformed_cub_and_weights_needing_network(tiny_cub, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "badcub"
    shutil.copytree(tiny_cub, bad)
    (bad / "CUB_200_2011" / "images.txt").write_text("1 a.png\nthis line is broken\n")
    assert main(["train", "--dataset", "cub2011", "--data-root", str(bad),
                 "--run-dir", str(tmp_path / "r1")]) == 2
    assert "malformed" in _error_line(capsys)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["train", "--dataset", "digits", "--arch", "resnet18", "--weights",
                 "IMAGENET1K_V1", "--run-dir", str(tmp_path / "r2")]) == 2
    assert "--weights /path/to/file.pth" in _error_line(capsys)


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path):
    run_dir = tmp_path / "run"
    cfg = TrainConfig(dataset="digits", image_size=8, epochs=1, ft_epochs=1, n_features=12,
                      per_class=2, batch_size=256, solver="greedy", time_limit=3, device="cpu",
                      run_dir=str(run_dir))
    run_dir.mkdir()  # as a first run killed during dense training leaves it
    write_json(run_dir / "config.json", cfg.resolve().to_dict())
    save_torch(run_dir / "dense.ckpt", {"key": {"stage": "other"}, "epoch": 5})
    rec = Recorder(stop_at=("dense", 1))
    with pytest.raises(KeyboardInterrupt):
        rec.run(cfg)
    assert any("written for other settings" in line for line in rec.lines)
    assert rec.epochs == [("dense", 1)]


def test_artifact_loading_rejects_garbage(tmp_path):
    path = tmp_path / "x.pt"
    save_torch(path, {"a": torch.ones(2)})
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArtifactError, match="corrupt"):
        load_checkpoint(path)


def test_locality_bias_scale_and_border_penalty():
    rng = np.random.default_rng(0)
    locality = rng.normal(0.3, 0.02, 64)
    locality[0] = 0.9  # an outlier: clipped to the main cluster's edge
    edge = rng.normal(0.1, 0.01, 64)
    b = locality_bias(locality, edge)
    assert b.shape == (64,)
    assert abs(b.mean()) < 1e-9
    assert np.isclose(np.abs(b).max(), BIAS_SCALE)
    border_heavy = np.argsort(edge)[-8:]  # peak on the border more often than average
    assert np.all(b[border_heavy] == b.min())
    central = np.setdiff1d(np.argsort(edge)[:24], [0])
    order = np.argsort(locality[central])
    assert np.all(np.diff(b[central][order]) >= -1e-12)  # otherwise ordered by locality


def test_outlier_range_is_mean_shift_with_its_default_settings():
    from sklearn.cluster import MeanShift, estimate_bandwidth

    values = np.random.default_rng(0).gamma(2.0, 1.0, 60)
    x = values.reshape(-1, 1)

    def biggest(labels):
        members = x[labels == np.bincount(labels).argmax(), 0]
        return float(members.min()), float(members.max())

    assert main_cluster_range(values) == biggest(MeanShift().fit(x).labels_)
    # bin seeding (not the reference's setting) clusters these differently
    seeded = MeanShift(bandwidth=estimate_bandwidth(x), bin_seeding=True).fit(x).labels_
    assert main_cluster_range(values) != biggest(seeded)


def test_other_folder_layouts(tiny_cub, tiny_imagefolder, tmp_path):
    # TravelingBirds: every image in both CUB_fixed folders, CUB's split decides.
    birds = tmp_path / "birds"
    shutil.copytree(tiny_cub / "CUB_200_2011", birds / "CUB_200_2011")
    for split in ("train", "test"):
        shutil.copytree(tiny_cub / "CUB_200_2011" / "images", birds / "CUB_fixed" / split)
    data = build_data("travelingbirds", birds, 32)
    assert (len(data.train), len(data.test), data.num_classes) == (18, 9, 3)
    assert all("CUB_fixed/test" in str(p) for p in data.test.split.paths)
    # ImageNet: train/ + val/; Stanford Cars also accepts train/ + test/.
    net = tmp_path / "imagenet"
    shutil.copytree(tiny_imagefolder / "train", net / "train")
    shutil.copytree(tiny_imagefolder / "test", net / "val")
    assert len(build_data("imagenet", net, 32).test) == 9
    assert len(build_data("stanford-cars", tiny_imagefolder, 32).train) == 24
    x, y = build_data("stanford-cars", tiny_imagefolder, 32).train[0]
    assert x.shape == (3, 32, 32) and y == 0
    with pytest.raises(QPMError, match="CUB_fixed"):
        build_data("travelingbirds", tiny_cub, 32)

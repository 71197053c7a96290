"""Re-running a run folder: the flags not given come from its config.json, only the flags
given can differ, and 0 stays a value (never "not given")."""

from __future__ import annotations

import json

import pytest
from conftest import statuses, variant

from qpm import run_folder as rf
from qpm.cli import main
from qpm.run_folder.config import rerun_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["train", *args])
    return code, capsys.readouterr().err


def test_a_bare_rerun_takes_every_setting_from_the_folder(run_copy, capsys):
    # The tiny run was trained with a dozen flags (conftest.TINY_RUN_FLAGS); none repeated.
    before = json.loads((run_copy / rf.CONFIG).read_text())
    code, err = _train(capsys, "--run-dir", str(run_copy))
    assert code == 0, err
    assert set(statuses(err).values()) == {"skipped"}
    assert f"re-running {run_copy}: the settings not given come from its config.json" in err
    after = json.loads((run_copy / rf.CONFIG).read_text())
    runtime = ("workers", "device", "run_dir")  # where it runs (and the copy's own folder)
    assert {k: v for k, v in after.items() if k not in runtime} == {
        k: v for k, v in before.items() if k not in runtime}


def test_only_the_flags_given_can_differ(run_copy, capsys):
    code, err = _train(capsys, "--run-dir", str(run_copy), "--n-features", "5")
    assert code == 0, err
    assert statuses(err) == {"dense": "skipped", "features": "skipped",
                             "similarities": "skipped", "assignment": "ran", "qpm": "ran"}
    assert "(given: --n-features)" in err
    assert any(p.name.startswith("qpm-n5-k2-qpm-highs-") for p in (run_copy / "variants")
               .iterdir())
    # a given value that differs from what a finished stage was made with: the usual refusal,
    # naming that flag alone
    code, err = _train(capsys, "--run-dir", str(run_copy), "--epochs", "2")
    last = err.strip().splitlines()[-1]
    assert code == 2 and "different config (epochs 1 -> 2)" in last


def test_zero_is_a_value_not_unset(run_copy, capsys):
    for flag in ("--n-features", "--per-class", "--batch-size"):
        code, err = _train(capsys, "--run-dir", str(run_copy), flag, "0")
        assert code == 2 and f"{flag} must be positive, got 0" in err, (flag, err)
    assert len(list((run_copy / "variants").iterdir())) == 1  # nothing was trained


def test_rerun_settings_rules(tmp_path):
    folder = tmp_path / "run"
    assert rerun_settings(folder, {"epochs": 3}) == ({"epochs": 3}, "")  # a new folder
    folder.mkdir()
    recorded = {"dataset": "imagefolder", "recipe": "scratch", "arch": "small-cnn",
                "weights": "none", "reduced_strides": False, "image_size": 32, "epochs": 12,
                "seed": 0, "device": "cuda", "workers": 4, "assignment": "r.json",
                "transforms": "resize-crop+affine+noflip", "flip": False}
    (folder / rf.CONFIG).write_text(json.dumps(recorded))
    settings, line = rerun_settings(folder, {"seed": 0, "epochs": 0})
    assert settings["epochs"] == 0 and settings["seed"] == 0 and settings["image_size"] == 32
    for runtime in ("device", "workers", "assignment", "transforms"):
        assert runtime not in settings  # where it runs, and what is derived, are not re-used
    assert "(given: --seed, --epochs)" in line
    # another recipe decides its own values; another arch its own weights and strides
    paper, _ = rerun_settings(folder, {"recipe": "paper"})
    assert paper["recipe"] == "paper" and "arch" not in paper and "image_size" not in paper
    assert rerun_settings(folder, {"recipe": "offline"})[0]["arch"] == "small-cnn"  # alias
    other, _ = rerun_settings(folder, {"arch": "resnet18"})
    assert other["arch"] == "resnet18" and "weights" not in other and other["image_size"] == 32
    # another dataset: nothing of the folder applies; an unreadable config: said, not used
    assert rerun_settings(folder, {"dataset": "digits"}) == ({"dataset": "digits"}, "")
    (folder / rf.CONFIG).write_text("{broken")
    settings, line = rerun_settings(folder, {"epochs": 1})
    assert settings == {"epochs": 1} and "is unreadable" in line


def test_the_default_folder_is_rerun_too(tiny_imagefolder, tmp_path, capsys, monkeypatch):
    # Without --run-dir the folder is runs/DATASET/ARCH/SEED: found from the flags given.
    monkeypatch.chdir(tmp_path)
    flags = ["--dataset", "imagefolder", "--data-root", str(tiny_imagefolder), "--arch",
             "small-cnn", "--image-size", "16", "--epochs", "1", "--ft-epochs", "1",
             "--per-class", "2", "--batch-size", "8", "--solver", "greedy", "--device", "cpu"]
    code, err = _train(capsys, *flags)
    assert code == 0, err
    assert "recipe scratch: small-cnn starts from scratch" in err
    run_dir = tmp_path / "runs" / "imagefolder" / "small-cnn" / "0"
    assert variant(run_dir).name.startswith("qpm-n6-k2-")  # n from 3 classes x k=2
    code, err = _train(capsys, "--dataset", "imagefolder", "--arch", "small-cnn")
    assert code == 0, err
    assert set(statuses(err).values()) == {"skipped"}

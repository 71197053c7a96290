"""Builders of the inputs of ``test_lost_work.py`` (issue 23's probe): files a command must not
destroy, run folders with a planted link, a swapped model or a folder in a file's place,
reference checkpoints with a broken final layer, and CUB boxes that are not numbers."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from cases import Env, edit_json, other_data
from conftest import TINY_RUN_FLAGS, variant

from qpm import run_folder as rf
from qpm.io import write_json


@dataclass
class LostEnv(Env):
    """:class:`cases.Env` plus a run with two QPM variants (n=6 and n=4), the state dict of a
    ResNet-18 reference checkpoint (3 classes) and the tiny CUB folder."""

    variants: Path = None
    reference: dict = None
    cub: Path = None


def own_variant(run: Path, start: str = "qpm-n6") -> Path:
    found = sorted((run / rf.VARIANTS).glob(f"{start}*"))
    assert len(found) == 1, found
    return found[0]


def own_two(env: LostEnv) -> Path:
    """A copy of the two-variant run that this case may edit."""
    dst = env.tmp / "two"
    if not dst.exists():
        shutil.copytree(env.variants, dst)
    return dst


# --- files a command must not destroy ----------------------------------------------------------


def photo(env: Env, name: str = "photo.png", folder: str = "") -> str:
    """A copy of a test image under ``folder`` of the case's own folder (any suffix: Pillow
    reads the content)."""
    src = sorted((env.data / "test").rglob("*.png"))[0]
    dst = env.tmp / folder / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return str(dst)


def link(env: Env, name: str, target: str) -> str:
    path = env.tmp / name
    path.symlink_to(target)
    return str(path)


def notes(env: Env) -> Path:
    path = env.tmp / "notes.txt"
    path.write_text("my notes: never to be emptied\n")
    return path


def documents(env: Env, config: bool = True) -> str:
    """Someone's folder: a data.json (and a config.json) of another program, and notes."""
    folder = env.tmp / "documents"
    folder.mkdir()
    if config:
        (folder / "config.json").write_text('{"theme": "dark"}\n')
    (folder / "data.json").write_text('{"rows": [1, 2, 3]}\n')
    (folder / "notes.txt").write_text("mine\n")
    return str(folder)


def thesis(env: Env) -> str:
    folder = env.tmp / "thesis"
    folder.mkdir()
    (folder / "thesis.pdf").write_bytes(b"%PDF-1.4 mine")
    return str(folder)


# --- run folders with something planted ---------------------------------------------------------


def lock_link(env: Env, hard: bool = False) -> str:
    run = env.own_run()
    (run / rf.LOCK).unlink(missing_ok=True)
    if hard:
        os.link(notes(env), run / rf.LOCK)
    else:
        (run / rf.LOCK).symlink_to(notes(env))
    return str(run)


def new_folder_with_lock_link(env: Env) -> str:
    folder = env.tmp / "new-run"
    folder.mkdir()
    (folder / rf.LOCK).symlink_to(notes(env))
    return str(folder)


def relocated(env: Env) -> str:
    """The own run whose config files name where it now is (a no-op train rewrites nothing)."""
    run = env.own_run()
    for path in [run / rf.CONFIG, *run.glob(f"{rf.VARIANTS}/*/{rf.CONFIG}")]:
        write_json(path, {**json.loads(path.read_text()), "run_dir": str(run)})
    return str(run)


def without_data_json(env: Env) -> str:
    run = env.own_run()
    (run / rf.DATA).unlink()
    return str(run)


def as_folder(env: Env, rel: str, start: str | None = None) -> str:
    """The own run with the file ``rel`` (of the run, or of its variant ``start``) replaced
    by a folder holding one file."""
    run = env.own_run()
    base = own_variant(run, start) if start else run
    path = base / rel
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("x")
    return str(run)


def rehashed(run: Path, folder: Path, model_type: str = "qpm") -> None:
    """Make the stage record name the model file's current content (the trust check passes:
    what a real training that went wrong would have recorded)."""
    edit_json(rf.record_path(folder, model_type),
              lambda d: {**d, "output": rf.file_hash(folder / rf.model_file(model_type))})


def edited_model(env: Env, edit) -> str:
    """The own run with its qpm.pt changed by ``edit(checkpoint dict)`` and re-recorded."""
    run = env.own_run()
    folder = variant(run)
    ckpt = torch.load(folder / "qpm.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, folder / "qpm.pt")
    rehashed(run, folder)
    return str(run)


def set_mean(value: float):
    def edit(ckpt):
        ckpt["state_dict"]["classifier.mean"][0] = value
    return edit


def set_meta(value):
    def edit(ckpt):
        ckpt["meta"] = value
    return edit


def swapped(env: LostEnv) -> str:
    """The two-variant run with the n=6 variant's model and record copied into the n=4 one."""
    run = own_two(env)
    a, b = own_variant(run, "qpm-n6"), own_variant(run, "qpm-n4")
    shutil.copy(a / "qpm.pt", b / "qpm.pt")
    shutil.copy(a / rf.RECORDS / "qpm.json", b / rf.RECORDS / "qpm.json")
    return str(run)


def unrecorded(env: LostEnv) -> str:
    """The two-variant run whose n=4 variant lost its record and holds the n=6 model."""
    run = own_two(env)
    a, b = own_variant(run, "qpm-n6"), own_variant(run, "qpm-n4")
    shutil.copy(a / "qpm.pt", b / "qpm.pt")
    (b / rf.RECORDS / "qpm.json").unlink()
    return str(run)


def train_other_data(env: Env) -> list[str]:
    run = without_data_json(env)
    return ["train", *TINY_RUN_FLAGS, "--data-root", other_data(env), "--run-dir", run]


# --- reference checkpoints -----------------------------------------------------------------------


def reference_state() -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict in the reference's layout with a QPM final layer (3 classes)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state.update({
        "linear.selection": torch.tensor([40, 3, 500, 17, 90, 5]),
        "linear.mean": torch.rand(6) * 0.5,
        "linear.std": torch.rand(6) + 0.2,
        "linear.layer.weight": torch.tensor([[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0],
                                             [0, 0, 0, 1, 0, 1]], dtype=torch.float32),
    })
    return state


def reference(env: LostEnv, drop: tuple[str, ...] = (), **changes) -> str:
    """The reference checkpoint with ``changes`` (``linear_mean=`` for ``linear.mean``)."""
    state = {k: v for k, v in env.reference.items() if k not in drop}
    state.update({k.replace("_", "."): v for k, v in changes.items()})
    path = env.tmp / "reference.pth"
    torch.save(state, path)
    return str(path)


def dense_reference(env: LostEnv, bias_size: int) -> str:
    return reference(env, drop=("linear.selection", "linear.mean", "linear.std",
                                "linear.layer.weight"),
                     linear_weight=torch.zeros(3, 512), linear_bias=torch.zeros(bias_size))


def import_ref(env: LostEnv, checkpoint: str, run_dir: str | None = None) -> list[str]:
    return ["import-reference", checkpoint, "--dataset", "imagefolder", "--data-root",
            str(env.data), "--run-dir", run_dir or str(env.tmp / "imported"), "--image-size",
            "32"]


def weights_file(env: Env, value: float) -> str:
    """A small-cnn state dict (from the trained run's dense model) with one bad value."""
    state = torch.load(env.run / rf.DENSE, weights_only=True)["state_dict"]
    state = {k.removeprefix("body."): v.clone() for k, v in state.items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = value
    path = env.tmp / "weights.pt"
    torch.save(state, path)
    return str(path)


# --- CUB with boxes that are not numbers ---------------------------------------------------------


def cub_with_box(env: LostEnv, box: str) -> str:
    root = env.tmp / "cub"
    shutil.copytree(env.cub, root)
    path = root / "CUB_200_2011" / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    lines[1] = f"2 {box}"
    path.write_text("\n".join(lines) + "\n")
    return str(root)


CUB_FLAGS = ("--dataset", "cub2011", "--arch", "small-cnn", "--image-size", "16", "--epochs",
             "1", "--ft-epochs", "1", "--n-features", "6", "--per-class", "2", "--batch-size",
             "8", "--solver", "highs", "--time-limit", "20", "--device", "cpu")


def train_cub(env: LostEnv, box: str) -> list[str]:
    return ["train", *CUB_FLAGS, "--data-root", cub_with_box(env, box), "--run-dir",
            str(env.tmp / "cub-run")]


def fifo(env: Env, name: str) -> str:
    path = env.tmp / name
    os.mkfifo(path)
    return str(path)


def read_metrics(path: Path) -> dict:
    return json.loads(Path(path).read_text())

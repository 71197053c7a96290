"""Shared fixtures: tiny generated datasets in the real folder layouts (no downloads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

TINY_CLASSES = ("red_disc", "green_bar", "blue_cross")


def _draw(kind: int, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A noisy image whose colour and shape depend on the class, placed at a random spot."""
    img = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
    cy, cx = rng.integers(12, size - 12, size=2)
    yy, xx = np.mgrid[:size, :size]
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 49
    elif kind == 1:
        mask = (abs(yy - cy) < 3) & (abs(xx - cx) < 10)
    else:
        mask = ((abs(yy - cy) < 2) & (abs(xx - cx) < 8)) | ((abs(xx - cx) < 2) & (abs(yy - cy) < 8))
    img[mask, kind] = 230
    return img


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="session")
def tiny_cub(tmp_path_factory) -> Path:
    """ROOT/CUB_200_2011 with 3 classes x (6 train + 3 test) generated images and boxes."""
    root = tmp_path_factory.mktemp("cub")
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(0)
    images, labels, split, boxes = [], [], [], []
    img_id = 0
    for c, name in enumerate(TINY_CLASSES):
        folder = f"{c + 1:03d}.{name}"
        for j in range(9):
            img_id += 1
            rel = f"{folder}/{name}_{j:04d}.png"
            _save(_draw(c, rng), base / "images" / rel)
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c + 1}")
            split.append(f"{img_id} {1 if j < 6 else 0}")
            boxes.append(f"{img_id} 4.0 4.0 32.0 32.0")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (base / "classes.txt").write_text(
        "\n".join(f"{c + 1} {c + 1:03d}.{n}" for c, n in enumerate(TINY_CLASSES)) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_imagefolder(tmp_path_factory) -> Path:
    """ROOT/train/<class>/*.png and ROOT/test/<class>/*.png, 3 classes, 8 + 3 images each."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(1)
    for c, name in enumerate(TINY_CLASSES):
        for j in range(11):
            split = "train" if j < 8 else "test"
            _save(_draw(c, rng), root / split / name / f"img{j}.png")
    return root


@pytest.fixture
def one_thread():
    """Keep torch on one thread: the CI machine has two cores shared by several jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_RUN_FLAGS = ("--dataset", "imagefolder", "--arch", "small-cnn", "--image-size", "16",
                  "--epochs", "1", "--ft-epochs", "1", "--n-features", "6", "--per-class", "2",
                  "--batch-size", "8", "--solver", "highs", "--time-limit", "20",
                  "--device", "cpu")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_imagefolder) -> Path:
    """A finished tiny QPM run folder (tiny_imagefolder, 16 px, one epoch each), trained once.

    Read it freely; copy it (``shutil.copytree``) before anything that writes into it.
    Train it again with ``TINY_RUN_FLAGS`` plus ``--data-root`` and ``--run-dir``.
    """
    import torch

    from qpm.cli import main

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["train", *TINY_RUN_FLAGS, "--data-root", str(tiny_imagefolder),
                     "--run-dir", str(run_dir)])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return run_dir


def consistent(run_dir: Path) -> bool:
    """Every artifact of a run folder is the file its stage record names, and every record's
    inputs are the recorded outputs of the stages before it, in its own folder or the shared
    one (no mixed folder)."""
    import json

    from qpm import run_folder as rf

    run_dir = Path(run_dir)
    records = [(p.parent.parent, json.loads(p.read_text()))
               for p in sorted(run_dir.rglob(f"{rf.RECORDS}/*.json"))]
    outputs = {(folder, r["artifact"]): r["output"] for folder, r in records}
    for folder, r in records:
        if rf.file_hash(folder / r["artifact"]) != r["output"]:
            return False
        for name, digest in r["inputs"].items():
            made = outputs.get((folder, name), outputs.get((run_dir, name), digest))
            if name != "data" and made != digest:
                return False
    return bool(records)


def variant(run_dir: Path, model_type: str = "qpm") -> Path:
    """The one variant folder of ``model_type`` in a run folder that trained one setting."""
    found = sorted((Path(run_dir) / "variants").glob(f"{model_type}-*"))
    assert len(found) == 1, found
    return found[0]


def train(run_dir, data_root, capsys, *extra) -> tuple[int, str]:
    """``qpm train`` of the tiny run (TINY_RUN_FLAGS) plus ``extra``: (exit code, stderr)."""
    from qpm.cli import main

    capsys.readouterr()
    code = main(["train", *TINY_RUN_FLAGS, "--data-root", str(data_root), "--run-dir",
                 str(run_dir), *extra])
    return code, capsys.readouterr().err


def statuses(err: str) -> dict[str, str]:
    """stage -> "ran" or "skipped", read from qpm train's messages."""
    out = {}
    for line in err.splitlines():
        for word in ("skipping", "computing"):
            if line.startswith("[") and word in line:
                out[line[1:line.index("]")]] = "ran" if word == "computing" else "skipped"
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the trained tiny run, to write into."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


@pytest.fixture(scope="session")
def two_variant_run(trained_run, tiny_imagefolder, tmp_path_factory) -> Path:
    """The trained run plus a second QPM variant (n=4), trained once: read it, copy it to
    write (tests/hostile: models swapped between variants)."""
    import torch

    from qpm.cli import main

    run = tmp_path_factory.mktemp("two") / "run"
    shutil.copytree(trained_run, run)
    flags = list(TINY_RUN_FLAGS)
    flags[flags.index("--n-features") + 1] = "4"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *flags, "--data-root", str(tiny_imagefolder), "--run-dir",
                     str(run)]) == 0
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture(scope="session")
def reference_sd() -> dict:
    """A ResNet-18 state dict in the QPM reference's layout, 3 classes (tests/hostile)."""
    from lost_work import reference_state

    return reference_state()

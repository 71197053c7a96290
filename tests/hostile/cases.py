"""What the hostile suite shares: the run of one bad command and the files it is given.

Every case runs the real command line (``qpm.cli.main``) and must end with exit code 2, ONE
line on stderr that starts ``qpm COMMAND: error:`` and names the problem, no traceback, and
no change to anything that existed before (the trained run folder, the input files).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from badfiles import npy_bytes, npz
from conftest import TINY_RUN_FLAGS, variant
from PIL import Image


@dataclass
class Env:
    """Paths a case may use. ``run`` is the shared trained run (never written by a passing
    case); ``tmp`` is the case's own folder; ``inputs`` holds the good input files."""

    run: Path
    data: Path
    inputs: Path
    tmp: Path
    locked: Path

    @property
    def sims(self) -> Path:
        return self.inputs / "sims.npz"

    @property
    def feats(self) -> Path:
        return self.inputs / "features.npz"

    def own_run(self) -> Path:
        """A copy of the trained run that this case may edit."""
        dst = self.tmp / "run"
        if not dst.exists():
            shutil.copytree(self.run, dst)
        return dst


@dataclass
class Case:
    id: str
    category: str
    argv: Callable[[Env], list[str]]
    words: str | Callable[[Env], str]  # must appear in the error line (or words(env) must)
    memory: int | None = None  # bytes qpm.io may see as available (deterministic limits)
    lines: str = "one"  # "one": stderr is the error line alone; "last": progress lines first
    shown: str | None = None  # text stdout must show (results printed before a failed write)
    patch: Callable | None = field(default=None, repr=False)  # patch(monkeypatch, env)
    also: str | None = None  # text stderr must hold somewhere (a warning before the error)


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file under ``folders`` (the OS lock file aside)."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != ".lock":
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# --- bad .npz files (raw members from tests/badfiles.py) ------------------------------------


def sims(env: Env, name: str = "bad.npz", **arrays) -> str:
    """A SIMS.npz like the good one with some arrays replaced (raw bytes or arrays)."""
    return _patched(env.sims, env.tmp / name, False, arrays)


def feats(env: Env, name: str = "feats.npz", **arrays) -> str:
    """A FEATURES.npz like the good one with some arrays replaced (deflated)."""
    return _patched(env.feats, env.tmp / name, True, arrays)


def _patched(source: Path, target: Path, deflate: bool, arrays: dict) -> str:
    with np.load(source, allow_pickle=False) as good:
        members = {k: good[k] for k in good.files}
    members.update(arrays)
    raw = {k: v if isinstance(v, bytes) else npy_bytes(np.asarray(v)) for k, v in members.items()}
    return str(npz(target, raw, deflate))


def zeros_bomb(env: Env, shape: tuple[int, ...]) -> str:
    """A SIMS.npz whose A is a deflated block of zeros: tiny on disk, large in memory."""
    return str(npz(env.tmp / "bomb.npz", {"A": npy_bytes(np.zeros(shape)),
                                          "format_version": npy_bytes(np.array(1))}, True))


# --- bad images and datasets ------------------------------------------------------------------


def dataset_with(env: Env, edit: Callable[[Path], None]) -> str:
    """A copy of the tiny image folder, changed by ``edit(root)``."""
    root = env.tmp / "data"
    shutil.copytree(env.data, root)
    edit(root)
    return str(root)


def replace_first_train_image(data: bytes | None = None, image: Image.Image | None = None,
                              suffix: str = ".png") -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        first = sorted((root / "train").rglob("*.png"))[0]
        first.unlink()
        target = first.with_suffix(suffix)
        if image is not None:
            image.save(target)
        else:
            target.write_bytes(data)

    return edit


def one_class(root: Path) -> None:
    for split in ("train", "test"):
        for folder in sorted((root / split).iterdir())[1:]:
            shutil.rmtree(folder)


# --- argument lists and edited copies the cases use ------------------------------------------


def train(env: Env, *extra: str, run=None, data=None) -> list[str]:
    return ["train", *TINY_RUN_FLAGS, "--data-root", str(data or env.data),
            "--run-dir", str(run or env.run), *extra]


def fresh(env: Env) -> str:
    return str(env.tmp / "new-run")


def solve(env: Env, path=None, *extra: str) -> list[str]:
    return ["solve", str(path or env.sims), "--solver", "highs", "--time-limit", "5",
            "--n-features", "8", "--per-class", "2", *extra]


def bound(env: Env, path=None, *extra: str) -> list[str]:
    return ["bound", str(path or env.sims), "--time-limit", "5", "--n-features", "8",
            "--per-class", "2", *extra]


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


def foreign_model(env: Env) -> str:
    run = env.own_run()
    ckpt = torch.load(variant(run) / "qpm.pt", weights_only=True)
    ckpt["state_dict"]["classifier.mean"] += 1.0
    torch.save(ckpt, variant(run) / "qpm.pt")
    return str(run)


def wrong_record_types(env: Env) -> str:
    run = env.own_run()
    edit_json(variant(run) / "stages" / "qpm.json",
              lambda d: {**d, "inputs": ["not", "a", "dict"]})
    return str(run)


def config_as(env: Env, text: str) -> str:
    run = env.own_run()
    (run / "config.json").write_text(text)
    return str(run)


def config_with(env: Env, **fields) -> str:
    run = env.own_run()
    edit_json(run / "config.json", lambda d: {**d, **fields})
    return str(run)


def other_data(env: Env) -> str:
    return dataset_with(env, lambda root: sorted((root / "train").rglob("*.png"))[0].unlink())


def renamed_class(env: Env) -> str:
    def edit(root):
        for split in ("train", "test"):
            first = sorted((root / split).iterdir())[0]
            first.rename(first.with_name("zebra"))
    return dataset_with(env, edit)


def hostile_class(env: Env) -> str:
    """The data with one class folder renamed to markup, a line break, a terminal escape and
    a byte that is not UTF-8."""
    def edit(root):
        for split in ("train", "test"):
            first = sorted((root / split).iterdir())[0]
            os.rename(os.fsencode(first),
                      os.fsencode(first.parent) + b"/$\\undefinedcmd$\n\x1b[31m\xff")
    return dataset_with(env, edit)


def hostile_run_name(env: Env) -> str:
    run = env.tmp / "run\n\x1b[2Jx"
    shutil.copytree(env.run, run)
    return str(run)


def garbage_weights(env: Env) -> str:
    path = env.tmp / "weights.pt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    return str(path)


class Payload:
    def __reduce__(self):  # would run a shell command on a pickle load
        return (os.system, ("echo pwned > /dev/null",))


def pickled_weights(env: Env) -> str:
    path = env.tmp / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": Payload()}, path)
    return str(path)


def a_file(env: Env) -> str:
    path = env.tmp / "plain-file"
    path.write_text("x")
    return str(path)


def failing_write(monkeypatch, env) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("qpm.pipeline.run.merge_metrics", refuse)
    monkeypatch.setattr("qpm.assignment.result.AssignmentResult.save_json", refuse)


def copy_input(env: Env, path) -> str:
    dst = env.tmp / path.name
    shutil.copy(path, dst)
    return str(dst)


def npy_file(env: Env) -> str:
    path = env.tmp / "one.npz"
    path.write_bytes(npy_bytes(np.ones((12, 4))))
    return str(path)


def truncated(env: Env) -> str:
    path = env.tmp / "cut.npz"
    path.write_bytes(env.sims.read_bytes()[:300])
    return str(path)


def text_file(env: Env) -> str:
    path = env.tmp / "text.npz"
    path.write_text("A,b\n1,2\n")
    return str(path)

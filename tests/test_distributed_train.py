"""`torchrun --nproc_per_node 2 -m qpm train` on CPU (gloo) against a single-process pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import variant

from qpm.data import build_data
from qpm.models.checkpoint import load_model
from qpm.pipeline import distributed as D
from qpm.pipeline.extraction import extract
from qpm.run_folder import read_arrays

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--dataset", "digits", "--epochs", "1", "--ft-epochs", "1", "--n-features", "12",
              "--per-class", "3", "--solver", "greedy", "--device", "cpu"]
EXPECTED = {"config.json", "data.json", "stages", "metrics.json", "dense.pt", "features.npz",
            "similarities.npz", "variants"}
EXPECTED_VARIANT = {"config.json", "stages", "metrics.json", "assignment.json", "qpm.pt"}


def torchrun(run_dir: Path, state_dir: Path) -> subprocess.CompletedProcess:
    """`torchrun -m qpm train` through tests/ddp_probe.py, which also saves what each rank
    holds at the end of each training stage into ``state_dir``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), QPM_PROBE_DIR=str(state_dir))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "ddp_probe.py"), "train", *TRAIN_ARGS, "--run-dir", str(run_dir)]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    run_dir, state_dir = base / "run", base / "state"
    state_dir.mkdir()
    proc = torchrun(run_dir, state_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir, state_dir, proc


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a and a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_one_set_of_artifacts_and_one_summary(two_process_run):
    run_dir, _, proc = two_process_run
    assert EXPECTED <= {p.name for p in run_dir.iterdir()}
    assert EXPECTED_VARIANT <= {p.name for p in variant(run_dir).iterdir()}
    # No per-rank copies, no temporaries, no checkpoints left behind by any rank.
    names = [p.name for p in run_dir.rglob("*")]
    assert not [n for n in names if "rank" in n or ".tmp" in n or n.endswith(".ckpt")], names
    assert proc.stdout.count("run folder:") == 1  # only rank 0 reports
    metrics = json.loads((variant(run_dir) / "metrics.json").read_text())
    assert 0 <= metrics["qpm"]["accuracy"] <= 100
    model, _ = load_model(variant(run_dir) / "qpm.pt")
    assert model.classifier.weight.sum(1).eq(3).all()  # a real k=3 QPM layer was saved


def test_ranks_hold_identical_weights(two_process_run):
    run_dir, state_dir, _ = two_process_run
    r0, r1 = (torch.load(state_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0) == len(r1) == 2  # the dense and the fine-tuning stage
    for stage0, stage1 in zip(r0, r1, strict=True):
        assert_same_tensors(stage0["params"], stage1["params"])  # DDP kept them in step
        assert_same_tensors(stage0["state"], stage1["state"])  # BatchNorm statistics too
    # The saved models are the ones every rank holds at the end of their stage.
    for stage, path in zip(r0, (run_dir / "dense.pt", variant(run_dir) / "qpm.pt"), strict=True):
        model, _ = load_model(path)
        assert_same_tensors(stage["state"], model.state_dict())


def test_sharded_features_equal_single_process_extraction(two_process_run):
    run_dir, _, _ = two_process_run
    torch.set_num_threads(1)
    D.cleanup()
    D.get_context(device="cpu")
    try:
        model, _ = load_model(run_dir / "dense.pt")
        data = build_data("digits")
        train = extract(model, data.train_eval, batch_size=50, features=True, locality=True)
        test = extract(model, data.test, batch_size=50, features=True)
    finally:
        D.cleanup()
    saved = read_arrays(run_dir / "features.npz")
    assert np.array_equal(saved["labels"], train.labels)  # same samples in the same order
    assert np.array_equal(saved["test_labels"], test.labels)
    np.testing.assert_allclose(saved["features"], train.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved["test_features"], test.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved["train_logits"], train.logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(saved["locality"], train.locality, rtol=1e-5, atol=1e-6)


def test_single_process_rerun_reuses_every_stage(two_process_run, capsys):
    # A folder written under torchrun is an ordinary run folder: a plain `qpm train` with the
    # same arguments finds every stage finished and rewrites nothing.
    from qpm.cli import main

    run_dir, _, _ = two_process_run
    def stamps():  # the lock file changes hands; nothing else may change
        return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")
                if p.is_file() and p.suffix != ".json" and p.name != ".lock"}

    before = stamps()
    torch.set_num_threads(1)
    D.cleanup()
    try:
        assert main(["train", *TRAIN_ARGS, "--run-dir", str(run_dir)]) == 0
    finally:
        D.cleanup()
    stages = list(run_dir.rglob("stages/*.json"))
    assert capsys.readouterr().out.count("(skipped)") == len(stages) == 5  # every stage
    assert stamps() == before

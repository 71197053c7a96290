"""The run folder's owner: lock, content-hash records, data fingerprint, stale temporaries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY_RUN_FLAGS, consistent, statuses, train, variant

from qpm import run_folder as rf
from qpm.cli import main
from qpm.errors import QPMError
from qpm.models.torch_files import load_checkpoint, save_torch

pytestmark = pytest.mark.usefixtures("one_thread")


HOLD = """
import sys, time
from qpm.run_folder import RunLock
RunLock(sys.argv[1], command="qpm train --seed 0").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_the_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "r")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(QPMError) as info:
            rf.RunLock(tmp_path / "r").acquire()
        message = str(info.value)
        assert f"is in use by pid {holder.pid}" in message and "qpm train --seed 0" in message
        assert "another --run-dir" in message
    finally:
        holder.kill()
        holder.wait()
    with rf.RunLock(tmp_path / "r"):  # the holder died: the next writer gets the lock at once
        with rf.RunLock(tmp_path / "r"):  # re-entrant within one process
            pass
        assert "pid" in (tmp_path / "r" / rf.LOCK).read_text()
    assert (tmp_path / "r" / rf.LOCK).read_text() == ""  # released: no stale holder shown


def test_a_run_dir_that_is_a_file_is_refused_up_front(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(QPMError, match="is a file"):
        rf.RunLock(tmp_path / "file").acquire()


def test_trained_folder_is_consistent_and_a_rerun_skips_everything(trained_run, run_copy,
                                                                   tiny_imagefolder, capsys):
    assert consistent(trained_run)
    assert json.loads((trained_run / rf.DATA).read_text())["counts"] == {"train": 24, "test": 9}
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0 and set(statuses(err).values()) == {"skipped"}


def test_a_model_from_another_run_is_detected_and_only_its_stage_recomputed(
        run_copy, tiny_imagefolder, capsys):
    own = variant(run_copy)
    ckpt = load_checkpoint(own / "qpm.pt")  # a valid model file, but not the recorded one
    ckpt["state_dict"]["classifier.mean"] += 1.0
    save_torch(own / "qpm.pt", ckpt)
    assert "changed after its stage finished" in str(
        pytest.raises(QPMError, rf.check_model_file, own, "qpm").value)
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0 and "qpm.pt changed after its stage finished" in err
    assert statuses(err) == {"dense": "skipped", "features": "skipped",
                             "similarities": "skipped", "assignment": "skipped", "qpm": "ran"}
    assert consistent(run_copy)


def test_a_hand_edited_assignment_is_recomputed_with_the_model(run_copy, tiny_imagefolder,
                                                               capsys):
    path = variant(run_copy) / "assignment.json"
    data = json.loads(path.read_text())
    original = dict(data["assignment"])
    data["assignment"]["0"], data["assignment"]["1"] = original["1"], original["0"]
    path.write_text(json.dumps(data))
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0 and "assignment.json changed after its stage finished" in err
    assert statuses(err)["assignment"] == "ran" and statuses(err)["qpm"] == "ran"
    assert json.loads(path.read_text())["assignment"] == original  # the solver's answer again
    assert consistent(run_copy)


def test_a_mixed_folder_recomputes_from_the_foreign_artifact_on(run_copy, tiny_imagefolder,
                                                                capsys):
    ckpt = load_checkpoint(run_copy / "dense.pt")
    ckpt["meta"]["accuracy"] = -1.0  # as if dense.pt came from another run
    save_torch(run_copy / "dense.pt", ckpt)
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0 and set(statuses(err).values()) == {"ran"}
    assert consistent(run_copy)
    assert load_checkpoint(run_copy / "dense.pt")["meta"]["accuracy"] >= 0


def test_an_unreadable_record_or_metrics_file_costs_no_training(run_copy, tiny_imagefolder,
                                                                capsys):
    (run_copy / rf.RECORDS / "dense.json").write_text("{ not json")
    (variant(run_copy) / rf.RECORDS / "qpm.json").write_text(
        json.dumps({"stage": "qpm", "artifact": 3}))
    metrics = json.loads((run_copy / rf.METRICS).read_text())
    (run_copy / rf.METRICS).unlink()
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0
    # dense.pt is vouched for by the features record; qpm.pt has nobody to vouch for it.
    assert "rebuilt its record" in err and statuses(err)["dense"] == "skipped"
    assert statuses(err)["features"] == "skipped" and statuses(err)["qpm"] == "ran"
    rebuilt = json.loads((run_copy / rf.METRICS).read_text())
    assert rebuilt["dense"]["accuracy"] == metrics["dense"]["accuracy"]
    assert consistent(run_copy)


def test_other_data_is_refused_and_moved_data_accepted(run_copy, tiny_imagefolder, tmp_path,
                                                       capsys):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_imagefolder, moved)
    code, err = train(run_copy, moved, capsys)
    assert code == 0 and set(statuses(err).values()) == {"skipped"}
    next(iter(sorted((moved / "train").rglob("*.png")))).unlink()
    def stamps():  # every file but the lock, which changes hands
        return {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")
                if p.is_file() and p.name != rf.LOCK}

    before = stamps()
    for argv in (["train", *TINY_RUN_FLAGS, "--run-dir", str(run_copy)],
                 ["evaluate", str(run_copy), "--device", "cpu"],
                 ["explain", str(run_copy), "--device", "cpu"]):
        assert main([*argv, "--data-root", str(moved)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "was trained on other data" in err[0], err
        assert "other image counts" in err[0]
    assert before == stamps()


def test_stale_temporaries_are_removed_at_start(run_copy, tiny_imagefolder, capsys):
    # Only qpm's own temporaries (its prefix), only in the folders qpm writes.
    stale = [run_copy / ".qpm-config.json.k2j3h4.tmp",
             variant(run_copy) / "stages" / ".qpm-qpm.json.a1b2c3.tmp",
             run_copy / "tokens" / ".qpm-manifest.json.z9y8x7.tmp"]  # a frozen run's cache
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    keep = [run_copy / "notes.tmp", run_copy / ".notes.txt.x1y2.tmp",  # another program's
            run_copy / "mine" / "deep" / ".qpm-x.y.tmp"]  # not a folder qpm writes
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not ours")
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0 and not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert "removed .qpm-config.json.k2j3h4.tmp" in err


def test_the_token_cache_is_a_run_folders_folder(run_copy):
    # a frozen backbone's cache (RUN/tokens/) is qpm's: no --out may replace its files
    cache = run_copy / rf.TOKENS / "train.f16"
    assert rf.artifact_owner(cache) is not None
    assert rf.artifact_owner(run_copy.parent / "train.f16") is None


def test_evaluate_and_explain_refuse_a_foreign_model(run_copy, capsys):
    own = variant(run_copy)
    state = torch.load(own / "qpm.pt", weights_only=True)
    save_torch(own / "qpm.pt", state)  # same content, new file: same hash, accepted
    assert rf.check_model_file(own, "qpm") is None
    state["state_dict"]["classifier.mean"] += 1
    save_torch(own / "qpm.pt", state)
    assert main(["explain", str(run_copy), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be trusted" in err[0]

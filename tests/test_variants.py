"""Run-folder variants: settings side by side on one dense model, --force, --assignment, the
commands and qpm.load on variants, and folders written before variants."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import consistent, statuses, train, variant

import qpm
from qpm import run_folder as rf
from qpm.cli import main
from qpm.errors import QPMError

pytestmark = pytest.mark.usefixtures("one_thread")
SHARED = {"dense": "skipped", "features": "skipped", "similarities": "skipped"}


def hashes(folder) -> dict:
    return {p.relative_to(folder): rf.file_hash(p) for p in folder.rglob("*") if p.is_file()}


def test_a_second_setting_lives_next_to_the_first(run_copy, tiny_imagefolder, tmp_path,
                                                  capsys):
    first = variant(run_copy)
    before = hashes(first)
    code, err = train(run_copy, tiny_imagefolder, capsys, "--n-features", "5")
    assert code == 0
    assert statuses(err) == {**SHARED, "assignment": "ran", "qpm": "ran"}
    second = next(p for p in (run_copy / rf.VARIANTS).iterdir() if p != first)
    assert first.name.startswith("qpm-n6-k2-qpm-highs-")
    assert second.name.startswith("qpm-n5-k2-qpm-highs-")
    assert hashes(first) == before  # the first variant is untouched
    assert consistent(run_copy)
    assert len(json.loads((second / rf.ASSIGNMENT).read_text())["selected_features"]) == 5

    assert qpm.load(run_copy, device="cpu").variant == second.name  # the newest by default
    assert qpm.load(run_copy, variant="qpm-n6", device="cpu").layer()[1].size == 6
    with pytest.raises(QPMError, match="more than one qpm variant 'qpm-n'"):
        qpm.load(run_copy, variant="qpm-n")
    out = tmp_path / "p.csv"
    images = tiny_imagefolder / "test"
    assert main(["predict", str(run_copy), str(images), "--out", str(out),
                 "--variant", "qpm-n6"]) == 0
    assert main(["evaluate", str(run_copy), "--device", "cpu", "--model-type", "qpm",
                 "--variant", second.name]) == 0
    assert second.name in capsys.readouterr().out
    assert "qpm" in json.loads((second / rf.METRICS).read_text())
    # the same flags again: both variants are finished, nothing runs
    assert set(statuses(train(run_copy, tiny_imagefolder, capsys)[1]).values()) == {"skipped"}


def test_force_recomputes_a_stage_and_every_later_one(run_copy, tiny_imagefolder, capsys):
    code, err = train(run_copy, tiny_imagefolder, capsys, "--force", "assignment")
    assert code == 0 and statuses(err) == {**SHARED, "assignment": "ran", "qpm": "ran"}
    assert consistent(run_copy)

    code, err = train(run_copy, tiny_imagefolder, capsys, "--ft-epochs", "2")
    assert code == 2 and "different config" in err and "--force qpm" in err
    code, err = train(run_copy, tiny_imagefolder, capsys, "--ft-epochs", "2", "--force", "qpm")
    assert code == 0 and statuses(err) == {**SHARED, "assignment": "skipped", "qpm": "ran"}
    assert consistent(run_copy)

    code, err = train(run_copy, tiny_imagefolder, capsys, "--force", "sldd")
    assert code == 2 and "has no stage 'sldd'" in err.strip().splitlines()[-1]


def test_a_solve_result_is_verified_and_then_used(run_copy, tiny_imagefolder, tmp_path,
                                                  capsys):
    import numpy as np

    from qpm.assignment.cache import load_similarities, save_similarities

    sims = run_copy / rf.SIMILARITIES
    result = tmp_path / "result.json"
    assert main(["solve", str(sims), "--solver", "greedy", "--n-features", "5", "--per-class",
                 "2", "--out", str(result)]) == 0
    # the tiny run's flags say n=6: the result (n=5) decides, a contradiction is one line
    code, err = train(run_copy, tiny_imagefolder, capsys, "--assignment", str(result))
    assert code == 2 and "--n-features 6 contradicts --assignment" in err
    args = ["--assignment", str(result)]
    code, err = _train_from_result(run_copy, tiny_imagefolder, capsys, *args)
    assert code == 0 and statuses(err) == {**SHARED, "assignment": "ran", "qpm": "ran"}
    given = next(p for p in (run_copy / rf.VARIANTS).iterdir() if "-given-" in p.name)
    assert given.name.startswith("qpm-n5-k2-qpm-given-")
    kept = json.loads((given / rf.ASSIGNMENT).read_text())
    assert kept["assignment"] == json.loads(result.read_text())["assignment"] and kept["verified"]

    # a result solved on other similarities claims an objective these do not give
    other = load_similarities(sims)
    foreign = tmp_path / "foreign.npz"
    save_similarities(foreign, other.A * 2 + np.eye(*other.A.shape), other.R, other.b)
    wrong = tmp_path / "wrong.json"
    assert main(["solve", str(foreign), "--solver", "greedy", "--n-features", "5",
                 "--per-class", "2", "--out", str(wrong)]) == 0
    code, err = _train_from_result(run_copy, tiny_imagefolder, capsys, "--assignment",
                                   str(wrong))
    assert code == 2
    assert "is not a solution of this run's problem" in err.strip().splitlines()[-1]


def _train_from_result(run_dir, data_root, capsys, *extra) -> tuple[int, str]:
    # TINY_RUN_FLAGS name n and k; with --assignment the result decides them.
    from conftest import TINY_RUN_FLAGS

    flags = list(TINY_RUN_FLAGS)
    for flag in ("--n-features", "--per-class"):
        i = flags.index(flag)
        del flags[i:i + 2]
    capsys.readouterr()
    code = main(["train", *flags, "--data-root", str(data_root), "--run-dir", str(run_dir),
                 *extra])
    return code, capsys.readouterr().err


def test_a_folder_written_before_variants_is_used_in_place(run_copy, tiny_imagefolder, capsys):
    own = variant(run_copy)  # move the variant's files to the top level, as older qpm wrote
    for name in (rf.ASSIGNMENT, rf.model_file("qpm"), rf.plot_file("qpm")):
        (own / name).rename(run_copy / name)
    for record in (own / rf.RECORDS).iterdir():
        record.rename(run_copy / rf.RECORDS / record.name)
    shutil.rmtree(run_copy / rf.VARIANTS)
    assert consistent(run_copy)
    assert qpm.load(run_copy, device="cpu").variant is None
    code, err = train(run_copy, tiny_imagefolder, capsys)
    assert code == 0 and set(statuses(err).values()) == {"skipped"}
    assert not (run_copy / rf.VARIANTS).exists()  # the same setting: used where it is

    code, err = train(run_copy, tiny_imagefolder, capsys, "--n-features", "5")
    assert code == 0 and statuses(err)["qpm"] == "ran"
    assert qpm.load(run_copy, device="cpu").variant.startswith("qpm-n5-")
    assert qpm.load(run_copy, variant="qpm", device="cpu").layer()[1].size == 6
    assert consistent(run_copy)

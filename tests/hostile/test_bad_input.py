"""Every bad input through the real command line: exit 2, one line, no traceback, nothing lost.

The table follows the hostile-user report (issue 16): each category is one kind of mistake or
attack, each case one concrete input. Cases run in-process (``qpm.cli.main``) on one tiny
trained run folder; ``test_processes.py`` repeats a few through real ``python -m qpm``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from badfiles import header_only, png_header_only
from cases import (
    Case,
    Env,
    a_file,
    bound,
    config_as,
    config_with,
    copy_input,
    dataset_with,
    failing_write,
    feats,
    foreign_model,
    fresh,
    garbage_weights,
    hostile_class,
    hostile_run_name,
    npy_file,
    one_class,
    other_data,
    pickled_weights,
    renamed_class,
    replace_first_train_image,
    sims,
    snapshot,
    solve,
    text_file,
    train,
    truncated,
    wrong_record_types,
    zeros_bomb,
)
from PIL import Image

from qpm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

GiB = 2**30
U64_MAX = np.iinfo(np.uint64).max

CASES = [
    # 1. two writers: a folder held by another process is refused, naming the holder
    Case("train-locked", "concurrency", lambda e: train(e, run=e.locked), "is in use by pid"),
    Case("evaluate-locked", "concurrency", lambda e: ["evaluate", str(e.locked)], "is in use by"),
    Case("explain-locked", "concurrency", lambda e: ["explain", str(e.locked)], "is in use by"),
    # 2. other data than the run was trained on
    Case("train-other-files", "other data", lambda e: train(e, data=other_data(e)),
         "trained on other data"),
    Case("train-other-classes", "other data", lambda e: train(e, data=renamed_class(e)),
         "other classes"),
    Case("evaluate-other-data", "other data",
         lambda e: ["evaluate", str(e.run), "--data-root", other_data(e)], "other image counts"),
    Case("explain-other-data", "other data",
         lambda e: ["explain", str(e.run), "--data-root", other_data(e)], "other image counts"),
    # 3. images that cannot be read faithfully
    Case("image-bomb", "images", lambda e: train(e, run=fresh(e), data=dataset_with(
        e, replace_first_train_image(png_header_only(20000, 20000)))),
        "too large to decode safely", lines="last"),
    Case("image-float-range", "images", lambda e: train(e, run=fresh(e), data=dataset_with(
        e, replace_first_train_image(image=Image.fromarray(
            np.full((40, 40), 1e6, np.float32)), suffix=".tif"))),
        "floating-point values", lines="last"),
    Case("image-broken", "images", lambda e: train(e, run=fresh(e), data=dataset_with(
        e, replace_first_train_image(b"\x89PNG\r\n\x1a\n broken"))),
        "Cannot read image", lines="last"),
    Case("one-class", "images", lambda e: train(e, run=fresh(e), data=dataset_with(
        e, one_class)), "needs at least 2"),
    # 4. hostile names in what a message quotes: escaped, still one line
    Case("class-name-markup-escape", "hostile names",
         lambda e: train(e, data=hostile_class(e)), "\\u000a\\u001b[31m\\xff"),
    Case("run-dir-escape", "hostile names",
         lambda e: ["evaluate", hostile_run_name(e), "--device", "nope"], "Unknown device"),
    Case("missing-run-dir-escape", "hostile names",
         lambda e: ["explain", str(e.tmp / "gone\n\x1b[31m")], "gone \\u001b[31m"),
    # 5. hand-edited or foreign files in a run folder
    Case("foreign-qpm-pt", "hand-edited", lambda e: ["explain", foreign_model(e)],
         "cannot be trusted"),
    Case("record-wrong-types", "hand-edited", lambda e: ["explain", wrong_record_types(e)],
         "wrong type"),
    Case("config-list", "hand-edited", lambda e: ["evaluate", config_as(e, "[]")],
         "must be a JSON object"),
    Case("config-bad-type", "hand-edited",
         lambda e: ["evaluate", config_with(e, image_size="abc")], "'image_size' must be"),
    Case("config-nan", "hand-edited",
         lambda e: ["evaluate", config_as(e, '{"beta": NaN}')], "NaN is not allowed"),
    Case("config-unknown-field", "hand-edited",
         lambda e: ["evaluate", config_with(e, colour="red")], "unknown field"),
    Case("changed-flags", "hand-edited", lambda e: train(e, "--epochs", "2"),
         "different config"),
    # 6. threads and time limits
    Case("solve-threads-0", "threads/time", lambda e: solve(e, None, "--threads", "0"),
         "--threads must be at least 1"),
    Case("solve-time-nan", "threads/time", lambda e: solve(e, None, "--time-limit", "nan"),
         "--time-limit must be a positive number"),
    Case("solve-time-inf", "threads/time", lambda e: solve(e, None, "--time-limit", "inf"),
         "--time-limit"),
    Case("solve-time-0", "threads/time", lambda e: solve(e, None, "--time-limit", "0"),
         "--time-limit"),
    Case("train-time-nan", "threads/time", lambda e: train(e, "--time-limit", "nan"),
         "--time-limit must be a finite number"),
    Case("bound-time-nan", "threads/time", lambda e: bound(e, None, "--time-limit", "nan"),
         "--time-limit must be a positive number"),
    Case("solve-bound-time-0", "threads/time",
         lambda e: solve(e, None, "--bound-time", "0"), "--bound-time must be a positive"),
    # 7. .npz files that are too big, crafted or of the wrong kind
    Case("npz-header-1e12", "npz", lambda e: solve(e, sims(e, A=header_only((10**6, 10**6))
                                                            + b"\0" * 64)), "declares"),
    # 16 MiB of zeros in a few kB; A is counted twice (as read and as float64)
    Case("npz-zip-bomb", "npz", lambda e: solve(e, zeros_bomb(e, (2048, 1024))),
         "needs 32.0 MiB of memory", memory=4 << 20),
    Case("features-F-60000", "npz", lambda e: ["similarities", feats(
        e, features=np.zeros((2, 60000), np.float32), labels=np.array([0, 1]),
        b=np.zeros(60000)), "-o", str(e.tmp / "o.npz")], "Similarities of 60000 features",
        memory=8 * GiB),
    Case("labels-1e12", "npz", lambda e: ["similarities", feats(
        e, labels=np.array([0, 10**12] * 10)), "-o", str(e.tmp / "o.npz")],
        "go up to 1000000000000"),
    Case("labels-uint64-max", "npz", lambda e: ["similarities", feats(
        e, labels=np.array([0, U64_MAX] * 10, dtype=np.uint64)), "-o", str(e.tmp / "o.npz")],
        f"go up to {U64_MAX}"),
    Case("labels-negative", "npz", lambda e: ["similarities", feats(
        e, labels=np.array([0, -3] * 10)), "-o", str(e.tmp / "o.npz")], "negative class index"),
    Case("labels-fractional", "npz", lambda e: ["similarities", feats(
        e, labels=np.array([0, 0.5] * 10)), "-o", str(e.tmp / "o.npz")], "non-integer"),
    Case("features-nan", "npz", lambda e: ["similarities", feats(
        e, features=np.full((20, 12), np.nan)), "-o", str(e.tmp / "o.npz")], "NaN"),
    Case("npz-complex", "npz", lambda e: solve(e, sims(e, A=np.ones((12, 4)) * (1 + 1j))),
         "complex array"),
    Case("npz-object", "npz", lambda e: solve(e, sims(
        e, class_names=np.array(["a", None, "c", "d"], dtype=object))), "pickle"),
    Case("npz-structured", "npz", lambda e: solve(e, sims(
        e, A=np.zeros(3, dtype=[("x", "f8"), ("y", "i4")]))), "structured"),
    Case("npz-single-npy", "npz", lambda e: solve(e, npy_file(e)), "single .npy array"),
    Case("npz-truncated", "npz", lambda e: solve(e, truncated(e)), "corrupt"),
    Case("npz-crafted-header", "npz", lambda e: solve(e, sims(
        e, A=b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8',  ")), "corrupt"),
    Case("npz-R-shape", "npz", lambda e: solve(e, sims(e, R=np.zeros((5, 5)))), "R has shape"),
    Case("bound-npz-truncated", "npz", lambda e: bound(e, truncated(e)), "corrupt"),
    Case("npz-not-zip", "npz", lambda e: solve(e, text_file(e)), "not a zip archive"),
    # 8. outputs that cannot be written
    Case("solve-out-folder", "unwritable", lambda e: solve(e, None, "--out", str(e.tmp)),
         "is a folder"),
    Case("solve-out-under-file", "unwritable",
         lambda e: solve(e, None, "--out", a_file(e) + "/r.json"), "is a file, not a folder"),
    Case("solve-out-proc", "unwritable",
         lambda e: solve(e, None, "--out", "/proc/qpm-hostile/r.json"), "cannot be written"),
    Case("similarities-out-proc", "unwritable", lambda e: [
        "similarities", str(e.feats), "-o", "/proc/qpm-hostile.npz"], "cannot be written"),
    Case("run-dir-is-file", "unwritable", lambda e: train(e, run=a_file(e)), "is a file"),
    Case("explain-out-is-file", "unwritable",
         lambda e: ["explain", str(e.run), "--out", a_file(e)], "is a file, not a folder"),
    Case("evaluate-write-fails", "unwritable", lambda e: ["evaluate", str(e.run)],
         "Could not record the metrics", patch=failing_write, lines="last", shown="qpm"),
    Case("solve-write-fails", "unwritable",
         lambda e: solve(e, None, "--out", str(e.tmp / "r.json")), "Could not write",
         patch=failing_write, shown="objective"),
    # 9. values that are not numbers
    Case("beta-nan", "not a number", lambda e: train(e, "--beta", "nan"),
         "--beta must be a finite number"),
    Case("beta-inf", "not a number", lambda e: train(e, "--beta", "inf"), "--beta"),
    Case("beta-negative", "not a number", lambda e: train(e, "--beta", "-1"),
         "--beta must be >= 0"),
    Case("lr-nan", "not a number", lambda e: train(e, "--lr", "nan"), "--lr must be"),
    Case("ft-lr-zero", "not a number", lambda e: train(e, "--ft-lr", "0"), "--ft-lr must be"),
    Case("train-mip-gap-5", "not a number", lambda e: train(e, "--mip-gap", "5"),
         "--mip-gap must be in [0, 1)"),
    Case("train-mip-gap-nan", "not a number", lambda e: train(e, "--mip-gap", "nan"),
         "--mip-gap"),
    Case("solve-mip-gap-5", "not a number", lambda e: solve(e, None, "--mip-gap", "5"),
         "--mip-gap must be in [0, 1)"),
    Case("solve-weight-nan", "not a number",
         lambda e: solve(e, None, "--redundancy-weight", "nan"), "redundancy_weight"),
    Case("solve-tau-nan", "not a number",
         lambda e: solve(e, None, "--redundancy-threshold", "nan"), "tau must be finite"),
    Case("npz-A-nan", "not a number", lambda e: solve(e, sims(
        e, A=np.full((12, 4), np.nan))), "NaN"),
    Case("bound-A-nan", "not a number", lambda e: bound(e, sims(
        e, A=np.full((12, 4), np.nan))), "NaN"),
    Case("npz-b-inf", "not a number", lambda e: solve(e, sims(e, b=np.full(12, np.inf))),
         "infinite"),
    # 10. extreme finite values
    Case("A-1e308", "extreme values", lambda e: solve(e, sims(e, A=np.full((12, 4), 1e308))),
         "reaches"),
    Case("b-1e12", "extreme values", lambda e: solve(e, sims(e, b=np.full(12, 1e12))),
         "b reaches"),
    Case("weight-1e300", "extreme values",
         lambda e: solve(e, None, "--redundancy-weight", "1e300"), "redundancy weight reaches"),
    Case("A-1e-14", "extreme values", lambda e: solve(e, sims(
        e, A=np.full((12, 4), 1e-14) * np.arange(1, 13)[:, None])), "below the solvers'"),
    # 11. small mistakes
    Case("bound-lp-unbalanced", "small mistakes",
         lambda e: bound(e, None, "--method", "lp", "--preset", "unbalanced"),
         "Use --method topk"),
    Case("bound-unknown-method", "small mistakes",
         lambda e: bound(e, None, "--method", "sdp"), "invalid choice"),
    Case("solve-gurobi-param-on-highs", "small mistakes",
         lambda e: solve(e, None, "--gurobi-param", "BQPCuts=2"), "--solver gurobi only"),
    Case("bound-n-too-large", "small mistakes",
         lambda e: bound(e, None, "--n-features", "99"), "larger than the 12 features"),
    Case("image-size-1", "small mistakes", lambda e: train(e, "--image-size", "1"),
         "too small for small-cnn"),
    Case("image-size-3", "small mistakes", lambda e: train(e, "--image-size", "3"),
         "too small for small-cnn"),
    Case("image-size-huge", "small mistakes", lambda e: train(e, "--image-size", "100000"),
         "larger than 2048"),
    Case("seed-1e20", "small mistakes", lambda e: train(e, "--seed", str(10**20)),
         "--seed must be in"),
    Case("seed-negative", "small mistakes", lambda e: train(e, "--seed", "-1"),
         "--seed must be in"),
    Case("workers-negative", "small mistakes", lambda e: train(e, "--workers", "-5"),
         "--workers"),
    Case("train-device-bogus", "small mistakes", lambda e: train(e, "--device", "bogus"),
         "Unknown device"),
    Case("evaluate-device-bogus", "small mistakes",
         lambda e: ["evaluate", str(e.run), "--device", "bogus"], "Unknown device"),
    Case("explain-device-bad-index", "small mistakes",
         lambda e: ["explain", str(e.run), "--device", "cuda:x"], "Unknown device"),
    Case("evaluate-batch-0", "small mistakes",
         lambda e: ["evaluate", str(e.run), "--batch-size", "0"], "--batch-size"),
    Case("weights-garbage", "small mistakes",
         lambda e: train(e, "--weights", garbage_weights(e), run=fresh(e)),
         "Cannot load weights file", lines="last"),
    Case("weights-pickle", "small mistakes",
         lambda e: train(e, "--weights", pickled_weights(e), run=fresh(e)),
         "Cannot load weights file", lines="last"),
    Case("epochs-not-int", "small mistakes", lambda e: train(e, "--epochs", "abc"),
         "invalid int value"),
    Case("unknown-command", "small mistakes", lambda e: ["bogus"], "invalid choice"),
    Case("evaluate-missing-run", "small mistakes",
         lambda e: ["evaluate", str(e.tmp / "nope")], "does not exist"),
    # 12. lesser
    Case("similarities-overwrites-input", "lesser",
         lambda e: ["similarities", copy_input(e, e.feats), "-o", str(e.tmp / e.feats.name)],
         "would destroy the input"),
    Case("solve-overwrites-input", "lesser",
         lambda e: solve(e, copy_input(e, e.sims), "--out", str(e.tmp / e.sims.name)),
         "would destroy the input"),
    Case("features-complex", "lesser", lambda e: ["similarities", feats(
        e, features=np.ones((20, 12)) * 1j), "-o", str(e.tmp / "o.npz")], "complex array"),
]


LOCK_HOLDER = """
import sys, time
from qpm.run_folder import RunLock
RunLock(sys.argv[1], command="qpm train --seed 7").acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from qpm.assignment.cache import save_similarities
    from qpm.assignment.similarities import compute_similarities

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    X = rng.random((20, 12)) + np.eye(4)[labels] @ rng.random((4, 12))
    np.savez(folder / "features.npz", features=X, labels=labels, b=np.zeros(12))
    A, R = compute_similarities(X, labels, 4)
    save_similarities(folder / "sims.npz", A, R, np.zeros(12))
    return folder


@pytest.fixture(scope="module")
def locked_run(trained_run, tmp_path_factory):
    """A copy of the trained run whose lock another process holds for this module."""
    run = tmp_path_factory.mktemp("locked") / "run"
    shutil.copytree(trained_run, run)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield run
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, trained_run, tiny_imagefolder, inputs, locked_run, tmp_path,
                   capsys, monkeypatch):
    env = Env(trained_run, tiny_imagefolder, inputs, tmp_path, locked_run)
    argv = case.argv(env)  # builds this case's files first
    if case.memory is not None:
        monkeypatch.setattr("qpm.memory.available_memory", lambda: case.memory)
    if case.patch is not None:
        case.patch(monkeypatch, env)
    guarded = [trained_run, inputs, locked_run, tiny_imagefolder]
    before = snapshot(*guarded)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    lines = [line for line in err.splitlines() if line.strip()]
    command = argv[0] if argv[0] in ("train", "solve", "similarities", "evaluate",
                                     "explain", "bound") else None
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines, "no error line"
    if case.lines == "one":
        assert len(lines) == 1, err
    error = lines[-1]
    assert error.startswith(f"qpm {command}: error:" if command else "qpm: error:"), error
    assert case.words in error, error
    if case.shown:  # work done before a failing write is shown, not lost
        assert case.shown in captured.out, captured.out
    assert snapshot(*guarded) == before  # nothing that existed changed


def test_every_category_of_the_report_is_covered():
    counts = Counter(c.category for c in CASES)
    assert len(counts) == 12 and min(counts.values()) >= 3, counts
    print("hostile cases per category:", dict(counts), "total", len(CASES))

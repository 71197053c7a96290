"""Issue 23's probe through the real command line: outputs that would destroy an input or a
run folder's file, folders that are not run folders, planted links, numbers that are not the
run's, non-finite weights, zero taken for "unset", models swapped between variants, lenient
reference imports, and a folder where a file should be. Each case ends with exit code 2, ONE
line naming the problem and the fix, no traceback, and nothing that existed changed: not the
shared runs, not the input files, not anything in the case's own folder (listed by name and
hashed, links and folders included, before and after)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from cases import Case, foreign_model, other_data, snapshot, solve, train
from conftest import variant
from lost_work import (
    LostEnv,
    as_folder,
    dense_reference,
    documents,
    edited_model,
    fifo,
    import_ref,
    link,
    lock_link,
    new_folder_with_lock_link,
    own_variant,
    photo,
    reference,
    relocated,
    set_mean,
    set_meta,
    swapped,
    thesis,
    train_cub,
    train_other_data,
    unrecorded,
    weights_file,
    without_data_json,
)

from qpm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

V6 = "qpm-n6"  # the variants of the two-variant run
V4 = "qpm-n4"


def predict(run, *images, extra=()) -> list[str]:
    return ["predict", str(run), *map(str, images), "--device", "cpu", *extra]


def refuse_writes(match: str = ""):
    """A patch: creating any file whose temporary name holds ``match`` fails as in a folder
    made read-only (root ignores chmod, so the OS is asked through this one door)."""
    def patch(monkeypatch, env):
        real = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if match in str(kwargs.get("prefix", "")):
                raise PermissionError(13, "Permission denied")
            return real(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return patch


def own_file(e, rel: str) -> str:
    return str(e.own_run() / rel)


def in_variant(e, name: str) -> str:
    return str(variant(e.own_run()) / name)


CASES = [
    # 1. an output that is an input or a run folder's file, or the glob mistake
    Case("predict-out-is-the-photo", "outputs",
         lambda e: predict(e.run, photo(e), extra=("--out", str(e.tmp / "photo.png"))),
         "is the input file"),
    Case("predict-out-glob-jpg", "outputs",
         lambda e: ["predict", str(e.run), "--out", photo(e, "a.jpg", "photos"),
                    photo(e, "b.jpg", "photos"), "--device", "cpu"],
         "exists and is a file that is not .csv"),
    Case("predict-out-link-to-photo", "outputs",
         lambda e: predict(e.run, photo(e), extra=("--out", link(e, "p.csv", "photo.png"))),
         "is the input file"),
    Case("predict-out-model-file", "outputs",
         lambda e: predict(e.own_run(), photo(e), extra=("--out", in_variant(e, "qpm.pt"))),
         "a file of the run folder"),
    Case("predict-out-config", "outputs",
         lambda e: predict(e.own_run(), photo(e), extra=("--out", own_file(e, "config.json"))),
         "a file of the run folder"),
    Case("predict-out-inside-variant", "outputs",
         lambda e: predict(e.own_run(), photo(e), extra=("--out", in_variant(e, "p.csv"))),
         "a file of the run folder"),
    Case("predict-explain-into-variant", "outputs",
         lambda e: predict(e.own_run(), photo(e), extra=("--explain", in_variant(e, "."))),
         "inside a run folder's files"),
    Case("predict-explain-over-input", "outputs",
         lambda e: predict(e.run, photo(e, "0000.png", "pics"),
                           extra=("--explain", str(e.tmp / "pics"))),
         "would write over the input image"),
    Case("solve-out-run-artifact", "outputs",
         lambda e: solve(e, own_file(e, "similarities.npz"), "--out",
                         in_variant(e, "assignment.json")), "a file of the run folder"),
    Case("solve-out-other-kind", "outputs",
         lambda e: solve(e, None, "--out", photo(e, "notes.txt")),
         "exists and is a file that is not .json"),
    Case("similarities-out-run-artifact", "outputs",
         lambda e: ["similarities", own_file(e, "features.npz"), "-o",
                    own_file(e, "similarities.npz")], "a file of the run folder"),
    # 2, 10. a folder that is not a run folder is no --run-dir
    Case("train-into-documents", "foreign folders",
         lambda e: train(e, run=documents(e)), "is not a qpm run folder and not empty"),
    Case("train-into-thesis", "foreign folders",
         lambda e: train(e, run=thesis(e)), "is not a qpm run folder and not empty"),
    Case("import-into-documents", "foreign folders",
         lambda e: import_ref(e, reference(e), documents(e, config=False)),
         "is not a qpm run folder and not empty"),
    Case("train-into-variant-folder", "foreign folders",
         lambda e: train(e, run=str(own_variant(e.own_run(), V6))),
         "is a variant folder of the run folder"),
    Case("import-into-lock-link", "foreign folders",
         lambda e: import_ref(e, reference(e), new_folder_with_lock_link(e)),
         "is not a qpm run folder and not empty"),
    # 3. a planted .lock is never written through
    Case("evaluate-lock-symlink", "links",
         lambda e: ["evaluate", lock_link(e), "--device", "cpu"], "is a link, not qpm's lock"),
    Case("train-lock-symlink", "links", lambda e: train(e, run=lock_link(e)),
         "is a link, not qpm's lock"),
    Case("explain-lock-hardlink", "links",
         lambda e: ["explain", lock_link(e, hard=True), "--device", "cpu"], "a hard link"),
    # 4. numbers that are not the run's: no data.json is no licence for other data
    Case("evaluate-other-data-no-data-json", "not the run's",
         lambda e: ["evaluate", without_data_json(e), "--data-root", other_data(e),
                    "--device", "cpu"], "stage records name other data"),
    Case("explain-other-data-no-data-json", "not the run's",
         lambda e: ["explain", without_data_json(e), "--data-root", other_data(e),
                    "--device", "cpu"], "stage records name other data"),
    Case("train-other-data-no-data-json", "not the run's", train_other_data,
         "stage records name other data"),
    # 5. NaN and infinity in a model file
    Case("predict-nan-model", "non-finite",
         lambda e: predict(edited_model(e, set_mean(float("nan"))), photo(e)),
         "holds NaN or infinite values (in 'state_dict.classifier.mean')"),
    Case("evaluate-inf-model", "non-finite",
         lambda e: ["evaluate", edited_model(e, set_mean(float("inf"))), "--model-type", "qpm",
                    "--device", "cpu"], "could be loaded", lines="last",
         also="holds NaN or infinite values"),
    Case("import-nan-mean", "non-finite",
         lambda e: import_ref(e, reference(e, linear_mean=torch.full((6,), float("nan")))),
         "holds NaN or infinite values (in 'linear.mean')"),
    Case("train-weights-inf", "non-finite",
         lambda e: train(e, "--weights", weights_file(e, float("inf")),
                         run=str(e.tmp / "fresh")), "holds NaN or infinite values"),
    # 6. zero is a value (refused), never "the default"
    Case("train-per-class-0", "zero", lambda e: train(e, "--per-class", "0", run=e.own_run()),
         "--per-class must be positive, got 0"),
    Case("train-n-features-0", "zero", lambda e: train(e, "--n-features", "0", run=e.own_run()),
         "--n-features must be positive, got 0"),
    Case("train-epochs-1e21", "zero", lambda e: train(e, "--epochs", str(10**21),
                                                      run=str(e.tmp / "fresh")),
         "--epochs must be at most 10000"),
    Case("train-batch-2e40", "zero", lambda e: train(e, "--batch-size", str(2**40),
                                                     run=str(e.tmp / "fresh")),
         "--batch-size must be at most"),
    # 9, 11. one trust check for every reader; its advice names the run folder
    Case("predict-swapped-variant", "trust",
         lambda e: predict(swapped(e), photo(e), extra=("--variant", V4)), "cannot be trusted"),
    Case("explain-swapped-variant", "trust",
         lambda e: ["explain", swapped(e), "--variant", V4, "--device", "cpu"],
         "cannot be trusted"),
    Case("evaluate-swapped-variant", "trust",
         lambda e: ["evaluate", swapped(e), "--variant", V4, "--model-type", "qpm",
                    "--device", "cpu"], "could be loaded", lines="last",
         also="cannot be trusted: its record was made with n_features 6"),
    Case("predict-unrecorded-foreign-model", "trust",
         lambda e: predict(unrecorded(e), photo(e), extra=("--variant", V4)),
         "cannot be trusted: stages/qpm.json is missing"),
    Case("explain-advice-names-run-folder", "trust",
         lambda e: ["explain", foreign_model(e), "--device", "cpu"],
         lambda e: f"--run-dir {e.tmp / 'run'} --force qpm"),
    Case("predict-advice-names-run-folder", "trust",
         lambda e: predict(foreign_model(e), photo(e)),
         lambda e: f"plus --run-dir {e.tmp / 'run'} --force qpm, or use another model with "
                   "--variant"),
    # 13. a reference checkpoint's final layer is checked, not guessed
    Case("import-selection-float", "reference import",
         lambda e: import_ref(e, reference(e, linear_selection=torch.tensor(
             [40.5, 3.2, 500.0, 17.0, 90.9, 5.0]))),
         "linear.selection is a torch.float32 tensor"),
    Case("import-mean-complex", "reference import",
         lambda e: import_ref(e, reference(e, linear_mean=torch.ones(6, dtype=torch.complex64))),
         "linear.mean is a torch.complex64 tensor"),
    Case("import-selection-empty", "reference import",
         lambda e: import_ref(e, reference(e, linear_selection=torch.tensor([], dtype=torch.long),
                                           linear_mean=torch.zeros(0), linear_std=torch.ones(0),
                                           linear_layer_weight=torch.zeros(3, 0))), "is empty"),
    Case("import-selection-duplicates", "reference import",
         lambda e: import_ref(e, reference(e, linear_selection=torch.tensor([3, 3, 500, 17, 90,
                                                                             5]))),
         "repeats feature indices"),
    Case("import-weight-1d", "reference import",
         lambda e: import_ref(e, reference(e, linear_layer_weight=torch.ones(6))),
         "weight has shape (6,)"),
    Case("import-dense-bias-wrong", "reference import",
         lambda e: import_ref(e, dense_reference(e, 5)), "dense layer has weight (3, 512)"),
    Case("import-sparse-bias-wrong", "reference import",
         lambda e: import_ref(e, reference(e, linear_layer_weight=torch.rand(3, 6),
                                           linear_layer_bias=torch.zeros(5))),
         "linear.layer.bias has shape (5,)"),
    # 14. a folder where a file should be, a folder that turns read-only, bad metadata, pipes
    Case("train-config-is-folder", "folder for a file",
         lambda e: train(e, run=as_folder(e, "config.json")), "is a folder, but qpm keeps a file"),
    Case("evaluate-config-is-folder", "folder for a file",
         lambda e: ["evaluate", as_folder(e, "config.json"), "--device", "cpu"],
         "is a folder, but qpm keeps a file"),
    Case("train-model-is-folder", "folder for a file",
         lambda e: train(e, run=as_folder(e, "qpm.pt", V6)), "is a folder, but qpm keeps a file"),
    Case("evaluate-model-is-folder", "folder for a file",
         lambda e: ["evaluate", as_folder(e, "qpm.pt", V6), "--device", "cpu"],
         "is a folder, but qpm keeps a file"),
    Case("predict-model-is-folder", "folder for a file",
         lambda e: predict(as_folder(e, "qpm.pt", V6), photo(e)),
         "is a folder, but qpm keeps a file"),
    Case("train-record-is-folder", "folder for a file",
         lambda e: train(e, run=as_folder(e, "stages/dense.json")),
         "is a folder, but qpm keeps a file"),
    Case("train-metrics-is-folder", "folder for a file",
         lambda e: train(e, run=as_folder(e, "metrics.json")), "is a folder, but qpm keeps a file"),
    Case("evaluate-metrics-is-folder", "folder for a file",
         lambda e: ["evaluate", as_folder(e, "metrics.json"), "--device", "cpu"],
         "is a folder, but qpm keeps a file"),
    Case("train-data-json-is-folder", "folder for a file",
         lambda e: train(e, run=as_folder(e, "data.json")), "is a folder, but qpm keeps a file"),
    Case("evaluate-data-json-is-folder", "folder for a file",
         lambda e: ["evaluate", as_folder(e, "data.json"), "--device", "cpu"],
         "is a folder, but qpm keeps a file"),
    Case("train-unwritable-before", "unwritable", lambda e: train(e, run=e.own_run()),
         "config.json: permission denied", patch=refuse_writes()),
    Case("train-unwritable-during", "unwritable",
         lambda e: train(e, "--force", "features", run=relocated(e)),
         "features.npz: permission denied", patch=refuse_writes("features.npz"), lines="last"),
    Case("predict-out-unwritable", "unwritable",
         lambda e: predict(e.run, photo(e), extra=("--out", str(e.tmp / "p.csv"))),
         "cannot be written (Permission denied", patch=refuse_writes()),
    Case("predict-meta-list", "bad metadata",
         lambda e: predict(edited_model(e, set_meta([1, 2])), photo(e)), "its meta is a list"),
    Case("evaluate-meta-string", "bad metadata",
         lambda e: ["evaluate", edited_model(e, set_meta("text")), "--model-type", "qpm",
                    "--device", "cpu"], "could be loaded", lines="last",
         also="its meta is a str"),
    Case("cub-box-nan", "bad metadata", lambda e: train_cub(e, "nan 4.0 32.0 32.0"),
         "bounding_boxes.txt gives image 2 the box 'nan 4 32 32'"),
    Case("cub-box-inf", "bad metadata", lambda e: train_cub(e, "4.0 4.0 inf 32.0"),
         "the box '4 4 inf 32'"),
    Case("cub-box-1e30", "bad metadata", lambda e: train_cub(e, "4.0 4.0 1e30 1e30"),
         "the box '4 4 1e+30 1e+30'"),
    Case("cub-box-negative", "bad metadata", lambda e: train_cub(e, "4.0 4.0 -3.0 32.0"),
         "the box '4 4 -3 32'"),
    # decided (README, Reliability): a named pipe is named, not "missing", and never read
    Case("predict-fifo", "named pipes", lambda e: predict(e.run, fifo(e, "pipe.png")),
         "is a named pipe (FIFO), not a regular file"),
    Case("similarities-names-fifo", "named pipes",
         lambda e: ["similarities", str(e.feats), "-o", str(e.tmp / "o.npz"), "--class-names",
                    fifo(e, "names.txt")], "is a named pipe (FIFO)"),
]


def listing(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links not followed): a file's sha256, a link's target,
    "dir" for a folder."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[str(path)] = "-> " + str(path.readlink())
        elif path.is_dir():
            out[str(path)] = "dir"
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path)] = "special"
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nothing_is_lost(case: Case, trained_run, two_variant_run, reference_sd, tiny_cub,
                         tiny_imagefolder, tmp_path, capsys, monkeypatch):
    inputs = tmp_path / "inputs"
    _inputs(inputs, trained_run)
    work = tmp_path / "case"
    work.mkdir()
    env = LostEnv(trained_run, tiny_imagefolder, inputs, work, trained_run,
                  variants=two_variant_run, reference=reference_sd, cub=tiny_cub)
    argv = case.argv(env)  # builds this case's files first
    if case.patch is not None:
        case.patch(monkeypatch, env)
    guarded = [trained_run, two_variant_run, tiny_imagefolder, tiny_cub]
    before, mine = snapshot(*guarded), listing(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    monkeypatch.undo()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and lines, err
    if case.lines == "one":
        assert len(lines) == 1, err
    assert lines[-1].startswith(f"qpm {argv[0]}: error:"), lines[-1]
    words = case.words(env) if callable(case.words) else case.words
    assert words in lines[-1], lines[-1]
    if case.also:
        assert case.also in err, err
    assert snapshot(*guarded) == before  # the shared runs and data
    after = listing(tmp_path)  # the case's own files, links and folders
    assert after == mine, {k: (mine.get(k), after.get(k)) for k in set(mine) | set(after)
                           if mine.get(k) != after.get(k)}


def _inputs(folder: Path, trained_run: Path) -> None:
    """sims.npz and features.npz for solve and similarities (the trained run's)."""
    folder.mkdir()
    shutil.copy(trained_run / "similarities.npz", folder / "sims.npz")
    shutil.copy(trained_run / "features.npz", folder / "features.npz")


def test_the_probe_is_covered():
    counts = Counter(c.category for c in CASES)
    print("lost-work cases per category:", dict(counts), "total", len(CASES))
    assert len(CASES) == len({c.id for c in CASES}) and min(counts.values()) >= 2


def test_an_import_that_finished_meanwhile_is_not_overwritten(reference_sd, tiny_imagefolder,
                                                             tmp_path, capsys, monkeypatch):
    # Issue 23, item 10, made deterministic: a second import into the same new folder, whose
    # own early check passed before the first import wrote anything, must still be refused
    # when it comes to write (not replace the first's model with its own).
    import qpm.pipeline.import_reference as imp

    target = tmp_path / "imported"

    def argv(name: str, mean: float) -> list[str]:
        path = tmp_path / name
        torch.save({**reference_sd, "linear.mean": torch.full((6,), mean)}, path)
        return ["import-reference", str(path), "--dataset", "imagefolder", "--data-root",
                str(tiny_imagefolder), "--run-dir", str(target), "--image-size", "32"]

    real, first = imp.reference_model, []

    def reference_model(*args, **kwargs):
        if not first:  # the other process: started later, finished first
            first.append(None)
            assert main(argv("first.pth", 0.1)) == 0
            first[0] = listing(target)
        return real(*args, **kwargs)

    monkeypatch.setattr(imp, "reference_model", reference_model)
    second = argv("second.pth", 0.7)
    capsys.readouterr()
    code = main(second)
    err = capsys.readouterr().err.strip().splitlines()
    assert first and code == 2 and len(err) == 1, err
    assert "is already a run folder" in err[-1] and "Traceback" not in err[-1], err
    assert listing(target) == first[0]  # the first import, untouched
    from qpm.run_folder import lock

    assert lock._HELD == {}  # both imports let go of the lock

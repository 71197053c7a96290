"""Issue 23's cases whose right answer is not a refusal: what ``qpm`` does instead (README,
Reliability), each through the real command line or the one function that decides it.

- A folder link that leaves its class folder, or loops, is not followed, with one warning.
- Hidden entries (``.hidden/``, ``._img.png``) are neither classes nor images.
- A photo's EXIF orientation is applied (the image is used upright, as viewers show it).
- A hand-edited metrics.json is not reported as the run's: the records state the numbers.
- CSV cells a spreadsheet would run as a formula get a ``'`` in front.
- ``qpm.load`` refuses what ``qpm predict`` refuses (one trust check).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS
from PIL import Image

from qpm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def looped_data(tiny_imagefolder: Path, tmp_path: Path, edit) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_imagefolder, root)
    edit(root)
    return root


def evaluate_with(run_copy: Path, root: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["evaluate", str(run_copy), "--data-root", str(root), "--device", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name, target", [("up", ".."), ("self", "."),
                                          ("other-class", "../green_bar")])
def test_folder_links_out_of_a_class_or_in_a_loop_are_not_followed(name, target, run_copy,
                                                                   tiny_imagefolder,
                                                                   tmp_path, capsys):
    # `ln -s .. train/red_disc/up` pulled every class's images in under red_disc (and loops).
    root = looped_data(tiny_imagefolder, tmp_path,
                       lambda r: (r / "train" / "red_disc" / name).symlink_to(target))
    code, err = evaluate_with(run_copy, root, capsys)
    assert code == 0, err  # the same images as the run's: the fingerprint matches
    warnings = [line for line in err.splitlines() if "not following" in line]
    assert len(warnings) == 1 and f"(e.g. {name})" in warnings[0], err


def test_hidden_folders_and_files_are_neither_classes_nor_images(run_copy, tiny_imagefolder,
                                                                 tmp_path, capsys):
    def edit(root: Path) -> None:
        hidden = root / "train" / ".ipynb_checkpoints"
        hidden.mkdir()
        shutil.copy(next((root / "train" / "red_disc").glob("*.png")), hidden / "img.png")
        (root / "train" / "red_disc" / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (root / "test" / "green_bar" / ".hidden.png").write_bytes(b"not an image")

    code, err = evaluate_with(run_copy, looped_data(tiny_imagefolder, tmp_path, edit), capsys)
    assert code == 0, err


def test_exif_orientation_is_applied(tmp_path):
    from qpm.data.images import read_rgb

    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :10] = 255  # the left third white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    upright = np.asarray(read_rgb(path))
    assert upright.shape == (30, 10, 3)  # as a viewer shows it
    assert upright[:10].mean() > 200 and upright[20:].mean() < 50  # the white part on top


def test_an_edited_metrics_json_is_not_reported_as_the_run(run_copy, tiny_imagefolder, capsys):
    path = run_copy / "metrics.json"
    recorded = json.loads(path.read_text())["dense"]["accuracy"]
    edited = json.loads(path.read_text())
    edited["dense"]["accuracy"] = 99.99
    path.write_text(json.dumps(edited))
    capsys.readouterr()
    assert main(["train", *TINY_RUN_FLAGS, "--data-root", str(tiny_imagefolder), "--run-dir",
                 str(run_copy)]) == 0
    out = capsys.readouterr().out
    assert f"dense accuracy: {recorded:.2f}%" in out and "99.99" not in out, out
    assert json.loads(path.read_text())["dense"]["accuracy"] == recorded  # restored


def test_csv_cells_never_start_a_formula(trained_run, tiny_imagefolder, tmp_path, capsys,
                                         monkeypatch):
    names = ["=HYPERLINK(1).png", "+2.png", "-3.png", "@4.png", "plain.png"]
    src = next((tiny_imagefolder / "test").rglob("*.png"))
    for name in names:
        shutil.copy(src, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the path column holds the names as given
    capsys.readouterr()
    assert main(["predict", "--out", "p.csv", "--", str(trained_run), *names]) == 0
    rows = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert [r[0] for r in rows[1:]] == ["'" + n for n in names[:4]] + ["plain.png"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)


def test_csv_cell_keeps_numbers_and_plain_text():
    from qpm.text import csv_cell

    assert [csv_cell(v) for v in ["-0.5", "+3", "-inf", 7, "\tx", "\rx", "a=b", None]] == [
        "-0.5", "+3", "-inf", 7, "'\tx", "'\rx", "a=b", None]


def test_qpm_load_refuses_a_swapped_or_unrecorded_model(two_variant_run, tmp_path):
    import qpm
    from qpm.errors import QPMError

    run = tmp_path / "run"
    shutil.copytree(two_variant_run, run)
    a, b = (sorted((run / "variants").glob(f"qpm-n{n}-*"))[0] for n in (6, 4))
    assert qpm.load(run, variant=b.name, device="cpu").variant == b.name
    shutil.copy(a / "qpm.pt", b / "qpm.pt")
    shutil.copy(a / "stages" / "qpm.json", b / "stages" / "qpm.json")
    with pytest.raises(QPMError, match="cannot be trusted: its record was made with"):
        qpm.load(run, variant=b.name, device="cpu")
    (b / "stages" / "qpm.json").unlink()
    with pytest.raises(QPMError, match="stages/qpm.json is missing"):
        qpm.load(run, variant=b.name, device="cpu")
    assert qpm.load(run, variant=a.name, device="cpu").variant == a.name  # a is untouched

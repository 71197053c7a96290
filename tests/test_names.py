"""Class names are plain, printable text everywhere: figures (no mathtext), the page, CSV
and terminal summaries, even for names that are markup or not UTF-8."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from conftest import variant
from pagecheck import static_checks

from qpm.cli import main
from qpm.text import plain_text, printable

pytestmark = pytest.mark.usefixtures("one_thread")

HOSTILE = [b"$\\undefinedcmd$", b"price $5 to $10", b"caf\xff\xfe", b'a<b>&"c']


def test_printable_escapes_what_cannot_be_shown():
    assert printable("price $5 to $10") == "price $5 to $10"
    assert printable(os.fsdecode(b"caf\xff")) == "caf\\xff"
    assert printable("a\nb\x1b[31m\u200e") == "a\\u000ab\\u001b[31m\\u200e"
    assert printable("Große Möwe 鳥") == "Große Möwe 鳥"
    printable(os.fsdecode(b"\xff")).encode("ascii")  # always encodable


def test_dollars_are_drawn_literally():
    import io

    def width(text: str, parse_math: bool) -> float:
        import matplotlib.pyplot as plt

        fig = plt.figure()
        t = fig.text(0, 0, text, parse_math=parse_math)
        fig.canvas.draw()
        w = t.get_window_extent().width
        plt.close(fig)
        return w

    with plain_text():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        title = ax.set_title("$\\undefinedcmd$")
        assert title.get_parse_math() is False
        fig.savefig(io.BytesIO(), format="png")  # no mathtext error
        plt.close(fig)
        literal = width("price $5 to $10", parse_math=plt.rcParams["text.parse_math"])
    # with mathtext the dollars and the spaces between them vanish ("price 5to10")
    assert literal > width("price $5 to $10", parse_math=True) + 5


@pytest.fixture(scope="module")
def hostile_data(tmp_path_factory):
    """ROOT/train/<name>/*.png and ROOT/test/<name>/*.png with hostile folder names."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hostile") / "data"
    rng = np.random.default_rng(0)
    try:
        for c, name in enumerate(HOSTILE):
            for split, count in (("train", 6), ("test", 2)):
                folder = os.path.join(os.fsencode(root), split.encode(), name)
                os.makedirs(folder)
                for j in range(count):
                    img = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
                    img[3 + 5 * c:7 + 5 * c, :, c % 3] = 230
                    Image.fromarray(img).save(os.fsdecode(os.path.join(folder, b"%d.png" % j)))
    except OSError as exc:  # a file system that only takes UTF-8 names
        pytest.skip(f"cannot create the hostile folder names here: {exc}")
    return root


def test_hostile_class_names_train_explain_and_predict(hostile_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-root", str(hostile_data),
                 "--image-size", "24", "--arch", "small-cnn", "--epochs", "1", "--ft-epochs",
                 "1", "--batch-size", "8", "--n-features", "8", "--per-class", "2",
                 "--solver", "greedy", "--device", "cpu", "--run-dir", str(run)]) == 0
    summary = capsys.readouterr().out
    assert "class price $5 to $10:" in summary and "class caf\\xff\\xfe:" in summary
    assert (variant(run) / "assignment.png").read_bytes()[:4] == b"\x89PNG"
    assert (variant(run) / "stages" / "qpm.json").is_file()
    page = tmp_path / "page"
    assert main(["explain", str(run), "--out", str(page), "--device", "cpu"]) == 0
    text, expl = static_checks(page)
    assert "price $5 to $10" in text and "caf\\xff\\xfe" in text
    assert "a&lt;b&gt;&amp;&quot;c" in text and 'a<b>&"c' not in text
    names = {c["name"] for c in expl["classes"]}
    assert names == {"$\\undefinedcmd$", "price $5 to $10", "caf\\xff\\xfe", 'a<b>&"c'}
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(run), str(hostile_data / "test"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 8 and {r["class"] for r in rows} <= names
    assert any("caf\\xff\\xfe" in r["path"] for r in rows)
    one = os.fsdecode(os.path.join(os.fsencode(hostile_data), b"test", HOSTILE[2], b"0.png"))
    assert main(["predict", str(run), one, "--explain", str(tmp_path / "why")]) == 0
    assert "caf\\xff\\xfe" in capsys.readouterr().out
    assert len(list((tmp_path / "why").glob("*.png"))) == 1


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_compare_plot_title_is_plain_text(tmp_path):
    from qpm.assignment.compare import Comparison
    from qpm.assignment.compare_report import plot

    out = tmp_path / "compare.png"
    plot(Comparison(rows=[]), out, title=os.fsdecode(b"$\\undefinedcmd$ \xff.npz"))
    assert out.read_bytes()[:4] == b"\x89PNG"

"""The command line: --version, defaults in --help, -q, --json, no stray files, a closed pipe,
progress bars only where they belong, class names kept by `qpm similarities`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qpm import logs
from qpm.assignment.cache import load_similarities, save_similarities
from qpm.assignment.synthetic import make_features, make_instance
from qpm.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_sims(tmp_path_factory):
    p = make_instance("tiny", seed=0)
    return save_similarities(tmp_path_factory.mktemp("sims") / "SIMS.npz", p.A, p.R, p.b,
                             settings={"n_features": 10, "per_class": 3})


def test_version(capsys):
    from qpm import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"qpm {__version__}"


@pytest.mark.parametrize("command, shown", [
    ("solve", ["recorded, else 50", "recorded, else 5", "default: gurobi", "600 s",
               "default: 0.0001"]),
    ("train", ["default: 50", "default: 5", "default: gurobi", "600 s", "default: mnist-5k"]),
    ("compare", ["default: gurobi,scip,highs,greedy", "recorded, else 50", "600 s"]),
])
def test_help_shows_the_defaults(capsys, command, shown):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for words in shown:
        assert words in text, words
    assert "-q, --quiet" in text and "-v, --verbose" in text


def test_solve_writes_no_file_without_out_and_json_goes_to_stdout(tiny_sims, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["solve", str(tiny_sims), "--solver", "highs"]) == 0
    out = capsys.readouterr().out
    assert "n=10, k=3" in out and "objective" in out  # the file's recorded problem
    assert list(tmp_path.iterdir()) == []  # no stray RESULT.json
    assert main(["solve", str(tiny_sims), "--solver", "highs", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] and len(data["selected_features"]) == 10
    assert list(tmp_path.iterdir()) == []


def test_quiet_silences_the_messages_not_the_result(tiny_sims, tmp_path, capsys):
    args = ["solve", str(tiny_sims), "--solver", "highs", "--json", "--out",
            str(tmp_path / "r.json")]
    assert main(args) == 0
    loud = capsys.readouterr()
    assert "wrote" in loud.err
    assert main([*args, "-q"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and json.loads(quiet.out)["verified"]


@pytest.mark.parametrize("before, after", [(["-q"], []), ([], ["-q"]), (["-q"], ["-q"])])
def test_quiet_before_or_after_the_command(tiny_sims, tmp_path, capsys, before, after):
    # `qpm -q solve` was refused ("unrecognized arguments") and `-q` had to follow the
    # sub-command; both places work now, and a flag before is not reset by the one after.
    args = [*before, "solve", str(tiny_sims), "--solver", "highs", "--json", "--out",
            str(tmp_path / "r.json"), *after]
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.err == "" and json.loads(out.out)["verified"]


def test_verbose_counts_on_both_sides_of_the_command(tiny_sims, capsys):
    assert main(["-v", "solve", str(tiny_sims), "--solver", "greedy"]) == 0
    assert "DEBUG qpm.solve" in capsys.readouterr().err
    assert main(["-v", "solve", "-v", str(tiny_sims), "--solver", "greedy"]) == 0
    assert "DEBUG qpm.solve" in capsys.readouterr().err


def test_every_option_of_every_command_says_what_it_does():
    from qpm.cli import _build_parser

    parser, _ = _build_parser([])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{name} {'/'.join(action.option_strings) or action.dest}"
            for name, command in sub.choices.items() for action in command._actions
            if action.help in (None, "") and not isinstance(action, argparse._HelpAction)]
    assert bare == []


def test_solve_into_a_closed_pipe_ends_quietly(tiny_sims):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "qpm", "solve", str(tiny_sims), "--solver",
                             "greedy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # like `| head` that has already left
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err


def test_progress_bars_only_on_a_terminal_or_when_asked(monkeypatch):
    from qpm.pipeline import distributed as dist

    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    try:
        for tty, progress, env, shown in [(False, None, None, False), (True, None, None, True),
                                          (False, True, None, True), (True, None, "1", False),
                                          (False, True, "1", False)]:
            monkeypatch.setattr(sys, "stderr", Tty(tty))
            if env:
                monkeypatch.setenv("TQDM_DISABLE", env)
            logs.configure(0, progress)
            assert logs.show_bars() is shown
            bar = dist.main_only(range(3), file=sys.stderr)
            assert bar.disable is not shown
            bar.close()
            monkeypatch.delenv("TQDM_DISABLE", raising=False)
        logs.configure(-1)  # -q: no bars even on a terminal
        monkeypatch.setattr(sys, "stderr", Tty(True))
        assert not logs.show_bars()
    finally:
        monkeypatch.undo()
        logs.configure(0)


def test_similarities_keeps_the_features_files_class_names(tmp_path, capsys):
    X, y = make_features(24, 4, samples_per_class=5, seed=0)
    feats = tmp_path / "features.npz"
    names = np.array(["Black footed Albatross", "<b>Laysan</b>", "Sooty", "Crested"])
    np.savez(feats, features=X, labels=y, class_names=names)
    out = tmp_path / "sims.npz"
    assert main(["similarities", str(feats), "-o", str(out)]) == 0
    assert "class names kept" in capsys.readouterr().out
    assert load_similarities(out).class_names == tuple(names.tolist())

"""The machine's limits through real ``python -m qpm`` processes (issue 23): a file size limit
(``ulimit -f``), an address-space limit too small for torch (``ulimit -v``), a run folder that
is not writable, a named pipe given as input, two imports racing for one new folder, and
Pillow's warnings. Each ends with exit code 2 and one line on stderr (or, for the warnings,
one log line instead of Python's two), and nothing that existed changed."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN_FLAGS
from lost_work import reference_state
from test_processes import REPO, env

KiB = 1024


def limited(fsize: int | None = None, address: int | None = None):
    """A preexec_fn that sets the child's file size and address-space limits."""
    def apply() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if address is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address, address))
    return apply


def run_qpm(args: list[str], preexec=None, timeout: float = 300, cwd=REPO, extra_env=None,
            prefix: tuple[str, ...] = ("-m", "qpm")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *prefix, *map(str, args)],
                          env={**env(), **(extra_env or {})}, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)


def hashes(*folders: Path) -> dict[str, str]:
    out = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            out[str(path)] = ("dir" if path.is_dir() else
                              hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def one_line(proc: subprocess.CompletedProcess, command: str, progress: bool = False) -> str:
    """The error line (exit code 2, no traceback); ``progress``: qpm's own progress lines and
    one-line warnings may come first (work done before a write failed is shown)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and lines, proc.stderr[-2000:]
    assert len(lines) == 1 or progress, proc.stderr[-2000:]
    assert not any(line.startswith(" ") for line in lines), proc.stderr  # no source lines
    assert lines[-1].startswith(f"qpm {command}: error:"), lines[-1]
    return lines[-1]


def unchanged(before: dict[str, str], after: dict[str, str]) -> bool:
    """Nothing that existed changed (new files may be there: a run folder's lock)."""
    return all(after.get(k) == v for k, v in before.items())


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


def _image(tiny_imagefolder: Path) -> Path:
    return sorted((tiny_imagefolder / "test").rglob("*.png"))[0]


@pytest.mark.parametrize("command", ["evaluate", "explain", "predict", "similarities", "train"])
def test_a_file_size_limit_of_zero_is_one_line(command, run, tiny_imagefolder, tmp_path):
    argv = {
        "evaluate": ["evaluate", run, "--device", "cpu"],
        "explain": ["explain", run, "--device", "cpu"],
        "predict": ["predict", run, _image(tiny_imagefolder), "--out", tmp_path / "p.csv"],
        "similarities": ["similarities", run / "features.npz", "-o", tmp_path / "s.npz"],
        "train": ["train", *TINY_RUN_FLAGS, "--data-root", tiny_imagefolder, "--run-dir",
                  tmp_path / "fresh"],
    }[command]
    before = hashes(tmp_path)
    line = one_line(run_qpm(argv, limited(fsize=0)), command, progress=True)
    assert "file size limit" in line and "ulimit -f" in line, line
    assert unchanged(before, hashes(tmp_path))


def test_a_file_size_limit_during_training_names_the_file(tiny_imagefolder, tmp_path):
    # 64 KiB: the small files are written, the first model checkpoint is not.
    proc = run_qpm(["train", *TINY_RUN_FLAGS, "--data-root", tiny_imagefolder, "--run-dir",
                    tmp_path / "fresh"], limited(fsize=64 * KiB))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "dense.ckpt: the file size limit of 65,536 bytes (ulimit -f) was reached" in lines[-1]
    assert not [p for p in (tmp_path / "fresh").rglob("*") if p.name.endswith(".tmp")]


def test_too_little_address_space_for_torch_says_how_much_is_needed(run):
    before = hashes(run)
    line = one_line(run_qpm(["evaluate", run, "--device", "cpu"],
                            limited(address=1536 * 2**20)), "evaluate")
    assert "address-space limit (ulimit -v) is 1.5 GiB" in line and "4 GiB" in line, line
    assert hashes(run) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the "
                    "table in test_lost_work.py refuses the writes through tempfile instead")
def test_a_read_only_run_folder_is_one_line(run, tiny_imagefolder):
    before = hashes(run)
    for path in [run, *run.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        proc = run_qpm(["train", *TINY_RUN_FLAGS, "--data-root", tiny_imagefolder,
                        "--run-dir", run])
        assert "permission denied" in one_line(proc, "train").lower()
    finally:
        for path in [run, *run.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    assert hashes(run) == before


def test_a_named_pipe_is_refused_not_read(tmp_path):
    # Opening a FIFO for reading blocks until someone writes: qpm must not even open it.
    os.mkfifo(tmp_path / "sims.npz")
    line = one_line(run_qpm(["solve", tmp_path / "sims.npz", "--solver", "greedy"],
                            timeout=120), "solve")
    assert "is a named pipe (FIFO), not a regular file" in line


def test_of_two_imports_into_one_new_folder_one_is_refused(tmp_path, tiny_imagefolder):
    path = tmp_path / "reference.pth"
    torch.save(reference_state(), path)
    target = tmp_path / "imported"
    argv = ["import-reference", path, "--dataset", "imagefolder", "--data-root",
            tiny_imagefolder, "--run-dir", target, "--image-size", "32"]
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-m", "qpm", *map(str, argv)],
                                      env=env(), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        time.sleep(0.3)
    results = [(p.returncode, out, err) for p in procs
               for out, err in [p.communicate(timeout=600)]]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and ("is in use by" in refused[0]
                                  or "is already a run folder" in refused[0]), refused
    assert run_qpm(["predict", target, _image(tiny_imagefolder)]).returncode == 0


def test_pillow_warnings_are_one_log_line_naming_the_file(run, tiny_imagefolder, tmp_path):
    # An image a little over Pillow's pixel limit: Pillow warns (DecompressionBombWarning).
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 1000\n"
            "from qpm.cli import main; sys.exit(main(sys.argv[1:]))")
    image = tmp_path / "big.png"  # a test image: 40 x 40 = 1600 pixels
    shutil.copy(_image(tiny_imagefolder), image)
    proc = run_qpm(["predict", run, image, image], prefix=("-c", code))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # once, though the image was read twice
    assert lines[0].startswith(f"image {image}: Image size (1600 pixels) exceeds limit"), lines
    assert "warnings.warn" not in proc.stderr and "DecompressionBombWarning" not in proc.stderr

"""Checks of an explanation page (index.html) in headless Chromium, shared by the tests.

``chromium`` is None when no browser is installed; the tests that need it skip then (CI's
.ci/run installs Debian's chromium).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args, user_dir: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={user_dir}", "--virtual-time-budget=5000",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def static_checks(out_dir: Path) -> tuple[str, dict]:
    """The page's text and explanation.json; asserts what holds without a browser."""
    page = (out_dir / "index.html").read_text()
    expl = json.loads((out_dir / "explanation.json").read_text())
    # nothing remote: no URL with a scheme or a protocol-relative one, anywhere
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?):", page)
    assert not re.search(r"""(?:src|href)\s*=\s*["']//""", page)
    for src in re.findall(r"""src="([^"]+)\"""", page):
        assert (out_dir / src).is_file(), src  # every image is a local file next to it
    figures = [p for p in [*expl["similar_pairs"], *expl["closest_pairs"]] if p.get("figure")]
    for p in figures:
        a, b = p["classes"]
        assert page.count(f'src="{p["figure"]}"') == 1  # each pair figure once
        assert page.count(f'href="#pair-{a}-{b}"') == 2  # linked from both classes' cards
    for f in expl["features"]:
        assert page.count(f'id="feature-{f["index"]}"') == 1
        for g in f.get("gallery", []):
            assert f'src="{g["image"]}"' in page
    assert page.count('class="class-entry"') == expl["n_classes"]
    assert expl["counts_line"] in page
    return page, expl


def browser_checks(out_dir: Path, tmp: Path, shot: Path | None = None) -> str:
    """Render the page: every image loads, the DOM has the expected parts, the screenshot
    is not blank. Returns the DOM."""
    page, expl = static_checks(out_dir)
    url = (out_dir / "index.html").resolve().as_uri()
    shot = shot or tmp / "shot.png"
    res = _chromium("--window-size=1280,1600", f"--screenshot={shot}", url,
                    user_dir=tmp / "profile-shot")
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280) and pixels.std() > 5  # not a blank page
    dom = _chromium("--dump-dom", url, user_dir=tmp / "profile-dom").stdout
    assert 'data-images-ok="true"' in dom  # every image loaded, from local files
    n_images = int(re.search(r'data-image-count="(\d+)"', dom).group(1))
    assert n_images == len(re.findall(r"<img ", page))
    assert dom.count('class="class-entry"') == expl["n_classes"]
    assert dom.count('<figure class="pair"') == sum(
        1 for p in [*expl["similar_pairs"], *expl["closest_pairs"]] if p.get("figure"))
    assert dom.count('class="feature-row"') == len(expl["features"])
    assert dom.count("<tr>") == expl["n_classes"] + 1  # the assignment table: header + rows
    return dom

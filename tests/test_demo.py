"""``qpm demo`` in a headless browser: upload a test image, move the coverage slider, and the
prediction set and the tree change; every request the page makes stays on this machine.

Needs the demo extra (Gradio), selenium and Debian's chromium + chromium-driver (``.ci/run``
installs them); skips with the reason when one is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the demo extra (pip install 'qpm[demo]')")
pytest.importorskip("selenium", reason="selenium drives the browser (the dev extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="needs chromium and chromedriver (Debian: chromium-driver)"),
    pytest.mark.usefixtures("one_thread"),
]
LOW, HIGH = 0.5, 0.99


@pytest.fixture(scope="module")
def calibrated(trained_run, tmp_path_factory):
    from qpm.cli import main

    run = tmp_path_factory.mktemp("demo") / "run"
    shutil.copytree(trained_run, run)
    assert main(["calibrate", str(run), "--device", "cpu", "--repeats", "0"]) == 0
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_whose_set_changes(model, folder: Path) -> tuple[Path, list[int], list[int]]:
    """A test image whose prediction set differs between the two slider positions."""
    for path in sorted(folder.rglob("*.png")):
        out = model.outputs(path)
        low = model.prediction_sets(out, LOW).classes[0]
        high = model.prediction_sets(out, HIGH).classes[0]
        if low != high:
            return path, low, high
    raise AssertionError(f"no image in {folder} changes its prediction set")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,1600",
                # any host but this machine fails to resolve: a remote asset cannot load
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_demo_upload_and_slider_change_the_set_and_the_tree(calibrated, tiny_imagefolder,
                                                             tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import qpm
    from qpm.demo.app import build_app

    model = qpm.load(calibrated, device="cpu")
    image, low, high = _image_whose_set_changes(model, tiny_imagefolder / "test")
    names = model.class_names
    app, _ = build_app(model, title="demo test")
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True, share=False)
    driver = _browser()
    wait = WebDriverWait(driver, 120)

    def shown() -> tuple[str, str]:
        text = driver.find_element(By.ID, "qpm-set").text
        imgs = driver.find_elements(By.CSS_SELECTOR, "#qpm-tree img")
        return text, imgs[0].get_attribute("src") if imgs else ""

    def settled(want: str, old_tree: str = ""):
        def check(_):
            text, tree = shown()
            return want in text and "processing" not in text and tree and tree != old_tree
        return check

    def set_coverage(value: float, old_tree: str = "") -> None:
        """Type ``value`` into the slider's number box until the page shows its set: on a
        loaded machine a change can land while the previous event is still being processed
        and be dropped, so the value is typed again (at most 4 times)."""
        want = f"{100 * value:g}% coverage"
        for attempt in range(4):
            box = driver.find_element(By.CSS_SELECTOR, "#qpm-coverage input[type=number]")
            box.clear()
            box.send_keys(str(value), "\n")
            try:
                WebDriverWait(driver, 30 if attempt < 3 else 120).until(settled(want, old_tree))
                return
            except TimeoutException:
                continue
        raise AssertionError(f"the page never showed {want!r}: {shown()[0]!r}")

    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#qpm-image input[type=file]"))
        slider = driver.find_element(By.CSS_SELECTOR, "#qpm-coverage input[type=number]")
        slider.clear()
        slider.send_keys(str(LOW), "\n")
        driver.find_element(By.CSS_SELECTOR, "#qpm-image input[type=file]").send_keys(
            str(image))
        try:
            wait.until(settled(f"{100 * LOW:g}% coverage"))
        except TimeoutException:  # the slider's value was dropped: type it again
            set_coverage(LOW)
        text_low, tree_low = shown()
        assert f"({len(low)} class" in text_low
        assert all(names[c] in text_low for c in low)
        set_coverage(HIGH, tree_low)
        text_high, tree_high = shown()
        assert f"({len(high)} class" in text_high and text_high != text_low
        assert tree_high != tree_low  # the tree was drawn again, with the new set marked
        assert "calibration: a stratified random" in text_high  # says which split
        assert driver.find_elements(By.CSS_SELECTOR, "#qpm-features img")
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = {m["params"]["request"]["url"] for m in requests
                if m["method"] == "Network.requestWillBeSent"}
        remote = [u for u in urls if not u.startswith((f"http://127.0.0.1:{port}/", "data:",
                                                       "blob:"))]
        assert urls and not remote, remote
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        from PIL import Image

        assert np.asarray(Image.open(shot).convert("L"), dtype=float).std() > 5
    finally:
        driver.quit()
        app.close()


def test_demo_needs_gradio_only_when_run(monkeypatch, calibrated, capsys):
    """Without Gradio, qpm demo is one line naming the extra (exit code 2)."""
    import builtins

    from qpm.cli import main

    real = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["demo", str(calibrated)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "qpm[demo]" in err

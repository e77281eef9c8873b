"""Both notebook widgets in a real JupyterLab, driven by headless Chromium: the annotator's canvas renders and a
stroke + OK writes an annotation; the explorer's slider redraws its tiles and its button saves the direction."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from helpers.direction_masks.direction_files import load_direction

TOKEN = "widgets-test"
CELLS = [
    """from helpers.widgets.annotator import Annotator
annotator = Annotator("work", "default-stylegan2", seed=0, brush_size=8)
annotator.widget""",
    """import torch
from helpers.gans import load
from helpers.widgets.explorer import DirectionExplorer
G = load("default-stylegan2")
directions = {"first": torch.eye(G.dim_z)[0], "second": torch.eye(G.dim_z)[1]}
explorer = DirectionExplorer(G, directions, magnitude=5.0, save_to="bg_direction.pth")
explorer.widget""",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server (this environment's kernel) serving a notebook of both widgets; yields (url, folder)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "widgets.ipynb")
    port, state = _free_port(), tmp_path / ".jupyter"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the kernel runs `python`
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--expose-app-in-browser",  # window.jupyterapp: run the cells, watch the kernel
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.root_dir={tmp_path}",
        f"--IdentityProvider.token={TOKEN}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/lab/tree/widgets.ipynb?token={TOKEN}", tmp_path
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _wait_for(browser, script: str, what: str, timeout: float = 120):
    """Polls a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _button(browser, text: str):
    return next(b for b in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea button") if b.text == text)


KERNEL_IDLE = (
    "((window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status) === 'idle')"
    " && document.querySelector('.jp-Notebook') !== null"
)
CANVAS = "document.querySelector('.jp-OutputArea canvas')"


def _pixel(x: int, y: int) -> str:
    """JavaScript for the RGBA values of the annotator's canvas at (x, y), as a JSON string."""
    return f"JSON.stringify(Array.from({CANVAS}.getContext('2d').getImageData({x}, {y}, 1, 1).data))"


def test_the_widgets_work_in_jupyterlab(browser, jupyterlab):
    url, folder = jupyterlab
    browser.set_window_size(1400, 1800)
    browser.get(url)
    _wait_for(browser, KERNEL_IDLE, "the kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait_for(browser, f"{CANVAS} !== null", "the annotator's canvas")
    _wait_for(browser, "document.querySelectorAll('.jp-OutputArea img').length >= 3", "the explorer's tiles")

    # the annotator: the canvas shows the generated image; a stroke paints it; OK saves it into the store
    canvas = browser.find_element(By.CSS_SELECTOR, ".jp-OutputArea canvas")
    assert browser.execute_script(f"return [{CANVAS}.width, {CANVAS}.height]") == [384, 384]
    before = json.loads(
        _wait_for(browser, f"JSON.parse({_pixel(100, 100)})[3] === 255 && {_pixel(100, 100)}", "an image")
    )
    assert len(set(before[:3])) > 1  # a coloured pixel of the generated image, not a blank canvas
    stroke = ActionChains(browser).move_to_element_with_offset(canvas, -92, -92).click_and_hold()
    stroke.move_by_offset(40, 0).move_by_offset(40, 0).release().perform()  # from (100, 100) to (180, 100)
    _wait_for(browser, f"{_pixel(100, 100)} !== '{json.dumps(before, separators=(',', ':'))}'", "the stroke", 30)
    _button(browser, "OK").click()
    store = folder / "work" / "data" / "store.json"
    deadline = time.monotonic() + 30
    while not (store.exists() and json.loads(store.read_text()).get("version", 0) >= 1):
        assert time.monotonic() < deadline, "OK did not save the annotation"
        time.sleep(0.25)
    _wait_for(browser, "document.body.innerText.includes('1 saved')", "the status line after OK", 30)

    # the explorer: dragging the slider redraws the mask; the button writes the direction with the slider's sign
    tiles = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea img")[-3:]
    assert all(browser.execute_script("return arguments[0].naturalWidth > 0", tile) for tile in tiles)
    mask_before = tiles[-1].get_attribute("src")
    handle = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .noUi-handle")[-1]  # the first: the brush size
    ActionChains(browser).click_and_hold(handle).move_by_offset(-150, 0).release().perform()
    deadline = time.monotonic() + 30
    while tiles[-1].get_attribute("src") == mask_before:
        assert time.monotonic() < deadline, "the mask tile did not change with the slider"
        time.sleep(0.25)
    _button(browser, "save as bg_direction.pth").click()
    _wait_for(browser, "document.body.innerText.includes('saved −first')", "the explorer's saved message", 30)
    saved = load_direction(folder / "bg_direction.pth")
    assert saved[0] == -1.0 and (saved[1:] == 0).all()
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert severe == [], severe

"""JupyterLab in headless Chromium, offline: run a notebook with INTERACTIVE=True, move a control
and see the figure change, type a bad value and see the error in the panel itself."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from notebook_runner import NOTEBOOKS

# small parameters so that "Run All" takes seconds
OVERRIDES = """INTERACTIVE = True
T = 32
T_LIST = [8, 32]
GRID_POINTS = 21
LR0_SWEEP = [0.1, 0.15]
GAMMA_SWEEP = [0.9, 0.95]
"""


def _tools() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("chromium and chromium-driver are needed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    pytest.importorskip("selenium", reason="selenium is a dev dependency: pip install -e '.[dev]'")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PLOTLY_CELL = """import plotly.graph_objects as go
from signgd_lab.viz.conversion import show_plotly
show_plotly(go.Figure(go.Scatter(y=[1, 3, 2])))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server (no token, local only) serving a copy of notebook 02 whose parameters
    are overridden by a cell right after the parameters cell, as papermill would, and a
    one-cell notebook that shows a plotly figure."""
    tools = _tools()
    tmp_path = tmp_path_factory.mktemp("lab")
    nb = nbformat.read(NOTEBOOKS / "02_signgd_nonlinearities.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(OVERRIDES))
    nbformat.write(nb, tmp_path / "02_lab.ipynb")
    plot = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PLOTLY_CELL)])
    plot.metadata["kernelspec"] = nb.metadata["kernelspec"]
    nbformat.write(plot, tmp_path / "plotly_reload.ipynb")
    port = _free_port()
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(1)
        yield url, tmp_path, tools
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait(driver, condition, timeout: float, what: str):
    """Poll ``condition(driver)`` until it returns a truthy value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition(driver)
        except Exception:  # the DOM changes under us while Lab renders
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _chrome(tmp_path: Path, browser: str, driver_path: str, profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / profile}",
                # offline: every name but the local server fails to resolve
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _open_and_run_all(driver, url: str, notebook: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/lab/tree/{notebook}")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 120,
          "the notebook to open")
    _wait(driver, lambda d: "Idle" in d.find_element(By.ID, "jp-main-statusbar").text, 120,
          "the kernel to start")
    _run_all(driver)


def _run_all(driver) -> None:
    """Run > Run All Cells from the menu bar."""
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: d.find_element(
        By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']"), 30,
          "the Run menu").click()
    _wait(driver, lambda d: d.find_element(
        By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']"),
          30, "Run All Cells").click()


@contextlib.contextmanager
def _browser(lab, profile: str):
    """A headless Chromium driver on the lab server's files; on failure a screenshot
    ``<profile>.png`` is saved and named with the server log; always closed."""
    url, tmp_path, (browser, driver_path) = lab
    driver = _chrome(tmp_path, browser, driver_path, profile)
    try:
        yield driver
    except Exception:
        shot = tmp_path / f"{profile}.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}; server log: {tmp_path / 'lab.log'}")
        raise
    finally:
        driver.quit()


@pytest.mark.browser
def test_lab_panel_redraws_and_shows_errors(lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url = lab[0]
    with _browser(lab, "chrome-panel") as driver:
        _open_and_run_all(driver, url, "02_lab.ipynb")

        def panel(d):  # the first panel: one signGD neuron, with a target box
            return d.find_elements(By.CSS_SELECTOR, ".signgd-panel")[0]

        def panel_image(d):
            imgs = panel(d).find_elements(By.CSS_SELECTOR, ".widget-output img")
            return imgs[0].get_attribute("src") if imgs else None

        first = _wait(driver, panel_image, 300, "the first panel's figure")
        box = panel(driver).find_element(By.CSS_SELECTOR, "input[type='text']")
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("exp", Keys.ENTER)
        second = _wait(driver, lambda d: (s := panel_image(d)) and s != first and s, 120,
                       "the figure to change after choosing the exp target")
        assert second != first
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("no_such_target", Keys.ENTER)
        error = _wait(driver, lambda d: panel(d).find_element(
            By.CSS_SELECTOR, ".signgd-panel-error").text, 120, "the error message in the panel")
        assert "unknown target 'no_such_target'" in error
        assert panel_image(driver) is None  # the stale figure is gone, not left as if current


@pytest.mark.browser
def test_lab_plotly_figure_survives_a_reload(lab):
    """Each plotly output carries its own plotly.js: after saving and reloading the page the
    figure is drawn again, offline ("Plotly is not defined" was the failure)."""
    from selenium.webdriver.common.by import By

    url, tmp_path, _ = lab
    drawn = ".jp-OutputArea-output .js-plotly-plot svg.main-svg"
    with _browser(lab, "chrome-plotly") as driver:
        _open_and_run_all(driver, url, "plotly_reload.ipynb")
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, drawn), 120, "the plotly figure")
        # run it again: the output that had plotly.js once is replaced by the new one
        _run_all(driver)
        _wait(driver, lambda d: "[2]" in d.find_element(
            By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt").text,
              120, "the second run")
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, drawn), 120, "the plotly figure")
        # save with File > Save Notebook (no keyboard focus needed)
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='File']").click()
        _wait(driver, lambda d: d.find_element(
            By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and text()='Save Notebook']"),
              30, "Save Notebook").click()
        _wait(driver, lambda d: "Plotly.newPlot" in (tmp_path / "plotly_reload.ipynb").read_text(),
              60, "the notebook to be saved with its output")
        driver.refresh()
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 120,
              "the notebook to reopen")
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, drawn), 120,
              "the plotly figure after the reload")

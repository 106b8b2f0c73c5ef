"""Lesson 1 in a real JupyterLab, in headless Chromium: the notebook runs and its widgets work.

A JupyterLab server is started for the test on a free local port (a token, a private configuration,
runtime, settings and workspace folder, DEBERTA_EDU_SMOKE=1) with the repository as its root. Chromium
(every host but this machine mapped to "not found") opens notebooks/01_relative_distance.ipynb, runs
it with the menu item Run > Run All Cells, waits for the kernel, and checks that

* no cell produced an error output, and every widget the notebook displays is drawn;
* pressing ArrowRight on the "sequence length L" slider of the δ-matrix widget moves its readout
  and the kernel sends a new picture (the image the widget shows changes);
* the browser console shows no error and no request leaves the machine;
* the notebook files are left as they were (autosave is off in the test's settings).

The kernel side of the round trip is real: the picture is drawn by ``deberta_edu.lessons.widgets`` in the
kernel after the slider's new value arrives. Skipped when chromium/chromedriver (`make browser-deps`)
or JupyterLab/ipywidgets are missing. On failure a screenshot and the server's log are kept under
pytest's temporary folder and named in the message.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from webdriver import CHROMEDRIVER, CHROMIUM, FLAGS, MISSING, OFFLINE, chromium_session, free_port

pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (pip install -e '.[dev]')")
pytest.importorskip("ipywidgets", reason="ipywidgets is not installed (pip install -e '.[dev]')")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "notebooks/01_relative_distance.ipynb"
PAIRED = [ROOT / NOTEBOOK, ROOT / NOTEBOOK.replace(".ipynb", ".py")]

# user settings of the test's JupyterLab: no autosave (the lesson files stay as they are), every cell
# rendered (no windowing), no news or update checks, no extension manager (nothing asks the internet)
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server for the repository: SimpleNamespace(url, token, log); always shut down."""
    home = tmp_path_factory.mktemp("jupyterlab")
    for name, values in SETTINGS.items():
        path = home / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    token = secrets.token_hex(16)
    port = free_port()
    env = {
        **os.environ,
        "DEBERTA_EDU_SMOKE": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),  # no user configuration or kernels of this machine
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    log_path = home / "server.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",  # harmless when not root; needed when the tests run as root
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        f"--FileCheckpoints.root_dir={home / 'checkpoints'}",  # no .ipynb_checkpoints in the repository
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the test reads the notebook's model
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{url}/api/status", headers=headers),
                                            timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within 60 s:\n{_log_tail(log_path)}")
            time.sleep(0.25)
        yield SimpleNamespace(url=url, token=token, log=log_path)
    finally:
        try:  # the server shuts its kernels down, then exits
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown", method="POST", headers=headers),
                                   timeout=10).close()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.terminate()  # SIGTERM: the server still stops its kernels
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture(scope="module")
def browser():
    with chromium_session([*FLAGS, "--window-size=1280,1000", OFFLINE], profile_prefix="deberta-edu-lab-chromium-",
                          timeouts={"script": 60000, "pageLoad": 60000}, check_console=True) as wd:
        yield wd


# --- what the page shows -------------------------------------------------------------------------
NOTEBOOK_STATE = """
var app = window.jupyterapp, w = null;
if (app) {  // the notebook's panel: JupyterLab 4.6 leaves currentWidget null in a headless window without focus
  w = app.shell.currentWidget;
  if (!w || !w.context) w = Array.from(app.shell.widgets('main')).filter(function (x) {
    return x.context && x.context.path.slice(-6) === '.ipynb'; })[0] || null;
}
if (!w || !w.content || !w.content.model || !w.sessionContext || !w.context.isReady) return null;
var cells = w.content.model.cells, counts = [], errors = [], widgets = 0;
for (var i = 0; i < cells.length; i++) {
  var cell = cells.get(i);
  if (cell.type !== 'code') continue;
  counts.push(cell.executionCount);
  cell.outputs.toJSON().forEach(function (o) {
    if (o.output_type === 'error') errors.push('cell ' + i + ': ' + o.ename + ': ' + o.evalue);
    if (o.data && o.data['application/vnd.jupyter.widget-view+json']) widgets += 1;
  });
}
var kernel = w.sessionContext.session && w.sessionContext.session.kernel;
return {path: w.context.path, kernel: kernel ? kernel.status : null, counts: counts, errors: errors,
        widgets: widgets};
"""

# the δ-matrix panel: the widget box holding the "sequence length L" slider, and a fingerprint of its picture
DELTA_PANEL = """
var slider = Array.prototype.filter.call(document.querySelectorAll('.jp-OutputArea .widget-slider'),
  function (s) { var l = s.querySelector('.widget-label'); return l && l.textContent === 'sequence length L'; })[0];
var box = slider && slider.closest('.widget-vbox');
var img = box && box.querySelector('img.widget-image');
if (!img || !img.complete || !img.naturalWidth) return null;
var canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
canvas.getContext('2d').drawImage(img, 0, 0);
var png = canvas.toDataURL('image/png'), hash = 0;  // the pixels, re-encoded, as a short fingerprint
for (var i = 0; i < png.length; i++) hash = (hash * 31 + png.charCodeAt(i)) | 0;
var message = box.querySelector('.widget-html-content');
return {readout: slider.querySelector('.widget-readout').textContent.trim(),
        handle: slider.querySelector('.noUi-handle').getAttribute('aria-valuenow'),
        pixels: img.naturalWidth + 'x' + img.naturalHeight + ':' + png.length + ':' + hash, src: img.src,
        message: message ? message.textContent.trim() : ''};
"""

DRAWN_WIDGETS = """
return {images: Array.prototype.filter.call(document.querySelectorAll('.jp-OutputArea img.widget-image'),
                                            function (i) { return i.complete && i.naturalWidth > 0; }).length,
        broken: document.querySelectorAll('.jupyter-widgets-error-widget').length
                + (document.body.textContent.indexOf('Error displaying widget') >= 0 ? 1 : 0),
        loading: document.body.textContent.indexOf('Loading widget...') >= 0};
"""

RESOURCES = "return performance.getEntriesByType('resource').map(function (r) { return r.name; });"


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


class _Page:
    """Polling with a deadline; a timeout keeps a screenshot and the server's log for the message."""

    def __init__(self, wd, lab, shots: Path):
        self.wd, self.lab, self.shots = wd, lab, shots

    def fail(self, message: str):
        shot = self.shots / "jupyterlab.png"
        try:
            self.wd.screenshot(shot)
        except RuntimeError:
            shot = None
        pytest.fail(f"{message}\nscreenshot: {shot}\nserver log ({self.lab.log}):\n{_log_tail(self.lab.log)}")

    def wait(self, script: str, done, seconds: float, what: str):
        deadline, value = time.monotonic() + seconds, None
        while True:
            value = self.wd.js(script)
            if done(value):
                return value
            if time.monotonic() > deadline:
                self.fail(f"{what} (after {seconds:.0f} s); last state: {str(value)[:1500]}")
            time.sleep(0.25)


def test_lesson_1_runs_in_jupyterlab_and_its_slider_redraws(lab, browser, tmp_path):
    wd, page = browser, _Page(browser, lab, tmp_path)
    before = _digest(PAIRED)
    wd.console()  # start the console log here
    wd.open(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}&reset")
    state = page.wait(NOTEBOOK_STATE, lambda s: bool(s) and s["kernel"] == "idle", 60,
                      "the notebook did not open with an idle Python kernel")
    assert state["path"] == NOTEBOOK and len(state["counts"]) >= 5, state
    last_run = max((c for c in state["counts"] if c is not None), default=0)  # counts a new run must pass

    # Run > Run All Cells, from the menu bar, as a learner would
    menu = wd.js("return Array.prototype.filter.call(document.querySelectorAll('.lm-MenuBar-item'),"
                 " function (e) { return e.textContent.trim() === 'Run'; })[0] || null;")
    assert menu, "JupyterLab's menu bar has no Run menu"
    wd.click(menu)
    item = page.wait("return document.querySelector('.lm-Menu-item[data-command=\"runmenu:run-all\"]');",
                     bool, 10, "the Run menu has no 'Run All Cells' item")
    wd.click(item)
    state = page.wait(NOTEBOOK_STATE, lambda s: bool(s) and (s["errors"] != [] or (
        s["kernel"] == "idle" and all(c is not None and c > last_run for c in s["counts"]))), 60,
        "the notebook's cells did not all run")
    assert state["errors"] == [], f"cells failed in JupyterLab: {state['errors']}"
    assert state["widgets"] >= 2, f"lesson 1 should display its two widget panels: {state}"

    # every widget the notebook displays is drawn (the widget manager of JupyterLab talks to the kernel)
    drawn = page.wait(DRAWN_WIDGETS, lambda d: d["images"] >= state["widgets"] or d["broken"] > 0, 30,
                      "the notebook's widgets were not drawn")
    assert drawn["broken"] == 0, f"a widget failed to display: {drawn}"
    start = page.wait(DELTA_PANEL, bool, 15, "the δ-matrix widget (slider 'sequence length L') is not drawn")
    assert start["readout"] == "12" and start["message"] == "", start

    # the learner moves the slider one step with the keyboard; the kernel redraws the picture
    handle = wd.js("var h = Array.prototype.filter.call(document.querySelectorAll('.jp-OutputArea .widget-slider'),"
                   " function (s) { return s.querySelector('.widget-label').textContent === 'sequence length L'; })[0]"
                   ".querySelector('.noUi-handle'); h.scrollIntoView({block: 'center'}); return h;")
    wd.send_keys(handle, "\ue014")  # ArrowRight
    after = page.wait(DELTA_PANEL, lambda p: bool(p) and p["pixels"] != start["pixels"], 30,
                      "the δ-matrix picture did not change after the slider moved")
    assert after["readout"] == "13" and after["handle"].startswith("13"), after
    assert after["src"] != start["src"] and after["message"] == "", after

    # still no error output (the redraw runs in the kernel), no console error, nothing from elsewhere
    state = wd.js(NOTEBOOK_STATE)
    assert state["errors"] == [], f"errors after moving the slider: {state['errors']}"
    severe = [e for e in wd.console() if e.get("level") == "SEVERE"]
    assert severe == [], f"browser console errors: {severe}"
    outside = [r for r in wd.js(RESOURCES) if not r.startswith(lab.url + "/") and not r.startswith(("data:", "blob:"))]
    assert outside == [], f"JupyterLab requested files from elsewhere: {outside}"
    assert _digest(PAIRED) == before, "running the lesson in JupyterLab changed the notebook files"

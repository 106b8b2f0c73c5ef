"""Lessons 1, 2 and 3 in a real JupyterLab, in headless Chromium: the notebooks run and their widgets work.

A JupyterLab server is started for the tests on a free local port (a token, a private configuration,
runtime, settings and workspace folder, DEBERTA_EDU_SMOKE=1) with the repository as its root. Chromium
(every host but this machine mapped to "not found") opens each lesson's .ipynb, runs it with the menu
item Run > Run All Cells, waits for the kernel, and checks that

* no cell produced an error output, and every widget the notebook displays is drawn;
* a learner's action on each interactive output gets an answer:
  lesson 1, ArrowRight on the "sequence length L" slider of the δ-matrix widget moves its readout and the
  kernel sends a new picture (the image the widget shows changes); lesson 2, clicking the map "sum" of the
  attention widget does the same, and the attention explorer (an HTML page in an iframe) runs inside the
  output area, fits its frame, and redraws when a term and a head are clicked and reads out the cell under
  the mouse; lesson 3, ArrowRight on the shift slider redraws the shift widget;
* the browser console shows no error and no request leaves the machine;
* the notebook files are left as they were (autosave is off in the test's settings).

The kernel side of the round trip is real: the picture is drawn by ``deberta_edu.lessons.widgets`` in the
kernel after the control's new value arrives. Skipped when chromium/chromedriver (`make browser-deps`)
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

# the control of a widget whose label (its description) is arguments[0]: a slider, a dropdown, toggle buttons
FIND_CONTROL = """
var label = arguments[0];
var control = Array.prototype.filter.call(
  document.querySelectorAll('.jp-OutputArea .widget-inline-hbox, .jp-OutputArea .widget-toggle-buttons'),
  function (c) { var l = c.querySelector('.widget-label'); return l && l.textContent === label; })[0];
"""

# a panel of deberta_edu.lessons.widgets (a VBox: controls, message, image) found by the label of one of its
# controls (arguments[0]): what that control shows as its value, and a fingerprint of the panel's picture
PANEL = FIND_CONTROL + """
var box = control && control.closest('.widget-vbox');
var img = box && box.querySelector('img.widget-image');
if (!img || !img.complete || !img.naturalWidth) return null;
var canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
canvas.getContext('2d').drawImage(img, 0, 0);
var png = canvas.toDataURL('image/png'), hash = 0;  // the pixels, re-encoded, as a short fingerprint
for (var i = 0; i < png.length; i++) hash = (hash * 31 + png.charCodeAt(i)) | 0;
var message = box.querySelector('.widget-html-content'), readout = control.querySelector('.widget-readout'),
    select = control.querySelector('select'), active = control.querySelector('.widget-toggle-button.mod-active'),
    handle = control.querySelector('.noUi-handle');
return {value: readout ? readout.textContent.trim() : select ? select.value : active ? active.textContent.trim() : null,
        handle: handle && handle.getAttribute('aria-valuenow'),
        pixels: img.naturalWidth + 'x' + img.naturalHeight + ':' + png.length + ':' + hash, src: img.src,
        message: message ? message.textContent.trim() : ''};
"""

# the element a learner acts on inside the control labelled arguments[0]: its slider handle, or the toggle button
# whose text is arguments[1]; scrolled into view
CONTROL = FIND_CONTROL + """
var button = arguments[1];
var target = !control ? null : button === null ? control.querySelector('.noUi-handle')
  : Array.prototype.filter.call(control.querySelectorAll('button'),
                                function (b) { return b.textContent.trim() === button; })[0];
if (target) target.scrollIntoView({block: 'center'});
return target || null;
"""

DRAWN_WIDGETS = """
return {images: Array.prototype.filter.call(document.querySelectorAll('.jp-OutputArea img.widget-image'),
                                            function (i) { return i.complete && i.naturalWidth > 0; }).length,
        broken: document.querySelectorAll('.jupyter-widgets-error-widget').length
                + (document.body.textContent.indexOf('Error displaying widget') >= 0 ? 1 : 0),
        loading: document.body.textContent.indexOf('Loading widget...') >= 0};
"""

RESOURCES = "return performance.getEntriesByType('resource').map(function (r) { return r.name; });"

# lesson 2's attention explorer (deberta_edu.lessons.explorer: a page in an iframe's srcdoc) as the output area shows
# it: its own document, the state its canvas was drawn for, a fingerprint of the canvas and the errors the page saw
EXPLORER = """
var frames = document.querySelectorAll('.jp-OutputArea iframe[title="attention explorer"]');
if (frames.length !== 1) return {frames: frames.length};
var frame = frames[0], doc = frame.contentDocument, win = frame.contentWindow;
var main = doc && doc.getElementById('main');  // null too while the frame still holds its first, empty document
if (!main) return {frames: 1, document: !!doc, sandbox: frame.getAttribute('sandbox')};
var on = doc.querySelector('.thumb.on'), png = main.toDataURL(), hash = 0;
for (var i = 0; i < png.length; i++) hash = (hash * 31 + png.charCodeAt(i)) | 0;
return {frames: 1, document: true, explorer: !!win.__explorer, errors: win.__errors || null,
        state: main.getAttribute('data-state'), thumbs: doc.querySelectorAll('#heads .thumb').length,
        on: on && on.getAttribute('data-head'),
        canvas: png.length + ':' + hash, readout: doc.getElementById('readout').textContent,
        requests: win.performance.getEntriesByType('resource').map(function (r) { return r.name; }),
        frame: doc.documentElement.clientHeight, content: doc.documentElement.scrollHeight};
"""


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _paired(notebook: str) -> list[Path]:
    return [ROOT / notebook, ROOT / notebook.replace(".ipynb", ".py")]


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

    def wait(self, script: str, done, seconds: float, what: str, *args):
        deadline, value = time.monotonic() + seconds, None
        while True:
            value = self.wd.js(script, *args)
            if done(value):
                return value
            if time.monotonic() > deadline:
                self.fail(f"{what} (after {seconds:.0f} s); last state: {str(value)[:1500]}")
            time.sleep(0.25)

    def run_all(self, notebook: str, seconds: float, widgets: int) -> dict:
        """Open ``notebook``, run it with Run > Run All Cells as a learner would, and wait until every cell ran
        without an error output and every widget it displays (at least ``widgets``) is drawn; the notebook's
        state. Its files' digest is taken first (``clean`` compares it) and the console log starts here."""
        wd, self.paired = self.wd, _paired(notebook)
        self.before = _digest(self.paired)
        wd.console()
        wd.open(f"{self.lab.url}/lab/tree/{notebook}?token={self.lab.token}&reset")
        state = self.wait(NOTEBOOK_STATE, lambda s: bool(s) and s["path"] == notebook and s["kernel"] == "idle", 60,
                          f"{notebook} did not open with an idle Python kernel")
        assert len(state["counts"]) >= 5, state
        last_run = max((c for c in state["counts"] if c is not None), default=0)  # counts a new run must pass
        menu = wd.js("return Array.prototype.filter.call(document.querySelectorAll('.lm-MenuBar-item'),"
                     " function (e) { return e.textContent.trim() === 'Run'; })[0] || null;")
        assert menu, "JupyterLab's menu bar has no Run menu"
        wd.click(menu)
        item = self.wait("return document.querySelector('.lm-Menu-item[data-command=\"runmenu:run-all\"]');",
                         bool, 10, "the Run menu has no 'Run All Cells' item")
        wd.click(item)
        state = self.wait(NOTEBOOK_STATE, lambda s: bool(s) and (s["errors"] != [] or (
            s["kernel"] == "idle" and all(c is not None and c > last_run for c in s["counts"]))), seconds,
            f"the cells of {notebook} did not all run")
        assert state["errors"] == [], f"cells failed in JupyterLab: {state['errors']}"
        assert state["widgets"] >= widgets, f"{notebook} should display {widgets} widget panel(s) or more: {state}"
        # every widget the notebook displays is drawn (the widget manager of JupyterLab talks to the kernel)
        drawn = self.wait(DRAWN_WIDGETS, lambda d: d["images"] >= state["widgets"] or d["broken"] > 0, 30,
                          f"the widgets of {notebook} were not drawn")
        assert drawn["broken"] == 0, f"a widget failed to display: {drawn}"
        return state

    def redraws(self, label: str, act, what: str) -> tuple[dict, dict]:
        """The panel with the control ``label`` before and after ``act(wd)``; fails unless the kernel sent a new
        picture (the image's pixels changed) with no message."""
        start = self.wait(PANEL, bool, 15, f"the widget with the control {label!r} is not drawn", label)
        assert start["message"] == "", start
        act(self.wd)
        after = self.wait(PANEL, lambda p: bool(p) and p["pixels"] != start["pixels"], 60,
                          f"the picture did not change after {what}", label)
        assert after["src"] != start["src"] and after["message"] == "", after
        return start, after

    def clean(self):
        """Still no error output (redraws run in the kernel), no console error, nothing fetched from elsewhere,
        and the notebook files as they were."""
        state = self.wd.js(NOTEBOOK_STATE)
        assert state["errors"] == [], f"errors after using the widgets: {state['errors']}"
        severe = [e for e in self.wd.console() if e.get("level") == "SEVERE"]
        assert severe == [], f"browser console errors: {severe}"
        outside = [r for r in self.wd.js(RESOURCES)
                   if not r.startswith(self.lab.url + "/") and not r.startswith(("data:", "blob:"))]
        assert outside == [], f"JupyterLab requested files from elsewhere: {outside}"
        assert _digest(self.paired) == self.before, "running the lesson in JupyterLab changed the notebook files"


def _arrow_right(label: str):
    """The learner focuses the slider labelled ``label`` and presses ArrowRight once."""
    def act(wd):
        wd.send_keys(wd.js(CONTROL, label, None), "\ue014")
    return act


def _press(label: str, button: str):
    """The learner clicks the toggle button ``button`` of the control labelled ``label``."""
    def act(wd):
        wd.click(wd.js(CONTROL, label, button))
    return act


def test_lesson_1_runs_in_jupyterlab_and_its_slider_redraws(lab, browser, tmp_path):
    page = _Page(browser, lab, tmp_path)
    page.run_all(NOTEBOOK, 60, widgets=2)  # the δ-matrix and the bucket panels
    # the learner moves the δ-matrix slider one step with the keyboard; the kernel redraws the picture
    start, after = page.redraws("sequence length L", _arrow_right("sequence length L"), "the slider moved")
    assert start["value"] == "12" and after["value"] == "13" and after["handle"].startswith("13"), (start, after)
    page.clean()


LESSON_2 = "notebooks/02_disentangled_attention.ipynb"
LESSON_3 = "notebooks/03_enhanced_mask_decoder.ipynb"


def test_lesson_2_runs_in_jupyterlab_its_attention_widget_and_explorer_respond(lab, browser, tmp_path):
    wd, page = browser, _Page(browser, lab, tmp_path)
    page.run_all(LESSON_2, 180, widgets=1)  # the attention widget

    # the attention widget opens on the neighbour head's c2p map; the learner clicks "sum"
    start, after = page.redraws("map", _press("map", "sum"), "clicking the map 'sum'")
    assert (start["value"], after["value"]) == ("c2p", "sum"), (start, after)

    # the explorer: its page runs inside the output area, draws every head, and answers clicks and the mouse
    shown = page.wait(EXPLORER, lambda e: e.get("explorer") is True or bool(e.get("errors")), 30,
                      "the attention explorer's page did not run in the output area")
    assert shown["errors"] == [] and shown["state"] == "0/0/sum" and shown["thumbs"] >= 2, shown
    assert shown["content"] <= shown["frame"], f"the explorer needs scrolling inside its frame: {shown}"
    frame = wd.js("var f = document.querySelector('.jp-OutputArea iframe[title=\"attention explorer\"]');"
                  " f.scrollIntoView({block: 'start'}); return f;")
    wd.cmd("POST", "/frame", {"id": frame})
    try:
        wd.click('button[data-kind="c2p"]')
        wd.click('.thumb[data-head="1"]')
        canvas = wd.find("#main")
        wd.cmd("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                                                 "actions": [{"type": "pointerMove", "duration": 0, "origin": canvas,
                                                              "x": 0, "y": 0}]}]})
    finally:
        wd.cmd("POST", "/frame/parent", {})
    clicked = page.wait(EXPLORER, lambda e: e.get("state") == "0/1/c2p", 10,
                        "clicking the c2p term and head 1 did not redraw the explorer")
    assert clicked["canvas"] != shown["canvas"] and clicked["on"] == "1" and clicked["errors"] == [], clicked
    assert clicked["readout"].startswith("query ") and " c2p = " in clicked["readout"], clicked
    assert clicked["requests"] == [], f"the explorer's page requested {clicked['requests']}"
    page.clean()


def test_lesson_3_runs_in_jupyterlab_and_its_shift_slider_redraws(lab, browser, tmp_path):
    page = _Page(browser, lab, tmp_path)
    page.run_all(LESSON_3, 300, widgets=1)  # the shift widget
    label = "shift (pad tokens on the left)"
    start, after = page.redraws(label, _arrow_right(label), "the shift slider moved")
    assert start["value"] == "5" and after["value"] == "6" and after["handle"].startswith("6"), (start, after)
    page.clean()

"""Headless Chromium for the slides build and the browser tests, over chromedriver's W3C WebDriver protocol.

No selenium: the protocol is plain JSON over HTTP. ``chromium_session`` starts chromedriver and one
browser session and always stops both; ``WebDriver`` has the handful of commands the tests use.
Used by scripts/build_slides.py (PDFs, screenshots) and by the browser tests (tests/conftest.py puts
scripts/ on sys.path, so they ``import webdriver``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = ("headless Chromium and chromedriver not found; install them with `make browser-deps` "
           "(Debian: apt-get install chromium chromium-driver)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# every host but this machine is "not found": a request that leaves the machine fails loudly
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """One browser session: the W3C WebDriver commands the tests need."""

    def __init__(self, url: str, session: str):
        self.url, self.session = url, session

    @staticmethod
    def request(method: str, url: str, body=None, timeout: float = 120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {url}: {e.code} {e.read()[:800]!r}") from None

    def cmd(self, method: str, path: str, body=None):
        return self.request(method, f"{self.url}/session/{self.session}{path}", body)

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args):
        """``script`` calls ``done(value)`` (its last argument) when it has the answer."""
        return self.cmd("POST", "/execute/async", {"script": "var done = arguments[arguments.length - 1];\n"
                                                             + script, "args": list(args)})

    def find(self, css: str) -> dict:
        """The element (a W3C element reference, usable as a script argument)."""
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})

    @staticmethod
    def element_id(element: dict) -> str:
        return next(iter(element.values()))

    def click(self, css: str | dict):
        element = self.find(css) if isinstance(css, str) else css
        self.cmd("POST", f"/element/{self.element_id(element)}/click", {})

    def send_keys(self, element: dict, text: str):
        """Type ``text`` into ``element`` (focusing it first); keys such as ArrowRight are "\\ue014"."""
        self.cmd("POST", f"/element/{self.element_id(element)}/value", {"text": text})

    def open(self, url: str):
        self.cmd("POST", "/url", {"url": url})
        for _ in range(100):
            if self.js("return document.readyState;") == "complete":
                return
            time.sleep(0.1)
        raise AssertionError(f"{url} did not finish loading")

    def console(self) -> list[dict]:
        """Console messages since the last call (chromedriver's log endpoint; not part of W3C)."""
        return self.cmd("POST", "/se/log", {"type": "browser"}) or []

    def print_pdf(self, path: Path, width_px: int, height_px: int):
        """The page as a PDF of pages ``width_px`` × ``height_px`` CSS pixels, no margins, with backgrounds."""
        cm = 2.54 / 96
        data = self.cmd("POST", "/print", {"background": True, "shrinkToFit": False,
                                           "page": {"width": width_px * cm, "height": height_px * cm},
                                           "margin": {"top": 0, "bottom": 0, "left": 0, "right": 0}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def set_viewport(self, width: int, height: int):
        """Resize the window so that the page itself (the viewport) is ``width`` × ``height``."""
        self.cmd("POST", "/window/rect", {"width": width, "height": height})
        inner = self.js("return [window.innerWidth, window.innerHeight];")
        self.cmd("POST", "/window/rect", {"width": 2 * width - inner[0], "height": 2 * height - inner[1]})

    def screenshot(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))


@contextlib.contextmanager
def chromium_session(flags: list[str], *, profile_prefix: str = "deberta-edu-chromium-",
                     timeouts: dict | None = None, check_console: bool = False):
    """chromedriver on a free port and one headless Chromium session with ``flags``; both stopped on exit.

    ``timeouts`` (W3C, milliseconds) e.g. {"script": 60000}; ``check_console`` fails at once when this
    chromedriver lacks the console-log endpoint, rather than silently seeing no errors later.
    """
    port = free_port()
    profile = tempfile.mkdtemp(prefix=profile_prefix)
    log = tempfile.NamedTemporaryFile(prefix="chromedriver-", suffix=".log", delete=False)
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):  # wait for chromedriver to listen
            try:
                WebDriver.request("GET", f"{url}/status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, RuntimeError):
                time.sleep(0.1)
        always = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [*flags, f"--user-data-dir={profile}"]},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        if timeouts:
            always["timeouts"] = timeouts
        session = WebDriver.request("POST", f"{url}/session", {"capabilities": {"alwaysMatch": always}},
                                    timeout=120)["sessionId"]
        wd = WebDriver(url, session)
        try:
            if check_console:
                wd.console()
            yield wd
        finally:
            with contextlib.suppress(Exception):
                WebDriver.request("DELETE", f"{url}/session/{session}", timeout=30)
    finally:
        driver.terminate()
        try:
            driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)

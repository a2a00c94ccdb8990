"""Headless Chromium driven over the DevTools protocol (a websocket), for pages behind a login: the
Airflow UI of the cluster tests, opened with the session cookie a user's login sets (``_token``)."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def render(
    chromium: str,
    url: str,
    cookies: dict[str, str],
    profile: Path,
    ready_js: str,
    screenshot: Path | None = None,
    timeout: float = 60,
    window: tuple[int, int] = (1400, 1100),
) -> str:
    """Open ``url`` with ``cookies`` set for its origin, wait until ``ready_js`` (a JavaScript
    expression) is true or ``timeout`` passes, and return the page's HTML (and save a screenshot)."""
    proc = subprocess.Popen(
        [
            chromium,
            *FLAGS,
            f"--window-size={window[0]},{window[1]}",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            ids = itertools.count(1)

            def call(method: str, **params) -> dict:
                n = next(ids)
                ws.send(json.dumps({"id": n, "method": method, "params": params}))
                while True:  # events arrive between the answers: skip them
                    message = json.loads(ws.recv(timeout=30))
                    if message.get("id") == n:
                        if "error" in message:
                            raise RuntimeError(f"{method}: {message['error']}")
                        return message["result"]

            origin = "/".join(url.split("/")[:3])
            for name, value in cookies.items():
                call("Network.setCookie", name=name, value=value, url=origin, path="/", httpOnly=True)
            call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                done = call("Runtime.evaluate", expression=f"Boolean({ready_js})", returnByValue=True)
                if done["result"].get("value"):
                    break
                time.sleep(0.5)
            time.sleep(1)  # the last rows' styles
            html = call(
                "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
            )
            if screenshot:
                screenshot.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
            return html["result"]["value"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

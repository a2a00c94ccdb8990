"""Regenerate the documentation's screenshots with headless Chromium (never taken by hand).

    python docs/screenshots.py site                  # the built site: home, CLI reference, benchmarks
    python docs/screenshots.py report                # the nightly report of VISREC_HOME (after make demo)
    python docs/screenshots.py mlflow                # the MLflow UI over VISREC_HOME's tracking store
    python docs/screenshots.py airflow               # the Airflow UI over VISREC_HOME's DAG runs

Each writes PNGs into docs/images/. ``site`` builds the site first (``mkdocs build --strict``) into a
temporary folder; ``report``, ``mlflow`` and ``airflow`` need a home with at least one nightly run
(``make demo``); the last two start their server on a free port and stop it.
Chromium: Debian's ``chromium`` (``make browser`` installs it on a root Debian machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
BIN = Path(sys.executable).parent


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        sys.exit("screenshots: no chromium on PATH (make browser installs Debian's on a root Debian machine)")
    return found


def _browser():
    """tests/cluster/browser.py: Chromium over the DevTools protocol (waits for a page's JavaScript)."""
    spec = importlib.util.spec_from_file_location("browser", REPO / "tests" / "cluster" / "browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shoot(
    url: str, out: Path, ready_js: str = "document.readyState === 'complete'", width: int = 1400
) -> None:
    """Open ``url``, wait until ``ready_js`` holds, save a screenshot to ``out``."""
    browser = _browser()
    with tempfile.TemporaryDirectory() as profile:
        browser.render(
            _chromium(), url, {}, Path(profile), ready_js, screenshot=out, timeout=90, window=(width, 1000)
        )
    print(f"screenshots: {out.relative_to(REPO)} <- {url}")


def site() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "site"
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        subprocess.run(
            [str(BIN / "mkdocs"), "build", "--strict", "-q", "--site-dir", str(built)],
            cwd=REPO,
            env=env,
            check=True,
        )
        for page, name in (
            ("index.html", "site-home.png"),
            ("reference/cli/index.html", "site-cli.png"),
            ("benchmarks/index.html", "site-benchmarks.png"),
        ):
            shoot((built / page).as_uri(), IMAGES / name)


def report(home: Path) -> None:
    reports = home / "lake" / "reports"
    nights = sorted(reports.glob("ds=*/index.html"))
    if not nights:
        sys.exit(f"screenshots: no report under {reports}; run make demo first")
    shoot((reports / "index.html").as_uri(), IMAGES / "report-index.png", width=1280)
    shoot(nights[-1].as_uri(), IMAGES / "report-night.png", width=1280)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow(home: Path) -> None:
    store = home / "mlflow.db"
    if not store.exists():
        sys.exit(f"screenshots: no MLflow store at {store}; run make demo first")
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store}", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"{url}/health", server, "the MLflow server")
        # MLflow 3's UI opens with an announcement dialog and an assistant panel: close both (each
        # check of the page clicks their close buttons), then wait for the versions' aliases.
        ready = (
            "(() => { document.querySelectorAll('[role=dialog] button[aria-label=Close], "
            "button[aria-label=Close], button[aria-label=close]').forEach(b => b.click()); "
            "return document.body.innerText.includes('champion') && !document.querySelector('[role=dialog]'); })()"
        )
        shoot(f"{url}/#/models/visrec-mf", IMAGES / "mlflow-models.png", ready)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for(url: str, server: subprocess.Popen, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"screenshots: {what} did not start")
            time.sleep(1)


def airflow(home: Path) -> None:
    from visrec.app.orchestrate import airflow_env
    from visrec.settings import Settings

    env = airflow_env(Settings(home=home))
    if not (Path(env["AIRFLOW_HOME"]) / "airflow.db").exists():
        sys.exit(f"screenshots: no Airflow metadata under {env['AIRFLOW_HOME']}; run make demo first")
    # The demo's Airflow uses the simple auth manager: every visitor an admin, for this local view only.
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"{url}/api/v2/monitor/health", server, "Airflow's api-server")
        ready = "document.body.innerText.includes('train_cnn') && document.body.innerText.includes('publish')"
        shoot(f"{url}/dags/visrec_nightly", IMAGES / "airflow-dag.png", ready)
    finally:
        server.terminate()
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["site", "report", "mlflow", "airflow"], nargs="+")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("VISREC_HOME", REPO / ".visrec")))
    args = parser.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)
    for what in args.what:
        {
            "site": site,
            "report": lambda: report(args.home),
            "mlflow": lambda: mlflow(args.home),
            "airflow": lambda: airflow(args.home),
        }[what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A failed nightly task's alert: the summary drawn from Airflow's task context, posted as JSON to the
webhook setting (a real HTTP server on 127.0.0.1 receives it), and a webhook that is down only logged."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from visrec.pipeline import task_failed
from visrec.settings import Settings

pytestmark = pytest.mark.unit

CONTEXT = {
    "ti": SimpleNamespace(
        dag_id="visrec_nightly",
        run_id="scheduled__2026-11-02",
        task_id="train_cnn",
        try_number=3,
        hostname="worker1",
        log_url="http://airflow/dags/visrec_nightly/runs/x/tasks/train_cnn",
    ),
    "ds": "2026-11-02",
    "exception": RuntimeError("Traceback ...\nInputMissing: no embeddings for 2026-11-02"),
}


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_a_failed_task_posts_its_summary_to_the_webhook(webhook, tmp_path):
    url, received = webhook
    sent = task_failed(CONTEXT, Settings(home=tmp_path, alert_webhook=url))
    assert received == [sent]
    assert sent["task_id"] == "train_cnn" and sent["try_number"] == 3 and sent["ds"] == "2026-11-02"
    assert sent["error"] == "InputMissing: no embeddings for 2026-11-02"  # the last line, not the traceback
    assert sent["text"].startswith("visrec_nightly 2026-11-02: task train_cnn failed on try 3 (worker1)")
    assert sent["log_url"] in sent["text"]


def test_without_a_webhook_the_failure_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="visrec.pipeline.alerts"):
        sent = task_failed(CONTEXT, Settings(home=tmp_path))
    assert "task train_cnn failed on try 3" in caplog.text and sent["hostname"] == "worker1"


def test_a_webhook_that_is_down_does_not_raise(tmp_path, caplog):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="visrec.pipeline.alerts"):
        task_failed(CONTEXT, Settings(home=tmp_path, alert_webhook=f"http://127.0.0.1:{port}/hook"))
    assert "could not post the alert" in caplog.text


def test_the_webhook_setting_must_be_a_url(tmp_path):
    with pytest.raises(ValueError, match="alert_webhook"):
        Settings(home=tmp_path, alert_webhook="hooks.example.com")

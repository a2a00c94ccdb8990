"""What a failed nightly task tells its operator: a log line always, and a JSON post to
``VISREC_ALERT_WEBHOOK`` when one is set (its ``text`` field is what Slack and Mattermost incoming
webhooks show). Airflow calls :func:`task_failed` as the DAG's ``on_failure_callback``: once a task has
used its retries, not on each retry. Standard library only: the DAG file imports it at parse time.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from visrec.settings import Settings

log = logging.getLogger(__name__)


def failure_summary(context: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a failed task from Airflow's task context: DAG, run, date, task, try, host, the
    exception's last line and the task's log URL."""
    ti = context.get("ti") or context.get("task_instance")
    error = context.get("exception")
    summary = {
        "dag_id": getattr(ti, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "ds": context.get("ds"),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
        "hostname": getattr(ti, "hostname", None),
        "error": (str(error).strip().splitlines() or [type(error).__name__])[-1] if error else None,
        "log_url": getattr(ti, "log_url", None),
    }
    summary["text"] = (
        f"{summary['dag_id']} {summary['ds']}: task {summary['task_id']} failed on try "
        f"{summary['try_number']} ({summary['hostname'] or 'unknown host'}): {summary['error']}"
        + (f"; log {summary['log_url']}" if summary["log_url"] else "")
    )
    return summary


def task_failed(context: Mapping[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Log the failure and post it to the alert webhook (if set); a webhook that does not answer is
    logged, never raised (the task has failed already). Returns what was sent."""
    summary = failure_summary(context)
    log.error("visrec alert: %s", summary["text"])
    webhook = (settings or Settings.from_env()).alert_webhook
    if webhook:
        request = urllib.request.Request(
            webhook, data=json.dumps(summary).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                log.info("alert posted to %s (HTTP %d)", webhook, response.status)
        except (urllib.error.URLError, OSError) as error:
            log.warning("could not post the alert to %s: %s", webhook, error)
    return summary

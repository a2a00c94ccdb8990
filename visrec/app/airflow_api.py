"""A small client of Airflow's REST API (``/api/v2``) as a user calls it: a token taken with a user's
name and password (``/auth/token``, the FAB auth manager), then JSON requests with it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from visrec.errors import VisrecError


class AirflowAPIError(VisrecError):
    """Airflow's API answered with an error; the message has its status and detail."""


@dataclass
class AirflowAPI:
    """Airflow's REST API at ``base_url`` (e.g. ``http://127.0.0.1:8080``), as ``username``."""

    base_url: str
    username: str
    password: str
    _token: str | None = field(default=None, repr=False)

    def token(self) -> str:
        """A JWT for the API (taken once, then reused)."""
        if self._token is None:
            status, body = self.request(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            if status not in (200, 201):
                raise AirflowAPIError(
                    f"Airflow at {self.base_url} refused the login of {self.username} ({status}): {body}"
                )
            self._token = body["access_token"]
        return self._token

    def request(
        self, method: str, path: str, body: dict | None = None, *, auth: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """One request: its status and JSON body (anonymous with ``auth=False``)."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                return error.code, json.loads(text or "{}")
            except ValueError:
                return error.code, {"detail": text}

    def create_backfill(
        self, dag_id: str, start: str, end: str, conf: dict | None = None, max_active_runs: int = 1
    ) -> dict[str, Any]:
        """An Airflow backfill of ``dag_id`` for the logical dates ``start``..``end`` (YYYY-MM-DD), each
        run with ``conf``; Airflow's UI and API show it and can pause or cancel it."""
        body = {
            "dag_id": dag_id,
            "from_date": f"{start}T00:00:00Z",
            "to_date": f"{end}T00:00:00Z",
            "dag_run_conf": conf or {},
            "reprocess_behavior": "completed",
            "max_active_runs": max_active_runs,
        }
        status, answer = self.request("POST", "/api/v2/backfills", body)
        if status >= 400:
            raise AirflowAPIError(
                f"Airflow refused the backfill of {dag_id} {start}..{end} ({status}): {answer.get('detail', answer)}"
            )
        return answer

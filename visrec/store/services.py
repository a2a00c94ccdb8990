"""Is every service the settings point at reachable? One line naming the service and the setting.

A nightly run against a cluster depends on an S3 endpoint, an MLflow tracking server, a Spark master
and (for Airflow) PostgreSQL and Redis. When one is down, the run should stop at once with the name of
the service and the setting that points at it, not after minutes of retries with a stack trace.
Only a TCP connection is tried: it is cheap enough for every step, and it is what fails first.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from visrec.errors import VisrecError
from visrec.settings import Settings
from visrec.store.lake import LakeError


class ServiceUnreachable(VisrecError):
    """A service the settings point at does not answer."""


class LakeUnreachable(ServiceUnreachable, LakeError):
    """The lake's S3 endpoint does not answer: the lake cannot be read or written."""


def _endpoints(settings: Settings, env: dict[str, str]) -> list[tuple[str, str, str, type]]:
    """(service, URL, the setting that holds it, the error it raises) for every remote service in use."""
    found = []
    if settings.lake_uri.startswith("s3://") and settings.s3_endpoint:
        found.append(("S3 (the lake)", settings.s3_endpoint, "VISREC_S3_ENDPOINT", LakeUnreachable))
    if settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        found.append(
            (
                "the MLflow tracking server",
                settings.mlflow_tracking_uri,
                "VISREC_MLFLOW_TRACKING_URI",
                ServiceUnreachable,
            )
        )
    if settings.spark_master.startswith("spark://"):
        found.append(("the Spark master", settings.spark_master, "VISREC_SPARK_MASTER", ServiceUnreachable))
    for service, name in (
        ("PostgreSQL (Airflow's metadata)", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
        ("Redis (Celery's broker)", "AIRFLOW__CELERY__BROKER_URL"),
    ):
        if env.get(name, "").startswith(("postgresql", "redis")):
            found.append((service, env[name], name, ServiceUnreachable))
    return found


def _address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    default = {"https": 443, "http": 80, "spark": 7077, "redis": 6379}.get(parsed.scheme, 5432)
    return parsed.hostname or "127.0.0.1", parsed.port or default


def check_services(settings: Settings, env: dict[str, str] | None = None, timeout: float = 3.0) -> None:
    """Raise :class:`ServiceUnreachable` for the first configured service that refuses a connection."""
    env = os.environ if env is None else env
    for service, url, setting, error in _endpoints(settings, env):
        host, port = _address(url)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            safe = url.split("@")[-1]  # never print a password from a connection string
            raise error(
                f"{service} at {safe} is unreachable ({exc.strerror or exc}); start it or fix {setting}"
            ) from None

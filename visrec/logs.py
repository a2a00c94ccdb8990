"""Logging set-up shared by the command line, the DAG's tasks and the Spark entry points."""

from __future__ import annotations

import logging

NOISY = ("py4j", "great_expectations", "mlflow", "alembic", "urllib3", "botocore")


def setup_logging(verbose: bool = False) -> None:
    """visrec's messages at INFO (DEBUG with -v); the chatty libraries only when they warn."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)

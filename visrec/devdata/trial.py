"""A small, reproducible nightly run for comparing two deployments on the same data (the cluster tests
and the cluster bench): the same shop, and training with fixed epochs under budgets that never bind, so
two runs of a date train the same models and publish the same tables (measured: identical row hashes
for every output table, in-process twice and in-process against cluster mode)."""

from __future__ import annotations

import hashlib
import json
import os

from visrec.store.lake import Lake

HISTORY, NIGHT = "2026-11-01", "2026-11-02"

SHOP_ARGS = ("--users", "200", "--items", "120", "--days", "2", "--seed", "5", "--corrupt-rate", "0.01", "-q")

SETTINGS = {
    "VISREC_CNN_EPOCHS": "2",
    "VISREC_CNN_MINUTES": "30",
    "VISREC_GAN_EPOCHS": "2",
    "VISREC_GAN_MINUTES": "30",
    "VISREC_MF_TRIALS": "2",
    "VISREC_MF_EPOCHS": "3",
    "VISREC_MF_MINUTES": "30",
    "VISREC_MF_PROMOTION": "always",  # two days of history cannot pass the gate
    "VISREC_TEST_DAYS": "1",
    "VISREC_REPORT_USERS": "2",
}


def in_process_env(home: str) -> dict[str, str]:
    """This process's environment for an in-process run of the trial under ``home``: :data:`SETTINGS`,
    and none of the caller's visrec or Airflow settings (which may point at a cluster)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISREC_", "AIRFLOW"))}
    return {**env, **SETTINGS, "VISREC_HOME": str(home)}


def table_hashes(lake: Lake, ds: str, tables: list[str]) -> dict[str, str]:
    """A SHA-256 of the rows of each of ``tables`` for ``ds`` that exists (order-free; image URIs
    compared by their key under the lake, since two lakes' roots differ)."""
    hashes = {}
    for table in tables:
        if lake.manifest(table, ds) is None:
            continue
        rows = lake.read_table(table, ds).drop_columns(["ds"])
        if "image_uri" in rows.column_names:
            keys = [uri.split("/lake/", 1)[-1] for uri in rows.column("image_uri").to_pylist()]
            rows = rows.set_column(rows.column_names.index("image_uri"), "image_uri", [keys])
        lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows.to_pylist())
        hashes[table] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return hashes

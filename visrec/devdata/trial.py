"""A small, reproducible nightly run for comparing two deployments on the same data (the cluster tests
and the cluster bench): the same shop, and training with fixed epochs under budgets that never bind, so
two runs of a date train the same models and publish the same tables (measured: the same rows in
every output table, in-process twice and in-process against cluster mode, scores to float rounding)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.schemas import spec_for

HISTORY, NIGHT = "2026-11-01", "2026-11-02"

# `make demo`'s settings where the environment sets none (Settings.with_profile): budgets that keep it
# within about 8 minutes on 2 cores. The GAN's: at 2 minutes (about 23 epochs) its class consistency was
# still swinging from epoch to epoch (0.55-0.94 of the image model's accuracy over seeds); at 3 minutes
# (33-35 epochs; `python bench/run.py gan`, 4 seeds) it was 0.915-0.983 of it (mean 0.962, no category
# mostly missed), against 0.928-1.0 (mean 0.975) at 5 minutes.
DEMO = {"cnn_max_minutes": 3.0, "gan_max_minutes": 3.0, "mf_minutes": 0.5}

SHOP_ARGS = ("--users", "200", "--items", "120", "--days", "2", "--seed", "5", "--corrupt-rate", "0.01", "-q")

# The trial's settings (fields of visrec.settings.Settings): fixed epochs under budgets that never bind.
TRIAL = {
    "cnn_epochs": 2,
    "cnn_max_minutes": 30.0,
    "gan_epochs": 2,
    "gan_max_minutes": 30.0,
    "mf_trials": 2,
    "mf_epochs": 3,
    "mf_minutes": 30.0,
    "mf_promotion": "always",  # two days of history cannot pass the gate
    "test_days": 1,
    "report_users": 2,
}


def _as_env(overrides: dict[str, Any]) -> dict[str, str]:
    """``overrides`` checked by :class:`Settings` and written as the ``VISREC_*`` variables a child
    process (Airflow's tasks, a cluster's workers) reads them from."""
    env = Settings(**overrides).to_env()
    return {Settings.env_name(name): env[Settings.env_name(name)] for name in overrides}


SETTINGS = _as_env(TRIAL)


def in_process_env(home: str) -> dict[str, str]:
    """This process's environment for an in-process run of the trial under ``home``: :data:`TRIAL`,
    and none of the caller's visrec or Airflow settings (which may point at a cluster)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISREC_", "AIRFLOW"))}
    return {**env, **SETTINGS, "VISREC_HOME": str(home)}


def read_outputs(lake: Lake, ds: str, tables: list[str]) -> dict[str, pa.Table]:
    """Each of ``tables`` of ``ds`` that exists, sorted by its key, image URIs by their key under the
    lake (two lakes' roots differ): what :func:`differing_tables` compares."""
    out = {}
    for table in tables:
        if lake.manifest(table, ds) is None:
            continue
        rows = lake.read_table(table, ds).drop_columns(["ds"])
        if "image_uri" in rows.column_names:
            keys = [uri.split("/lake/", 1)[-1] for uri in rows.column("image_uri").to_pylist()]
            rows = rows.set_column(rows.column_names.index("image_uri"), "image_uri", [keys])
        out[table] = rows.sort_by([(k, "ascending") for k in spec_for(table).key])
    return out


def differing_tables(a: dict[str, pa.Table], b: dict[str, pa.Table], rel: float = 1e-5) -> list[str]:
    """The tables that differ: other rows, other values, or floats apart by more than ``rel``. Scores
    may differ in their last bits between deployments (a Spark task's BLAS runs on one thread, a
    process's on all cores: another summation order), never the items, ranks or ids."""
    differ = sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        if x.schema != y.schema or x.num_rows != y.num_rows:
            differ.append(name)
            continue
        for column in x.column_names:
            if not _same_column(x.column(column).combine_chunks(), y.column(column).combine_chunks(), rel):
                differ.append(name)
                break
    return differ


def _same_column(p: pa.Array, q: pa.Array, rel: float) -> bool:
    nested = pa.types.is_list(p.type) or pa.types.is_fixed_size_list(p.type)
    if not pa.types.is_floating(p.type.value_type if nested else p.type):
        return p.equals(q)
    if nested:
        if pa.types.is_list(p.type) and not p.offsets.equals(q.offsets):
            return False
        p, q = p.flatten(), q.flatten()
    a, b = p.to_numpy(zero_copy_only=False), q.to_numpy(zero_copy_only=False)
    return bool(np.allclose(a, b, rtol=rel, atol=1e-7, equal_nan=True))

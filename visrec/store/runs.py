"""Run records: each pipeline step's summary under ``runs/ds=<ds>/<step>.json``.

They are the run's history for people (the report puts a run beside the one before, ``gan_due`` reads
when the GAN last trained); steps hand each other their results by return value, not through these.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from visrec.store.lake import Lake

log = logging.getLogger(__name__)

Summary = dict[str, Any]


def record(lake: Lake, ds: str, step: str, summary: Summary) -> Summary:
    """Write ``summary`` as the record of ``step`` for ``ds`` (replacing an earlier one) and return it."""
    lake.put_bytes(f"runs/ds={ds}/{step}.json", json.dumps(summary, indent=1, sort_keys=True).encode())
    log.info("%s %s: %s", step, ds, summary)
    return summary


def run_summary(lake: Lake, ds: str, step: str) -> Summary | None:
    """The record of one step for ``ds``, or None when it never ran."""
    key = f"runs/ds={ds}/{step}.json"
    return json.loads(lake.get_bytes(key)) if lake.exists(key) else None


def run_summaries(lake: Lake, ds: str) -> dict[str, Summary]:
    """The step records of ``ds`` (empty when that date never ran)."""
    out = {}
    for key in lake.list_keys(f"runs/ds={ds}"):
        if key.endswith(".json"):
            out[key.rsplit("/", 1)[1][:-5]] = json.loads(lake.get_bytes(key))
    return out


def run_dates(lake: Lake) -> list[str]:
    """Every date with a run record, oldest first."""
    return sorted(d[3:] for d in lake.list_dirs("runs") if d.startswith("ds="))

"""Run state: each pipeline step's summary under ``runs/ds=<ds>/<step>.json``, read and written only here.

Steps hand each other their results by return value (XCom in Airflow), not through these records.
The records are the run's history: the report puts a night beside the ones before it, a retry of a
date reuses the model trained for it, a day ingested in one pass of a range is not ingested again,
and the GAN's schedule reads when it last trained. :class:`RunLog` is the one reader and writer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from visrec.store.lake import Lake

log = logging.getLogger(__name__)

Summary = dict[str, Any]


class RunLog:
    """The lake's run records: what each step did for each date."""

    def __init__(self, lake: Lake):
        self.lake = lake

    def _key(self, ds: str, name: str) -> str:
        return f"runs/ds={ds}/{name}"

    def record(self, ds: str, step: str, summary: Summary) -> Summary:
        """Write ``summary`` as the record of ``step`` for ``ds`` (replacing an earlier one); return it."""
        self.lake.put_bytes(
            self._key(ds, f"{step}.json"), json.dumps(summary, indent=1, sort_keys=True).encode()
        )
        log.info("%s %s: %s", step, ds, summary)
        return summary

    def get(self, ds: str, step: str) -> Summary | None:
        """The record of ``step`` for ``ds``, or None when it never ran."""
        key = self._key(ds, f"{step}.json")
        return json.loads(self.lake.get_bytes(key)) if self.lake.exists(key) else None

    def night(self, ds: str) -> dict[str, Summary]:
        """Every step's record for ``ds`` (empty when that date never ran)."""
        out = {}
        for key in self.lake.list_keys(f"runs/ds={ds}"):
            if key.endswith(".json"):
                out[key.rsplit("/", 1)[1][:-5]] = json.loads(self.lake.get_bytes(key))
        return out

    def dates(self) -> list[str]:
        """Every date with a run record, oldest first."""
        return sorted(d[3:] for d in self.lake.list_dirs("runs") if d.startswith("ds="))

    def backfilled(self, ds: str, step: str) -> Summary | None:
        """The record of ``step`` for ``ds`` when a one-pass ingestion of a range wrote it, else None."""
        done = self.get(ds, step)
        return done if done is not None and "backfill" in done else None

    def last(self, step: str, ds: str, key: str) -> tuple[str, Summary] | None:
        """(date, record) of the latest date at or before ``ds`` whose ``step`` record has a true ``key``."""
        for run_ds in reversed(self.dates()):
            if run_ds <= ds and (summary := self.get(run_ds, step)) and summary.get(key):
                return run_ds, summary
        return None

    def put_file(self, ds: str, name: str, data: bytes) -> str:
        """Keep a file of ``ds``'s run beside its records (a step names it in its summary); its key."""
        key = self._key(ds, name)
        self.lake.put_bytes(key, data)
        return key

    def file(self, key: str) -> bytes | None:
        """A file kept with :meth:`put_file`, or None when it is gone."""
        return self.lake.get_bytes(key) if key.startswith("runs/ds=") and self.lake.exists(key) else None

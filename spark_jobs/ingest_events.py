"""spark-submit entry point: a day's raw event logs -> clean events + quarantine.

    spark-submit spark_jobs/ingest_events.py --ds 2026-11-01

The same pipeline step as `visrec step ingest_events --ds DATE` (visrec.pipeline); the Spark logic
lives in visrec.ingest.jobs (DataFrame -> DataFrame, tested in-process).
"""

import sys

from visrec.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["step", "ingest_events", *sys.argv[1:]]))

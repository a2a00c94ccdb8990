"""spark-submit entry point: a day's raw event logs -> clean events + quarantine.

    spark-submit spark_jobs/ingest_events.py --ds 2026-11-01

The same pipeline step as `visrec step ingest_events --ds DATE` (visrec.pipeline); the Spark logic
lives in visrec.ingest.jobs (SQL that DuckDB and Spark both run, tested on both).
"""

import os
import sys

from visrec.app.cli import main

if __name__ == "__main__":
    os.environ.setdefault("VISREC_ENGINE", "spark")  # under spark-submit, the job runs on Spark
    sys.exit(main(["step", "ingest_events", *sys.argv[1:]]))

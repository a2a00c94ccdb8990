"""spark-submit entry point: a day's raw event logs -> clean events + quarantine.

    spark-submit spark_jobs/ingest_events.py --ds 2026-11-01

The logic lives in visrec.ingest and visrec.jobs (DataFrame -> DataFrame, tested in-process).
"""

import sys

from visrec.ingest import spark_job_main

if __name__ == "__main__":
    sys.exit(spark_job_main("ingest_events"))

"""spark-submit entry point: clean events up to a date -> interactions, user profiles, item stats.

    spark-submit spark_jobs/build_features.py --ds 2026-11-01

The logic lives in visrec.ingest and visrec.jobs (DataFrame -> DataFrame, tested in-process).
"""

import sys

from visrec.ingest import spark_job_main

if __name__ == "__main__":
    sys.exit(spark_job_main("build_features"))

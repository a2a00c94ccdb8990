"""spark-submit entry point: every clean event up to a date -> interactions, user profiles, item stats.

    spark-submit spark_jobs/build_features.py --ds 2026-11-01

The same pipeline step as `visrec step build_features --ds DATE` (visrec.pipeline); the Spark logic
lives in visrec.ingest.jobs (SQL that DuckDB and Spark both run, tested on both).
"""

import os
import sys

from visrec.app.cli import main

if __name__ == "__main__":
    os.environ.setdefault("VISREC_ENGINE", "spark")  # under spark-submit, the job runs on Spark
    sys.exit(main(["step", "build_features", *sys.argv[1:]]))

"""spark-submit entry point: clean events up to a date -> interactions, user profiles, item stats.

    spark-submit spark_jobs/build_features.py --ds 2026-11-01

The logic lives in visrec.ingest / visrec.jobs.features (DataFrame -> DataFrame, tested in-process).
"""

import argparse
import sys

from visrec.cli import setup_logging
from visrec.ingest import build_features
from visrec.lake import Lake
from visrec.settings import Settings
from visrec.spark import get_spark
from visrec.validation import TableValidator


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    args = parser.parse_args(argv)
    setup_logging()
    settings = Settings.from_env()
    lake = Lake.from_settings(settings)
    validator = TableValidator(args.ds)
    rows = build_features(settings, lake, args.ds, get_spark(settings, "build_features"), validator)
    validator.publish_docs(lake)
    print(f"{args.ds}: {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

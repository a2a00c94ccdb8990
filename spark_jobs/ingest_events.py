"""spark-submit entry point: a day's raw event logs -> clean events + quarantine.

    spark-submit spark_jobs/ingest_events.py --ds 2026-11-01

The logic lives in visrec.ingest / visrec.jobs.events (DataFrame -> DataFrame, tested in-process).
"""

import argparse
import sys

from visrec.cli import setup_logging
from visrec.ingest import ingest_events
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
    counts, reasons = ingest_events(settings, lake, args.ds, get_spark(settings, "ingest_events"), validator)
    validator.publish_docs(lake)
    print(f"{args.ds}: {counts} quarantine reasons {reasons}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

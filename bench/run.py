"""Benchmarks. ``python bench/run.py [NAME ...]`` runs some or all of them (one module per bench in
bench/benches/, each with ``run() -> Figures``); every figure goes to bench/results.json (flat keys)
and bench/RESULTS.md (for people, with the command that made it). Figures of benchmarks not run this
time, of a bench skipped for want of its data, and under the prefixes a partial run returns as
``benchkit.kept()`` stay as last measured, with their dates."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

# `python bench/run.py` puts bench/ on the path; spawned bench workers inherit it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import FIGURES, merge_figures, write_results  # noqa: E402

from visrec.logs import setup_logging  # noqa: E402

# In the order `make bench` runs them.
BENCHES = (
    "synth",
    "ingest",
    "backfill",
    "cnn",
    "cnn_profile",
    "cnn_warm",
    "mf",
    "mf_speed",
    "mf_hm",
    "mf_ml1m",
    "candidates_ml1m",
    "ranker_ml1m",
    "ranker_synthetic",
    "ranker_hm",
    "ranker_scale",
    "photos",
    "contrastive",
    "gan",
    "gan_hm",
    "scoring",
    "scale",
    "vision",
    "cluster",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHES], help="benchmarks (default all)")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    setup_logging()
    results: dict = {}
    if FIGURES.exists():
        results = json.loads(FIGURES.read_text())
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results["_machine"] = {"value": machine, "note": machine}
    for name in names:
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        at = datetime.now(UTC).strftime("%Y-%m-%d")
        figures = importlib.import_module(f"benches.{name}").run()
        results = merge_figures(results, name, figures, at)
        if not figures:
            print(f"  {name}: no figures (skipped); its earlier figures stay", file=sys.stderr)
        for key, fig in figures.items():
            if fig.get("kept"):
                print(f"  {key}.*: not measured this time; kept as last measured", file=sys.stderr)
            else:
                print(f"  {key} = {fig['value']} {fig['unit']}", file=sys.stderr)
    FIGURES.write_text(json.dumps(results, indent=1) + "\n")
    write_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

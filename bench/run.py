"""Benchmarks. Every figure goes to bench/results.json (flat keys) and bench/RESULTS.md (for people,
with the command that made it). ``python bench/run.py [NAME ...]`` runs some or all of them; figures of
benchmarks not run this time are kept from the previous results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
FIGURES = HERE / "figures.json"  # every figure with its unit, note and bench; the other two derive

Figures = dict[str, dict]  # key -> {"value", "unit", "command", "note"}


def _figure(value: float | int, unit: str, note: str = "") -> dict:
    return {"value": value, "unit": unit, "note": note}


def bench_synth() -> Figures:
    """Time of `visrec synth` at the demo's default scale and at 50k users x 10k items x 30 days."""
    from visrec.lake import Lake
    from visrec.synth import ShopConfig, generate_shop

    out: Figures = {}
    for name, config in [
        ("default", ShopConfig()),
        ("large", ShopConfig(users=50_000, items=10_000, days=30)),
    ]:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            summary = generate_shop(config, Lake(Path(tmp).as_uri()))
            seconds = time.perf_counter() - started
        scale = f"{config.users} users x {config.items} items x {config.days} days"
        out[f"synth.{name}.seconds"] = _figure(round(seconds, 2), "s", scale)
        out[f"synth.{name}.events"] = _figure(summary.events, "events", scale)
        out[f"synth.{name}.events_per_s"] = _figure(round(summary.events / seconds), "events/s", scale)
    return out


BENCHES: dict[str, Callable[[], Figures]] = {"synth": bench_synth}


def _write(results: dict) -> None:
    RESULTS_JSON.write_text(json.dumps({k: v["value"] for k, v in sorted(results.items())}, indent=1) + "\n")
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python bench/run.py`); each figure names the bench that measured it.",
        "Machine of the last run: " + results.get("_machine", {}).get("note", "?"),
        "",
        "| key | value | unit | bench (command) | measured | notes |",
        "|---|---|---|---|---|---|",
    ]
    for key, fig in sorted(results.items()):
        if key.startswith("_"):
            continue
        cmd = f"`python bench/run.py {fig['bench']}`"
        lines.append(f"| {key} | {fig['value']} | {fig['unit']} | {cmd} | {fig['at']} | {fig['note']} |")
    RESULTS_MD.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHES], help="benchmarks (default all)")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    results: dict = {}
    if FIGURES.exists():
        results = json.loads(FIGURES.read_text())
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results["_machine"] = {"value": machine, "note": machine}
    for name in names:
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        at = datetime.now(UTC).strftime("%Y-%m-%d")
        for key, fig in BENCHES[name]().items():
            results[key] = {**fig, "bench": name, "at": at}
            print(f"  {key} = {fig['value']} {fig['unit']}", file=sys.stderr)
    FIGURES.write_text(json.dumps(results, indent=1) + "\n")
    _write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

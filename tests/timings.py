"""Time each test tier (and the demo) and write the docs' table of timings from the last measured runs.

    python tests/timings.py run <tier> -- <pytest arguments>   # what the Makefile's test targets run
    python tests/timings.py run demo                             # what `make demo` runs
    python tests/timings.py docs                                 # rewrite docs/development.md's table

``run`` runs pytest (or, for ``demo``, ``python -m visrec.app.demo``; output streamed as usual), then
records the wall time, pytest's summary line and the machine in ``.visrec/test-timings.json``; it
exits with the command's status. ``docs`` replaces the lines between docs/development.md's
``test-timings`` markers with a table of those records, so the figures there are the last measured
ones, never typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / ".visrec" / "test-timings.json"
PAGE = REPO / "docs" / "development.md"
START, END = "<!-- test-timings:start -->", "<!-- test-timings:end -->"
TIERS = {
    "test": "`make test` (every tier but cluster)",
    "test-fast": "`make test-fast` (the unit tier)",
    "test-jax": "`make test-jax` (the backend tier under JAX)",
    "cluster-test": "`make cluster-test` (the nightly DAG as deployed, fault injection)",
    "demo": "`make demo` (the whole pipeline: a shop, its history, two nights through Airflow)",
}
SUMMARY = re.compile(r"(\d+ (?:passed|failed|errors?)\b.*?) in [\d.]+s")


def run(tier: str, args: list[str]) -> int:
    started = time.perf_counter()
    summary = ""
    if tier == "demo":  # its progress bars go straight to the terminal
        command = ["-m", "visrec.app.demo"]
        status = subprocess.call([sys.executable, *command, *args])
    else:
        command = ["-m", "pytest"]
        proc = subprocess.Popen(
            [sys.executable, *command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if found := SUMMARY.search(line):
                summary = found.group(1)
        status = proc.wait()
    seconds = time.perf_counter() - started
    records = json.loads(RECORDS.read_text()) if RECORDS.exists() else {}
    records[tier] = {
        "seconds": round(seconds, 1),
        "summary": summary or f"exit status {status}",
        "status": status,
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["python", *command, *args]).replace("python -m pytest", "pytest"),
    }
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")
    print(
        f"{tier}: {seconds / 60:.1f} min ({records[tier]['summary']}); recorded in {RECORDS.relative_to(REPO)}"
    )
    return status


def table(records: dict) -> list[str]:
    lines = ["| tier | wall time | result | command | measured |", "|---|---|---|---|---|"]
    for tier, label in TIERS.items():
        if tier in records:
            r = records[tier]
            minutes, seconds = divmod(round(r["seconds"]), 60)
            lines.append(
                f"| {label} | {minutes} min {seconds:02d} s | {r['summary']} | `{r['command']}` "
                f"| {r['at']}, {r['machine']} |"
            )
    return lines


def docs() -> int:
    if not RECORDS.exists():
        print(f"no timings yet: run the test tiers first ({RECORDS.relative_to(REPO)} is missing)")
        return 1
    text = PAGE.read_text()
    if START not in text or END not in text:
        print(f"{PAGE.relative_to(REPO)} has no {START} ... {END} block to fill")
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(table(json.loads(RECORDS.read_text())))
    PAGE.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    print(f"{PAGE.relative_to(REPO)}: timings from {RECORDS.relative_to(REPO)}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and len(argv) >= 2 and argv[1] in TIERS:
        args = argv[2:]
        return run(argv[1], args[1:] if args[:1] == ["--"] else args)
    if argv == ["docs"]:
        return docs()
    print(__doc__.strip(), file=sys.stderr)
    print(f"tiers: {', '.join(TIERS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Mutation check: break a behaviour the suite must guard, run the suite, and say which test caught it.

    python tests/mutants.py [name ...]     # default: every mutant below

Each mutant is one textual change to visrec's source, applied to the working tree, then undone
whatever happens. The suite runs as ``make test`` runs it (two workers), stopping at the first
failure (``-x``); a mutant that the suite lets pass is reported as SURVIVED and the exit status is 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    why: str


MUTANTS = [
    Mutant(
        "promotion_gate_flipped",
        "visrec/recsys/train.py",
        "        beats = low > 0\n",
        "        beats = low < 0\n",
        "the promotion gate promotes a model that does not beat its rivals",
    ),
    Mutant(
        "exif_kept",
        "visrec/ingest/user_photos.py",
        "        lake.put_bytes(image_key, result.png)\n",
        "        lake.put_bytes(image_key, dict(todo)[result.key])\n",
        "a user's photo is stored as uploaded (EXIF and GPS included) instead of re-encoded from pixels",
    ),
    Mutant(
        "publish_before_validation",
        "visrec/publish.py",
        "    rows = validate_outputs(settings, lake, ds, present, k)\n    release = read_release(lake)\n",
        "    release = read_release(lake)\n",
        "the release is switched before (here: without) validating the output tables",
    ),
]


def run(mutant: Mutant) -> tuple[bool, str, float]:
    """Apply ``mutant``, run the suite, undo; (caught, the first failing test or summary, seconds)."""
    path = REPO / mutant.path
    source = path.read_text()
    if source.count(mutant.original) != 1:
        raise SystemExit(f"{mutant.name}: its original text is not in {mutant.path} exactly once; update it")
    started = time.perf_counter()
    try:
        path.write_text(source.replace(mutant.original, mutant.mutated))
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-n", "2"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    finally:
        path.write_text(source)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    return out.returncode != 0, ", ".join(failed) or summary, time.perf_counter() - started


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    survived = 0
    for mutant in chosen:
        caught, detail, seconds = run(mutant)
        survived += not caught
        verdict = "caught by" if caught else "SURVIVED:"
        print(f"{mutant.name} ({mutant.why}): {verdict} {detail} [{seconds:.0f} s]", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Mutation check: break a behaviour the suite must guard, run the suite, and say which test caught it.

    python tests/mutants.py [--guards-only] [name ...]     # default: every mutant below

Each mutant is a textual change to visrec's source, applied to the working tree, then undone whatever
happens. First the tests written to guard that behaviour run (``guards``), then the whole suite as
``make test`` runs it (three workers), stopping at its first failure (``-x``). A mutant that the whole
suite lets pass is reported as SURVIVED and the exit status is 1.
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
    changes: tuple[tuple[str, str], ...]  # (original text, its replacement), each original found once
    why: str
    guards: tuple[str, ...]  # the tests meant to catch it


MUTANTS = [
    Mutant(
        "promotion_gate_flipped",
        "visrec/recsys/train.py",
        (("        beats = low > 0\n", "        beats = low < 0\n"),),
        "the promotion gate promotes a model that does not beat its rivals",
        ("tests/test_recommenders.py::test_gate_needs_a_margin_the_bootstrap_believes",),
    ),
    Mutant(
        "exif_kept",
        "visrec/ingest/user_photos.py",
        (
            (
                "        lake.put_bytes(image_key, result.png)\n",
                "        lake.put_bytes(image_key, dict(todo)[result.key])\n",
            ),
        ),
        "a user's photo is stored as uploaded (EXIF and GPS included) instead of re-encoded from pixels",
        ("tests/test_photos.py::test_gps_exif_never_reaches_storage",),
    ),
    Mutant(
        "publish_before_validation",
        "visrec/publish.py",
        (
            ("    rows = validate_outputs(settings, lake, ds, present, k)\n", ""),
            (
                "    lake.put_bytes(RELEASE_KEY, json.dumps(release, indent=1, sort_keys=True).encode())\n",
                "    lake.put_bytes(RELEASE_KEY, json.dumps(release, indent=1, sort_keys=True).encode())\n"
                "    rows = validate_outputs(settings, lake, ds, present, k)\n",
            ),
        ),
        "the outputs are validated after the release is switched, not before",
        ("tests/test_pipeline.py::test_publish_refuses_bad_outputs_and_changes_nothing",),
    ),
]


def _pytest(args: list[str]) -> tuple[bool, str]:
    """Run pytest; (it failed, the failing tests or its last line)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args], cwd=REPO, capture_output=True, text=True
    )
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    return out.returncode != 0, ", ".join(failed) or summary


def run(mutant: Mutant, whole_suite: bool = True) -> tuple[bool, str, bool, str, float]:
    """Apply ``mutant``, run its guards then the suite, undo; (guards failed, which, suite failed,
    its first failure, seconds)."""
    path = REPO / mutant.path
    source = path.read_text()
    mutated = source
    for original, replacement in mutant.changes:
        if mutated.count(original) != 1:
            raise SystemExit(f"{mutant.name}: {original!r} is not in {mutant.path} exactly once; update it")
        mutated = mutated.replace(original, replacement)
    started = time.perf_counter()
    try:
        path.write_text(mutated)
        guarded, by_guards = _pytest(list(mutant.guards))
        caught, by_suite = _pytest(["-x", "-n", "3"]) if whole_suite else (guarded, "")
    finally:
        path.write_text(source)
    return guarded, by_guards, caught, by_suite, time.perf_counter() - started


def main(args: list[str]) -> int:
    names = [a for a in args if a != "--guards-only"]
    chosen = [m for m in MUTANTS if not names or m.name in names]
    survived = 0
    for mutant in chosen:
        guarded, by_guards, caught, by_suite, seconds = run(mutant, "--guards-only" not in args)
        survived += not caught
        guards = f"its guards failed: {by_guards}" if guarded else f"its guards PASSED ({by_guards})"
        if not by_suite:
            suite = "the whole suite not run (--guards-only)"
        elif caught:
            suite = f"the suite's first failure: {by_suite}"
        else:
            suite = f"SURVIVED the suite ({by_suite})"
        print(f"{mutant.name} ({mutant.why}): {guards}; {suite} [{seconds:.0f} s]", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The synth bench: `python bench/run.py synth`. See :func:`run`."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchkit import Figures, figure


def run() -> Figures:
    """Time of `visrec synth` at the demo's default scale and at 50k users x 10k items x 30 days."""
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.store.lake import Lake

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
        out[f"synth.{name}.seconds"] = figure(round(seconds, 2), "s", scale)
        out[f"synth.{name}.events"] = figure(summary.events, "events", scale)
        out[f"synth.{name}.events_per_s"] = figure(round(summary.events / seconds), "events/s", scale)
    return out

"""What every bench shares: where figures go, how one is written, the real data sets' paths, and
helpers that more than one bench uses. Figures go to bench/results.json (flat keys) and
bench/RESULTS.md (for people, with the command that made it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from visrec.ingest.events import ingest_events
from visrec.ingest.features import build_features

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
CACHE = HERE / ".cache"
FIGURES = HERE / "figures.json"  # every figure with its unit, note and bench; the other two derive

Figures = dict[str, dict]  # key -> {"value", "unit", "command", "note"}

ML1M = Path(os.environ.get("VISREC_ML1M", HERE.parent.parent / "shared" / "data" / "ml1m-posters"))
HM_SAMPLE = Path(os.environ.get("VISREC_HM_SAMPLE", HERE.parent.parent / "shared" / "data" / "hm-sample"))


def figure(value: float | int, unit: str, note: str = "") -> dict:
    return {"value": value, "unit": unit, "note": note}


# The GAN benches' figures of one training (gan_quality's, and its training time).
GAN_KEYS = (
    "frechet_ratio",
    "frechet_distance",
    "frechet_real_vs_real",
    "class_consistency",
    "cnn_accuracy_on_real",
    "consistency_over_real_accuracy",
    "classes_mostly_missed",
    "train_seconds",
)


def kept(*but: str) -> dict:
    """What a bench returns under a key prefix it did not measure this time (a partial run): the
    earlier figures under that prefix stay as last measured, with their dates (see bench/run.py),
    except under the sub-prefixes ``but`` (e.g. the variants this run measured again)."""
    return {"kept": True, "but": list(but)}


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def merge_figures(results: dict, bench: str, figures: Figures, at: str) -> dict:
    """``results`` with ``bench``'s figures of this run: they replace every figure the bench wrote
    before (a renamed figure does not linger), except under the prefixes it returned as
    :func:`kept`, and except when it returned nothing at all (skipped: its data is absent here), so a
    clone without shared/ does not wipe the figures measured where the data is."""
    if not figures:
        return results
    prefixes = [(key, fig.get("but", [])) for key, fig in figures.items() if fig.get("kept")]
    merged = {
        key: fig
        for key, fig in results.items()
        if fig.get("bench") != bench
        or any(_under(key, p) and not any(_under(key, f"{p}.{b}") for b in but) for p, but in prefixes)
    }
    for key, fig in figures.items():
        if not fig.get("kept"):
            merged[key] = {"at": at, **fig, "bench": bench}
    return merged


def raw_event_days(lake) -> list[str]:
    """The days of the raw zone's event logs (``raw/events/dt=<day>/...``), sorted."""
    return sorted({k.split("dt=")[1].split("/")[0] for k in lake.list_keys("raw/events")})


def nightly_step(settings, lake, ds: str) -> tuple[float, int, int]:
    """The nightly ingestion step of ``ds`` (its events, then incremental features), median seconds of
    five (a step takes a fifth of a second), the events it ingested and the pairs in its snapshot."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        counts, _ = ingest_events(settings, lake, ds)
        rows = build_features(settings, lake, ds)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)), 3), counts.raw, rows["interactions"]


def write_results(results: dict) -> None:
    """Write bench/results.json and bench/RESULTS.md from every figure."""
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


def ranker_key(dataset: str, name: str) -> str:
    """Where a ranker bench puts a model's figures: the rankers' under ``mf.<dataset>.<ranker>``, the
    single models measured in the same run under ``mf.<dataset>.ranker_run.<model>`` (the mf benches
    own ``mf.<dataset>.<model>``, and a bench run replaces only the figures it wrote)."""
    return f"mf.{dataset}.{name}" if name.startswith("ranker") else f"mf.{dataset}.ranker_run.{name}"


def implicit_model(model):
    """``implicit``'s ALS or BPR behind visrec's batch interface (a bench-only dependency)."""
    from threadpoolctl import threadpool_limits

    from visrec.recsys.baselines import FactorRecommender

    class Implicit(FactorRecommender):
        def fit(self, data):
            with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
                model.fit(data.user_items.tocsr().astype(np.float32), show_progress=False)
            self.user_vectors = np.asarray(model.user_factors, np.float32)
            self.item_vectors = np.asarray(model.item_factors, np.float32)
            return self

    return Implicit()

"""How a bench run merges its figures into bench/figures.json (bench/benchkit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from benchkit import figure, kept, merge_figures  # noqa: E402


def _earlier() -> dict:
    return {
        "gan.hm.frechet_ratio": {"value": 10.4, "at": "2026-12-01", "bench": "gan_hm"},
        "gan.hm.old_name": {"value": 1.0, "at": "2026-12-01", "bench": "gan_hm"},
        "gan.hm.no_ema.frechet_ratio": {"value": 10.1, "at": "2026-12-01", "bench": "gan_hm"},
        "gan.hm.no_ema.consistency": {"value": 0.52, "at": "2026-12-01", "bench": "gan_hm"},
        "cnn.hm.top1": {"value": 0.71, "at": "2026-12-01", "bench": "cnn"},
    }


def test_a_run_replaces_its_benchs_figures_and_no_other():
    merged = merge_figures(_earlier(), "gan_hm", {"gan.hm.frechet_ratio": figure(6.8, "ratio")}, "2026-12-06")
    assert (
        merged["gan.hm.frechet_ratio"]["value"] == 6.8
        and merged["gan.hm.frechet_ratio"]["at"] == "2026-12-06"
    )
    # A figure the bench no longer writes does not linger; another bench's stays.
    assert "gan.hm.old_name" not in merged and "gan.hm.no_ema.consistency" not in merged
    assert merged["cnn.hm.top1"]["value"] == 0.71


def test_a_partial_run_keeps_what_it_did_not_measure_with_its_date():
    figures = {"gan.hm.frechet_ratio": figure(6.8, "ratio"), "gan.hm.no_ema": kept()}
    merged = merge_figures(_earlier(), "gan_hm", figures, "2026-12-06")
    assert merged["gan.hm.no_ema.consistency"] == _earlier()["gan.hm.no_ema.consistency"]
    assert merged["gan.hm.frechet_ratio"]["value"] == 6.8
    assert "gan.hm.no_ema" not in merged  # the marker itself is not a figure
    # A kept prefix is a whole segment: "gan.hm.no" keeps nothing of "gan.hm.no_ema".
    merged = merge_figures(_earlier(), "gan_hm", {"gan.hm.no": kept()}, "2026-12-06")
    assert not any(key.startswith("gan.hm.no_ema") for key in merged)


def test_a_variants_only_run_keeps_the_reference_but_not_what_it_measured_again():
    figures = {"gan.hm": kept("no_ema"), "gan.hm.no_ema.frechet_ratio": figure(9.0, "ratio")}
    merged = merge_figures(_earlier(), "gan_hm", figures, "2026-12-06")
    assert merged["gan.hm.frechet_ratio"] == _earlier()["gan.hm.frechet_ratio"]
    assert merged["gan.hm.no_ema.frechet_ratio"]["value"] == 9.0
    # The variant's figure this run no longer writes does not linger under the kept reference.
    assert "gan.hm.no_ema.consistency" not in merged


def test_a_skipped_bench_keeps_every_earlier_figure():
    assert merge_figures(_earlier(), "gan_hm", {}, "2026-12-06") == _earlier()

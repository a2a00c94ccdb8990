"""The front door under hostile input: every verb and setting, random and bad values (Hypothesis).

Invalid arguments or environment values never give a traceback, never exit 0, and never write to the
lake. The home holds a raw shop that was never ingested, so a step for any date has nothing to work on.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visrec.app.cli import main
from visrec.devdata.synth import ShopConfig, generate_shop
from visrec.pipeline import NAMES
from visrec.settings import Settings
from visrec.store.lake import Lake

BAD_DATES = [
    "2026-02-30",
    "2026-13-01",
    "yesterday",
    "../../etc",
    "2026-1-1",
    "",
    " 2026-11-01",
    "２０２６-11-01",
]
NEVER_INGESTED = ["2030-01-01", "1999-12-31", "2026-11-05"]
HOSTILE_NUMBERS = ["-3", "0", "-0.0", "1e309", "nan", "inf", "abc", "", "١٢", "9" * 40, "0x10", "--1"]
HOSTILE_TEXT = ["../x", "a/b", "", " ", "é", "\u202e", "x" * 300, "$(rm -rf /)", "..", "u1\n"]
SETTINGS_VARS = [
    "VISREC_ERROR_BUDGET",
    "VISREC_CNN_MINUTES",
    "VISREC_GAN_MINUTES",
    "VISREC_PHOTO_WEIGHT",
    "VISREC_SEED",
    "VISREC_TOP_K",
    "VISREC_TEST_DAYS",
    "VISREC_IMAGE_SIZE",
    "VISREC_PHOTO_RETENTION_DAYS",
    "VISREC_GAN_CATALOG_CHANGE",
    "VISREC_REPORT_USERS",
    "VISREC_SIMILAR_K",
    "VISREC_DECAY_HALF_LIFE_DAYS",
]
# Ingestion steps are left out: a day without raw events or uploads is a real (empty) day.
STEPS = [step for step in NAMES if not step.startswith("ingest_")]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("front-door")
    generate_shop(ShopConfig(users=20, items=20, days=1), Lake.from_settings(Settings(home=home)))
    return home


def _snapshot(home: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("*") if p.is_file()}


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    err = io.StringIO()
    with (
        mock.patch.dict(os.environ, env),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return code, err.getvalue()


ds_any = st.sampled_from(BAD_DATES + NEVER_INGESTED)
number = st.sampled_from(HOSTILE_NUMBERS)
# What a command line or an environment can hold: no NUL, no lone surrogates (not encodable).
ENCODABLE = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
text = st.sampled_from(HOSTILE_TEXT) | st.text(ENCODABLE, max_size=20)

invalid_calls = st.one_of(
    st.tuples(st.just("train"), st.sampled_from(["cnn", "mf", "gan"]), ds_any).map(
        lambda a: [*a[:2], "--ds", a[2]]
    ),
    st.tuples(st.sampled_from(["cnn", "gan"]), number).map(
        lambda a: ["train", a[0], "--ds", "2026-11-01", "--max-minutes", a[1]]
    ),
    st.tuples(ds_any, number).map(lambda a: ["score", "--ds", a[0], "-k", a[1]]),
    st.tuples(st.sampled_from(STEPS), ds_any).map(lambda a: ["step", a[0], "--ds", a[1]]),
    st.tuples(st.sampled_from(["publish", "report"]), ds_any).map(lambda a: [a[0], "--ds", a[1]]),
    ds_any.map(lambda d: ["ingest", "--ds", d]).filter(lambda a: a[-1] not in NEVER_INGESTED),
    st.sampled_from(BAD_DATES).map(lambda d: ["run", "--ds", d]),
    st.tuples(st.sampled_from(BAD_DATES), number).map(
        lambda a: ["cluster", "run", "--ds", a[0], "--port-base", a[1]]
    ),
    st.tuples(
        st.sampled_from(["--users", "--items", "--days", "--image-size", "--corrupt-rate"]), number
    ).map(
        lambda a: [
            "synth",
            "-q",
            "--out",
            "ftp://nowhere/x",
            a[0],
            a[1],
        ]  # a number may be valid; ftp:// never is
    ),
    text.map(lambda u: ["forget", u]).filter(lambda a: "/" in a[1] or a[1].strip() != a[1] or not a[1]),
    st.tuples(text, number).map(lambda a: ["similar", f"/nonexistent/{a[0]}.jpg", "-k", a[1]]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=invalid_calls)
def test_invalid_arguments_fail_cleanly_and_write_nothing(home, argv):
    before = _snapshot(home)
    code, err = _run(argv, {"VISREC_HOME": str(home)})
    assert code not in (0, None), f"{argv} exited 0"
    assert "Traceback" not in err
    assert err.strip(), f"{argv} failed without saying why"
    assert _snapshot(home) == before, f"{argv} wrote to the lake"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(SETTINGS_VARS),
    value=st.sampled_from(["-1", "-3", "abc", "", "1e999", "nan", "é"]) | st.text(ENCODABLE, max_size=8),
)
def test_bad_settings_are_refused_naming_the_variable(home, name, value):
    try:
        Settings.from_env({"VISREC_HOME": str(home), name: value})
    except ValueError as exc:
        message = str(exc)
        assert name in message and "Traceback" not in message
        before = _snapshot(home)
        code, err = _run(["score", "--ds", "2026-11-01"], {"VISREC_HOME": str(home), name: value})
        assert code == 1 and f"visrec: error: bad setting {name}=" in err
        assert _snapshot(home) == before


def test_never_ingested_date_is_refused_with_the_step_to_run_first(home):
    code, err = _run(["score", "--ds", "2030-01-01"], {"VISREC_HOME": str(home)})
    assert code == 1
    assert "no events for 2030-01-01; run `visrec step ingest_events --ds 2030-01-01` first" in err


def test_negative_budget_is_an_error_before_anything_runs(home):
    before = _snapshot(home)
    code, err = _run(
        ["train", "cnn", "--ds", "2026-11-01", "--max-minutes", "-3"], {"VISREC_HOME": str(home)}
    )
    assert code == 1 and "--max-minutes -3.0 (VISREC_CNN_MINUTES): Input should be greater than 0" in err
    assert _snapshot(home) == before and not (home / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("name", "closest"), [("VISREC_CNN_MINUTS", "VISREC_CNN_MINUTES"), ("VISREC_TOPK", "VISREC_TOP_K")]
)
def test_a_misspelt_setting_is_refused_naming_the_closest(home, name, closest):
    before = _snapshot(home)
    code, err = _run(["score", "--ds", "2026-11-01"], {"VISREC_HOME": str(home), name: "1"})
    assert code == 1 and f"unknown setting {name} (did you mean {closest}?)" in err
    assert "Traceback" not in err and _snapshot(home) == before
    # Variables that other parts own (the benches' data paths, a container's worker queues) are fine.
    assert Settings.from_env({"VISREC_ML1M": "/data", "VISREC_QUEUES": "training"}).top_k == 20


def test_run_on_an_empty_home_fails_at_once_writing_nothing(tmp_path):
    empty = tmp_path / "empty"
    code, err = _run(["run", "--ds", "2026-11-01"], {"VISREC_HOME": str(empty)})
    assert code == 1 and "no catalog at" in err and "visrec synth" in err
    assert not empty.exists()


def test_plain_paths_work_wherever_a_lake_or_output_uri_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(["synth", "-q", "--out", "shop", "--users", "5", "--items", "8", "--days", "1"], {})
    assert code == 0, err
    assert (tmp_path / "shop" / "raw" / "catalog" / "items.csv").exists()
    settings = Settings.from_env({"VISREC_LAKE_URI": "shop"})
    assert settings.lake_uri == (tmp_path / "shop").as_uri()
    assert Lake.from_settings(settings).exists("raw/catalog/items.csv")

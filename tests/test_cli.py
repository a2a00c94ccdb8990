from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from visrec.app.cli import build_parser, main

COMMANDS = [
    "synth",
    "import",
    "ingest",
    "train",
    "score",
    "publish",
    "report",
    "run",
    "forget",
    "similar",
    "step",
    "cluster",
    "rollback",
    "export",
    "champions",
]


def _run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "VISREC_HOME": str(home), **env}
    return subprocess.run(
        [sys.executable, "-m", "visrec", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: visrec " + command in capsys.readouterr().out


def test_parser_knows_every_command():
    choices = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    assert sorted(choices) == sorted(COMMANDS)


def test_synth_writes_shop_and_says_where(tmp_path: Path):
    result = _run(["synth", "--users", "30", "--items", "20", "--days", "2", "-q"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "20 items, 30 users" in result.stdout
    assert (tmp_path / "lake" / "raw" / "catalog" / "items.csv").exists()
    assert str(tmp_path / "lake" / "raw") in result.stdout


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["synth", "--start-date", "yesterday"], {}, "Invalid isoformat"),
        (["import", "hm", "/nonexistent/folder"], {}, "does not exist"),
        (
            ["synth", "-q", "--out", "s3://nobucket/x"],
            {
                "VISREC_S3_ENDPOINT": "http://127.0.0.1:9",
                "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "y",
            },
            "failed",
        ),
        (["synth"], {"VISREC_SEED": "abc"}, "bad setting VISREC_SEED='abc'"),
        (["score", "--ds", "2026-11-01", "-k", "5"], {"VISREC_TOP_K": "0"}, "bad setting VISREC_TOP_K='0'"),
        (["ingest", "--ds", "2026-02-30"], {}, "not a real date"),
        (["similar", "/"], {}, "photo / is a folder, not a photo"),
        (
            ["cluster", "run", "--ds", "2026-11-01"],
            {},
            "has no running api-server or scheduler; start it with",
        ),
        (["ingest", "--ds", "2026-11-01"], {}, "no catalog at"),
        (["publish", "--ds", "2026-11-01"], {}, "no recommendations for 2026-11-01; run `visrec step score"),
        (
            ["ingest", "--ds", "2026-11-01"],
            {"VISREC_MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
            "the MLflow tracking server at http://127.0.0.1:9 is unreachable (Connection refused); start it or fix VISREC_MLFLOW_TRACKING_URI",
        ),
        (
            ["train", "mf", "--ds", "2026-11-01"],
            {"VISREC_SPARK_MASTER": "spark://127.0.0.1:9"},
            "the Spark master at spark://127.0.0.1:9 is unreachable",
        ),
        (
            ["ingest", "--ds", "2026-11-01"],
            {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u:secret@127.0.0.1:9/airflow"},
            "PostgreSQL (Airflow's metadata) at 127.0.0.1:9/airflow is unreachable",
        ),
        (
            ["score", "--ds", "2026-11-01"],
            {"AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:9/0"},
            "fix AIRFLOW__CELERY__BROKER_URL",
        ),
        (
            ["ingest", "--ds", "2026-11-01"],
            {"VISREC_LAKE_URI": "s3://lake/x", "VISREC_S3_ENDPOINT": "http://127.0.0.1:9"},
            "S3 (the lake) at http://127.0.0.1:9 is unreachable",
        ),
        (["run"], {}, "give --ds DATE"),
        (["run", "--start", "2026-11-05", "--end", "2026-11-01"], {}, "is before --start"),
        (["forget", "a/b"], {}, "not a user id"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path: Path, args, env, message):
    result = _run(args, tmp_path, **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("visrec: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "secret" not in result.stderr


def test_bad_argument_type_is_a_usage_error(tmp_path: Path):
    result = _run(["synth", "--users", "many"], tmp_path)
    assert result.returncode == 2 and "invalid positive_int value" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run(["synth", "--users", "0"], tmp_path)
    assert result.returncode == 2 and "argument --users: must be at least 1, got 0" in result.stderr


@pytest.mark.integration
def test_a_step_run_from_python_c_really_runs(tmp_path: Path):
    """`python -c` has a __main__ without a file: pyspark's Spark Connect module, imported by Great
    Expectations, used to exit such a process with status 0 before the step wrote anything."""
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.settings import Settings
    from visrec.store.lake import Lake

    lake = Lake.from_settings(Settings(home=tmp_path))
    generate_shop(ShopConfig(users=20, items=20, days=1), lake)
    code = (
        "from visrec.pipeline import steps; print('summary:', steps.run_step('ingest_images', '2026-11-01'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VISREC_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary: {" in result.stdout and "'accepted': 20" in result.stdout
    assert lake.read_table("staging_images", "2026-11-01").num_rows == 20

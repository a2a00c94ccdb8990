from __future__ import annotations

from pathlib import Path

import pytest

from visrec.settings import Settings


def test_defaults_live_under_home(tmp_path: Path):
    s = Settings.from_env({"VISREC_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.lake_uri == (tmp_path / "lake").as_uri()
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.mlflow_artifact_uri == (tmp_path / "mlartifacts").as_uri()
    assert s.warehouse_path == tmp_path / "warehouse.duckdb"
    assert s.seed == 42 and s.s3_endpoint is None


def test_environment_overrides(tmp_path: Path):
    s = Settings.from_env(
        {
            "VISREC_HOME": str(tmp_path),
            "VISREC_LAKE_URI": "s3://bucket/prefix",
            "VISREC_S3_ENDPOINT": "http://127.0.0.1:9000",
            "VISREC_SEED": "7",
            "VISREC_ERROR_BUDGET": "0.1",
            "VISREC_MLFLOW_TRACKING_URI": "http://mlflow:5000",
        }
    )
    assert (s.lake_uri, s.s3_endpoint, s.seed, s.error_budget) == (
        "s3://bucket/prefix",
        "http://127.0.0.1:9000",
        7,
        0.1,
    )
    assert s.mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"VISREC_SEED": "x"}, "VISREC_SEED='x': .*integer"),
        ({"VISREC_ERROR_BUDGET": "2"}, "VISREC_ERROR_BUDGET='2': .*less than or equal to 1"),
        ({"VISREC_EVENT_WEIGHTS": "view=1,click=x"}, "VISREC_EVENT_WEIGHTS=.*bad entry"),
        ({"VISREC_EVENT_WEIGHTS": "view=1,click=2"}, "VISREC_EVENT_WEIGHTS=.*must give each of"),
        ({"VISREC_PHOTO_WEIGHT": "-1"}, "VISREC_PHOTO_WEIGHT='-1': .*greater than or equal to 0"),
        ({"VISREC_CNN_MINUTES": "0"}, "VISREC_CNN_MINUTES='0': .*greater than 0"),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_event_weights_parse():
    s = Settings.from_env({"VISREC_EVENT_WEIGHTS": "view=0.5,click=1,add_to_cart=3,purchase=10"})
    assert s.weights() == {"view": 0.5, "click": 1.0, "add_to_cart": 3.0, "purchase": 10.0}


def test_to_env_round_trips(tmp_path: Path):
    # A child process (Airflow's tasks) must see exactly the caller's settings.
    s = Settings(
        home=tmp_path,
        lake_uri="s3://bucket/x",
        s3_endpoint="http://127.0.0.1:9",
        seed=3,
        cnn_max_minutes=0.5,
        report_users=2,
        test_days=1,
        retrain=True,
    )
    assert Settings.from_env(s.to_env()) == s


def test_flags_override_settings_through_the_same_checks(tmp_path: Path):
    s = Settings(home=tmp_path)
    assert s.with_overrides(top_k=10, cnn_max_minutes=None).top_k == 10
    assert s.with_overrides(top_k=None) is s
    with pytest.raises(ValueError, match="VISREC_CNN_MINUTES=-3"):
        s.with_overrides(cnn_max_minutes=-3)


@pytest.mark.parametrize("value", ["inf", "nan", "1441"])
def test_budgets_refuse_infinite_or_more_than_a_day(value):
    with pytest.raises(ValueError, match="VISREC_CNN_MINUTES"):
        Settings.from_env({"VISREC_CNN_MINUTES": value})

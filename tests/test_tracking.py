from __future__ import annotations

from pathlib import Path

import mlflow
from visrec.mlops.tracking import tracked_run
from visrec.settings import Settings


def test_nested_runs_with_tags_and_artifacts_in_configured_place(
    settings: Settings, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would show up here
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with tracked_run(settings, "nightly", ds="2026-11-01") as parent:
        mlflow.log_metric("rows", 3)
        with tracked_run(settings, "train_cnn", ds="2026-11-01", nested=True) as child:
            mlflow.log_artifact(str(note))
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    p, c = client.get_run(parent.info.run_id), client.get_run(child.info.run_id)
    assert p.data.tags["visrec.ds"] == "2026-11-01" and p.data.metrics["rows"] == 3
    assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert c.data.tags["visrec.step"] == "train_cnn"
    assert c.info.status == "FINISHED"
    artifact_root = Path(settings.mlflow_artifact_uri.removeprefix("file://"))
    assert list(artifact_root.rglob("note.txt"))
    assert not (tmp_path / "mlruns").exists()
    assert Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).exists()

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
    # The UI opens the experiment in its model-training view; each run links the night's report.
    experiment = client.get_experiment(p.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert c.data.tags["visrec.report"].endswith("/reports/ds=2026-11-01/index.html")


def test_registered_models_have_a_signature_and_an_input_example(settings: Settings):
    import keras
    import numpy as np

    from visrec.mlops.registry import load_keras, log_keras_model, register

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    example = np.ones((1, 3), np.float32)
    with tracked_run(settings, "train_test", ds="2026-11-01"):
        uri = log_keras_model(model, example, np.asarray(model(example)), pip_requirements=["keras"])
        registration = register(uri, "visrec-test", metric="m", value=1.0, champion_value=None)
    info = mlflow.models.get_model_info(f"models:/visrec-test/{registration.version}")
    assert [s.shape for s in info.signature.inputs.inputs] == [(-1, 3)]
    assert info.saved_input_example_info is not None
    loaded, version = load_keras(f"models:/visrec-test/{registration.version}")
    assert version == f"visrec-test/{registration.version}"
    np.testing.assert_allclose(np.asarray(loaded(example)), np.asarray(model(example)), rtol=1e-6)

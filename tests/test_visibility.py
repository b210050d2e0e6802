"""What a user sees of a run and a sweep: the MLflow UI link and experiment kind, the datasets,
system metrics, descriptions, the optuna-dashboard, the sweep console."""
from __future__ import annotations

import mlflow
import pytest

from mfexp.config import TrackingConfig
from mfexp.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker, experiment_link, ui_base, ui_links


def _run_once(experiment: str) -> str:
    tracker = Tracker(TrackingConfig(experiment=experiment, log_model=False))
    with tracker.run(run_name="r", params={}, tags={}):
        pass
    return tracker.run_id


# --- 2. the UI opens on the training runs --------------------------------------------------------
def test_experiments_mfexp_creates_are_tagged_as_model_training(mlflow_uri):
    run_id = _run_once("mfexp-kind")
    exp = mlflow.get_experiment(mlflow.get_run(run_id).info.experiment_id)
    assert exp.name == "mfexp-kind" and exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_links_open_the_runs_of_the_experiment():
    assert experiment_link("7", "http://127.0.0.1:5000") == \
        "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    assert ui_base("sqlite:///mlflow.db") == "http://127.0.0.1:5000"  # what make ui serves
    assert ui_base("http://tracker:5002/") == "http://tracker:5002"  # a server shows its own UI
    assert experiment_link("3", "http://u:pw@tracker:5002").startswith("http://u:***@tracker:5002/#/")


def test_make_ui_links_tag_older_experiments_and_name_each(mlflow_uri, capsys):
    from mfexp.tracking import main

    old = mlflow.create_experiment("mfexp-sweep-old")  # recorded before mfexp tagged experiments
    mlflow.create_experiment("someone-else")
    assert main(["links", "http://0.0.0.0:5999"]) == 0
    out = capsys.readouterr().out
    assert f"mfexp-sweep-old: http://127.0.0.1:5999/#/experiments/{old}?workflowType=machine_learning" in out
    assert "someone-else" not in out
    assert mlflow.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert ui_links("http://x") == [f"  mfexp-sweep-old: http://x/#/experiments/{old}?workflowType=machine_learning"]

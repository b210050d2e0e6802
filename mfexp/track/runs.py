"""Which run to load, and loading it: a sweep's champion (its registry alias) or a model's best run,
found by its tags; the logged model and the data its config names, loaded back from MLflow for
mfexp.scoring (python -m mfexp.recommend, tests, the serving benchmark)."""
from __future__ import annotations

import tempfile
from typing import Optional

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
import numpy as np
import yaml

from mfexp.models import io as model_io
from mfexp.config import DataConfig
from mfexp.data import load_dataset
from mfexp.errors import ConfigError, MfexpError
from mfexp.scoring import Loaded
from mfexp.track.registry import CHAMPION, registered_name
from mfexp.track.tracker import BEST_TAG, MODEL_TAG, tracking_uri


class UnknownSweep(MfexpError):
    """No MLflow experiment mfexp-sweep-<name>."""


class NoBestRun(MfexpError):
    """The sweep has no finished best run (for the model asked), or the run has no model."""



def _best_runs(sweep_name: str, model: Optional[str] = None) -> list:
    exp = mlflow.get_experiment_by_name(f"mfexp-sweep-{sweep_name}")
    if exp is None:
        raise UnknownSweep(f"no sweep named {sweep_name!r} in {_uri()} (no MLflow experiment "
                           f"mfexp-sweep-{sweep_name}). Run it first (python -m mfexp.sweep sweep.name="
                           f"{sweep_name}), or point MLFLOW_TRACKING_URI at the store that holds it.")
    query = f"tags.`{BEST_TAG}` = 'true' and attributes.status = 'FINISHED'"
    if model:
        query += f" and tags.`{MODEL_TAG}` = '{model}'"
    return mlflow.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                              output_format="list")


def resolve_run(sweep_name: str = "default", model: Optional[str] = None) -> str:
    """The run id of a sweep's champion, or of `model`'s best run in that sweep (the newest)."""
    if model is None:
        run_id = _champion_run(sweep_name)
        if run_id:
            return run_id
    runs = _best_runs(sweep_name, model)  # raises UnknownSweep
    if not runs:
        what = f"for model {model} " if model else ""
        raise NoBestRun(f"sweep {sweep_name!r} has no finished best run {what}(tag mfexp.best=true) in "
                        f"{_uri()}: no trial of it completed yet. Run or resume the sweep.")
    if model:
        return runs[0].info.run_id
    newest: dict[str, object] = {}
    for run in runs:  # newest first: keep each model's latest best run
        newest.setdefault(run.data.tags.get(MODEL_TAG), run)
    scored = [r for r in newest.values() if "best_val_rmse_search" in r.data.metrics]
    if not scored:
        return runs[0].info.run_id
    return min(scored, key=lambda r: r.data.metrics["best_val_rmse_search"]).info.run_id


def _champion_run(sweep_name: str) -> Optional[str]:
    try:
        return MlflowClient().get_model_version_by_alias(registered_name(sweep_name, CHAMPION), CHAMPION).run_id
    except MlflowException:
        return None


def _uri() -> str:
    return tracking_uri()


def load_run(run_id: str) -> Loaded:
    """The run's model (artifact model/artifacts/mfexp_model) and the data its config names."""
    try:
        run = mlflow.get_run(run_id)
    except MlflowException as err:
        raise NoBestRun(f"no MLflow run {run_id!r} in {_uri()}: {str(err).splitlines()[0]}") from err
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/artifacts/mfexp_model", dst_path=tmp)
            trained = model_io.load(folder)
        except (MlflowException, OSError) as err:
            raise NoBestRun(f"run {run_id} ({run.info.run_name}) has no logged model (artifact model/): "
                            "was it trained with tracking.log_model=false?") from err
        try:
            cfg_path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/config.yaml", dst_path=tmp)
            with open(cfg_path) as fh:
                doc = yaml.safe_load(fh)
        except (MlflowException, OSError) as err:
            raise NoBestRun(f"run {run_id} has no config.yaml artifact: its training data is unknown.") from err
    data = load_dataset(DataConfig(**doc["data"]))
    if not (np.array_equal(data.user_ids, trained.user_ids) and np.array_equal(data.item_ids, trained.item_ids)):
        raise ConfigError(f"the data of run {run_id} (data.name={doc['data'].get('name')}, "
                          f"data.path={doc['data'].get('path')}) no longer matches its model's id tables: "
                          "the ratings changed since it was trained.")
    return Loaded(run_id=run_id, trained=trained, data=data)

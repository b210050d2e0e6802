"""Scores and top-N lists from a tracked model: which run a sweep's champion (or a model's best) is,
the model and the data it was trained on loaded back from MLflow, every item scored for a user in
one vectorised call with the rated items left out, and items ranked by the cosine of their learned
vectors. `python -m mfexp.recommend` is its command line (mfexp/recommend.py); the sweep's ranking
metrics and the serving benchmark use it too.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Optional

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
import mxnet as mx
import numpy as np
import yaml

from mfexp import model_io
from mfexp.config import DataConfig
from mfexp.data import load_dataset
from mfexp.errors import ConfigError, MfexpError
from mfexp.models.base import Towers
from mfexp.track.registry import CHAMPION, registered_name
from mfexp.track.tracker import BEST_TAG, MODEL_TAG, tracking_uri
from mfexp.train import predict


class UnknownSweep(MfexpError):
    """No MLflow experiment mfexp-sweep-<name>."""


class NoBestRun(MfexpError):
    """The sweep has no finished best run (for the model asked), or the run has no model."""


class UnknownUser(MfexpError):
    """The user id is not in the data the model was trained on."""


class UnknownItem(MfexpError):
    """The item id is not in the data the model was trained on."""


@dataclass
class Recommendation:
    rank: int
    item_id: int
    title: Optional[str]
    score: float  # predicted rating (recommend) or cosine similarity (similar)


@dataclass
class Loaded:
    """A run's trained model together with the data it was trained on."""

    run_id: str
    trained: object  # mfexp.model_io.TrainedModel
    data: object  # mfexp.data.Dataset
    _towers: Optional["Towers"] = field(default=None, repr=False)

    def title(self, item_id: int) -> Optional[str]:
        titles = self.data.item_titles
        return titles.get(int(item_id)) if titles else None

    @property
    def towers(self) -> Optional["Towers"]:
        if self._towers is None:
            self._towers = towers(self.trained)
        return self._towers


# --- which run ---------------------------------------------------------------------------------
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


# --- the model and its data ----------------------------------------------------------------------
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


def rated_items(data, user_index: int) -> np.ndarray:
    """Item indices the user rated in the training data (train part and validation holdout)."""
    parts = [p for p in (data.train, data.val) if p is not None and len(p)]
    return np.unique(np.concatenate([p.items[p.users == user_index] for p in parts]))


def towers(trained) -> Optional[Towers]:
    """The model's user and item vectors with biases (`Recommender.towers`), or None for a model
    without them: then every item is scored through the network. Read once, they score every item
    for a user as one matrix-vector product (~0.05-0.2 ms for ML-100K, where the MXNet graph takes
    4-10 ms); tests/test_serving.py checks they equal the network's output."""
    return trained.net.towers()


def score_all(trained, user_index: int, tw: Optional[Towers] = None) -> np.ndarray:
    """Predicted rating of every item for one user index, clipped to the rating scale: one
    matrix-vector product over the towers (`tw`, else read from the model), or one call of the
    network for a model without towers."""
    tw = tw if tw is not None else towers(trained)
    if tw is not None:
        scores = tw.items @ tw.users[user_index] + tw.item_bias + tw.user_bias[user_index]
    else:
        n_items = len(trained.item_ids)
        scores = predict(trained.net, np.full(n_items, user_index, dtype=np.int32),
                         np.arange(n_items, dtype=np.int32), mx.cpu())
    return np.clip(scores, trained.rating_min, trained.rating_max)


def index_of(ids: np.ndarray, original: int) -> int:
    pos = int(np.searchsorted(ids, original))
    return pos if pos < len(ids) and ids[pos] == original else -1


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest finite scores, best first (ties: lower index first)."""
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return cand[np.lexsort((cand, -scores[cand]))]


def recommend(loaded: Loaded, user: int, n: int = 10) -> list[Recommendation]:
    """The n items `user` (an original id) has not rated, by predicted rating."""
    u = index_of(loaded.trained.user_ids, user)
    if u < 0:
        raise UnknownUser(f"user {user} is not in the data of run {loaded.run_id} ({loaded.data.name}, "
                          f"{len(loaded.trained.user_ids)} users, ids {loaded.trained.user_ids[0]}.."
                          f"{loaded.trained.user_ids[-1]}).")
    scores = score_all(loaded.trained, u, loaded.towers).astype(np.float64)
    scores[rated_items(loaded.data, u)] = -np.inf
    ids = loaded.trained.item_ids
    return [Recommendation(rank, int(ids[i]), loaded.title(ids[i]), float(scores[i]))
            for rank, i in enumerate(_top(scores, n), start=1)]


def similar(loaded: Loaded, item: int, n: int = 10) -> list[Recommendation]:
    """The n items whose vectors have the highest cosine with `item`'s (itself left out)."""
    i = index_of(loaded.trained.item_ids, item)
    if i < 0:
        raise UnknownItem(f"item {item} is not in the data of run {loaded.run_id} ({loaded.data.name}).")
    tw = loaded.towers
    if tw is None:
        raise ConfigError(f"similar= needs item vectors; model {loaded.trained.model.name} "
                          f"({loaded.trained.model._target_}) has none (its towers() returns None). "
                          "Use user= for it, or a model with towers.")
    vec = tw.items.astype(np.float64)
    norms = np.linalg.norm(vec, axis=1)
    cos = vec @ vec[i] / np.maximum(norms * norms[i], 1e-12)
    cos[i] = -np.inf
    ids = loaded.trained.item_ids
    return [Recommendation(rank, int(ids[j]), loaded.title(ids[j]), float(cos[j]))
            for rank, j in enumerate(_top(cos, n), start=1)]


# --- the command line ----------------------------------------------------------------------------


"""Scores and top-N lists from a trained model: every item scored for a user in one vectorised call
with the rated items left out, and items ranked by the cosine of their learned vectors. Which run to
load and loading it back from MLflow is mfexp.track.runs; `python -m mfexp.recommend` is the
command line of both (mfexp/recommend.py); the sweep's ranking metrics and the serving benchmark
use this module too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import mxnet as mx
import numpy as np

from mfexp.errors import ConfigError, MfexpError
from mfexp.models.base import Towers
from mfexp.train import predict


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
    trained: object  # mfexp.models.io.TrainedModel
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


def rated_items(data, user_index: int) -> np.ndarray:
    """Item indices the user rated in the training data (train part and validation holdout)."""
    parts = [p for p in (data.train, data.val) if p is not None and len(p)]
    return np.unique(np.concatenate([p.items[p.users == user_index] for p in parts]))


def towers(trained) -> Optional[Towers]:
    """The model's user and item vectors with biases (`Recommender.towers`), or None for a model
    without them: then every item is scored through the network. Read once, they score every item
    for a user as one matrix-vector product, far cheaper than the MXNet graph (BENCHMARKS.md,
    serving); tests/test_serving.py checks they equal the network's output."""
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


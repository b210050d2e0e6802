"""A trained model on disk: the network's parameters plus what rebuilds and uses it.

Layout of a model folder:
  params.params  Gluon parameters (net.save_parameters)
  meta.json      model settings (with _target_, its class), table sizes, global mean, rating
                 scale, data set name, and the ModelData's scalars (feature names, days)
  ids.npz        original user/item id of each index, and per-index mean ratings for
                 unknown-id fallbacks
  inputs.npz     the ModelData's arrays: implicit feedback and side features of every known
                 user and item (from the training part), so a served model rebuilds them
Nothing here is pickled: loading a model never unpickles.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
import numpy as np

from mfexp.models import ModelData, ModelSettings, build_model, to_settings
from mfexp.models.plugins import settings_dict
from mfexp.train import predict

FORMAT_VERSION = 2  # 1: before models were plugins (no _target_, no inputs.npz); still loads


@dataclass
class TrainedModel:
    net: mx.gluon.Block  # a Recommender
    model: ModelSettings
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_mean: np.ndarray  # mean training rating per user index (global mean where none)
    item_mean: np.ndarray
    global_mean: float
    rating_min: float
    rating_max: float
    dataset: str


def _means(index: np.ndarray, ratings: np.ndarray, size: int, fallback: float) -> np.ndarray:
    total = np.bincount(index, weights=ratings, minlength=size)
    count = np.bincount(index, minlength=size)
    return np.where(count > 0, total / np.maximum(count, 1), fallback).astype(np.float32)


def from_training(net, data) -> TrainedModel:
    """Bundle a trained net with the id maps and fallbacks of the data it was trained on."""
    train, mean = data.train, float(data.global_mean)
    return TrainedModel(
        net=net, model=net.settings, user_ids=np.asarray(data.user_ids), item_ids=np.asarray(data.item_ids),
        user_mean=_means(train.users, train.ratings, data.n_users, mean),
        item_mean=_means(train.items, train.ratings, data.n_items, mean),
        global_mean=mean, rating_min=float(data.rating_min), rating_max=float(data.rating_max),
        dataset=data.name)


def save(trained: TrainedModel, folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trained.net.save_parameters(str(folder / "params.params"))
    np.savez(folder / "ids.npz", user_ids=trained.user_ids, item_ids=trained.item_ids,
             user_mean=trained.user_mean, item_mean=trained.item_mean)
    inputs: ModelData = trained.net.data
    np.savez(folder / "inputs.npz", **inputs.arrays())
    meta = {"format": FORMAT_VERSION, "model": settings_dict(trained.model), "global_mean": trained.global_mean,
            "rating_min": trained.rating_min, "rating_max": trained.rating_max, "dataset": trained.dataset,
            "n_users": len(trained.user_ids), "n_items": len(trained.item_ids), "inputs": inputs.meta()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return folder


def load(folder: str | os.PathLike, ctx: mx.Context | None = None) -> TrainedModel:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    ids = np.load(folder / "ids.npz", allow_pickle=False)
    model = to_settings(meta["model"])
    if (folder / "inputs.npz").is_file():
        with np.load(folder / "inputs.npz", allow_pickle=False) as arrays:
            inputs = ModelData.restore(meta["inputs"], arrays)
    else:  # format 1
        inputs = ModelData(meta["n_users"], meta["n_items"], meta["global_mean"])
    net = build_model(model, inputs)
    net.load_parameters(str(folder / "params.params"), ctx=ctx or mx.cpu())
    net.hybridize(static_alloc=True)
    return TrainedModel(net=net, model=model, user_ids=ids["user_ids"], item_ids=ids["item_ids"],
                        user_mean=ids["user_mean"], item_mean=ids["item_mean"],
                        global_mean=meta["global_mean"], rating_min=meta["rating_min"],
                        rating_max=meta["rating_max"], dataset=meta["dataset"])


def predict_ids(trained: TrainedModel, user_ids: np.ndarray, item_ids: np.ndarray,
                ctx: mx.Context | None = None, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Predicted ratings for original ids, clipped to the rating scale. An unknown id gets the
    best guess the training data allows: the known side's mean rating, else the global mean.
    `timestamps` (unix seconds) matter to models that read the rating's day; without them a
    known user's last training day is used."""
    u = _lookup(trained.user_ids, np.asarray(user_ids))
    i = _lookup(trained.item_ids, np.asarray(item_ids))
    known_u, known_i = u >= 0, i >= 0
    both = known_u & known_i
    out = np.full(len(u), trained.global_mean, dtype=np.float32)
    if both.any():
        out[both] = predict(trained.net, u[both], i[both], ctx or mx.cpu(),
                            None if timestamps is None else np.asarray(timestamps)[both])
    only_u, only_i = known_u & ~known_i, known_i & ~known_u
    out[only_u] = trained.user_mean[u[only_u]]
    out[only_i] = trained.item_mean[i[only_i]]
    return np.clip(out, trained.rating_min, trained.rating_max)


def _lookup(sorted_ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query id in `sorted_ids`, -1 where absent."""
    pos = np.searchsorted(sorted_ids, query)
    pos = np.clip(pos, 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == query, pos, -1)

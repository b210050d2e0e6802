"""model=fm: a factorization machine over relation blocks (Rendle's FM, as myFM feeds it).

Each rating's feature vector is [user block | item block | day]: the user block holds the user's
id, side features (age, gender, occupation, zip) and implicit feedback (the items the user rated
in the training part, each 1/sqrt(n)); the item block holds the item's id, genres and release
year, and its raters. Every feature j has a factor v_j (k values) and a linear weight w_j:

    r = mean + sum_j x_j w_j + 1/2 (|sum_j x_j v_j|^2 - sum_j x_j^2 |v_j|^2)

Blocks are computed for all users and all items once per batch (one CSR product each), then the
batch's rows are gathered: on ML-100K that is cheaper than per-rating feature rows. L2 acts on
the gathered vectors, with a multiplier per group (features, time) on top of train.reg.
"""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet.gluon import Block

from mfexp.models.base import ModelSettings, Recommender, Towers
from mfexp.models.layers import SparseBlock, embedding, hstack, row_sq

TIME_BUCKETS = {"day": 1, "week": 7}


@dataclass
class FMSettings(ModelSettings):
    k: int = 32  # factor size
    implicit: bool = True  # who rated what (training part only), in both blocks
    side: bool = True  # user and item side features, where the data set has them
    time: str = "day"  # the rating's day or week as a feature, or none
    reg_features: float = 1.0  # multiplier of train.reg for the side and implicit parts
    reg_time: float = 1.0  # multiplier of train.reg for the time factors

    def check(self, fail) -> None:
        fail(self.k > 0, "model.k", "must be > 0", self.k)
        fail(self.time in ("none", *TIME_BUCKETS), "model.time", "must be day, week or none", self.time)
        fail(self.reg_features >= 0, "model.reg_features", "must be >= 0", self.reg_features)
        fail(self.reg_time >= 0, "model.reg_time", "must be >= 0", self.reg_time)


class _Side:
    """One side (users or items): its id table, and one weight table for all its other features
    (side features and implicit feedback side by side: one CSR product per batch)."""

    def __init__(self, owner: Block, name: str, n: int, k: int, blocks, sparse_grad: bool):
        present = [m for m in blocks if m is not None]
        self.features = SparseBlock(hstack(present)) if present else None
        self.weight = (owner.params.get(f"{name}_features_weight", shape=(self.features.matrix.n_cols, k + 1))
                       if present else None)
        self.ids = embedding(n, k + 1, sparse_grad)

    def batch(self, index, k: int):
        """(z, q, features) for the batch's rows: z = sum x_j [v_j, w_j], q = sum x_j^2 |v_j|^2,
        features = the side and implicit part of z (for its own L2)."""
        z = self.ids(index)
        q = row_sq(mx.nd, mx.nd.slice_axis(z, axis=1, begin=0, end=k))
        if self.features is None:
            return z, q, None
        w = self.weight.data(index.context)
        feats = self.features.product(w, index)
        norms = mx.nd.sum(mx.nd.square(mx.nd.slice_axis(w, axis=1, begin=0, end=k)), axis=1, keepdims=True)
        q = q + mx.nd.reshape(self.features.squared_product(norms, index), (-1,))
        return z + feats, q, feats

    def all_rows(self, k: int):
        """numpy (z, q) for every row, as batch() computes them."""
        z = self.ids.weight.data().asnumpy().astype(np.float64)
        q = (z[:, :k] ** 2).sum(axis=1)
        if self.features is not None:
            w = self.weight.data().asnumpy()
            z = z + self.features.numpy_product(w)
            q = q + self.features.numpy_product((w[:, :k] ** 2).sum(axis=1, keepdims=True), power=2)[:, 0]
        return z, q


class FM(Recommender, Block):
    Settings = FMSettings
    space = {"model.k": "choice(16,32,64)", "train.reg": "tag(log, interval(3e-3, 0.3))",
             "model.reg_features": "tag(log, interval(0.1, 10.0))",
             "train.optimizer": "adam", "train.lr": "tag(log, interval(5e-4, 1e-2))",
             "train.batch_size": "choice(512,1024,2048)"}
    reference_label = "default"

    @classmethod
    def needs_for(cls, settings: FMSettings) -> frozenset:
        needs = set()
        if settings.implicit:
            needs.add("implicit")
        if settings.side:
            needs |= {"user_side", "item_side"}
        if settings.time != "none":
            needs.add("time")
        return frozenset(needs)

    def __init__(self, settings: FMSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        k = settings.k
        user_side = data.user_side.matrix if data.user_side is not None else None
        item_side = data.item_side.matrix if data.item_side is not None else None
        with self.name_scope():
            users = _Side(self, "user", data.n_users, k, [user_side, data.user_items], sparse_grad)
            items = _Side(self, "item", data.n_items, k, [item_side, data.item_users], sparse_grad)
            self.user_embedding, self.item_embedding = users.ids, items.ids
            if users.weight is not None:
                self.user_features = users.weight
            if items.weight is not None:
                self.item_features = items.weight
            self.n_time = 0
            if settings.time != "none":
                self.n_time = (data.n_days - 1) // TIME_BUCKETS[settings.time] + 1
                self.time_embedding = embedding(self.n_time, k + 1, sparse_grad)
        self._users, self._items = users, items

    def _time(self, days):
        return mx.nd.floor(days / TIME_BUCKETS[self.settings.time])

    def forward(self, users, items, days=None):
        k, s = self.settings.k, self.settings
        zu, qu, fu = self._users.batch(users, k)
        zi, qi, fi = self._items.batch(items, k)
        z, q = zu + zi, qu + qi
        sq = row_sq(mx.nd, self.user_embedding(users)) + row_sq(mx.nd, self.item_embedding(items))
        for f in (fu, fi):
            if f is not None:
                sq = sq + s.reg_features * row_sq(mx.nd, f)
        if self.n_time:
            zt = self.time_embedding(self._time(days))
            z = z + zt
            qt = row_sq(mx.nd, mx.nd.slice_axis(zt, axis=1, begin=0, end=k))
            q = q + qt
            sq = sq + s.reg_time * row_sq(mx.nd, zt)
        v = mx.nd.slice_axis(z, axis=1, begin=0, end=k)
        linear = mx.nd.reshape(mx.nd.slice_axis(z, axis=1, begin=k, end=k + 1), (-1,))
        pred = self.data.global_mean + linear + 0.5 * (row_sq(mx.nd, v) - q)
        return pred, sq

    @classmethod
    def reference(cls, settings):
        return {"train.optimizer": "adam", "train.lr": 2e-3, "train.reg": 0.05, "train.batch_size": 1024,
                "model.k": 32, "model.reg_features": 1.0}

    def towers(self) -> Towers:
        """With each user's time fixed at their last training day:
        r(u, i) = <v_u + v_t, v_i> + [mean + w_u + w_t + (|v_u + v_t|^2 - q_u - q_t) / 2] + [w_i + (|v_i|^2 - q_i) / 2]."""
        k = self.settings.k
        zu, qu = self._users.all_rows(k)
        zi, qi = self._items.all_rows(k)
        if self.n_time:
            zt = self.time_embedding.weight.data().asnumpy().astype(np.float64)
            zt = zt[self.data.user_last_day // TIME_BUCKETS[self.settings.time]]
            zu, qu = zu + zt, qu + (zt[:, :k] ** 2).sum(axis=1)
        vu, vi = zu[:, :k], zi[:, :k]
        user_bias = self.data.global_mean + zu[:, k] + 0.5 * ((vu ** 2).sum(axis=1) - qu)
        item_bias = zi[:, k] + 0.5 * ((vi ** 2).sum(axis=1) - qi)
        return Towers(vu.astype(np.float32), vi.astype(np.float32), user_bias.astype(np.float32),
                      item_bias.astype(np.float32))

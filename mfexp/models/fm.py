"""model=fm: a factorization machine over relation blocks (Rendle's FM, as myFM feeds it).

Each rating's feature vector is [user block | item block | day]: the user block holds the user's
id, side features (age, gender, occupation, zip) and implicit feedback (the items the user rated
in the training part, each 1/sqrt(n)); the item block holds the item's id, genres and release
year, and its raters. Every feature j has a factor v_j (k values) and a linear weight w_j:

    r = mean + sum_j x_j w_j + 1/2 (|sum_j x_j v_j|^2 - sum_j x_j^2 |v_j|^2)

Blocks are one CSR product per side per batch (layers.SparseBlock): for all users and all items,
then the batch's rows gathered, on ML-100K; for the batch's distinct rows only, sliced on the
host, where a side has many more rows than a batch (ML-25M). L2 acts on the gathered vectors,
with a multiplier per group (features, time) on top of train.reg.
"""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet.gluon import Block

from mfexp.models.base import ModelSettings, Recommender, Towers
from mfexp.models.layers import SparseBlock, embedding, hstack

TIME_BUCKETS = {"day": 1, "week": 7}


@dataclass
class FMSettings(ModelSettings):
    k: int = 32  # factor size
    implicit: bool = True  # who rated what (training part only), in both blocks
    side: bool = True  # user and item side features, where the data set has them
    time: str = "day"  # the rating's day or week as a feature, or none
    reg_features: float = 0.1  # multiplier of train.reg for the side and implicit parts
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

    def batch(self, index, q_columns):
        """(e, f, qf) for the batch's rows: e = the id's [v, w]; f = sum x_j [v_j, w_j] over the side
        and implicit features; qf = sum x_j^2 (square([v_j, w_j]) @ q_columns), B x 2 (with FM's
        q_columns: -|v_j|^2 / 2 and 0). f and qf are None without features."""
        e = self.ids(index)
        if self.features is None:
            return e, None, None
        w = self.weight.data(index.context)
        f = self.features.product(w, index)
        qf = self.features.squared_product(mx.nd.dot(mx.nd.square(w), q_columns), index)
        return e, f, qf

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
    # Measured on u1 (val holdout): less L2 on the features than on the ids, Adam at ~1e-3, and
    # weight averaging over the last 3 epochs (train.swa) do best.
    space = {"model.k": "choice(16,32,64)", "train.reg": "tag(log, interval(0.02, 0.2))",
             "model.reg_features": "tag(log, interval(0.03, 1.0))",
             "train.optimizer": "adam", "train.lr": "tag(log, interval(5e-4, 4e-3))",
             "train.batch_size": "choice(512,1024)", "train.swa": "3"}
    reference_label = "default"
    refit = True  # sweep.refit=auto: trained again on train + holdout (BENCHMARKS.md, Across folds)

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
        self._cache = {}  # ctx -> the constant matrices of forward()

    def _time(self, days):
        bucket = TIME_BUCKETS[self.settings.time]
        return days if bucket == 1 else mx.nd.floor(days / bucket)  # days are whole numbers already

    def _constants(self, ctx):
        """Constant (k+1) x 2 matrices M on ctx, one per kind of part, such that square(x) @ M (or
        x @ M for "linear") is the part's share of (prediction - mean, L2 norm): all the FM's norms
        as a few BLAS products. "q" turns |v_j|^2 into the features' self-interactions, -q/2."""
        if ctx not in self._cache:
            k, s = self.settings.k, self.settings
            first_k = np.r_[np.ones(k), 0.0]  # |x[:k]|^2: the factors, not the linear weight
            ones, zeros = np.ones(k + 1), np.zeros(k + 1)
            last = np.r_[np.zeros(k), 1.0]
            columns = {"id": (-0.5 * first_k, ones), "time": (-0.5 * first_k, s.reg_time * ones),
                       "features": (zeros, s.reg_features * ones), "sum": (0.5 * first_k, zeros),
                       "linear": (last, zeros), "q": (-0.5 * first_k, zeros)}
            self._cache[ctx] = {name: mx.nd.array(np.stack(c, axis=1), ctx=ctx) for name, c in columns.items()}
        return self._cache[ctx]

    def forward(self, users, items, days=None):
        """r = mean + w + (|v|^2 - q) / 2 with [v, w] the sum of every part's vector (user id, item id,
        day, user and item features) and q the parts' self-interactions; the L2 norm weighs the parts'
        |x|^2 by the group multipliers. Each part's share of both is one BLAS product of its squares
        with a constant matrix (few, large ops per batch)."""
        m = self._constants(users.context)
        eu, fu, qu = self._users.batch(users, m["q"])
        ei, fi, qi = self._items.batch(items, m["q"])
        parts = [(eu, "id"), (ei, "id")]
        if self.n_time:
            parts.append((self.time_embedding(self._time(days)), "time"))
        parts += [(f, "features") for f in (fu, fi) if f is not None]
        z = mx.nd.add_n(*(x for x, _ in parts))
        shares = [mx.nd.dot(mx.nd.square(x), m[kind]) for x, kind in parts + [(z, "sum")]]
        shares += [mx.nd.dot(z, m["linear"])] + [q for q in (qu, qi) if q is not None]
        pred, sq = mx.nd.split(mx.nd.add_n(*shares), num_outputs=2, axis=1, squeeze_axis=True)
        return pred + self.data.global_mean, sq

    @classmethod
    def reference(cls, settings):
        # the best validation RMSE of a hand grid on u1's holdout (BENCHMARKS.md, fm ablations)
        return {"train.optimizer": "adam", "train.lr": 1e-3, "train.reg": 0.1, "train.batch_size": 1024,
                "model.k": 32, "model.reg_features": 0.1, "train.swa": 3}

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

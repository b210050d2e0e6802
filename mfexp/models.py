"""The networks: the tutorial's three (plain, mlp, dropout) and the classic biased MF.

Each is a Gluon HybridBlock taking (users, items) index vectors and returning
(prediction, squared norm of the embedding rows used). The second output feeds the
per-rating L2 penalty (`train.reg`), which regularizes only the rows a rating touches,
unlike MXNet's dense `wd`. Models know nothing of Optuna or MLflow.
"""
from __future__ import annotations

import mxnet as mx
from mxnet.gluon import HybridBlock, nn

from mfexp.config import ModelConfig


def _rowdot(F, x, y):
    """Row-wise inner product as a matrix product with a ones vector: MXNet's CPU sum over
    axis 1 is several times slower than BLAS here (same values to ~1e-6)."""
    ones = F.ones_like(F.slice_axis(x, axis=0, begin=0, end=1))
    return F.reshape(F.dot(x * y, ones, transpose_b=True), (-1,))


def _row_sq(F, x):
    return _rowdot(F, x, x)


def _embedding(n: int, k: int, sparse_grad: bool, **kwargs) -> nn.Embedding:
    return nn.Embedding(n, k, sparse_grad=sparse_grad, **kwargs)


class DotProduct(HybridBlock):
    """model=plain: the inner product of a user and an item embedding."""

    def __init__(self, n_users: int, n_items: int, k: int, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.user_embedding = _embedding(n_users, k, sparse_grad)
            self.item_embedding = _embedding(n_items, k, sparse_grad)

    def hybrid_forward(self, F, users, items):
        u, v = self.user_embedding(users), self.item_embedding(items)
        return _rowdot(F, u, v), _row_sq(F, u) + _row_sq(F, v)


class TowerMLP(HybridBlock):
    """model=mlp (dropout=0) and model=dropout: per side embedding -> relu -> Dense(hidden)
    [-> Dropout], then the inner product of the two sides."""

    def __init__(self, n_users: int, n_items: int, k: int, hidden: int, dropout: float = 0.0,
                 sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.user_embedding = _embedding(n_users, k, sparse_grad)
            self.item_embedding = _embedding(n_items, k, sparse_grad)
            self.user_dense = nn.Dense(hidden, in_units=k)
            self.item_dense = nn.Dense(hidden, in_units=k)
            self.user_dropout = nn.Dropout(dropout) if dropout > 0 else None
            self.item_dropout = nn.Dropout(dropout) if dropout > 0 else None

    def hybrid_forward(self, F, users, items):
        u, v = self.user_embedding(users), self.item_embedding(items)
        hu, hv = self.user_dense(F.relu(u)), self.item_dense(F.relu(v))
        if self.user_dropout is not None:
            hu, hv = self.user_dropout(hu), self.item_dropout(hv)
        return _rowdot(F, hu, hv), _row_sq(F, u) + _row_sq(F, v)


class BiasedDotProduct(HybridBlock):
    """model=biased: global mean + user bias + item bias + inner product (Koren's baseline)."""

    def __init__(self, n_users: int, n_items: int, k: int, global_mean: float = 0.0, sparse_grad: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.user_embedding = _embedding(n_users, k, sparse_grad)
            self.item_embedding = _embedding(n_items, k, sparse_grad)
            self.user_bias = _embedding(n_users, 1, sparse_grad, weight_initializer="zeros")
            self.item_bias = _embedding(n_items, 1, sparse_grad, weight_initializer="zeros")
            self.global_mean = self.params.get_constant("global_mean", mx.nd.array([global_mean]))

    def hybrid_forward(self, F, users, items, global_mean):
        u, v = self.user_embedding(users), self.item_embedding(items)
        bu, bi = self.user_bias(users), self.item_bias(items)
        pred = _rowdot(F, u, v) + F.reshape(bu + bi, (-1,))
        pred = F.broadcast_add(pred, global_mean)
        sq = _row_sq(F, u) + _row_sq(F, v) + F.reshape(bu * bu + bi * bi, (-1,))
        return pred, sq


def build_model(cfg: ModelConfig, n_users: int, n_items: int, global_mean: float = 0.0,
                sparse_grad: bool = False) -> HybridBlock:
    """The network named by `model.name`, not yet initialized. `sparse_grad`: row-sparse
    embedding gradients, so the optimizer touches only the rows of the batch (lazy update)."""
    if cfg.name == "plain":
        return DotProduct(n_users, n_items, cfg.k, sparse_grad)
    if cfg.name == "mlp":
        return TowerMLP(n_users, n_items, cfg.k, cfg.hidden, sparse_grad=sparse_grad)
    if cfg.name == "dropout":
        return TowerMLP(n_users, n_items, cfg.k, cfg.hidden, cfg.dropout, sparse_grad=sparse_grad)
    if cfg.name == "biased":
        return BiasedDotProduct(n_users, n_items, cfg.k, global_mean, sparse_grad)
    raise ValueError(f"unknown model {cfg.name!r}")  # validate() names the key before this

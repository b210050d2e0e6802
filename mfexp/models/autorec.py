"""model=autorec: item-based AutoRec (Sedhain et al., 2015), each prediction made with the rating
it predicts left out of the input.

An item's input is its column of the training ratings (one value per user, 0 where the user did not
rate it). An encoder maps it to `hidden` units, a decoder back to one value per user:

    h_i = sigmoid(sum_{v rated i} r_vi W_v + b)        r(u, i) = mean + <h_i, V_u> + c_u

AutoRec reconstructs its own inputs, so a rating being fit is also in the input it is fit from, and
the network learns to copy what a test rating never gives it. Here the input of rating (u, i) is the
item's column without r_ui (`leave_out`): training then asks exactly what prediction asks.

Per batch, one CSR product over the columns of the batch's distinct items gives their encoder
inputs (layers.SparseBlock), so an epoch is one pass over the ratings like every other model here.
Its space and reference train on batches of whole items (train.group_by=item, as AutoRec's own
per-item minibatches): a batch then holds a few dozen items, each encoded once, instead of hundreds
(1.45x faster trials on u1, the same val RMSE over 3 seeds; BENCHMARKS.md, AutoRec). train.reg is
L2 on what a rating touches: the user's encoder row, decoder row and bias.

No towers: with leave_out, h_i depends on the user whose rating is left out, so the prediction is
not an inner product of fixed vectors; recommend scores items through the network.
"""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet.gluon import Block

from mfexp.models.base import ModelSettings, Recommender
from mfexp.models.layers import SparseBlock, embedding, row_sq, rowdot

ACTIVATIONS = ("sigmoid", "tanh", "relu")


@dataclass
class AutoRecSettings(ModelSettings):
    hidden: int = 500  # units of the encoder
    activation: str = "sigmoid"  # sigmoid | tanh | relu
    leave_out: bool = True  # a rating's own value is left out of its item's input

    def check(self, fail) -> None:
        fail(self.hidden > 0, "model.hidden", "must be > 0", self.hidden)
        fail(self.activation in ACTIVATIONS, "model.activation", f"must be one of {', '.join(ACTIVATIONS)}",
             self.activation)


class _Lookup:
    """r_ui of the training part for (user, item) pairs, 0 where the pair has none: a sorted key
    array searched on the host (a batch is a few thousand pairs)."""

    def __init__(self, item_ratings, n_users: int):
        m = item_ratings
        items = np.repeat(np.arange(m.n_rows, dtype=np.int64), np.diff(m.indptr))
        keys = items * n_users + m.indices.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys, self.values, self.n_users = keys[order], m.values[order].astype(np.float32), n_users

    def __call__(self, users, items):
        key = items.asnumpy().astype(np.int64) * self.n_users + users.asnumpy().astype(np.int64)
        if not len(self.keys):
            return mx.nd.zeros(key.shape, ctx=users.context)
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        value = np.where(self.keys[pos] == key, self.values[pos], 0.0).astype(np.float32)
        return mx.nd.array(value, ctx=users.context)


class AutoRec(Recommender, Block):
    Settings = AutoRecSettings
    needs = frozenset({"ratings"})
    # Its space and reference come from a hand grid on u1's holdout (BENCHMARKS.md, AutoRec): little
    # L2 (early stopping does most of the regularizing), 500 hidden units, the left-out rating
    space = {"model.hidden": "choice(250,500)", "train.reg": "tag(log, interval(0.003, 0.1))",
             "train.optimizer": "adam", "train.lr": "tag(log, interval(1e-4, 1e-3))",
             "train.batch_size": "choice(256,512,1024)", "train.swa": "3", "train.group_by": "item"}
    reference_label = "default"
    refit = True  # sweep.refit=auto: trained again on train + holdout (BENCHMARKS.md, Across folds)

    def __init__(self, settings: AutoRecSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        if data.item_ratings is None:
            raise ValueError("autorec needs the training ratings (ModelData.item_ratings)")
        h = settings.hidden
        self._input = SparseBlock(data.item_ratings, gather=True)
        self._lookup = _Lookup(data.item_ratings, data.n_users) if settings.leave_out else None
        # dense updates: the encoder table is read whole by the product and row by row
        with self.name_scope():
            self.encoder = embedding(data.n_users, h, False)
            self.encoder_bias = self.params.get("encoder_bias", shape=(1, h), init="zeros")
            self.decoder = embedding(data.n_users, h, False)
            self.decoder_bias = embedding(data.n_users, 1, False, weight_initializer="zeros")

    def forward(self, users, items):
        ctx = users.context
        w = self.encoder.weight.data(ctx)
        own = self.encoder(users)
        x = self._input.product(w, items)  # sum_v r_vi W_v for the batch's items
        # MXNet's CPU backward of broadcast ops is a slow reduction (two thirds of a step): the
        # constant factor is broadcast explicitly (no gradient), the bias added as a matrix product
        if self._lookup is not None:
            r = self._lookup(users, items).reshape((-1, 1))
            x = x - own * mx.nd.broadcast_to(r, shape=(0, self.settings.hidden))
        ones = mx.nd.ones((users.shape[0], 1), ctx=ctx)
        x = x + mx.nd.dot(ones, self.encoder_bias.data(ctx))
        hidden = mx.nd.Activation(x, act_type=self.settings.activation)
        v, c = self.decoder(users), self.decoder_bias(users)
        pred = rowdot(mx.nd, hidden, v) + mx.nd.reshape(c, (-1,)) + self.data.global_mean
        sq = row_sq(mx.nd, own) + row_sq(mx.nd, v) + mx.nd.reshape(c * c, (-1,))
        return pred, sq

    @classmethod
    def reference(cls, settings):
        # the best validation RMSE of the hand grid above (BENCHMARKS.md, AutoRec)
        return {"train.optimizer": "adam", "train.lr": 3e-4, "train.reg": 0.01, "train.batch_size": 512,
                "model.hidden": 500, "train.swa": 3, "train.group_by": "item"}

"""model=svdpp: Koren's SVD++, biased MF whose user vector also sums the (1/sqrt(n)-scaled)
factors of the items the user rated in the training part:
    r(u, i) = mean + b_u + b_i + <q_i, p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j>
"""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet.gluon import Block

from mfexp.models.base import ModelSettings, Recommender, Towers
from mfexp.models.layers import SparseBlock, embedding, row_sq, rowdot


@dataclass
class SVDppSettings(ModelSettings):
    k: int = 64  # factor size
    reg_implicit: float = 1.0  # multiplier of train.reg for the implicit part of the user vector

    def check(self, fail) -> None:
        fail(self.k > 0, "model.k", "must be > 0", self.k)
        fail(self.reg_implicit >= 0, "model.reg_implicit", "must be >= 0", self.reg_implicit)


class SVDpp(Recommender, Block):
    Settings = SVDppSettings
    needs = frozenset({"implicit"})
    space = {"model.k": "choice(16,32,64,128)", "train.reg": "tag(log, interval(0.01, 0.3))",
             "model.reg_implicit": "tag(log, interval(0.1, 10.0))",
             "train.optimizer": "adam", "train.lr": "tag(log, interval(5e-4, 4e-3))",
             "train.batch_size": "choice(256,512,1024)", "train.swa": "3"}
    reference_label = "default"
    refit = True  # sweep.refit=auto: trained again on train + holdout (BENCHMARKS.md, Across folds)

    def __init__(self, settings: SVDppSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        if data.user_items is None:
            raise ValueError("svdpp needs implicit feedback (ModelData.user_items)")
        k = settings.k
        self._implicit = SparseBlock(data.user_items)
        with self.name_scope():
            self.user_embedding = embedding(data.n_users, k, sparse_grad)
            self.item_embedding = embedding(data.n_items, k, sparse_grad)
            self.user_bias = embedding(data.n_users, 1, sparse_grad, weight_initializer="zeros")
            self.item_bias = embedding(data.n_items, 1, sparse_grad, weight_initializer="zeros")
            self.implicit = self.params.get("implicit_weight", shape=(data.n_items, k))

    def forward(self, users, items):
        y = self._implicit.product(self.implicit.data(users.context), users)
        p = self.user_embedding(users) + y
        q = self.item_embedding(items)
        bu, bi = self.user_bias(users), self.item_bias(items)
        pred = rowdot(mx.nd, p, q) + mx.nd.reshape(bu + bi, (-1,)) + self.data.global_mean
        sq = (row_sq(mx.nd, self.user_embedding(users)) + row_sq(mx.nd, q)
              + self.settings.reg_implicit * row_sq(mx.nd, y) + mx.nd.reshape(bu * bu + bi * bi, (-1,)))
        return pred, sq

    @classmethod
    def reference(cls, settings):
        # the best validation RMSE of a small hand grid on u1's holdout
        return {"train.optimizer": "adam", "train.lr": 1e-3, "train.reg": 0.05, "train.batch_size": 512,
                "model.k": 64, "model.reg_implicit": 1.0, "train.swa": 3}

    def towers(self) -> Towers:
        users = self.user_embedding.weight.data().asnumpy()
        users = (users + self._implicit.numpy_product(self.implicit.data().asnumpy())).astype(np.float32)
        return Towers(users, self.item_embedding.weight.data().asnumpy(),
                      self.user_bias.weight.data().asnumpy()[:, 0] + np.float32(self.data.global_mean),
                      self.item_bias.weight.data().asnumpy()[:, 0])

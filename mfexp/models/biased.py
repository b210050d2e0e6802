"""model=biased: classic biased MF (Koren): global mean + user bias + item bias + inner product."""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
from mxnet.gluon import HybridBlock

from mfexp.models.base import TUTORIAL_TRAIN, ModelSettings, Recommender, Towers
from mfexp.models.layers import Tables, embedding, row_sq, rowdot


@dataclass
class BiasedSettings(ModelSettings):
    k: int = 64  # embedding size

    def check(self, fail) -> None:
        fail(self.k > 0, "model.k", "must be > 0", self.k)


class BiasedMF(Tables, Recommender, HybridBlock):
    Settings = BiasedSettings
    space = {"model.k": "choice(16,32,64,128)", "train.reg": "tag(log, interval(1e-3, 0.3))",
             "train.optimizer": "adam", "train.lr": "tag(log, interval(5e-4, 2e-2))",
             "train.batch_size": "choice(128,256,512)"}

    def __init__(self, settings: BiasedSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        n_users, n_items, k = data.n_users, data.n_items, settings.k
        with self.name_scope():
            self.user_embedding = embedding(n_users, k, sparse_grad)
            self.item_embedding = embedding(n_items, k, sparse_grad)
            self.user_bias = embedding(n_users, 1, sparse_grad, weight_initializer="zeros")
            self.item_bias = embedding(n_items, 1, sparse_grad, weight_initializer="zeros")
            self.global_mean = self.params.get_constant("global_mean", mx.nd.array([data.global_mean]))

    def hybrid_forward(self, F, users, items, global_mean):
        u, v = self.user_embedding(users), self.item_embedding(items)
        bu, bi = self.user_bias(users), self.item_bias(items)
        pred = rowdot(F, u, v) + F.reshape(bu + bi, (-1,))
        pred = F.broadcast_add(pred, global_mean)
        sq = row_sq(F, u) + row_sq(F, v) + F.reshape(bu * bu + bi * bi, (-1,))
        return pred, sq

    # the tutorial's regime (SGD, dense wd, batch 64) is still improving at the default sweep's 30
    # epochs, and better at 60 (BENCHMARKS.md, The default sweep, Before populations)
    reference_epochs = 2.0

    @classmethod
    def reference(cls, settings):
        return {**TUTORIAL_TRAIN, "model.k": 64}

    def towers(self) -> Towers:
        """The global mean is folded into the user bias."""
        mean = self.global_mean.data().asnumpy()[0]
        return Towers(self.user_embedding.weight.data().asnumpy(), self.item_embedding.weight.data().asnumpy(),
                      self.user_bias.weight.data().asnumpy()[:, 0] + mean,
                      self.item_bias.weight.data().asnumpy()[:, 0])

"""model=plain: the tutorial's plain_net(64), the inner product of a user and an item embedding."""
from __future__ import annotations

from dataclasses import dataclass

from mxnet.gluon import HybridBlock

from mfexp.models.base import TUTORIAL_TRAIN, ModelSettings, Recommender, Towers
from mfexp.models.layers import Tables, embedding, row_sq, rowdot


@dataclass
class DotSettings(ModelSettings):
    k: int = 64  # embedding size

    def check(self, fail) -> None:
        fail(self.k > 0, "model.k", "must be > 0", self.k)


class DotProduct(Tables, Recommender, HybridBlock):
    Settings = DotSettings
    space = {"model.k": "choice(16,32,64,128)", "train.reg": "tag(log, interval(1e-3, 0.3))",
             "train.optimizer": "adam", "train.lr": "tag(log, interval(5e-4, 2e-2))",
             "train.batch_size": "choice(128,256,512)"}
    # its winners here (Adam, lr ~1e-3, reg ~0.01) were still improving at 30 epochs, and stop on patience at
    # 31-44 given 60, where the forecast pruner keeps the longer budget cheap (BENCHMARKS.md, sweep_efficiency)
    sweep_epochs = 2.0

    def __init__(self, settings: DotSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        with self.name_scope():
            self.user_embedding = embedding(data.n_users, settings.k, sparse_grad)
            self.item_embedding = embedding(data.n_items, settings.k, sparse_grad)

    def hybrid_forward(self, F, users, items):
        u, v = self.user_embedding(users), self.item_embedding(items)
        return rowdot(F, u, v), row_sq(F, u) + row_sq(F, v)

    @classmethod
    def reference(cls, settings):
        return {**TUTORIAL_TRAIN, "model.k": 64}

    def towers(self) -> Towers:
        users = self.user_embedding.weight.data().asnumpy()
        items = self.item_embedding.weight.data().asnumpy()
        return Towers(users, items, users[:, 0] * 0, items[:, 0] * 0)

"""A model that lives outside the mfexp package, to prove models are plugins: named only in
tests/conf/model/scaled_dot.yaml (`_target_: tests.plugins.cosine.ScaledDot`), it trains, sweeps,
is logged, loads as a pyfunc model and recommends without any edit to mfexp."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mxnet.gluon import HybridBlock, nn

from mfexp.models import ModelSettings, Recommender, Towers


@dataclass
class ScaledDotSettings(ModelSettings):
    k: int = 8
    scale: float = 1.0  # predictions are mean + scale * <u, v>

    def check(self, fail) -> None:
        fail(self.k > 0, "model.k", "must be > 0", self.k)
        fail(self.scale > 0, "model.scale", "must be > 0", self.scale)


class ScaledDot(Recommender, HybridBlock):
    Settings = ScaledDotSettings
    space = {"train.optimizer": "adam", "train.lr": "tag(log, interval(1e-3, 1e-2))",
             "model.scale": "interval(0.5, 2.0)"}

    def __init__(self, settings: ScaledDotSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        with self.name_scope():
            self.users = nn.Embedding(data.n_users, settings.k)
            self.items = nn.Embedding(data.n_items, settings.k)

    def hybrid_forward(self, F, users, items):
        u, v = self.users(users), self.items(items)
        dot = F.sum(u * v, axis=1)
        return self.data.global_mean + self.settings.scale * dot, F.sum(u * u + v * v, axis=1)

    def towers(self) -> Towers:
        u = self.users.weight.data().asnumpy() * self.settings.scale
        v = self.items.weight.data().asnumpy()
        return Towers(u, v, np.full(len(u), self.data.global_mean, np.float32), np.zeros(len(v), np.float32))

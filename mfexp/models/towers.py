"""model=mlp and model=dropout: the tutorial's get_one_layer_mlp(64, 64) and
get_one_layer_dropout_mlp(64, 64). Per side: embedding -> relu -> Dense(hidden) [-> Dropout],
then the inner product of the two sides."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mxnet.gluon import HybridBlock, nn

from mfexp.models.base import TUTORIAL_TRAIN, ModelSettings, Recommender, Towers
from mfexp.models.layers import StackedDense, embedding, member_dropout, row_sq, rowdot


@dataclass
class TowerSettings(ModelSettings):
    k: int = 64  # embedding size
    hidden: int = 64  # Dense units per side
    dropout: float = 0.0  # after each side's Dense; 0 is the mlp network

    def check(self, fail) -> None:
        fail(self.k > 0, "model.k", "must be > 0", self.k)
        fail(self.hidden > 0, "model.hidden", "must be > 0", self.hidden)
        fail(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)", self.dropout)


class TowerMLP(Recommender, HybridBlock):
    Settings = TowerSettings
    population = True  # its Dense layers batched per member (StackedDense), dropout at each member's rate
    per_member = ("model.dropout",)
    # on the CPU a population trains fewer trials/hour than one at a time (BENCHMARKS.md, trial_cost):
    # the batched Dense products are arithmetic, not MXNet's fixed cost per batch
    population_on_cpu = False
    # The towers overfit fast with Adam; SGD with momentum at small batches generalizes better.
    space = {"model.k": "choice(16,32,64,128)", "train.reg": "tag(log, interval(1e-3, 0.3))",
             "train.optimizer": "sgd", "train.lr": "tag(log, interval(1e-2, 1e-1))",
             "train.batch_size": "choice(64,128)", "model.hidden": "choice(32,64,128,256)"}

    def __init__(self, settings: TowerSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        k, hidden, dropout = settings.k, settings.hidden, settings.dropout
        with self.name_scope():
            self.user_embedding = embedding(data.n_users, k, sparse_grad)
            self.item_embedding = embedding(data.n_items, k, sparse_grad)
            self.user_dense = nn.Dense(hidden, in_units=k)
            self.item_dense = nn.Dense(hidden, in_units=k)
            self.user_dropout = nn.Dropout(dropout) if dropout > 0 else None
            self.item_dropout = nn.Dropout(dropout) if dropout > 0 else None

    def hybrid_forward(self, F, users, items):
        u, v = self.user_embedding(users), self.item_embedding(items)
        hu, hv = self.user_dense(F.relu(u)), self.item_dense(F.relu(v))
        if self.user_dropout is not None:
            hu, hv = self.user_dropout(hu), self.item_dropout(hv)
        return rowdot(F, hu, hv), row_sq(F, u) + row_sq(F, v)

    @classmethod
    def stack(cls, members, data, sparse_grad):
        return _StackedTowers(members[0], data, len(members), sparse_grad,
                              any(m.dropout > 0 for m in members))

    @classmethod
    def reference(cls, settings):
        ref = {**TUTORIAL_TRAIN, "model.k": 64, "model.hidden": 64}
        if settings.dropout > 0:
            ref["model.dropout"] = 0.5
        return ref

    @classmethod
    def search_space(cls, settings):  # the dropout network also searches its rate
        return {**cls.space, **({"model.dropout": "interval(0.0, 0.6)"} if settings.dropout > 0 else {})}

    def towers(self) -> Towers:
        """Dense(relu(embedding)) per side; dropout is off at inference."""
        def side(emb, dense):
            w = emb.weight.data().asnumpy()
            return np.maximum(w, 0.0) @ dense.weight.data().asnumpy().T + dense.bias.data().asnumpy()

        users, items = side(self.user_embedding, self.user_dense), side(self.item_embedding, self.item_dense)
        return Towers(users, items, np.zeros(len(users), np.float32), np.zeros(len(items), np.float32))


class _StackedTowers(HybridBlock):
    """n members of TowerMLP as one network (Recommender.stack): its parameters in TowerMLP's order."""

    def __init__(self, settings: TowerSettings, data, n: int, sparse_grad: bool, dropout: bool, **kwargs):
        super().__init__(**kwargs)
        k, hidden, self.dropout = settings.k, settings.hidden, dropout
        with self.name_scope():
            self.user_embedding = embedding(data.n_users * n, k, sparse_grad)
            self.item_embedding = embedding(data.n_items * n, k, sparse_grad)
            self.user_dense = StackedDense(n, hidden, k)
            self.item_dense = StackedDense(n, hidden, k)

    def hybrid_forward(self, F, users, items, members, dropout):
        u, v = self.user_embedding(users), self.item_embedding(items)  # (P, B, k)
        hu, hv = self.user_dense(F.relu(u), members), self.item_dense(F.relu(v), members)
        if self.dropout:
            hu, hv = member_dropout(F, hu, dropout), member_dropout(F, hv, dropout)
        flat = lambda x: F.reshape(x, (-3, 0))  # noqa: E731 - (P * B, d)
        u, v = flat(u), flat(v)
        return rowdot(F, flat(hu), flat(hv)), row_sq(F, u) + row_sq(F, v)

"""model=ensemble: a weighted blend of trained models, fit on the validation holdout.

    r(u, i) = bias + sum_m weight_m * r_m(u, i)

A sweep builds it from its best trials (`sweep.ensemble`); weights are non-negative least squares
on the members' validation predictions, never on the test part. Members are children of this block,
so one save/load carries them all; where every member has towers, so does the blend (its vectors are
the members' vectors side by side, the user's scaled by the member's weight).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mxnet as mx
import numpy as np
from mxnet.gluon import Block

from mfexp.models.base import ModelSettings, Recommender, Towers
from mfexp.models.plugins import build_model, model_class, settings_dict, to_settings


@dataclass
class EnsembleSettings(ModelSettings):
    members: list[Any] = field(default_factory=list)  # each member's settings, with its _target_
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0

    def check(self, fail) -> None:
        fail(len(self.members) > 0, "model.members", "must list at least one model", self.members)
        fail(len(self.weights) == len(self.members), "model.weights", "must give one weight per member",
             self.weights)


class Ensemble(Recommender, Block):
    Settings = EnsembleSettings
    reference_label = "none"

    @classmethod
    def needs_for(cls, settings: EnsembleSettings) -> frozenset:
        needs: set = set()
        for member in settings.members:
            member = to_settings(member)
            needs |= model_class(member._target_).needs_for(member)
        return frozenset(needs)

    def __init__(self, settings: EnsembleSettings, data, sparse_grad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._keep(settings, data)
        self.n_members = len(settings.members)
        with self.name_scope():
            for n, member in enumerate(settings.members):
                setattr(self, f"member{n}", build_model(to_settings(member), data))

    def members(self) -> list:
        return [getattr(self, f"member{n}") for n in range(self.n_members)]

    def forward(self, users, items, days=None):
        pred = None
        for weight, member in zip(self.settings.weights, self.members()):
            p = (member(users, items, days) if member.uses_time else member(users, items))[0]
            pred = weight * p if pred is None else pred + weight * p
        return pred + self.settings.bias, mx.nd.zeros_like(pred)

    def towers(self):
        parts = [m.towers() for m in self.members()]
        if any(p is None for p in parts):
            return None
        w = self.settings.weights
        return Towers(np.concatenate([wm * p.users for wm, p in zip(w, parts)], axis=1),
                      np.concatenate([p.items for p in parts], axis=1),
                      sum(wm * p.user_bias for wm, p in zip(w, parts)) + np.float32(self.settings.bias),
                      sum(wm * p.item_bias for wm, p in zip(w, parts)))

    @staticmethod
    def assemble(nets: list, weights, bias: float, data, name: str = "ensemble") -> "Ensemble":
        """An Ensemble holding copies of trained `nets`' parameters (on the CPU)."""
        settings = EnsembleSettings(_target_=f"{Ensemble.__module__}.Ensemble", name=name,
                                    members=[_plain(n.settings) for n in nets],
                                    weights=[float(w) for w in weights], bias=float(bias))
        ens = Ensemble(settings, data)
        ens.initialize(ctx=mx.cpu())
        for net, member in zip(nets, ens.members()):  # the same class and settings: the same parameters, in order
            source, target = list(net.collect_params().values()), list(member.collect_params().values())
            if [p.shape for p in source] != [p.shape for p in target]:
                raise ValueError(f"ensemble member {type(net).__name__}: its parameters do not match a new copy's")
            for src, param in zip(source, target):
                param.set_data(src.data().as_in_context(mx.cpu()))
        return ens


def _plain(settings) -> dict:
    return settings_dict(settings)


def fit_weights(predictions: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares with a free bias: (weights, bias) minimizing
    |bias + predictions @ weights - ratings|^2 over (n ratings x m models). Active set: solve, drop
    the members whose weight came out negative, solve again (m is small)."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(ratings, dtype=np.float64)
    active = list(range(p.shape[1]))
    while True:
        x = np.column_stack([np.ones(len(y)), p[:, active]])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        negative = [a for a, c in zip(active, coef[1:]) if c < 0]
        if not negative or len(active) == 1:
            break
        active = [a for a in active if a not in negative]
    weights = np.zeros(p.shape[1])
    weights[active] = np.maximum(coef[1:], 0.0)
    return weights, float(coef[0])


def cross_validated_rmse(predictions: np.ndarray, ratings: np.ndarray, scale, folds: int = 5,
                         seed: int = 0) -> float:
    """The blend's RMSE on held-out folds of the validation holdout (weights fit on the other folds):
    an honest validation figure for choosing between the blend and single models."""
    n = len(ratings)
    order = np.random.default_rng(seed).permutation(n)
    sq = 0.0
    for k in range(folds):
        held = order[k::folds]
        fit = np.setdiff1d(order, held)
        w, b = fit_weights(predictions[fit], ratings[fit])
        pred = np.clip(b + predictions[held] @ w, *scale)
        sq += float(np.sum((pred - ratings[held]) ** 2))
    return float(np.sqrt(sq / n))

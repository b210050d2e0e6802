"""The one interface every model meets: training, sweeps, tracking, the pyfunc model, recommend
and serve know models only through it.

A model is a Gluon Block (or HybridBlock) that also subclasses `Recommender`:

* `Settings`: its typed settings, a dataclass subclassing `ModelSettings`. `conf/model/<name>.yaml`
  names the class with `_target_` and supplies values; a key the dataclass lacks is refused.
* `needs`: what it reads besides (user, item) indices: "implicit" (who rated what in the training
  part), "user_side" / "item_side" (side features), "time" (the rating's day), "ratings" (the
  training ratings themselves, item by item: an autoencoder's input). `ModelData` carries
  exactly those, built from the training part, and is saved with the model so a served model
  rebuilds a known user's features.
* `__init__(settings, data: ModelData, sparse_grad=False)`; the forward pass takes
  `(users, items)`, plus `days` when "time" is in `needs`, and returns
  `(prediction, squared norm of what the rating touched)`: the second output feeds the
  per-rating L2 penalty `train.reg`.
* `towers()`: user and item vectors with biases, so that prediction = <user, item> + user_bias +
  item_bias, for fast top-N and item similarity; None where the model has none (a generic path
  scores all items through the network).
* `reference(settings)`: a configuration every study of this model starts with (the tutorial's own
  for its networks), or None; `space`: the model's default search space in Hydra's override grammar.

Models know nothing of Optuna or MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mfexp.data.features import Csr, SideFeatures, implicit_feedback

NEEDS = ("implicit", "user_side", "item_side", "time", "ratings")
SECONDS_PER_DAY = 86400


@dataclass
class ModelSettings:
    """Every model's settings: which class (`_target_`) and a short name for reports and tags."""

    _target_: str = ""
    name: str = ""

    def check(self, fail) -> None:
        """Validate the model's own values; call `fail(ok, key, rule, value)` for each rule."""


@dataclass
class Towers:
    """prediction(u, i) = <users[u], items[i]> + user_bias[u] + item_bias[i], as numpy arrays."""

    users: np.ndarray
    items: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray


@dataclass(eq=False)
class ModelData:
    """What a model is built from besides its settings: table sizes, the global mean, and the
    features its `needs` name, all from the training part. Saved beside the parameters."""

    n_users: int
    n_items: int
    global_mean: float = 0.0
    user_side: Optional[SideFeatures] = None
    item_side: Optional[SideFeatures] = None
    user_items: Optional[Csr] = None  # implicit feedback, rows 1/sqrt(n)
    item_users: Optional[Csr] = None
    day0: int = 0  # unix time of day 0 (the first training rating's day)
    n_days: int = 1
    user_last_day: Optional[np.ndarray] = None  # each user's last training day: the default "when"
    item_ratings: Optional[Csr] = None  # the training ratings, items x users (raw values)

    @staticmethod
    def from_dataset(data, needs=NEEDS) -> "ModelData":
        train = data.train
        out = ModelData(data.n_users, data.n_items, float(data.global_mean))
        if "implicit" in needs:
            out.user_items, out.item_users = implicit_feedback(train.users, train.items, data.n_users, data.n_items)
        if "ratings" in needs:
            out.item_ratings = Csr.from_coo(train.items, train.users, np.asarray(train.ratings, dtype=np.float32),
                                            data.n_items, data.n_users)
        if "user_side" in needs:
            out.user_side = data.user_side
        if "item_side" in needs:
            out.item_side = data.item_side
        if "time" in needs and len(train):
            ts = train.timestamps
            out.day0 = int(ts.min()) // SECONDS_PER_DAY * SECONDS_PER_DAY
            out.n_days = int((ts.max() - out.day0) // SECONDS_PER_DAY) + 1
            last = np.full(data.n_users, ts.max(), dtype=np.int64)
            order = np.argsort(ts, kind="stable")
            last[train.users[order]] = ts[order]  # later writes win: each user's latest rating
            out.user_last_day = out.days(last)
        return out

    def replicate(self, n: int) -> "ModelData":
        """Table sizes for n members side by side (mfexp.population); ids-only models need no more."""
        return ModelData(self.n_users * n, self.n_items * n, self.global_mean)

    def days(self, timestamps: np.ndarray) -> np.ndarray:
        """Day index of unix timestamps, clipped to the training days (later days count as the last)."""
        d = (np.asarray(timestamps, dtype=np.int64) - self.day0) // SECONDS_PER_DAY
        return np.clip(d, 0, self.n_days - 1).astype(np.int32)

    def days_for(self, users: np.ndarray, timestamps: Optional[np.ndarray]) -> np.ndarray:
        """Day indices for ratings; without timestamps, each user's last training day."""
        if timestamps is not None:
            return self.days(timestamps)
        if self.user_last_day is None:
            return np.zeros(len(users), dtype=np.int32)
        return self.user_last_day[np.asarray(users)]

    # --- saving: plain arrays and JSON, nothing pickled ---------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "n_items": self.n_items, "global_mean": self.global_mean,
                "day0": self.day0, "n_days": self.n_days,
                "user_side_names": list(self.user_side.names) if self.user_side else None,
                "item_side_names": list(self.item_side.names) if self.item_side else None}

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in ("user_items", "item_users", "item_ratings"):
            if getattr(self, key) is not None:
                out.update(getattr(self, key).arrays(f"{key}."))
        for key in ("user_side", "item_side"):
            if getattr(self, key) is not None:
                out.update(getattr(self, key).matrix.arrays(f"{key}."))
        if self.user_last_day is not None:
            out["user_last_day"] = self.user_last_day
        return out

    @staticmethod
    def restore(meta: dict[str, Any], arrays) -> "ModelData":
        out = ModelData(meta["n_users"], meta["n_items"], meta.get("global_mean", 0.0),
                        day0=meta.get("day0", 0), n_days=meta.get("n_days", 1))
        out.user_items = Csr.from_arrays(arrays, "user_items.")
        out.item_users = Csr.from_arrays(arrays, "item_users.")
        out.item_ratings = Csr.from_arrays(arrays, "item_ratings.")
        for key in ("user_side", "item_side"):
            matrix = Csr.from_arrays(arrays, f"{key}.")
            if matrix is not None:
                setattr(out, key, SideFeatures(tuple(meta[f"{key}_names"]), matrix))
        if "user_last_day" in arrays:
            out.user_last_day = np.asarray(arrays["user_last_day"])
        return out


class Recommender:
    """Mixin of every model (see the module docstring). Subclass it together with a Gluon Block."""

    Settings: ClassVar[type] = ModelSettings
    needs: ClassVar[frozenset] = frozenset()
    space: ClassVar[dict[str, str]] = {}  # default search space: dotted key -> Hydra sweep expression
    reference_label: ClassVar[str] = "tutorial"
    # the reference trial trains for this many times the sweep's train.epochs (a regime slower to
    # converge than those the space holds)
    reference_epochs: ClassVar[float] = 1.0
    # in a sweep, this model's trials train for this many times train.epochs: a fixed train.epochs in
    # its default space (sweep.space.<model> or train.epochs on the command line set it outright)
    sweep_epochs: ClassVar[float] = 1.0
    # sweep.refit=auto (the default sweep's): its chosen configuration is trained again on train + holdout
    # for its best epoch count before the one test evaluation. True where that was measured to help on
    # every fold (BENCHMARKS.md, Across folds); the tutorial's SGD towers moved away from their val RMSE
    refit: ClassVar[bool] = False
    # True when several trials of this model can train at once as one network (mfexp.population):
    # `stack` builds it. A model without it trains its trials one at a time
    population: ClassVar[bool] = False
    # model settings the members of one population may differ in (train.lr, wd, reg, init_scale always
    # may); every other model setting is shared by a population
    per_member: ClassVar[tuple[str, ...]] = ()
    # False where a population was measured slower than its trials one at a time on the CPU: then
    # sweep.population=auto trains them one at a time there (a GPU, or sweep.population=N, still stacks them)
    population_on_cpu: ClassVar[bool] = True

    settings: ModelSettings
    data: ModelData

    def _keep(self, settings: ModelSettings, data: ModelData) -> None:
        # object.__setattr__: Gluon's Block.__setattr__ would try to register these as children
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "data", data)

    @classmethod
    def needs_for(cls, settings: ModelSettings) -> frozenset:
        """What this model reads besides ids, with these settings (a subset of NEEDS)."""
        return frozenset(cls.needs)

    @property
    def uses_time(self) -> bool:
        """True when the forward pass takes a third input, the rating's day index."""
        return "time" in self.needs_for(self.settings)

    @classmethod
    def reference(cls, settings: ModelSettings) -> Optional[dict[str, Any]]:
        return None

    @classmethod
    def search_space(cls, settings: ModelSettings) -> dict[str, str]:
        """The default search space; a sweep's `sweep.space.<name>` (and `common`) edit it."""
        return dict(cls.space)

    def towers(self) -> Optional[Towers]:
        return None

    @classmethod
    def stack(cls, members: list, data: "ModelData", sparse_grad: bool):
        """The networks of n members (their settings, which differ only in `per_member`) as one
        HybridBlock: each parameter is the members' own, in the lone
        network's order, concatenated along axis 0 (member m's rows m*r:(m+1)*r), so that a member's
        weights are copied in and out by slicing. Its forward takes (users, items, members, dropout):
        ids (P, B) with member m's ids offset by m times the table's rows, the P active members' numbers
        (P,), and each one's dropout rate (P, 1, 1; zeros at evaluation); it returns predictions and
        squared norms flat, (P * B,). A model whose every trainable parameter is a table over users or
        items inherits it from `mfexp.models.layers.Tables` (the lone model with n times the rows);
        mfexp/models/towers.py writes its own."""
        raise NotImplementedError(f"{cls.__name__} sets population = True but has no stack(): inherit "
                                  "mfexp.models.layers.Tables (every parameter a table over users or items) "
                                  "or write stack() (mfexp/models/base.py says its contract)")


# The tutorial's FeedForward settings: the reference trial of its networks (and of biased MF).
TUTORIAL_TRAIN = {"train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.9, "train.wd": 1e-4,
                  "train.reg": 0.0, "train.sparse_grad": False, "train.batch_size": 64,
                  "train.init_scale": 0.01}

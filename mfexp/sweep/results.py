"""What a sweep found, per model: the plain record the report, the console and MLflow share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from mfexp.metrics import mean_sd

# The tutorial's published u1.test RMSEs after 10 epochs (its dropout network was never trained;
# ~0.95 is the figure its text gives for the last cell).
TUTORIAL_RMSE = {"plain": 1.017, "mlp": 0.963, "dropout": 0.95}
# The user attributes mfexp keeps on an Optuna trial (and one on a study), in one place so that
# every writer and reader agrees on them.
REFERENCE_ATTR = "mfexp.reference"  # a reference trial's label (the tutorial's configuration: no params)
OVERRIDES_ATTR = "overrides"  # a reference trial's fixed values
WORKER_ATTR = "worker"  # host:pid of the process training the trial (a dead worker's trials are failed)
MLFLOW_RUN_ATTR = "mlflow_run_id"  # the trial's MLflow run
PENDING_RUN_ATTR = "mlflow_pending_run"  # where a trial asked for a population will write its run (experiment, run name, parent)
POPULATION_ATTR = "population"  # how many trials trained together with this one (itself included)
FAIL_REASON_ATTR = "fail_reason"  # why it failed (redacted); "interrupted" and a dead worker's are retried
PRUNED_AT_ATTR = "pruned_at_epoch"
BEST_EPOCH_ATTR = "best_epoch"  # the epoch whose network is replayed and evaluated
EPOCHS_RUN_ATTR = "epochs_run"
EPOCHS_BUDGET_ATTR = "epochs_budget"  # its own train.epochs (a reference may bring more than the sweep's)
VAL_RMSE_ATTR = "val_rmse"  # the best epoch's val RMSE (also the value, when the objective is val_rmse)
DURATION_ATTR = "duration_s"
MLFLOW_GAP_ATTR = "mlflow_gap"  # what the tracking store missed while it was unreachable
START_ATTR = "mfexp.start"  # a study's: sweep.start=center enqueued its center once


# Figures of other systems on the same split (u1.test RMSE), quoted for comparison, never run by
# mfexp: (system, RMSE, source). A paper's figure follows that paper's protocol; the others were
# measured by mfexp's developers, outside mfexp, on the same files.
MEASURED_ALONGSIDE = ("measured by mfexp's developers on their 2-core machine, outside mfexp: trained on "
                      "GroupLens' u1.base, tested on u1.test")
_MYFM = f"{MEASURED_ALONGSIDE}, myFM 0.4 with 512 Gibbs samples"
_SURPRISE = f"{MEASURED_ALONGSIDE}, Surprise with its default settings"
PEER_RMSE = [
    ("myFM 0.4 Bayesian FM rank 10 + implicit + side features + day (untuned)", 0.8828, _MYFM),
    ("GLocal-K (epoch picked on test)", 0.8889, "Han et al., CIKM 2021"),
    ("IMC-GAE (holdout-selected)", 0.8967, "Shen et al., 2021"),
    ("GC-MC with side features", 0.905, "van den Berg et al., 2017"),
    ("myFM 0.4 Bayesian FM rank 10, ratings only (untuned)", 0.9065, _MYFM),
    ("Surprise SVD++ defaults", 0.9330, _SURPRISE),
    ("Surprise SVD defaults", 0.9513, _SURPRISE),
]


@dataclass
class ModelOutcome:
    model: str
    study_name: str
    best_val_rmse: Optional[float] = None  # the objective: validation-holdout RMSE
    best_trial: Optional[int] = None
    best_params: dict[str, Any] = field(default_factory=dict)  # a reference trial's: its fixed values
    best_reference: Optional[str] = None  # the best trial is the model's reference configuration (its label)
    test_rmse: Optional[float] = None  # the best trial's network at its best epoch, on the test part, once
    best_run_id: Optional[str] = None  # the MLflow run tagged mfexp.best=true
    best_config_path: Optional[str] = None  # sweeps/<name>/best-<model>.yaml
    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    wall_time_s: float = 0.0  # summed trial durations
    # the best trial's val RMSE was still falling when its epoch budget (train.epochs) ran out:
    # more epochs would likely have found a better network
    budget_exhausted: bool = False
    objective: str = "val_rmse"  # sweep.objective: what chose the best trial
    best_objective: Optional[float] = None  # the best trial's objective value (= best_val_rmse for val_rmse)
    ranking: dict[str, float] = field(default_factory=dict)  # test_precision_at_10, ... of the best, on test
    refit: bool = False  # test_rmse is of the chosen configuration trained again on train + holdout
    average_seeds: int = 1  # test_rmse is of the average of this many seeds' networks
    folds: Optional["FoldFigures"] = None  # sweep.folds: the chosen configuration on other folds

    @property
    def selection_value(self) -> Optional[float]:
        """The figure models are compared by, lower is better: val RMSE, or minus val NDCG@10."""
        if self.objective == "val_rmse" or self.best_objective is None:
            return self.best_val_rmse
        return -self.best_objective

    @property
    def tutorial_rmse(self) -> Optional[float]:
        return TUTORIAL_RMSE.get(self.model)


# --- sweep.folds: the choice evaluated on other folds (mfexp/sweep/folds.py) -----------------------
@dataclass
class FoldFigures:
    """A model's chosen configuration on several folds: the selection fold's figure is the sweep's
    one test evaluation (its best run), each other fold's a training on that fold (a run under it)."""

    selection: str  # the fold the sweep chose on (data.split), first in `rmse`
    rmse: dict[str, float] = field(default_factory=dict)  # fold -> test RMSE
    run_ids: dict[str, str] = field(default_factory=dict)  # fold -> its MLflow run (the best run's for the selection)
    cost_s: float = 0.0  # wall time of the trainings on the other folds (when they ran)

    @property
    def mean_sd(self) -> tuple[float, float]:
        return mean_sd(self.rmse.values())


PEER_FOLDS_SOURCE = "measured on this project's machine, myFM 0.4 / Surprise, see BENCHMARKS.md"
# Test RMSE of each GroupLens fold (uN.base -> uN.test), measured with the same script on each fold
# (issue 29); quoted beside a sweep's per-fold figures, never run by mfexp.
PEER_FOLD_RMSE = [
    ("myFM rank 10 + implicit + side + day (untuned, 512 samples)",
     {"u1": 0.8828, "u2": 0.8719, "u3": 0.8722, "u4": 0.8795, "u5": 0.8809}),
    ("myFM rank 10, ratings only", {"u1": 0.9065, "u2": 0.8973, "u3": 0.8908, "u4": 0.8942, "u5": 0.8948}),
    ("Surprise SVD++ defaults", {"u1": 0.9330, "u2": 0.9234, "u3": 0.9184, "u4": 0.9168, "u5": 0.9175}),
]

"""Pruners of mfexp's own, beside Optuna's (sweep.pruners in conf/sweep.yaml names them, search.py
builds them).

`ForecastPruner` (sweep.pruner=forecast) stops a trial only when it cannot become the study's best:
even if it went on improving at its recent pace (its best-so-far curve's mean gain per epoch over
the last `window` epochs) for every epoch left of its budget, it would stay above the best value
any trial has reached. Learning curves flatten, so that pace is an optimistic forecast.

Why not the median rule: it compares trials at equal epochs, and on these models the slow starters
(a low Adam learning rate, a large k) are the winners: `plain` on u1, 180 s of random search, was
best at lr 1e-3, k 128 (0.9063 after all 30 epochs), 2.77 val RMSE after one epoch. The median
pruner stops such trials by epoch 3, TPE learns from the survivors that only fast starters are
good, and the search stays at 0.92 (98 trials, 92 pruned): worse than random search at equal time
(BENCHMARKS.md, sweep_efficiency).
"""
from __future__ import annotations

from typing import Optional

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class ForecastPruner(optuna.pruners.BasePruner):
    """Prune a trial whose optimistic forecast cannot beat the best value reached so far.

    max_epochs: the trial's epoch budget (train.epochs); window: the epochs the pace is taken over;
    warmup: no pruning before this epoch; margin: how far the forecast must miss the best (in the
    objective's units) before the trial is stopped; decay: None keeps the pace for every epoch left;
    d in (0, 1) shrinks it by d each epoch (the gain left is at most pace * d / (1 - d)), a less
    optimistic forecast that stops more trials.
    """

    def __init__(self, max_epochs: int, window: int = 2, warmup: int = 3, margin: float = 0.0,
                 decay: Optional[float] = None):
        if max_epochs < 1 or window < 1 or warmup < 1 or margin < 0 or not (decay is None or 0 < decay < 1):
            raise ValueError(f"need max_epochs >= 1, window >= 1, warmup >= 1, margin >= 0 and decay in (0, 1) or "
                             f"None (got max_epochs={max_epochs}, window={window}, warmup={warmup}, margin={margin}, "
                             f"decay={decay})")
        self.max_epochs, self.window, self.warmup, self.margin, self.decay = max_epochs, window, warmup, margin, decay

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup or step >= self.max_epochs:  # at its last epoch it has ended anyway
            return False
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        best_so_far, best = [], float("inf")
        for s in sorted(trial.intermediate_values):
            best = min(best, sign * trial.intermediate_values[s])
            best_so_far.append(best)
        window = min(self.window, len(best_so_far) - 1)
        if window < 1:
            return False
        pace = (best_so_far[-1 - window] - best_so_far[-1]) / window  # >= 0: a best-so-far curve never rises
        left = max(0, self.max_epochs - step)
        d = self.decay
        forecast = best_so_far[-1] - (pace * left if d is None else pace * d * (1 - d ** left) / (1 - d))
        reached = [v for v in (_reached(t, sign) for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) if v is not None]
        return bool(reached) and forecast > min(reached) + self.margin


def _reached(trial: FrozenTrial, sign: float):
    """What a finished trial reached, signed so that lower is better: a complete trial's objective
    value, a pruned one's best report."""
    if trial.state == TrialState.COMPLETE:
        return None if trial.value is None else sign * trial.value
    return min((sign * v for v in trial.intermediate_values.values()), default=None)

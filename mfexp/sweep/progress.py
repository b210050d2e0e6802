"""The sweep console's progress line, printed after each trial's own line."""
from __future__ import annotations

import time
from typing import Callable, Optional

import optuna

from mfexp.sweep.report import duration
from mfexp.sweep.storage import COUNTED


class SweepProgress:
    """The console's progress line after each trial: trials done of each model's budget, the best so
    far, time elapsed and an estimate of the time left (at the pace of the trials finished since this
    process started, capped by sweep.timeout)."""

    def __init__(self, studies: dict[str, optuna.Study], n_trials, deadline: Optional[float] = None,
                 clock: Callable[[], float] = time.time):
        # n_trials: every model's budget, or model -> its own (sweep.model_trials)
        self.budgets = n_trials if isinstance(n_trials, dict) else {m: n_trials for m in studies}
        self.studies, self.deadline, self.clock = studies, deadline, clock
        self.started = clock()
        self.done_at_start = sum(self._counts().values())

    def _counts(self) -> dict[str, int]:
        return {m: min(len(s.get_trials(deepcopy=False, states=COUNTED)), self.budgets[m])
                for m, s in self.studies.items()}

    def _best(self) -> str:
        bests = []
        for model, study in self.studies.items():
            trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if trials:
                best = study.best_trial
                bests.append((best.value, model, best.number))
        if not bests:
            return "best: none yet"
        maximize = next(iter(self.studies.values())).direction == optuna.study.StudyDirection.MAXIMIZE
        value, model, number = (max if maximize else min)(bests)
        return f"best {model} {value:.4f} (trial {number})"

    def line(self) -> str:
        counts = self._counts()
        done, budget = sum(counts.values()), sum(self.budgets[m] for m in counts)
        elapsed = self.clock() - self.started
        finished_here = done - self.done_at_start
        if done >= budget:
            left = "done"
        elif finished_here > 0:
            seconds = elapsed / finished_here * (budget - done)
            if self.deadline is not None:
                seconds = min(seconds, max(0.0, self.deadline - self.clock()))
            left = f"~{duration(seconds)} left"
        else:
            left = "time left: after the first trial"
        per_model = " · ".join(f"{m} {n}/{self.budgets[m]}" for m, n in counts.items())
        return f"  progress {done}/{budget}: {per_model} | {self._best()} | {duration(elapsed)} elapsed, {left}"

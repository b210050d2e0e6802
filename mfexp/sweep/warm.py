"""sweep.warm_start=<earlier sweep>: start each study with that sweep's best configurations.

For every model, the top `sweep.warm_start_top_k` COMPLETE trials of the earlier sweep's study
(by its own objective) are enqueued into the new study with `enqueue_trial`, as Optuna users warm
start a search. Only parameters the new space still searches, with values inside its ranges, are
carried over; the rest are sampled. A study is warm-started once (study user attr
mfexp.warm_start), so resuming does not enqueue them again.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from mfexp.errors import ConfigError
from mfexp.sweep import storage as st

log = logging.getLogger("mfexp.sweep")
ATTR = "mfexp.warm_start"


def earlier_storage(sweep) -> optuna.storages.BaseStorage:
    """The earlier sweep's storage: its journal file beside this sweep's, or the same RDB."""
    earlier = replace(sweep, name=sweep.warm_start)
    if not sweep.storage and not (st.sweep_dir(earlier) / "optuna.journal").is_file():
        raise ConfigError(f"sweep.warm_start={sweep.warm_start}: there is no such sweep ({st.sweep_dir(earlier)}"
                          "/optuna.journal does not exist). Name an earlier sweep in the same sweep.root.")
    return st.open_storage(earlier)


def fitting(params: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The params the new space searches, with values inside its distributions."""
    return {key: value for key, value in params.items() if key in space and inside(space[key], value)}


def inside(dist: BaseDistribution, value: Any) -> bool:
    """Whether `value` is one the distribution can draw (Optuna has no public test for it): a choice
    of a categorical, or within a numeric one's range and on its step."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in dist.choices)
    if isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not dist.low <= value <= dist.high:
            return False
        if dist.step is None:
            return True
        steps = (value - dist.low) / dist.step
        return abs(steps - round(steps)) < 1e-8
    return False


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The k best COMPLETE trials that sampled their params (not the enqueued reference)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=maximize)[:k]


def warm_start(plan, studies: dict[str, optuna.Study]) -> dict[str, int]:
    """Enqueue the earlier sweep's best configurations into new studies; {model: number enqueued}."""
    sweep = plan.sweep
    source = earlier_storage(sweep)
    counts: dict[str, int] = {}
    for model, study in studies.items():
        if ATTR in study.user_attrs:
            continue
        name = st.study_name(replace(sweep, name=sweep.warm_start), model)
        try:
            earlier = optuna.load_study(study_name=name, storage=source)
        except KeyError:
            log.warning("sweep.warm_start=%s has no study %s: %s starts cold", sweep.warm_start, name, model)
            study.set_user_attr(ATTR, f"{sweep.warm_start} (no study)")
            continue
        space = plan.spaces[model].distributions
        for trial in top_trials(earlier, sweep.warm_start_top_k):
            study.enqueue_trial(fitting(trial.params, space), skip_if_exists=True,
                                user_attrs={ATTR: f"{name} trial {trial.number} ({trial.value:.4f})"})
            counts[model] = counts.get(model, 0) + 1
        study.set_user_attr(ATTR, sweep.warm_start)
    return counts

"""mfexp's own pruners (mfexp/sweep/pruners.py), on in-memory studies with hand-made curves."""
import optuna
import pytest

from mfexp.sweep.pruners import ForecastPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _finish(study, curve, prune_as_it_goes=False):
    """Report `curve` (epoch 1, 2, ...) for a new trial; the epoch at which the pruner stopped it, or None."""
    trial = study.ask()
    for epoch, value in enumerate(curve, start=1):
        trial.report(value, epoch)
        if prune_as_it_goes and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(trial, min(curve) if study.direction == optuna.study.StudyDirection.MINIMIZE else max(curve))
    return None


def _study(direction="minimize", **kwargs):
    return optuna.create_study(direction=direction, pruner=ForecastPruner(max_epochs=30, **kwargs))


def test_a_trial_that_flattened_above_the_best_is_stopped():
    study = _study()
    _finish(study, [1.0, 0.95, 0.93, 0.92, 0.91, 0.905])  # the best so far: 0.905
    # flat at 1.05: even at its pace of the last 2 epochs (0.0005 / epoch) for 26 more, 1.036 > 0.905
    assert _finish(study, [1.10, 1.06, 1.052, 1.051, 1.050, 1.049, 1.048], prune_as_it_goes=True) == 4


def test_a_slow_starter_still_improving_fast_is_kept_though_it_is_far_behind():
    """The median rule would stop this one at epoch 3: it is the last of every trial there."""
    study = _study()
    _finish(study, [0.98, 0.93, 0.92, 0.915, 0.912, 0.912, 0.913])
    _finish(study, [1.0, 0.94, 0.925, 0.92, 0.921])
    slow = [2.77, 1.51, 1.17, 1.05, 1.00, 0.98, 0.967, 0.957]  # plain's winner on u1, lr 1e-3, k 128
    assert _finish(study, slow, prune_as_it_goes=True) is None


def test_no_pruning_before_warmup_nor_without_a_finished_trial():
    study = _study(warmup=3)
    assert _finish(study, [3.0, 2.9, 2.9, 2.9, 2.9], prune_as_it_goes=True) is None  # nothing to compare with
    # far worse and flat, but only from epoch 3 on may it be stopped
    assert _finish(study, [5.0, 5.0, 5.0, 5.0], prune_as_it_goes=True) == 3


def test_the_margin_spares_a_trial_that_would_come_close():
    study = _study(margin=0.01)
    _finish(study, [1.0, 0.95, 0.93, 0.92, 0.91, 0.905])
    assert _finish(study, [0.95, 0.92, 0.912, 0.911, 0.911, 0.911], prune_as_it_goes=True) is None  # 0.006 off
    # 0.019 off once flat (epoch 6); at epoch 5 its pace (0.0005 / epoch, 25 epochs left) still forecast 0.9115
    assert _finish(study, [0.95, 0.93, 0.925, 0.924, 0.924, 0.924], prune_as_it_goes=True) == 6


def test_a_maximised_objective_is_forecast_upwards():
    study = _study(direction="maximize")
    _finish(study, [0.10, 0.15, 0.20, 0.22])
    assert _finish(study, [0.01, 0.012, 0.012, 0.012], prune_as_it_goes=True) == 3
    assert _finish(study, [0.01, 0.05, 0.09], prune_as_it_goes=True) is None  # rising 0.04 a step


def test_a_decaying_pace_stops_a_trial_that_the_kept_pace_would_spare():
    best = [1.0, 0.95, 0.93, 0.92, 0.91, 0.905]
    slow = [1.0, 0.95, 0.93, 0.922, 0.921, 0.920]
    # at epoch 6 its pace is 0.001 an epoch, 24 epochs left: kept, 0.920 - 0.024 = 0.896 could beat 0.905;
    # shrinking by 0.9 an epoch it gains at most 0.001 * 0.9 * (1 - 0.9 ** 24) / 0.1 = 0.0083: 0.9117, it cannot
    assert _finish(_with(best, _study()), slow, prune_as_it_goes=True) is None
    assert _finish(_with(best, _study(decay=0.9)), slow, prune_as_it_goes=True) == 6
    # still gaining 0.0045 an epoch at epoch 5 (at most 0.038 more): kept by both
    assert _finish(_with(best, _study(decay=0.9)), slow[:5], prune_as_it_goes=True) is None


def _with(curve, study):
    _finish(study, curve)
    return study


@pytest.mark.parametrize("bad", [dict(max_epochs=0), dict(max_epochs=30, window=0), dict(max_epochs=30, margin=-1),
                                 dict(max_epochs=30, decay=1.0), dict(max_epochs=30, decay=0.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="need max_epochs"):
        ForecastPruner(**bad)


def test_a_trial_sitting_on_its_first_plateau_is_not_stopped_before_warmup_ends():
    """Small initial weights: plain MF predicts ~0 for its first epochs (val RMSE 2.79), then drops."""
    study = _study()
    _finish(study, [1.0, 0.95, 0.93, 0.92, 0.91, 0.905])
    assert _finish(study, [2.789, 2.789, 2.557, 2.049, 1.664, 1.444, 1.315, 1.230], prune_as_it_goes=True) is None


def test_the_sweep_makes_it_with_the_models_epoch_budget():
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.search import make_pruner

    pruner = make_pruner(build_plan(["sweep.models=[plain]", "sweep.pruner=forecast"]).sweep, max_epochs=12)
    assert isinstance(pruner, ForecastPruner) and (pruner.max_epochs, pruner.window, pruner.warmup) == (12, 2, 3)

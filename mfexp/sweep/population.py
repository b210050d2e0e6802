"""A population of trials in a sweep: several Optuna trials of one model asked at once, trained
as one network (mfexp.population), each told, announced and recorded in MLflow on its own.

Each member is its own Optuna trial (ask/tell): it reports its val RMSE each epoch and is pruned
on its own. Its MLflow run (the params, tags, per-epoch metrics and summary a lone trial's run
has) is written when the member leaves the population: a population trains between two MLflow
calls, so the store sees a member's epochs at once, stamped when they are written. Trials whose
configurations cannot share a network (another optimizer, batch size, k...) train in separate
populations, one after another; a configuration no population can hold trains alone, as ever.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from mfexp import population as pop
from mfexp.config import Config, flatten, trial_budget
from mfexp.errors import ConfigError
from mfexp.experiment import run_tags, track_end, track_start
from mfexp.sweep import storage as st
from mfexp.sweep.objective import apply_params, mark_worker
from mfexp.sweep.results import (
    BEST_EPOCH_ATTR,
    DURATION_ATTR,
    EPOCHS_BUDGET_ATTR,
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    MLFLOW_GAP_ATTR,
    MLFLOW_RUN_ATTR,
    OVERRIDES_ATTR,
    PENDING_RUN_ATTR,
    POPULATION_ATTR,
    PRUNED_AT_ATTR,
    VAL_RMSE_ATTR,
)
from mfexp.track.tracker import (FAIL_REASON_TAG, PARENT_TAG, POPULATION_TAG, PRUNED_AT_TAG, STATE_TAG, STUDY_TAG,
                                 TRIAL_TAG, Tracker)
from mfexp.train import resolve_device


def size_for(plan, model: str, base_cfg: Config) -> int:
    """sweep.population for one model: 1 (one trial at a time), N, or auto (mfexp.population.auto_size);
    1 where the model or the objective cannot train populations."""
    setting = plan.sweep.population
    if plan.sweep.objective != "val_rmse" or not pop.model_supports(base_cfg):
        return 1
    if setting == "auto":
        space = plan.spaces[model]
        batches = space.extremes().get("train.batch_size") or [space.fixed.get("train.batch_size",
                                                                                  base_cfg.train.batch_size)]
        return pop.auto_size(base_cfg, trial_budget(plan.sweep, model), max(batches))
    return int(setting)


def ask(study: optuna.Study, size: int, objective, storage: optuna.storages.BaseStorage) -> list[optuna.Trial]:
    """Up to `size` trials for one population, or a reference trial alone (its values are fixed
    overrides, not params: it shares nothing, and waits for no population). The first trial is the
    anchor: each later trial is enqueued with the anchor's values of every searched key a population
    must share (model.k, train.batch_size...) and then asked, so the sampler chooses only what members
    may differ in (mfexp.population.per_member). Without this, independent draws of k and batch size
    would rarely fall into one population. `storage` is the study's (for heartbeats)."""
    trials: list[optuna.Trial] = []
    shared: Optional[dict] = None
    for _ in range(size):
        # waiting trials (retries of a dead worker's, warm starts) go first, as they are: an anchored member
        # enqueued behind them would be left waiting once the budget is full
        if shared and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.enqueue_trial(shared, user_attrs={POPULATION_ATTR + "_anchor": trials[0].number})
        trial = _asked(storage, study, objective)
        trials.append(trial)
        if OVERRIDES_ATTR in trial.user_attrs and len(trials) == 1:
            return trials  # a reference trial (fixed values, no params to share) trains alone, at once
        if shared is None:
            objective.space.suggest(trial)  # the anchor's draw (the objective reads the same values back)
            shared = {k: v for k, v in trial.params.items() if k not in pop.per_member(objective.base)}
            if not shared:
                shared = None
                break  # nothing structural is searched: independent draws already share a population
    while len(trials) < size:
        trials.append(_asked(storage, study, objective))
    return trials


def _asked(storage: optuna.storages.BaseStorage, study: optuna.Study, objective) -> optuna.Trial:
    """A new trial, at once told where its MLflow run will go (whoever fails it, should this worker die
    first, records the run there: storage.kill_mlflow_run), marked as this process's
    (objective.mark_worker) and given its first heartbeat. A member waits in the population, untrained, while the others
    are asked, and a worker may die in between."""
    trial = study.ask()
    trial.set_user_attr(PENDING_RUN_ATTR, {"experiment": objective.experiment, "run_name":
                                           f"{objective.model}-trial-{trial.number}", "parent": objective.parent_run_id})
    mark_worker(trial)  # last: a marked trial says where its run goes (an unmarked one: runner._fail_dead)
    _first_beat(storage, study, trial)
    return trial


def _first_beat(storage: optuna.storages.BaseStorage, study: optuna.Study, trial: optuna.Trial) -> None:
    """A member's first heartbeat, as it is asked (under the sweep's lock), not when the population's
    heartbeat thread gets to it: Optuna never finds a trial stale that has no heartbeat at all, so a
    worker killed between the two would leave it RUNNING for good, and the other workers waiting."""
    if st.heartbeat_interval(storage):
        storage.record_heartbeat(st.trial_id(storage, study, trial.number))


def run_trials(plan, model: str, study: optuna.Study, trials: list[optuna.Trial], objective, data,
               announce: Callable[[optuna.Study, FrozenTrial], None],
               storage: optuna.storages.BaseStorage) -> list[FrozenTrial]:
    """Train asked `trials` (populations where their configurations allow, else one by one with
    `objective`) and tell each; returns their frozen trials in the order they were told."""

    told: list[FrozenTrial] = []
    groups: dict[tuple, list[tuple[optuna.Trial, Config]]] = {}
    alone: list[optuna.Trial] = []
    for trial in trials:  # each asked by ask(): its worker and its run's place already on it
        fixed = trial.user_attrs.get(OVERRIDES_ATTR)
        try:
            cfg = apply_params(objective.base, {**objective.space.fixed, **fixed} if fixed
                               else objective.space.suggest(trial))
        except ConfigError as err:
            trial.set_user_attr(FAIL_REASON_ATTR, str(err)[:1000])
            told.append(_tell(study, trial, announce, state=TrialState.FAIL))
            continue
        cfg.tracking = objective.tracking_cfg
        if pop.supports(cfg):  # a member writes its MLflow run as it leaves the population
            groups.setdefault(pop.key(cfg), []).append((trial, cfg))
        else:
            alone.append(trial)
    beat = _Heartbeat(storage, study, trials, told)
    try:
        for members in groups.values():
            if len(members) == 1:
                alone.append(members[0][0])
                continue
            told += _train_population(plan, model, study, members, objective, data, announce)
        for trial in alone:
            told.append(_run_alone(study, trial, objective, announce))
    except BaseException as err:  # Ctrl-C / SIGTERM, or an error: no asked trial is left RUNNING
        reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
        finished = {t.number for t in told}
        for trial in trials:
            if trial.number in finished:
                continue
            try:
                trial.set_user_attr(FAIL_REASON_ATTR, reason[:1000])
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception:  # noqa: BLE001 - the storage is what failed (a full disk): the next start fails
                break          # these trials as its dead worker's, and retries them
        raise
    finally:
        beat.stop()
    return told


class _Heartbeat:
    """Heartbeats for asked trials while they wait or train, as `study.optimize` keeps one for its
    trial: on a storage with heartbeats (RDB), a worker that dies holding a population has every
    member found stale by the other workers, failed and retried. One thread for all of them; a
    trial stops beating once it is told. A no-op on the journal file (no heartbeats: a dead worker's
    trials are failed when the sweep next starts)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study: optuna.Study, trials: list[optuna.Trial],
                 told: list[FrozenTrial]):
        interval = st.heartbeat_interval(storage)
        self._stop = threading.Event()
        self._thread = None
        if not interval:
            return
        ids = [st.trial_id(storage, study, t.number) for t in trials]

        def beat() -> None:
            while True:
                done = {t.number for t in told}
                for trial, trial_id in zip(trials, ids):
                    if trial.number not in done:
                        try:
                            storage.record_heartbeat(trial_id)
                        except Exception:  # noqa: BLE001 - a storage hiccup: the next beat tries again
                            pass
                if self._stop.wait(interval):
                    return

        self._thread = threading.Thread(target=beat, name="population-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _tell(study, trial, announce, **kwargs) -> FrozenTrial:
    frozen = study.tell(trial, skip_if_finished=True, **kwargs)
    announce(study, frozen)
    return frozen


def _run_alone(study, trial: optuna.Trial, objective, announce) -> FrozenTrial:
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return _tell(study, trial, announce, state=TrialState.PRUNED)
    except Exception:  # noqa: BLE001 - the objective recorded the reason; the sweep's max_failures decides
        return _tell(study, trial, announce, state=TrialState.FAIL)
    return _tell(study, trial, announce, values=value)


def _train_population(plan, model, study, members, objective, data, announce) -> list[FrozenTrial]:
    started = time.perf_counter()
    ctx, device = resolve_device(members[0][1].train.device)
    trials = {id(cfg): trial for trial, cfg in members}
    told: list[FrozenTrial] = []

    def hook(trial):  # a member's epoch, to Optuna as a lone trial's (its run is written when it leaves)
        return lambda epoch_report: objective.report(trial, epoch_report)

    recorded: set[int] = set()  # trials whose MLflow run exists

    def done(member: pop.Member) -> None:
        trial, cfg, result = trials[id(member.cfg)], member.cfg, member.result
        pruned = isinstance(member.error, optuna.TrialPruned)
        state = "PRUNED" if pruned else "FAIL" if member.error is not None else "COMPLETE"
        tags = {**run_tags(cfg, data), STUDY_TAG: study.study_name,
                TRIAL_TAG: str(trial.number), STATE_TAG: state,
                POPULATION_TAG: str(len(members))}
        if pruned:
            tags[PRUNED_AT_TAG] = str(trial.user_attrs.get(PRUNED_AT_ATTR))
        if objective.parent_run_id:
            tags[PARENT_TAG] = objective.parent_run_id
        tracker = Tracker(cfg.tracking)
        error = member.error if member.error is not None and not pruned else None
        try:
            with tracker.run(run_name=f"{model}-trial-{trial.number}", params=flatten(cfg), tags=tags,
                             experiment=objective.experiment, killed_on=(optuna.TrialPruned,)):
                recorded.add(trial.number)
                if tracker.run_id:
                    trial.set_user_attr(MLFLOW_RUN_ATTR, tracker.run_id)
                trial.set_user_attr(POPULATION_ATTR, len(members))
                track_start(cfg, data, tracker, device, test=False)
                for report in result.history:
                    tracker.log_metrics(report.metrics(), step=report.epoch)
                if pruned:
                    raise member.error
                if error is not None:
                    tracker.set_tags({FAIL_REASON_TAG: str(error)[:1000]})
                    raise error
                track_end(cfg, data, tracker, member.net, result, eval_test=False)
                objective.keep(trial.number, member.net, result, cfg)
        except optuna.TrialPruned:
            told.append(_tell(study, trial, announce, state=TrialState.PRUNED))
            return
        except Exception as err:  # noqa: BLE001 - diverged, or its record failed: this trial only
            trial.set_user_attr(FAIL_REASON_ATTR, f"{type(err).__name__}: {err}"[:1000])
            told.append(_tell(study, trial, announce, state=TrialState.FAIL))
            return
        trial.set_user_attr(BEST_EPOCH_ATTR, result.best_epoch)
        trial.set_user_attr(EPOCHS_RUN_ATTR, len(result.history))
        trial.set_user_attr(EPOCHS_BUDGET_ATTR, int(cfg.train.epochs))
        trial.set_user_attr(VAL_RMSE_ATTR, result.best_val_rmse)
        trial.set_user_attr(DURATION_ATTR, round(time.perf_counter() - started, 3))
        if tracker.gaps:
            trial.set_user_attr(MLFLOW_GAP_ATTR, tracker.gap_summary())
        told.append(_tell(study, trial, announce, values=result.best_val_rmse))

    population = [pop.Member(cfg, hook(trial)) for trial, cfg in members]
    try:
        pop.fit_population(population, data, ctx, on_done=done)
    except BaseException as err:
        _record_cut([(trial, cfg) for trial, cfg in members if trial.number not in recorded], model, study,
                    objective, data, err, len(members))
        raise
    return told


class _Cut(Exception):
    """A population stopped before this member left it (Ctrl-C, SIGTERM, a full disk)."""


def _record_cut(members, model, study, objective, data, err: BaseException, size: int) -> None:
    """An MLflow run, KILLED, for each member a stopped population had not recorded yet: as a lone
    trial's run is, so that every trial Optuna knows has its run."""
    reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
    for trial, cfg in members:
        tags = {**run_tags(cfg, data), STUDY_TAG: study.study_name,
                TRIAL_TAG: str(trial.number), STATE_TAG: "FAIL",
                FAIL_REASON_TAG: reason[:1000], POPULATION_TAG: str(size)}
        if objective.parent_run_id:
            tags[PARENT_TAG] = objective.parent_run_id
        try:
            with Tracker(cfg.tracking).run(run_name=f"{model}-trial-{trial.number}", params=flatten(cfg), tags=tags,
                                           experiment=objective.experiment, killed_on=(_Cut,)):
                raise _Cut(reason)
        except _Cut:
            continue
        except Exception:  # noqa: BLE001 - the store failing too: the trial is still failed in Optuna
            continue

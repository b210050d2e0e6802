"""Run a sweep: studies created once, workers sharing them, then one honest test evaluation
per model, the report, and the console summary.

Workers take turns over the models (the one with the fewest trials goes next), so every model
gets the same budget even when `sweep.timeout` cuts the sweep short.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from mfexp import interrupt
from mfexp.config import SweepConfig, TrackingConfig, refits, trial_budget
from mfexp.data import load_dataset
from mfexp.errors import ConfigError, MfexpError, clause, full_disk_behind
from mfexp.models import model_class, to_settings
from mfexp.sweep import storage as st
from mfexp.sweep.objective import DIRECTIONS, Objective, apply_params, mark_worker
from mfexp.sweep.population import ask as ask_population
from mfexp.sweep.population import run_trials
from mfexp.sweep.population import size_for as population_size
from mfexp.sweep.progress import SweepProgress
from mfexp.sweep.results import (
    BEST_EPOCH_ATTR,
    EPOCHS_BUDGET_ATTR,
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    OVERRIDES_ATTR,
    REFERENCE_ATTR,
    START_ATTR,
    WORKER_ATTR,
    ModelOutcome,
)
from mfexp.sweep.search import make_pruner, make_sampler
from mfexp.sweep.space import SearchSpace
from mfexp.sweep.warm import warm_start
from mfexp.train import quiet_mxnet, resolve_device, visible_gpus

log = logging.getLogger("mfexp.sweep")

# Every study starts with its model's reference configuration (`Recommender.reference`: the
# tutorial's own hyperparameters for its networks), enqueued with these values fixed (not sampled,
# so they need not lie inside the space, and the sampler's model of the space is not skewed by
# them), trained on the same holdout and epoch budget as every other trial. The search can then
# never report worse than the reference. Its user attr: results.REFERENCE_ATTR.


@dataclass
class SweepPlan:
    sweep: SweepConfig
    bases: dict[str, DictConfig]  # model -> composed base config (trial values go on top)
    spaces: dict[str, SearchSpace]
    tracking: TrackingConfig
    command: str

    @property
    def experiment(self) -> str:
        return f"mfexp-sweep-{self.sweep.name}"


@dataclass
class Hooks:
    """What a caller in the same process may watch or steer (the benchmarks): `on_report(trial, report)`
    sees each epoch's report before the pruner does, and may raise optuna.TrialPruned; `clock` is the
    worker loop's time (past the deadline, no new trial starts). One worker only: spawned worker
    processes do not share the caller's functions."""
    on_report: Optional[Callable[[optuna.Trial, Any], None]] = None
    clock: Callable[[], float] = time.time


class SweepStopped(MfexpError):
    exit_code = 1


def epoch_budget(plan: SweepPlan, model: str) -> int:
    """The most epochs a trial of `model` trains for (the pruner's horizon): its space's train.epochs
    where the space fixes or searches it (the highest), else the base config's."""
    space = plan.spaces[model]
    if "train.epochs" in space.fixed:
        return int(space.fixed["train.epochs"])
    dist = space.distributions.get("train.epochs")
    if dist is not None:
        return int(max(dist.choices) if hasattr(dist, "choices") else dist.high)
    return int(plan.bases[model].train.epochs)


class Studies(dict):
    """model -> its Optuna study, and the storage they live in (`storage`: Optuna has no public handle
    on a study's storage, and heartbeats and the sweep's lock need it)."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        super().__init__()
        self.storage = storage


def _open_studies(plan: SweepPlan, worker: int) -> Studies:
    storage = st.open_storage(plan.sweep)
    studies = Studies(storage)
    for model in plan.sweep.models:
        epochs = epoch_budget(plan, model)
        grid = plan.spaces[model].grid() if plan.sweep.sampler == "grid" else None
        studies[model] = optuna.create_study(
            study_name=st.study_name(plan.sweep, model), storage=storage,
            direction=DIRECTIONS[plan.sweep.objective],
            load_if_exists=True, sampler=make_sampler(plan.sweep, worker, grid),
            pruner=make_pruner(plan.sweep, epochs))
    return studies


def prepare(plan: SweepPlan) -> Studies:
    """Create (or reopen) the storage and every study once, before any worker starts; enqueue the
    tutorial's configuration in new studies (and sweep.warm_start's configurations, once); fail the
    RUNNING trials of dead workers."""
    studies = _open_studies(plan, worker=0)
    with st.exclusive(plan.sweep, studies.storage):  # one enqueue, however many start
        for model, study in studies.items():
            _fail_orphans(studies.storage, study, lost_runs(plan, model, parent_run_id=None))
            reference = reference_trial(plan, model)
            if plan.sweep.enqueue_tutorial and reference and reference_missing(study):
                label, overrides = reference
                study.enqueue_trial({}, user_attrs={REFERENCE_ATTR: label, OVERRIDES_ATTR: overrides})
            enqueue_center(plan, model, study)
        if plan.sweep.warm_start:
            _warm_start(plan, studies)
    return studies


def _warm_start(plan: SweepPlan, studies: dict[str, optuna.Study]) -> None:
    counts = warm_start(plan, studies)
    if counts:
        print(f"warm start from sweep {plan.sweep.warm_start}: enqueued its best "
              f"{', '.join(f'{n} {m}' for m, n in counts.items())} configuration(s)", flush=True)


def enqueue_center(plan: SweepPlan, model: str, study: optuna.Study) -> None:
    """sweep.start=center: a new study's first searched trial is the middle of the model's space
    (after its reference, if any). Once per study: the study remembers it, so a resumed sweep, or
    another worker, does not enqueue it again."""
    if plan.sweep.start != "center" or plan.sweep.sampler == "grid" or START_ATTR in study.user_attrs:
        return
    params = plan.spaces[model].center()
    if params:
        study.enqueue_trial(params, user_attrs={START_ATTR: "center of the space"})
    study.set_user_attr(START_ATTR, "center")


# Why a trial can end FAIL without its configuration being at fault: run it again on resume.
INTERRUPTED = ("interrupted", "worker died (orphaned trial)")


def reference_missing(study: optuna.Study) -> bool:
    """True when the study has no reference trial that ran, runs or waits: a new study, or one whose
    reference was interrupted (Ctrl-C, SIGTERM, kill -9). A reference that failed on its own
    (diverged) is not run again: training is deterministic, it would fail the same way."""
    for trial in study.get_trials(deepcopy=False):
        if REFERENCE_ATTR not in trial.user_attrs:
            continue
        reason = str(trial.user_attrs.get(FAIL_REASON_ATTR, ""))
        if trial.state != TrialState.FAIL or not (reason in INTERRUPTED or not reason):
            return False
    return True


def reference_trial(plan: SweepPlan, model: str) -> Optional[tuple[str, dict]]:
    """(label, fixed values) of the model's reference configuration, or None if it has none."""
    settings = to_settings(plan.bases[model].model)
    cls = model_class(settings._target_)
    overrides = cls.reference(settings)
    if overrides and cls.reference_epochs != 1.0:
        overrides = {**overrides, "train.epochs": max(1, round(plan.bases[model].train.epochs * cls.reference_epochs))}
    return (cls.reference_label, overrides) if overrides else None


def lost_runs(plan: SweepPlan, model: str, parent_run_id: Optional[str]) -> dict:
    """Where the MLflow run of a trial lost before it said where its run goes is recorded
    (storage.kill_mlflow_run): as the trial's own PENDING_RUN_ATTR would have said."""
    return {"experiment": plan.experiment, "parent": parent_run_id, "model": model}


def _fail_orphans(storage: optuna.storages.BaseStorage, study: optuna.Study, lost: Optional[dict] = None) -> None:
    """RUNNING trials whose worker process on this host is gone (kill -9) become FAIL, each retried
    once (storage.retry_once), and their MLflow runs KILLED. On RDB storage, trials whose heartbeat
    is stale (dead workers on any host) are failed first, the same way (storage.StaleTrialCallback):
    which of the two finds a dead worker first makes no difference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op without heartbeats (journal storage)
    _fail_dead(storage, study, lost)


def _fail_dead(storage: optuna.storages.BaseStorage, study: optuna.Study, lost: Optional[dict] = None) -> None:
    """The half of _fail_orphans that needs no heartbeat, called under the sweep's lock: RUNNING trials
    whose worker process on this host is gone, and trials not yet marked with a worker at all. Every
    trial is marked before the lock that asked it is released (objective.mark_worker), so an unmarked
    one belongs to a worker killed between ask and mark, on any host: it has no heartbeat either, and
    Optuna's check would never find it stale. `lost` (lost_runs) says where to record the MLflow run of
    a trial that had not said where its run goes."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get(WORKER_ATTR, ""))
        if ":" in owner:
            owner_host, pid = owner.rsplit(":", 1)
            if owner_host != host or _alive(int(pid)):
                continue
            reason = "worker died (orphaned trial)"
        else:
            reason = "worker died right after asking it, before it was marked (orphaned trial)"
        try:
            storage.set_trial_user_attr(st.trial_id(storage, study, trial.number), FAIL_REASON_ATTR, reason)
            study.tell(trial.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker (or Optuna's heartbeat check) got there first
        retried = st.retry_once(study, trial)
        headed = lost and {"experiment": lost["experiment"], "parent": lost["parent"],
                           "run_name": f"{lost['model']}-trial-{trial.number}"}
        st.kill_mlflow_run(trial, reason, study.study_name, headed)
        log.warning("trial %d of %s was left RUNNING by a dead worker: marked FAIL%s",
                    trial.number, study.study_name, " and retried" if retried else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _next_model(plan: SweepPlan, studies: dict[str, optuna.Study]) -> Optional[str]:
    with warnings.catch_warnings():  # a dead worker's trial must not hold its slot (RDB heartbeats): failed,
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # and retried as WAITING
        for study in studies.values():
            optuna.storages.fail_stale_trials(study)
    states = (*st.COUNTED, TrialState.RUNNING)
    counts = {m: len(s.get_trials(deepcopy=False, states=states)) for m, s in studies.items()}
    budget = {m: trial_budget(plan.sweep, m) for m in plan.sweep.models}
    open_models = [m for m in plan.sweep.models if counts[m] < budget[m]]
    return min(open_models, key=lambda m: counts[m] / budget[m]) if open_models else None


def announce(model: str, progress=None):
    """The console line of each finished trial, then (given a progress.SweepProgress) the sweep's progress."""
    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        params = "  ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in trial.params.items())
        if REFERENCE_ATTR in trial.user_attrs:
            params = f"the {trial.user_attrs[REFERENCE_ATTR]}'s own configuration (reference)"
        if trial.state == TrialState.COMPLETE:
            outcome = f"val_rmse {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned at epoch {trial.user_attrs.get('pruned_at_epoch', '?')}"
        else:
            outcome = f"FAILED: {trial.user_attrs.get('fail_reason', 'see the log')}"
        secs = trial.duration.total_seconds() if trial.duration else 0.0
        print(f"[{model:>7}] trial {trial.number:3d}  {outcome:<24} {secs:5.1f}s  {params}", flush=True)
        if progress is not None:
            print(progress.line(), flush=True)
    return callback


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def work(plan: SweepPlan, worker: int, parent_run_id: Optional[str], deadline: Optional[float],
         hooks: Optional[Hooks] = None) -> None:
    """One worker: load data once, then run trials until every model has its budget (or `deadline`)."""
    interrupt.install()  # SIGTERM (a scheduler's stop) as Ctrl-C: the trial FAIL, its runs KILLED
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial says it

    studies = _open_studies(plan, worker)
    progress = SweepProgress(studies, {m: trial_budget(plan.sweep, m) for m in studies}, deadline)
    data = load_dataset(_base_config(plan).data)
    bases = _on_device(plan.bases, worker_device(plan.sweep, worker))
    failures = 0
    hooks = hooks or Hooks()
    sizes: dict[str, int] = {}  # model -> trials per population (sweep.population)
    storage = studies.storage
    while deadline is None or hooks.clock() < deadline:
        # Count and start as one step: the sweep's lock (storage.exclusive(), shared by every process
        # on every machine) is held from the count until the trial exists (RUNNING), then released
        # as the objective begins. Workers that count at the same moment would otherwise all take
        # the last open slot and run up to one trial each beyond sweep.n_trials.
        gate = contextlib.ExitStack()
        gate.enter_context(st.exclusive(plan.sweep, storage))
        try:
            model = _next_model(plan, studies)
            if model is None:
                if not _may_go_stale(storage, studies):
                    return
                for name, waiting_on in studies.items():  # a worker on this host that died, or any that died
                    _fail_dead(storage, waiting_on, lost_runs(plan, name, parent_run_id))  # before it marked its
                    # trial: no heartbeat to wait for
                # Every slot is taken, but a trial that holds one may belong to a worker that died
                # moments ago: its heartbeat is not stale yet. Leaving now would leave it RUNNING
                # and the budget short (CI saw it). Look again, lock released, once per heartbeat.
                gate.close()
                time.sleep(min(st.heartbeat_interval(storage) or 1, 5))
                continue
            study = studies[model]
            objective = Objective(model, bases[model], plan.spaces[model], data,
                                  study_name=study.study_name, experiment=plan.experiment,
                                  parent_run_id=parent_run_id, tracking_cfg=replace(plan.tracking, log_model=False),
                                  objective=plan.sweep.objective, on_report=hooks.on_report,
                                  predictions=lambda number, m=model: st.val_predictions_path(plan.sweep, m, number),
                                  networks=(None if refits(plan.sweep, model) or plan.sweep.average_seeds > 1 else
                                            lambda number, m=model: st.kept_network_path(plan.sweep, m, number)))
            if model not in sizes:
                sizes[model] = population_size(plan, model, apply_params(bases[model], {}))
            finished: list[FrozenTrial] = []
            if sizes[model] > 1:  # several trials at once, as one network (mfexp.sweep.population)
                # no more members than may still fail before sweep.max_failures stops the sweep
                room = min(sizes[model], _open_slots(plan, study), plan.sweep.max_failures - failures)
                trials = ask_population(study, max(1, room), objective, storage)
                gate.close()
                finished = run_trials(plan, model, study, trials, objective, data, announce(model, progress), storage)
            else:
                study.optimize(_started(objective, gate), n_trials=1, catch=(Exception,), gc_after_trial=False,
                               callbacks=[announce(model, progress), lambda _s, t: finished.append(t)])
        finally:
            gate.close()  # not released yet if the trial never started (a storage error)
        failed = [t for t in finished if t.state == TrialState.FAIL]
        if failed:
            failures += len(failed)
            if failures >= plan.sweep.max_failures:
                reason = str(failed[-1].user_attrs.get(FAIL_REASON_ATTR, "see the log above"))
                cause = " (a diverged loss: often train.lr too high in the space)" if "diverged" in reason else ""
                raise SweepStopped(f"sweep stopped: {failures} trials failed in this worker (sweep.max_failures="
                                   f"{plan.sweep.max_failures}); the last: {clause(reason)}. Fix the cause{cause}, "
                                   "then run the sweep again: it resumes.")


def _open_slots(plan: SweepPlan, study: optuna.Study) -> int:
    """How many more trials the study may start: its budget less those counted or running."""
    states = (*st.COUNTED, TrialState.RUNNING)
    model = next(m for m in plan.sweep.models if st.study_name(plan.sweep, m) == study.study_name)
    return max(1, trial_budget(plan.sweep, model) - len(study.get_trials(deepcopy=False, states=states)))


def _may_go_stale(storage, studies: dict[str, optuna.Study]) -> bool:
    """Whether the storage has heartbeats (RDB: Optuna fails a trial whose heartbeat is older than
    twice the interval) and some study holds a RUNNING trial. That trial's worker may be alive (then
    this worker waits for it to end, at most one trial) or dead (then it goes stale and is retried)."""
    if not st.heartbeat_interval(storage):
        return False  # the journal file: a dead worker's trial is failed when the sweep next starts
    return any(s.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) for s in studies.values())


def _started(objective, gate: contextlib.ExitStack):
    """The objective, releasing `gate` first: by then Optuna has created the trial (or taken the
    waiting one), so the other workers count it; it is marked with its worker before that."""
    def run(trial: optuna.Trial):
        mark_worker(trial)
        gate.close()
        return objective(trial)
    return run


def assign_devices(sweep: SweepConfig, train_device: str) -> SweepConfig:
    """Resolve sweep.devices against the GPUs MXNet sees, before any worker starts. auto: one
    worker per GPU when train.device=auto and there are GPUs, else [] (n_workers as set, on
    train.device: the CPU on a CPU host); a list must name only GPUs MXNet sees."""
    devices = sweep.devices
    if devices == "auto":
        devices = list(range(visible_gpus())) if train_device == "auto" else []
    elif devices:
        found = visible_gpus()
        if max(devices) >= found:
            raise ConfigError(f"sweep.devices={list(devices)} but MXNet sees {found} GPU(s) "
                              "(mx.context.num_gpus()). List only GPUs this machine has, or set "
                              "sweep.devices=[] to train on train.device; GPUs need make install GPU=1.")
    sweep.devices = list(devices)
    if sweep.devices:
        sweep.n_workers = len(sweep.devices)  # one worker per GPU
    return sweep


def worker_device(sweep: SweepConfig, worker: int) -> Optional[str]:
    """sweep.devices=[0,1,...] (as assign_devices leaves it): worker w trains on gpu:devices[w];
    otherwise (an empty list, or 'auto' never assigned) the config's train.device."""
    return f"gpu:{sweep.devices[worker]}" if isinstance(sweep.devices, list) and sweep.devices else None


def workers_line(plan: SweepPlan) -> str:
    """'4 worker(s) on gpu:0, gpu:1, gpu:2, gpu:3' or '1 worker(s) on cpu': the console's first line."""
    where = [worker_device(plan.sweep, w) for w in range(plan.sweep.n_workers)]
    if None in where:  # every worker on the config's train.device
        where = [resolve_device(str(plan.bases[plan.sweep.models[0]].train.device))[1]]
    return f"{plan.sweep.n_workers} worker(s) on {', '.join(where)}"


def populations_line(plan: SweepPlan) -> str:
    """What sweep.population comes to, for the console's first line: '' at 1, else the models whose
    trials train at once and how many ('populations plain 16, biased 16'), or that none does here."""
    if str(plan.sweep.population) == "1":
        return ""
    bases = _on_device(plan.bases, worker_device(plan.sweep, 0))
    sizes = {m: population_size(plan, m, apply_params(bases[m], {})) for m in plan.sweep.models}
    stacked = [f"{m} {n}" for m, n in sizes.items() if n > 1]
    if stacked:
        return f", populations {', '.join(stacked)}"
    return f", population {plan.sweep.population}: one trial at a time here (docs/sweeps.md, Populations)"


def _on_device(bases: dict[str, DictConfig], device: Optional[str]) -> dict[str, DictConfig]:
    if device is None:
        return bases
    moved = {}
    for model, base in bases.items():
        moved[model] = base.copy()
        moved[model].train.device = device
    return moved


def _base_config(plan: SweepPlan):
    return apply_params(plan.bases[plan.sweep.models[0]], {})


def run_workers(plan: SweepPlan, parent_run_id: Optional[str], hooks: Optional[Hooks] = None) -> None:
    deadline = time.time() + plan.sweep.timeout if plan.sweep.timeout else None
    if plan.sweep.n_workers == 1:
        work(plan, 0, parent_run_id, deadline, hooks)
        return
    if hooks is not None:
        raise ValueError("sweep hooks need sweep.n_workers=1: worker processes do not share them")
    ctx = multiprocessing.get_context("spawn")
    # One MXNet process already keeps two cores busy: one engine thread per worker.
    os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = [ctx.Process(target=_work_entry, args=(plan, w, parent_run_id, deadline), name=f"worker-{w}")
             for w in range(plan.sweep.n_workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        if interrupt.pending() == signal.SIGTERM:  # sent to this process alone (`kill PID`, a scheduler):
            for p in procs:                         # the workers stop as they would on their own SIGTERM.
                if p.is_alive():                    # A Ctrl-C reached them already (one process group),
                    p.terminate()                   # and a second signal would cut their clean-up short
        for p in procs:
            p.join(timeout=30)
        raise
    bad = [p for p in procs if p.exitcode not in (0, None)]
    if any(p.exitcode == 130 for p in bad):
        raise KeyboardInterrupt("a worker was interrupted")
    if bad:
        raise SweepStopped(f"{len(bad)} worker(s) exited with an error (exit codes "
                           f"{[p.exitcode for p in bad]}); see their messages above. Run the sweep again to resume.")


def _work_entry(plan: SweepPlan, worker: int, parent_run_id: Optional[str], deadline: Optional[float]) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"[worker {worker}] %(message)s")

    quiet_mxnet()  # MXNet's lazy_update note, once per process
    try:
        work(plan, worker, parent_run_id, deadline)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as caught:  # noqa: BLE001 - a user error, or a full disk behind another one

        err = caught if isinstance(caught, MfexpError) else full_disk_behind(caught)
        if err is None:
            raise
        print(f"mfexp: error: [worker {worker}] {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def best_config_path(plan: SweepPlan, model: str) -> Path:
    return st.sweep_dir(plan.sweep) / f"best-{model}.yaml"


def busy_seconds(trials) -> float:
    """Seconds during which at least one of `trials` ran: the union of their intervals, so that the
    members of a population (which run at the same time) count once, not once each."""
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete)
    total, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def outcome_of(plan: SweepPlan, model: str, study: optuna.Study) -> ModelOutcome:
    trials = study.get_trials(deepcopy=False)
    by_state = lambda s: sum(t.state == s for t in trials)  # noqa: E731
    out = ModelOutcome(model=model, study_name=study.study_name, n_complete=by_state(TrialState.COMPLETE),
                       n_pruned=by_state(TrialState.PRUNED), n_failed=by_state(TrialState.FAIL),
                       wall_time_s=busy_seconds(trials))
    if out.n_complete:
        best = study.best_trial
        out.best_val_rmse, out.best_trial, out.best_params = best.value, best.number, dict(best.params)
        if REFERENCE_ATTR in best.user_attrs:  # enqueued with fixed values, so no params: show those
            out.best_reference = str(best.user_attrs[REFERENCE_ATTR])
            out.best_params = dict(best.user_attrs.get(OVERRIDES_ATTR) or {})
        budget = best.user_attrs.get(EPOCHS_BUDGET_ATTR, int(plan.bases[model].train.epochs))
        out.budget_exhausted = best.user_attrs.get(BEST_EPOCH_ATTR) == best.user_attrs.get(EPOCHS_RUN_ATTR) == budget
    return out


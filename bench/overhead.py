"""Section overhead: what one sweep trial costs beyond its epochs (config, model build, data to
the device, graph warm-up, evaluation, MLflow tracking, Optuna), data loaded once per worker.

Runs mfexp's own sweep worker (`mfexp.sweep.runner.work`) on plain, 2 epochs at batch 1024,
with timers wrapped around the functions it calls; once tracked (MLflow, a ready sqlite store)
and once untracked.

    python -m bench.overhead [--quick]
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Optional, Sequence

import optuna

import mfexp.experiment
import mfexp.models.io
import mfexp.sweep.objective
import mfexp.sweep.runner
import mfexp.track.tracker
import mfexp.train
from bench import common
from mfexp.sweep.plan import build_plan
from mfexp.sweep.runner import prepare, work

SECTION = "overhead"
TARGET_S = 0.3


class Timers:
    """Seconds per named part, per trial; `trials` holds one dict per finished trial."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.trials: list[dict] = []
        self.current: dict = {}
        self.worker: dict = {"load_dataset_s": 0.0, "load_dataset_calls": 0}
        self.loop_starts: list[float] = []

    def add(self, name: str, seconds: float) -> None:
        self.current[name] = self.current.get(name, 0.0) + seconds

    def wrap(self, owner, attr: str, name: str, record=None):
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                out = original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)
            if record is not None:
                record(out)
            return out

        setattr(owner, attr, timed)
        return original


TIMERS = Timers()


def install(timers: Timers) -> None:
    """Wrap the functions a trial calls, each in the module that looks it up when a trial calls it
    (the sweep's worker loads the data; experiment.train_and_track builds the net and fits it)."""
    load = mfexp.sweep.runner.load_dataset

    def load_once(*args, **kwargs):
        start = time.perf_counter()
        out = load(*args, **kwargs)
        timers.worker["load_dataset_s"] += time.perf_counter() - start
        timers.worker["load_dataset_calls"] += 1
        return out

    mfexp.sweep.runner.load_dataset = load_once
    timers.wrap(mfexp.sweep.objective, "apply_params", "config")
    timers.wrap(mfexp.experiment, "build_net", "model_build")
    timers.wrap(mfexp.train, "evaluate", "evaluate")
    timers.wrap(mfexp.models.io, "from_training", "model_export")
    fit = mfexp.experiment.fit

    def timed_fit(*args, **kwargs):
        timers.current["in_fit"] = True
        start = time.perf_counter()
        try:
            result = fit(*args, **kwargs)
        finally:
            timers.add("fit", time.perf_counter() - start)
            timers.current["in_fit"] = False
        timers.current["epochs"] = [h.epoch_time_s for h in result.history]
        return result

    mfexp.experiment.fit = timed_fit
    for method in ("set_tags", "log_yaml", "log_model"):
        timers.wrap(mfexp.track.tracker.Tracker, method, f"tracking.{method}")
    log_metrics = mfexp.track.tracker.Tracker.log_metrics

    def timed_log_metrics(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return log_metrics(self, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            timers.add("tracking.log_metrics", seconds)
            if timers.current.get("in_fit"):  # the epoch hook's MLflow half
                timers.add("hook_tracking", seconds)

    mfexp.track.tracker.Tracker.log_metrics = timed_log_metrics
    run_cm = mfexp.track.tracker.Tracker.run

    @contextlib.contextmanager
    def timed_run(self, **kwargs):
        start = time.perf_counter()
        cm = run_cm(self, **kwargs)
        value = cm.__enter__()
        timers.add("tracking.start_run", time.perf_counter() - start)
        try:
            yield value
        except BaseException as err:
            start = time.perf_counter()
            if not cm.__exit__(type(err), err, err.__traceback__):
                timers.add("tracking.end_run", time.perf_counter() - start)
                raise
        else:
            start = time.perf_counter()
            cm.__exit__(None, None, None)
            timers.add("tracking.end_run", time.perf_counter() - start)

    mfexp.track.tracker.Tracker.run = timed_run
    timers.wrap(mfexp.sweep.objective.Objective, "__call__", "objective")
    timers.wrap(mfexp.sweep.objective.Objective, "report", "optuna_report")  # the epoch hook's Optuna half
    optimize = optuna.study.Study.optimize

    def timed_optimize(self, *args, **kwargs):
        timers.loop_starts.append(time.perf_counter())
        timers.current = {}
        start = time.perf_counter()
        try:
            return optimize(self, *args, **kwargs)
        finally:
            timers.current["optimize"] = time.perf_counter() - start
            timers.trials.append(timers.current)

    optuna.study.Study.optimize = timed_optimize


def sweep_plan(name: str, n_trials: int, tracking: bool, epochs: int):
    return build_plan([
        "sweep.models=[plain]", f"sweep.n_trials={n_trials}", f"sweep.name={name}",
        # one trial at a time, n_trials of them: the overhead of a lone trial (not the default sweep's populations)
        "sweep.population=1", f"sweep.model_trials={{plain:{n_trials}}}",
        f"sweep.root={common.sweep_root(name)}", "sweep.pruner=none", "sweep.enqueue_tutorial=false",
        f"train.epochs={epochs}", "train.patience=null", f"tracking.enabled={str(tracking).lower()}",
        "train.batch_size=choice(1024)", "model.k=choice(64)", "train.optimizer=choice(adam)",
    ])


def per_trial(timers: Timers, end: float) -> list[dict]:
    """Each trial's parts; `overhead_s` = its loop wall time minus its epochs at steady speed (the
    last epoch's time, which has no graph warm-up, times the number of epochs)."""
    out = []
    starts = timers.loop_starts + [end]
    for i, t in enumerate(timers.trials):
        epochs = t.get("epochs", [])
        steady = epochs[-1] * len(epochs) if epochs else 0.0
        wall = starts[i + 1] - starts[i]
        fit_other = (t.get("fit", 0.0) - sum(epochs) - t.get("evaluate", 0.0) - t.get("hook_tracking", 0.0)
                     - t.get("optuna_report", 0.0))
        tracking = {k.split(".", 1)[1] + "_s": v for k, v in t.items() if k.startswith("tracking.")}
        out.append({
            "wall_s": wall, "training_s": steady, "overhead_s": wall - steady,
            "tracking_s": sum(tracking.values()), "config_s": t.get("config", 0.0),
            "model_build_s": t.get("model_build", 0.0),
            "warmup_s": (epochs[0] - epochs[-1]) if len(epochs) > 1 else 0.0,
            "evaluate_s": t.get("evaluate", 0.0), "data_to_device_etc_s": fit_other,
            "model_export_s": t.get("model_export", 0.0),
            "optuna_s": wall - t.get("objective", 0.0) + t.get("optuna_report", 0.0),
            **{f"tracking.{k}": v for k, v in sorted(tracking.items())},
        })
        row = out[-1]
        row["unaccounted_s"] = row["overhead_s"] - sum(v for k, v in row.items() if k not in (
            "wall_s", "training_s", "overhead_s") and not k.startswith("tracking."))
    return [{k: round(v, 4) for k, v in row.items()} for row in out]


def measure(n_trials: int, tracking: bool, epochs: int = 2) -> dict:
    timers = TIMERS
    timers.reset()
    plan = sweep_plan(f"overhead-{'tracked' if tracking else 'untracked'}", n_trials, tracking, epochs)
    prepare(plan)
    start = time.perf_counter()
    work(plan, 0, None, None)
    trials = per_trial(timers, time.perf_counter())
    later = trials[1:] or trials
    parts = list(dict.fromkeys(k for t in trials for k in t))
    for t in trials:
        for k in parts:
            t.setdefault(k, 0.0)
    return {"tracking": tracking, "n_trials": len(trials), "epochs": epochs, "worker": timers.worker,
            "first_trial": trials[0], "median_later": {k: round(common.median([t[k] for t in later]), 4) for k in parts},
            "trials": trials, "wall_s": round(time.perf_counter() - start, 3)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = common.section_args(__doc__.splitlines()[0], argv)
    common.quiet_logs()
    out = (args.out or common.RESULTS / f"{SECTION}.json").resolve()
    os.chdir(common.scratch())  # MLflow writes new experiments' artifacts under ./mlruns
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(SECTION)
    started = time.perf_counter()
    install(TIMERS)
    n = 3 if args.quick else 12
    runs = []
    for tracking in (True, False):
        runs.append(measure(n, tracking))
        m = runs[-1]["median_later"]
        common.say(SECTION, f"tracking={tracking}: per-trial overhead {m['overhead_s']:.3f}s (tracking "
                            f"{m['tracking_s']:.3f}s, warm-up {m['warmup_s']:.3f}s, build {m['model_build_s']:.3f}s)")
    tracked = runs[0]["median_later"]["overhead_s"]
    untracked = runs[1]["median_later"]["overhead_s"]
    targets = [common.target("per-trial fixed overhead in a sweep (tracked)", "<= 0.3 s", tracked, "s",
                             common.at_most(tracked, TARGET_S),
                             f"untracked {untracked:.3f} s; data loaded {runs[0]['worker']['load_dataset_calls']}x "
                             "per worker")]
    notes = ["overhead = a trial's wall time in the worker loop (from one study.optimize to the next) minus "
             "its epochs at steady speed (last epoch time x epochs); the median of the trials after the "
             "first (the first also creates the MLflow experiment and compiles MXNet's kernels).",
             "Parts: tracking = every MLflow call (start/end run, params, per-epoch metrics, config.yaml, "
             "tags); warm-up = first epoch minus last; evaluate = val RMSE after each epoch and fit's final "
             "test RMSE; data_to_device_etc = the rest of fit outside its epochs (rows to the device, "
             "hybridize, trainer); optuna = sampler, storage, trial.report/should_prune and the worker "
             "loop; unaccounted = overhead minus the parts (train_and_track's own code, timer noise)."]
    common.write_result(out, SECTION, args.quick, started, {"runs": runs}, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    runs = result["figures"]["runs"]
    parts = list(runs[0]["median_later"])
    lines = ["Seconds per trial (median of the trials after the first; plain, 2 epochs, batch 1024):", "",
             "| part | " + " | ".join("tracked" if r["tracking"] else "untracked" for r in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    for p in parts:
        name = p[:-2].replace("tracking.", "&nbsp;&nbsp;tracking: ")
        lines.append(f"| {name} | " + " | ".join(f"{r['median_later'].get(p, 0.0):.3f}" for r in runs) + " |")
    w = runs[0]["worker"]
    lines += ["", f"Data: loaded {w['load_dataset_calls']}x per worker ({w['load_dataset_s']:.2f} s), "
                  f"{runs[0]['n_trials']} trials per run; first trial's overhead "
                  f"{runs[0]['first_trial']['overhead_s']:.2f} s tracked."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

"""Section sweep_efficiency: how much sooner the default search (its sampler and pruner) reaches what
random search without pruning reaches in N trials, per model of the default sweep, over several seeds.

For each model and seed, two arms run mfexp's own worker loop in fresh processes, side by side with one
core (one MXNet/OpenMP thread) each, so that both see the same machine; on u1 with the default sweep's
space, epochs, early stopping and population size, and no reference trial (a tuned starting point
would measure earlier tuning, not the search):

1. random search without pruning, for N trials (--trials, 60): R = its best val RMSE; it ran W seconds;
2. the default sampler and pruner (conf/sweep/default.yaml), same space, data and seed, for the same
   W seconds: it stops when the random arm ends.

The bar is T = R + sd, where sd is the model's seed sd: random search's best configuration of each seed
trained again with each --train-seeds seed (every trial of a sweep trains with train.seed 0), the sd
of its val RMSE over those seeds and 0, median over the arms' seeds. Neither arm is scored on one
seed's luck. Per model and seed, t = the seconds until an arm's val RMSE first came to T or below (the
default arm's: W where it never did, so that seed's sum is an upper bound). The figure: per seed,
sum(t random) / sum(t default) over the models; its median over the seeds (target >= 3x, milestone
2x). Beside it: the same at R itself; pruning's ceiling and hindsight on random search's own curves
(what no pruner, and no search without prior knowledge, can beat on those draws); and the anytime
check, each arm's best val RMSE at equal wall time every 30 s from 60 s on, per model (median over
seeds), with the curves as a PNG. Every epoch's val RMSE is stamped as the objective reports it to
Optuna; time counts from the start of the worker loop (data load included, the same in both arms).

    python -m bench.sweep_efficiency [--quick] [--models biased plain] [--seeds 0 1 2] [--trials 60]
    python -m bench.sweep_efficiency --random-from RESULT_JSON --default-arm OVERRIDE ... (a lever)
    python -m bench.sweep_efficiency --reanalyse RESULT_JSON ... [--out OUT_JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
from mlflow import MlflowClient
import optuna

from bench import common
from mfexp.data import load_dataset
from mfexp.sweep.objective import apply_params
from mfexp.sweep.plan import build_plan
from mfexp.sweep.runner import Hooks, epoch_budget, prepare, run_workers
from mfexp.sweep.search import make_pruner, make_sampler
from mfexp.track.tracker import TRIAL_TAG
from mfexp.train import build_net, fit, resolve_device

SECTION = "sweep_efficiency"
MODELS = ("plain", "mlp", "dropout", "biased", "svdpp", "fm", "autorec")  # the default sweep's
ARMS = {"default": [], "random": ["sweep.sampler=random", "sweep.pruner=none", "sweep.start=sampler"]}
TRIALS = 60  # random search's budget per model and seed
CAP = 4 * 3600.0  # seconds: a safety cap on either arm (the random arm is meant to finish its trials)
QUICK_OVERRIDES = ["train.epochs=2", "train.batch_size=choice(512)"]
PNG = "sweep_efficiency.png"
ANYTIME_FROM, ANYTIME_STEP = 60.0, 30.0  # the anytime check: equal wall time, every 30 s from 60 s on


def child(arm: str, model: str, seed: int, trials: int, cap: float, stop: Optional[str], extra: Sequence[str]) -> dict:
    """One arm in this process. The random arm runs `trials` trials; either arm stops at `cap` seconds
    or once the file `stop` exists (the parent's signal that the random arm has ended): the trial running
    then is stopped at its next epoch report and no other starts."""
    name = f"eff-{arm}-{model}-{seed}"
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(name)
    plan = build_plan([*_arm_args(arm, model, seed, trials, cap, extra), f"sweep.name={name}",
                       f"sweep.root={common.sweep_root(name)}"])
    reports: list[tuple[float, int, int, float]] = []
    start, spent = time.perf_counter(), False

    def over() -> bool:
        return time.perf_counter() - start > cap or (stop is not None and os.path.exists(stop))

    def clock() -> float:  # the worker loop's: past its deadline once the arm is over
        return float("inf") if spent or over() else time.time()

    def stamped(trial, epoch_report) -> None:
        nonlocal spent
        if over():
            spent = True
            raise optuna.TrialPruned("the bench's arm is over")
        reports.append((time.perf_counter() - start, trial.number, epoch_report.epoch, epoch_report.val_rmse))

    studies = prepare(plan)
    start, started_at = time.perf_counter(), time.time()
    run_workers(plan, None, Hooks(on_report=stamped, clock=clock) if plan.sweep.n_workers == 1 else None)
    wall = time.perf_counter() - start
    if plan.sweep.n_workers > 1:  # the workers are processes of their own, which the stamps above do not reach
        reports = tracked_reports(plan.experiment, started_at, cap)
    trials_run = studies[model].get_trials(deepcopy=False)
    states = [t.state.name for t in trials_run]
    return {"arm": arm, "model": model, "seed": seed, "sampler": plan.sweep.sampler, "pruner": plan.sweep.pruner,
            "population": plan.sweep.population, "wall_s": round(wall, 2), "cut": spent,
            "trials": len(trials_run), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "epochs_trained": len(reports), "params": [t.params for t in sorted(trials_run, key=lambda t: t.number)],
            "reports": [[round(t, 2), n, e, round(v, 5)] for t, n, e, v in reports]}


def tracked_reports(experiment: str, started_at: float, budget: float) -> list[tuple[float, int, int, float]]:
    """Every trial's val RMSE per epoch from the MLflow store (the trial runs' metric history), stamped in
    seconds since `started_at`, those within `budget` only, in time order: an arm's reports when several
    workers ran it (each a process that logs its own epochs)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10_000) if exp else []
    reports = []
    for run in (r for r in runs if TRIAL_TAG in r.data.tags):
        number = int(run.data.tags[TRIAL_TAG])
        for m in client.get_metric_history(run.info.run_id, "val_rmse"):
            t = m.timestamp / 1000.0 - started_at
            if t <= budget:
                reports.append((t, number, m.step, m.value))
    return sorted(reports)


def _arm_args(arm: str, model: str, seed: int, trials: int, cap: float, extra: Sequence[str]) -> list[str]:
    """An arm's sweep overrides (its sweep.name and sweep.root aside); the population size is the
    default sweep's in both."""
    n = trials if arm == "random" else 100_000  # the default arm runs until the random arm ends
    return [f"sweep.models=[{model}]", f"sweep.n_trials={n}", f"sweep.timeout={cap}", f"sweep.seed={seed}",
            "sweep.enqueue_tutorial=false", "sweep.ensemble=false", f"sweep.model_trials={{{model}:{n}}}",
            *ARMS[arm], *extra]


def _random_plan(model: str, seed: int, extra: Sequence[str]):
    """The random arm's plan, to draw and train from (it opens no storage)."""
    return build_plan(_arm_args("random", model, seed, 1, CAP, extra))


def random_draws(model: str, seed: int, n: int, extra: Sequence[str], plan=None) -> list[dict]:
    """The first `n` configurations the random arm drew for this model and seed. Random search's draws
    do not depend on how its trials went, so the same sampler, seed and space give them again without
    training anything."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = plan or _random_plan(model, seed, extra)
    study = optuna.create_study(sampler=make_sampler(plan.sweep))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append(plan.spaces[model].suggest(trial))
        study.tell(trial, 0.0)
    return drawn


def retrain(model: str, seed: int, trial: int, train_seeds: Sequence[int], extra: Sequence[str],
            epochs: Optional[int] = None) -> dict:
    """Random search's trial `trial` of this model and seed, trained again, untracked, once per training
    seed (train.seed; every trial of a sweep trains with seed 0, so seed 0 repeats the recorded run).
    epochs: at most this many epochs, for a trial whose run the arm's cap cut short."""
    plan = _random_plan(model, seed, extra)
    params = random_draws(model, seed, trial + 1, extra, plan)[trial]
    base = plan.bases[model]
    if epochs is not None and epochs < apply_params(base, params).train.epochs:
        params = {**params, "train.epochs": epochs}
    data = load_dataset(base.data)
    runs = []
    for train_seed in train_seeds:
        cfg = apply_params(base, {**params, "train.seed": train_seed})
        ctx, _ = resolve_device(cfg.train.device)
        started = time.perf_counter()
        result = fit(build_net(cfg, data, ctx), data, cfg.train, ctx, eval_test=False, final_test=False)
        runs.append({"train_seed": train_seed, "val_rmse": round(result.best_val_rmse, 5), "best_epoch": result.best_epoch,
                     "epochs": len(result.history), "seconds": round(time.perf_counter() - started, 2)})
    return {"model": model, "seed": seed, "trial": trial, "params": params, "epochs_cap": epochs, "runs": runs}


def _spawn(args: Sequence[str], log: Path) -> subprocess.Popen:
    """`python -m bench.sweep_efficiency ARGS` in the scratch folder, one MXNet/OpenMP thread; its output
    to `log` (a pipe nobody reads while the other arm is awaited would fill and stall it)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "bench.sweep_efficiency", *args], env=common.child_env(threads=1),
                                cwd=common.scratch(), stdout=out, stderr=subprocess.STDOUT, text=True)


def _collect(proc: subprocess.Popen, log: Path, what: str) -> dict:
    """A child's result (its last JSON line); its output's tail in the error if it failed."""
    proc.wait()
    out = log.read_text()
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
    return common.last_json_line(out)


def run_arms(model: str, seed: int, trials: int, cap: float, extra: Sequence[str], default_arm: Sequence[str],
             earlier: Optional[dict] = None) -> dict[str, dict]:
    """Both arms of one model and seed, side by side, one core each; the default arm stops when the random
    arm ends. `earlier`: a random arm already run (a lever's run): the default arm alone, for its wall time."""
    scratch = common.scratch()
    common.mlflow_store("ready")  # the migrated template, made once here: two children at once would race
    stop = scratch / f"stop-{model}-{seed}-{os.getpid()}"
    stop.unlink(missing_ok=True)
    common_args = ["--model", model, "--seed", str(seed), "--trials", str(trials), *extra]
    logs = {arm: scratch / f"{arm}-{model}-{seed}-{os.getpid()}.log" for arm in ARMS}
    procs = {"default": _spawn(["--child", "default", "--stop", str(stop), *common_args, *default_arm,
                                "--cap", str(earlier["wall_s"] if earlier else cap)], logs["default"])}
    if earlier is None:
        procs["random"] = _spawn(["--child", "random", "--cap", str(cap), *common_args], logs["random"])
    if earlier is None:
        arms = {"random": _collect(procs["random"], logs["random"], f"random arm of {model} seed {seed}")}
        stop.touch()
    else:
        arms = {"random": earlier}
    arms["default"] = _collect(procs["default"], logs["default"], f"default arm of {model} seed {seed}")
    stop.unlink(missing_ok=True)
    return arms


def measure_noise(rows: list[dict], curves: dict, train_seeds: Sequence[int], extra: Sequence[str]) -> list[dict]:
    """Seed luck: random search's best trial of each model and seed trained again with train.seed 0 (the
    recorded run) and `train_seeds`, two at a time, one thread each."""
    todo = []
    for r in rows:
        reports = curves[r["model"]][("random", r["seed"])]
        trial = next(n for _, n, _, v in reports if v <= r["R"] + 1e-12)
        todo.append((r["model"], r["seed"], trial, r["R"], budget_cut(reports, trial) if r["random"].get("cut") else None))
    found = []
    for i in range(0, len(todo), 2):
        procs = []
        for model, seed, trial, R, cap in todo[i:i + 2]:
            log = common.scratch() / f"retrain-{model}-{seed}-{os.getpid()}.log"
            procs.append(((model, seed, trial, R), log, _spawn(
                ["--child", "retrain", "--model", model, "--seed", str(seed), "--trial", str(trial),
                 *(["--epochs-cap", str(cap)] if cap else []), "--train-seeds", "0", *map(str, train_seeds),
                 "--", *extra], log)))  # "--": the overrides are not more seeds
        for (model, seed, trial, R), log, proc in procs:
            got = {**_collect(proc, log, f"retraining {model} seed {seed} trial {trial}"), "R": R}
            found.append(got)
            common.say(SECTION, f"{model} seed {seed}: random's best (trial {trial}, R {R}) retrained: "
                                + ", ".join(f"seed {x['train_seed']} {x['val_rmse']}" for x in got["runs"]))
    return found


def budget_cut(reports: list, trial: int) -> Optional[int]:
    """The epochs `trial` ran if the arm's cap may have cut it short (it is the arm's last trial):
    retrained with more, it would reach what the recorded run never had the time to. None otherwise."""
    last = max(n for _, n, _, _ in reports)
    return max(e for _, n, e, _ in reports if n == trial) if trial == last else None


def seed_sd(noise_rows: list[dict]) -> dict[str, float]:
    """Per model, the median over its retrained trials of the val RMSE's sd over the training seeds."""
    out = {}
    for model in dict.fromkeys(n["model"] for n in noise_rows):
        spreads = [statistics.stdev(x["val_rmse"] for x in n["runs"]) for n in noise_rows
                   if n["model"] == model and len(n["runs"]) > 1]
        if spreads:
            out[model] = round(common.median(spreads), 5)
    return out


def noise_summary(noise_rows: list[dict]) -> dict:
    """What the retrained best trials say: whether seed 0 repeated the recorded R, and how often
    another training seed of random's own best configuration reaches R."""
    others = [(n["R"], x["val_rmse"]) for n in noise_rows for x in n["runs"] if x["train_seed"] != 0]
    repeats = [abs(x["val_rmse"] - n["R"]) for n in noise_rows for x in n["runs"] if x["train_seed"] == 0]
    return {"retrained": len(others), "reach_R": sum(v <= R + 1e-12 for R, v in others),
            "mean_above_R": round(sum(v - R for R, v in others) / len(others), 5) if others else None,
            "max_repeat_diff": round(max(repeats), 5) if repeats else None}


def first_reach(reports: list, target: float) -> Optional[float]:
    """Seconds at which val RMSE first came to `target` or below (None: never)."""
    return next((t for t, _, _, v in reports if v <= target + 1e-12), None)


def best_by(reports: list, seconds: float) -> Optional[float]:
    return min((v for t, _, _, v in reports if t <= seconds), default=None)


def compare(rnd: dict, dft: dict, sd: float = 0.0) -> dict:
    """The figures of one model and seed from its two arms' reports: the times to T = R + sd and to R,
    within the random arm's wall time W (the default arm's reports after it do not count)."""
    wall = rnd["wall_s"]
    dft_reports = [r for r in dft["reports"] if r[0] <= wall]
    R = best_by(rnd["reports"], float("inf"))
    row = {"model": rnd["model"], "seed": rnd["seed"], "R": R, "sd": sd, "T": None if R is None else round(R + sd, 6),
           "wall_s": wall, "best_random": R, "best_default": best_by(dft_reports, wall),
           "random": {k: v for k, v in rnd.items() if k != "reports"},
           "default": {k: v for k, v in dft.items() if k != "reports"}}
    for suffix, bar in (("", sd), ("_R", 0.0)):
        t_random = first_reach(rnd["reports"], R + bar) if R is not None else None
        t_default = first_reach(dft_reports, R + bar) if R is not None else None
        row[f"t_random{suffix}_s"], row[f"t_default{suffix}_s"] = t_random, t_default
        if not suffix:
            row["ratio"] = round(t_random / max(t_default, 1e-9), 3) if None not in (t_random, t_default) else None
            # the default would need more than W: the ratio is below this
            row["ratio_below"] = round(t_random / wall, 3) if t_random is not None and t_default is None else None
    return row


def summed(rows: list[dict], t_random: str = "t_random_s", t_default: str = "t_default_s") -> dict[int, dict]:
    """Per seed: the sum of random's times over the models / the sum of the default's (W where it never
    got there: an upper bound)."""
    out = {}
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed and r.get(t_random) is not None]
        t_r = sum(r[t_random] for r in mine)
        t_d = sum(r[t_default] if r.get(t_default) is not None else r["wall_s"] for r in mine)
        out[seed] = {"t_random_s": round(t_r, 2), "t_default_s": round(t_d, 2),
                     "ratio": round(t_r / t_d, 3) if t_d > 0 else None,
                     "upper_bound": any(r.get(t_default) is None for r in mine)}
    return out


def anytime(rows: list[dict], curves: dict, start: float = ANYTIME_FROM, step: float = ANYTIME_STEP) -> dict[str, dict]:
    """Per model: at each budget b from `start` by `step` up to the shortest W over its seeds, the median
    over seeds of (the default's best val RMSE by b - random's); `behind`, the budgets where that is
    above 0 (a default with nothing by b where random has something is behind)."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        wall = min(r["wall_s"] for r in mine)
        budgets = [start + i * step for i in range(int((wall - start) // step) + 1)] if wall >= start else []
        gaps = {}
        for b in budgets:
            diffs = []
            for r in mine:
                rnd, dft = (best_by(curves[model][(arm, r["seed"])], b) for arm in ("random", "default"))
                if rnd is not None:
                    diffs.append(float("inf") if dft is None else dft - rnd)
            if diffs:
                gaps[b] = round(common.median(diffs), 5)
        out[model] = {"budgets": budgets, "gaps": gaps, "behind": [b for b, g in gaps.items() if g > 0]}
    return out


def trial_spans(reports: list) -> list[list[tuple[float, int, float]]]:
    """Per trial, in the order they ran: [(seconds since the trial started, epoch, val RMSE)]. One worker
    with populations of one runs its trials one after another, so a trial starts when the one before it
    last reported (its start-up, and the end of the trial before, count as its own)."""
    by_trial: dict[int, list] = {}
    for t, n, e, v in reports:
        by_trial.setdefault(n, []).append((t, e, v))
    spans, end = [], 0.0
    for n in sorted(by_trial):
        spans.append([(t - end, e, v) for t, e, v in by_trial[n]])
        end = by_trial[n][-1][0]
    return spans


def pruning_ceiling(reports: list, target: float) -> Optional[float]:
    """Seconds to `target` had every trial that never reaches it stopped at its first epoch report:
    what a pruner that knew the future would make of these trials. No pruner can do better on the
    same draws, and TPE's first trials are random search's own draws (same seed)."""
    clock = 0.0
    for span in trial_spans(reports):
        reach = next((dt for dt, _, v in span if v <= target + 1e-12), None)
        if reach is not None:
            return clock + reach
        clock += span[0][0]
    return None


def hindsight(reports: list, target: float) -> Optional[float]:
    """Seconds to `target` for a search that knew random search's winner (the first of its trials to
    reach `target`) and tried it first, alone: that trial's own time to `target`. A search gets past it
    only with a configuration that reaches `target` sooner than random search's winner does."""
    return next((dt for span in trial_spans(reports) for dt, _, v in span if v <= target + 1e-12), None)


def replay(reports: list, target: float, make_pruner) -> Optional[float]:
    """Seconds to `target` had the pruner `make_pruner()` judged these trials, epoch by epoch, as
    Optuna does. Exact for random search's trials (its draws do not depend on which trials were
    pruned), up to the machine's noise: random search with that pruner. None: it pruned the trial
    that reaches `target`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(pruner=make_pruner())
    clock = 0.0
    for span in trial_spans(reports):
        trial, pruned = study.ask(), False
        for dt, epoch, v in span:
            if v <= target + 1e-12:
                return clock + dt
            trial.report(v, epoch)
            if trial.should_prune():
                clock, pruned = clock + dt, True
                break
        else:
            clock += span[-1][0]
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, min(v for _, _, v in span))
    return None


def default_pruner(overrides: Sequence[str], model: str):
    """The default arm's pruner for `model`, as the sweep would make it (conf/sweep/default.yaml +
    overrides; its horizon is the model's epoch budget)."""
    plan = build_plan([f"sweep.models=[{model}]", *overrides])
    return lambda: make_pruner(plan.sweep, epoch_budget(plan, model))


def plot(rows: list[dict], curves: dict, path) -> None:
    """Best val RMSE so far against seconds, one panel per model, one line per arm and seed, each up to
    its W; the dotted line is T of the first seed."""
    matplotlib.use("Agg")
    models = list(dict.fromkeys(r["model"] for r in rows))
    cols = min(3, len(models))
    nrows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    colors = {"random": "tab:blue", "default": "tab:orange"}
    for ax, model in zip(axes.flat, models):
        mine = [r for r in rows if r["model"] == model]
        for r in mine:
            for arm in ("random", "default"):
                xs, ys, best = [], [], float("inf")
                for t, _, _, v in curves[model][(arm, r["seed"])]:
                    if t <= r["wall_s"] and v < best:
                        best = v
                        xs.append(t)
                        ys.append(v)
                if xs:
                    xs.append(r["wall_s"]), ys.append(best)
                    ax.step(xs, ys, where="post", color=colors[arm], alpha=0.8, lw=1.2,
                            label=arm if r is mine[0] else None)
        lows = [r["R"] for r in mine if r["R"] is not None]
        if lows:
            ax.set_ylim(min(lows) - 0.005, min(lows) + 0.04)
            ax.axhline(mine[0]["T"], color="grey", ls=":", lw=1)
        ax.axvline(ANYTIME_FROM, color="grey", lw=0.6, alpha=0.5)
        ax.set_title(model)
        ax.set_xlabel("seconds")
        ax.set_ylabel("best val RMSE so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("default search (orange) vs random search without pruning (blue), one line per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--child", choices=[*ARMS, "retrain"])
    parser.add_argument("--model", default="biased")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=TRIALS, help="random search's trials per model and seed")
    parser.add_argument("--cap", type=float, default=CAP, help="seconds: the most either arm runs")
    parser.add_argument("--stop", help="(--child) a file whose existence ends the arm")
    parser.add_argument("--default-arm", action="append", default=[],
                        help="an override for the default arm only (a lever to try)")
    parser.add_argument("--random-from", help="an earlier result JSON of this section: reuse its random arms and "
                                                "their seed sd (same trials), run only the default arms")
    parser.add_argument("--reanalyse", metavar="RESULT_JSON", nargs="+",
                        help="run nothing: re-derive the figures of earlier results of this section (several with "
                             "the same trials merge) with this version's analysis, into --out or bench/results")
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[1, 2, 3],
                        help="the seeds random search's best configurations train again with (the seed sd)")
    parser.add_argument("--trial", type=int, help="(--child retrain) the random arm's trial number")
    parser.add_argument("--epochs-cap", type=int, help="(--child retrain) train at most this many epochs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child == "retrain":
        print(json.dumps(retrain(args.model, args.seed, args.trial, args.train_seeds, args.overrides, args.epochs_cap)))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.model, args.seed, args.trials, args.cap, args.stop, args.overrides)))
        return 0
    started = time.perf_counter()
    if args.reanalyse:
        return reanalyse(args.reanalyse, args.out, args.default_arm, started)
    models, seeds, trials, extra, train_seeds = (
        (["biased"], [0], 4, QUICK_OVERRIDES, [1]) if args.quick else
        (args.models, args.seeds, args.trials, args.overrides, args.train_seeds))
    earlier, noise_rows = {}, []
    if args.random_from:
        old = load_result(args.random_from)["figures"]
        if old["trials"] != trials:
            raise SystemExit(f"{args.random_from}: its random arms ran {old['trials']} trials, not {trials}")
        earlier = {(r["model"], r["seed"]): {**r["random"], "reports": old["curves"][r["model"]][f"random:{r['seed']}"]}
                   for r in old["rows"]}
        noise_rows = [n for n in old.get("noise", []) if (n["model"], n["seed"]) in earlier]
    rows, curves = [], {}
    for model in models:
        for seed in seeds:
            arms = run_arms(model, seed, trials, args.cap, extra, args.default_arm, earlier.get((model, seed)))
            for arm, got in arms.items():
                curves.setdefault(model, {})[(arm, seed)] = got["reports"]
            row = compare(arms["random"], arms["default"])
            rows.append(row)
            common.say(SECTION, f"{model} seed {seed}: random's best {row['R']} after {row['t_random_R_s']} s of "
                                f"{row['wall_s']:.0f} ({arms['random']['trials']} trials); the default's best "
                                f"{row['best_default']} ({arms['default']['trials']} trials, "
                                f"{arms['default']['pruned']} pruned), R reached after {row['t_default_R_s']} s")
    done = {(n["model"], n["seed"]) for n in noise_rows}
    noise_rows += measure_noise([r for r in rows if (r["model"], r["seed"]) not in done and r["R"] is not None],
                                curves, train_seeds, extra)
    return finish(rows, curves, models, seeds, trials, extra, args.default_arm, started, args.quick, args.out,
                  argv=list(sys.argv[1:] if argv is None else argv), noise_rows=noise_rows)


def finish(rows: list[dict], curves: dict, models: Sequence[str], seeds: Sequence[int], trials: int,
           extra: Sequence[str], default_arm: Sequence[str], started: float, quick: bool, out,
           reanalysed: Optional[dict] = None, argv: Optional[Sequence[str]] = None,
           noise_rows: Sequence[dict] = ()) -> int:
    """The section's figures from its arms' curves and the seed sd: ratios per seed, what pruning alone
    and hindsight make of random search's draws, the anytime check, the PNG, the targets; the result."""
    sd = seed_sd(list(noise_rows))
    rows = [compare({**r["random"], "reports": curves[r["model"]][("random", r["seed"])]},
                    {**r["default"], "reports": curves[r["model"]][("default", r["seed"])]}, sd.get(r["model"], 0.0))
            for r in rows]
    pruners = {m: default_pruner([*extra, *default_arm], m) for m in dict.fromkeys(r["model"] for r in rows)}
    for row in rows:
        reports = curves[row["model"]][("random", row["seed"])]
        if row["T"] is not None:
            row["t_ceiling_s"] = _round(pruning_ceiling(reports, row["T"]))
            row["t_hindsight_s"] = _round(hindsight(reports, row["T"]))
            row["t_random_default_pruner_s"] = _round(replay(reports, row["T"], pruners[row["model"]]))
    per_seed = summed(rows)
    for key, t_random, t_default in (("ratio_R", "t_random_R_s", "t_default_R_s"),
                                     ("ceiling_ratio", "t_random_s", "t_ceiling_s"),
                                     ("hindsight_ratio", "t_random_s", "t_hindsight_s"),
                                     ("random_with_default_pruner_ratio", "t_random_s", "t_random_default_pruner_s")):
        for seed, s in summed([r for r in rows if r["T"] is not None], t_random, t_default).items():
            per_seed[seed][key] = s["ratio"]
    medians = {key: common.median([s.get(key) for s in per_seed.values()])
               for key in ("ratio", "ratio_R", "ceiling_ratio", "hindsight_ratio", "random_with_default_pruner_ratio")}
    ratio = medians["ratio"]
    times = anytime(rows, curves)
    behind = [m for m, a in times.items() if a["behind"]]
    png = (common.RESULTS / PNG) if not out else Path(os.path.abspath(out)).parent / PNG
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, curves, png)
    if not quick and not out:  # the figure BENCHMARKS.md shows, kept in git (bench/results is not)
        shutil.copyfile(png, common.REPO / "docs" / PNG)
    bounded = any(s["upper_bound"] for s in per_seed.values())
    each = lambda key: ", ".join(f"{s}: {v.get(key)}x" for s, v in per_seed.items())  # noqa: E731
    ns = noise_summary(list(noise_rows))
    targets = [
        common.target(f"time to R + one seed sd (R: random search's best of {trials} trials, no pruning): random / "
                      "default search, summed over the models, median over seeds", ">= 3x", ratio, "x",
                      common.at_least(ratio, 3.0), f"models: {', '.join(models)}; per seed: " + each("ratio")
                      + (" (upper bounds: the default missed T in some model)" if bounded else "")
                      + f"; milestone 2x {'met' if common.at_least(ratio, 2.0) else 'missed'}"),
        common.target("models where the default's best val RMSE at equal wall time is above random's at some budget "
                      f"from {ANYTIME_FROM:.0f} s on (median over seeds)", "0", len(behind), "models", len(behind) == 0,
                      "; ".join(f"{m} at {', '.join(f'{b:.0f}' for b in times[m]['behind'])} s" for m in behind)),
        common.target("the same ratio to R itself, median over seeds", "report", medians["ratio_R"], "x", None,
                      "per seed: " + each("ratio_R")),
        common.target("pruning's ceiling: the ratio had every random trial that misses T stopped at its first epoch "
                      "(a pruner that knew the future), median over seeds", "report", medians["ceiling_ratio"], "x",
                      None, "per seed: " + each("ceiling_ratio") + "; random search with the default pruner (replayed): "
                      + each("random_with_default_pruner_ratio")),
        common.target("hindsight: the ratio for a search that tried random search's winner first, alone, median over "
                      "seeds", "report", medians["hindsight_ratio"], "x", None, "per seed: " + each("hindsight_ratio")),
        common.target("seed sd of val RMSE per model (random's best configuration trained with train.seed "
                      + ", ".join(str(s) for s in sorted({x["train_seed"] for n in noise_rows for x in n["runs"]}))
                      + "), median over seeds", "report", common.median(list(sd.values())), "", None,
                      ", ".join(f"{m} {v}" for m, v in sd.items()) + f"; other seeds reach R in {ns['reach_R']} of "
                      f"{ns['retrained']} runs, {ns['mean_above_R']} above it on average; seed 0 repeats the "
                      f"recorded run to {ns['max_repeat_diff']}")]
    arm = rows[0]["default"] if rows else {}
    notes = [f"Random search runs {trials} trials per model and seed without pruning; the default arm runs beside it, "
             "one process and one thread each, and stops when it ends (W, per model and seed); MLflow tracking on "
             "(a ready sqlite store); the default sweep's space, train.epochs, patience and population size; no "
             "reference trial in either arm.",
             f"The default arm: sampler {arm.get('sampler')}, pruner {arm.get('pruner')}, population "
             f"{arm.get('population')} (conf/sweep/default.yaml, conf/sweep.yaml, mfexp/sweep/search.py)"
             + (f", with {' '.join(default_arm)}" if default_arm else "") + ".",
             f"Curves: bench/results/{PNG} (docs/{PNG} from a full run); every epoch's report is in the JSON.",
             "The levers tried on the default search, each with its figure: BENCHMARKS.md, Search levers."]
    if argv:
        notes.append(f"Run as `python -m bench.sweep_efficiency {' '.join(argv)}`" + (
            " (the random arms and their seed sd reused from that earlier run)" if "--random-from" in argv else "") + ".")
    if quick:
        notes.append(f"quick overrides: {' '.join(extra)}")
    if reanalysed:
        notes.append(f"Figures re-derived (`--reanalyse`) from the run(s) `{reanalysed['command']}` (finished "
                     f"{reanalysed['finished']}, {reanalysed['wall_s']:.0f} s of wall time summed over them).")
    common.write_result(out or common.RESULTS / f"{SECTION}.json", SECTION, quick, started,
                        {"models": list(models), "seeds": list(seeds), "trials": trials, "overrides": list(extra),
                         "default_arm": list(default_arm), "argv": list(argv or []), "rows": rows,
                         "per_seed": {str(k): v for k, v in per_seed.items()}, **medians, "sd": sd,
                         "anytime": {m: {"gaps": {f"{b:g}": g for b, g in a["gaps"].items()}, "behind": a["behind"]}
                                     for m, a in times.items()},
                         "png": PNG, "noise": list(noise_rows),
                         "curves": {m: {f"{a}:{s}": r for (a, s), r in c.items()} for m, c in curves.items()}},
                        targets, notes, run=reanalysed)
    return 0


def reanalyse(paths: Sequence[str], out, default_arm: Sequence[str], started: float) -> int:
    """Re-derive the figures of earlier results (several: runs of other models or seeds, same trials,
    merged) with this version's analysis."""
    olds = [load_result(path) for path in paths]
    if len({old["figures"]["trials"] for old in olds}) > 1:
        raise SystemExit(f"{', '.join(paths)}: their random arms ran different numbers of trials; only runs "
                         "with the same --trials merge")
    rows, curves, models, seeds, noise_rows = [], {}, [], [], []
    for old in olds:
        f = old["figures"]
        noise_rows += f.get("noise", [])
        for m, c in f["curves"].items():
            curves.setdefault(m, {}).update({(k.split(":")[0], int(k.split(":")[1])): r for k, r in c.items()})
        rows += f["rows"]
        models += [m for m in f["models"] if m not in models]
        seeds += [s for s in f["seeds"] if s not in seeds]
    pairs = [(r["model"], r["seed"]) for r in rows]
    if len(set(pairs)) < len(pairs):
        raise SystemExit(f"{', '.join(paths)}: a model and seed appear in more than one of them")
    first = olds[0]
    commands = [old["command"] + (" " + " ".join(old["figures"]["argv"]) if old["figures"].get("argv") else "")
                for old in olds]
    run = {**first, "command": "; ".join(dict.fromkeys(commands)),
           "finished": max(old["finished"] for old in olds), "wall_s": sum(old["wall_s"] for old in olds)}
    return finish(rows, curves, models, sorted(seeds), first["figures"]["trials"],
                  first["figures"].get("overrides", []), default_arm or first["figures"].get("default_arm", []),
                  started, first.get("quick", False), out, reanalysed=run, noise_rows=noise_rows)


def load_result(path: str) -> dict:
    """An earlier result of this section with rows and curves; a clear exit for anything else."""
    try:
        result = json.loads(open(path).read())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{path}: cannot read it as a result of the {SECTION} section ({err})") from None
    if not isinstance(result, dict) or result.get("section") != SECTION or "trials" not in result.get("figures", {}):
        raise SystemExit(f"{path}: not a result of the {SECTION} section with a trial budget, rows and curves "
                         "(results from before the trial budget cannot be re-derived: run the section again)")
    return result


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _v(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(result: dict) -> list[str]:
    f = result["figures"]
    if "trials" not in f:  # a result of an earlier form of this section
        return ["(an earlier form of this section's result: re-run python -m bench.sweep_efficiency)"]
    lines = [f"Random search: {f['trials']} trials per model and seed, no pruning; R = its best val RMSE, W = its "
             "wall time (the default arm ran beside it for the same W); sd = the model's seed sd; T = R + sd; "
             "t = seconds until an arm first reached T; ceiling = random's trials had each one that misses T "
             "stopped at its first epoch; hindsight = random's winner tried first, alone.", "",
             "| model | seed | R | sd | W (s) | t random (s) | t default (s) | ratio | t to R: random / default (s) "
             "| t ceiling (s) | t hindsight (s) | best at W: random / default | default trials (pruned) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in f["rows"]:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else (
            f"< {r['ratio_below']:.2f}x" if r["ratio_below"] is not None else "-")
        reached = _s(r["t_default_s"]) if r["t_default_s"] is not None else "not reached"
        lines.append(f"| {r['model']} | {r['seed']} | {_v(r['R'])} | {r['sd']:.5f} | {r['wall_s']:.0f} | "
                     f"{_s(r['t_random_s'])} | {reached} | {ratio} | {_s(r['t_random_R_s'])} / {_s(r['t_default_R_s'])} | "
                     f"{_s(r.get('t_ceiling_s'))} | {_s(r.get('t_hindsight_s'))} | "
                     f"{_v(r['best_random'])} / {_v(r['best_default'])} | "
                     f"{r['default']['trials']} ({r['default']['pruned']}) |")
    lines += ["", "| seed | sum t random (s) | sum t default (s) | ratio | ratio to R | pruning's ceiling | hindsight | "
              "random + default pruner (replayed) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    x = lambda v: "-" if v is None else f"{v}x"  # noqa: E731
    for seed, s in f["per_seed"].items():
        lines.append(f"| {seed} | {s['t_random_s']:.1f} | {s['t_default_s']:.1f} | "
                     f"{'<= ' if s['upper_bound'] else ''}{s['ratio']}x | {x(s.get('ratio_R'))} | "
                     f"{x(s.get('ceiling_ratio'))} | {x(s.get('hindsight_ratio'))} | "
                     f"{x(s.get('random_with_default_pruner_ratio'))} |")
    lines += ["", f"Median over seeds: **{f['ratio']}x**.", "",
              f"Anytime: the default's best val RMSE minus random's at equal wall time, median over seeds, every "
              f"{ANYTIME_STEP:.0f} s from {ANYTIME_FROM:.0f} s to the model's shortest W (above 0: the default is behind):", "",
              "| model | budgets (s) | largest gap | behind at (s) |", "|---|---|---:|---|"]
    for model, a in f["anytime"].items():
        gaps = a["gaps"]
        span = f"{min(gaps, key=float)}-{max(gaps, key=float)}" if gaps else "-"
        lines.append(f"| {model} | {span} | {max(gaps.values()):+.4f} | "
                     f"{', '.join(f'{b:g}' for b in a['behind']) or 'never'} |" if gaps else f"| {model} | - | - | - |")
    lines += ["", f"![best val RMSE so far](docs/{f['png']})"]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

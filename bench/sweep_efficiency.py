"""Section sweep_efficiency: how much sooner the default search (its sampler and pruner) finds
what random search without pruning finds, per model of the default sweep, over several seeds.

For each model and seed, two arms run mfexp's own worker loop in fresh processes, side by side
with one core (one MXNet/OpenMP thread) each, so that both see the same machine, on u1 with the default sweep's space, epochs and early stopping, and no reference trial
(a tuned starting point would measure earlier tuning, not the search):

1. random search without pruning, for a wall-time budget B: R = the best val RMSE it reached, and
   t_random = when it first reached it;
2. the default sampler and pruner (conf/sweep/default.yaml), same space, data, seed and budget B:
   t_default = when it first reached val RMSE <= R (not reached within B: the ratio is at most
   t_random / B, and B stands in for t_default in the sums, so they are upper bounds).

ratio = t_random / t_default per model and seed; the section's figure is, per seed,
sum(t_random) / sum(t_default) over the models, and its median over the seeds. Also each arm's best
val RMSE at equal wall time (B), and the curves (best so far against seconds) as a PNG.
Every epoch's val RMSE is time-stamped as the objective reports it to Optuna; time counts from the
start of the worker loop (the data load and imports included, the same for both arms).

Budget 180 s: at 60 s random search's best came within its first few trials, and pruning's ceiling
(below) was 1.9x, so no pruner could reach the 3x target there; at 180 s it was 3.5x over the six
models before autorec, 2.8x with it (autorec's 180 s hold 4-5 trials, its best among the first).
The figures are also cut at shorter budgets from the same runs (`budget_ratios`).

    python -m bench.sweep_efficiency [--quick] [--models biased fm] [--seeds 0 1 2] [--budget 180]
    python -m bench.sweep_efficiency --child ARM --model M --seed S --budget B [overrides...]
    python -m bench.sweep_efficiency --noise RESULT_JSON [--train-seeds 1 2 3] [--out OUT_JSON]

--noise: how much of R is the training seed's luck (every trial of a sweep trains with train.seed 0):
random search's best trial of each model and seed, redrawn from its sampler and seed, trained again
with seeds 0 (the recorded run), 1, 2, 3.
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
from typing import Optional, Sequence, Union

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
# the default sweep's models (conf/sweep/default.yaml); autorec's 180 s arms hold 4-5 of its trials
MODELS = ("plain", "mlp", "dropout", "biased", "svdpp", "fm", "autorec")
ARMS = {"default": [], "random": ["sweep.sampler=random", "sweep.pruner=none", "sweep.start=sampler"]}
QUICK_OVERRIDES = ["train.epochs=2", "train.batch_size=choice(512)"]
PNG = "sweep_efficiency.png"
NEAR = 0.001  # the looser bar reported beside the target's: within this much val RMSE of R


def child(arm: str, model: str, seed: int, budget: float, extra: Sequence[str], epochs: Optional[int] = None) -> dict:
    name = f"eff-{arm}-{model}-{seed}"
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(name)
    plan = build_plan([*_arm_args(arm, model, seed, budget, extra), f"sweep.name={name}",
                       f"sweep.root={common.sweep_root(name)}"])
    reports: list[tuple[float, int, int, float]] = []
    start, spent = 0.0, False

    def clock() -> float:  # the worker loop's: past its deadline once the budget is spent
        return float("inf") if spent else time.time()

    def stamped(trial, epoch_report) -> None:
        nonlocal spent
        now = time.perf_counter() - start
        if now > budget or (epochs is not None and len(reports) >= epochs):  # the budget is spent: the trial
            spent = True  # running at its end stops there, and no other starts
            raise optuna.TrialPruned("the bench's budget is spent")
        reports.append((now, trial.number, epoch_report.epoch, epoch_report.val_rmse))

    studies = prepare(plan)
    start, started_at = time.perf_counter(), time.time()
    run_workers(plan, None, Hooks(on_report=stamped, clock=clock) if plan.sweep.n_workers == 1 else None)
    wall = time.perf_counter() - start
    if plan.sweep.n_workers > 1:  # the workers are processes of their own, which the stamps above do not reach
        reports = tracked_reports(plan.experiment, started_at, budget)
    trials = studies[model].get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"arm": arm, "model": model, "seed": seed, "sampler": plan.sweep.sampler, "pruner": plan.sweep.pruner,
            "wall_s": round(wall, 2), "trials": len(trials), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "epochs_trained": len(reports),
            "params": [t.params for t in sorted(trials, key=lambda t: t.number)],
            "reports": [[round(t, 2), n, e, round(v, 5)] for t, n, e, v in reports]}


def tracked_reports(experiment: str, started_at: float, budget: float) -> list[tuple[float, int, int, float]]:
    """Every trial's val RMSE per epoch from the MLflow store (the trial runs' metric history), stamped in
    seconds since `started_at`, those within `budget` only, in time order: an arm's reports when several
    workers ran it (each a process that logs its own epochs; the sweep's timeout stops new trials at the
    budget, and the epochs the last ones ran after it do not count)."""
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


def _arm_args(arm: str, model: str, seed: int, budget: float, extra: Sequence[str]) -> list[str]:
    """An arm's sweep overrides (its sweep.name and sweep.root aside)."""
    # sweep.population=1: both arms one trial at a time, as the recorded figures were measured (a population
    # changes how the default arm samples; re-measuring with populations is the search-efficiency issue's)
    return [f"sweep.models=[{model}]", "sweep.n_trials=100000", f"sweep.timeout={budget}", f"sweep.seed={seed}",
            "sweep.enqueue_tutorial=false", "sweep.ensemble=false", "sweep.population=1",
            f"sweep.model_trials={{{model}:100000}}",  # over the default sweep's own budget for the model
            *ARMS[arm], *extra]


def _random_plan(model: str, seed: int, extra: Sequence[str]):
    """The random arm's plan, to draw and train from (it opens no storage)."""
    return build_plan(_arm_args("random", model, seed, 1, extra))


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
    epochs: at most this many epochs, for a trial whose run the arm's budget cut short."""
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


def _spawn(args: Sequence[str]) -> subprocess.Popen:
    """`python -m bench.sweep_efficiency ARGS` in the scratch folder, one MXNet/OpenMP thread."""
    return subprocess.Popen([sys.executable, "-m", "bench.sweep_efficiency", *args], env=common.child_env(threads=1),
                            cwd=common.scratch(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(proc: subprocess.Popen, what: str) -> dict:
    """A child's result (its last JSON line); its output's tail in the error if it failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join((out + err).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
    return common.last_json_line(out)


def noise(path: str, out: Optional[str], train_seeds: Sequence[int], models: Sequence[str],
          seeds: Sequence[int]) -> int:
    """How much of R is its training seed's luck: random search's best trial of each model and seed
    (from an earlier result) trained again with train.seed 0 (the recorded run) and `train_seeds`, two
    at a time, one thread each. The figures go into that result (or --out) as `noise`; a later
    --reanalyse of it keeps them."""
    result = load_result(path)
    f = result["figures"]
    todo = []
    for r in f["rows"]:
        if r["R"] is None or r["model"] not in models or r["seed"] not in seeds:
            continue
        reports = f["curves"][r["model"]][f"random:{r['seed']}"]
        trial = next(n for _, n, _, v in reports if v <= r["R"] + 1e-12)
        todo.append((r["model"], r["seed"], trial, r["R"], budget_cut(reports, trial)))
    found = []
    for i in range(0, len(todo), 2):
        procs = [(job, _spawn(["--child", "retrain", "--model", job[0], "--seed", str(job[1]), "--trial", str(job[2]),
                               *(["--epochs-cap", str(job[4])] if job[4] else []),
                               "--train-seeds", "0", *map(str, train_seeds),
                               "--", *f.get("overrides", [])]))  # "--": the overrides are not more seeds
                 for job in todo[i:i + 2]]
        for (model, seed, trial, R, _), proc in procs:
            got = _collect(proc, f"retraining {model} seed {seed} trial {trial}")
            got["R"] = R
            found.append(got)
            common.say(SECTION, f"{model} seed {seed}: random's best (trial {trial}, R {R}) retrained: "
                                + ", ".join(f"seed {x['train_seed']} {x['val_rmse']}" for x in got["runs"]))
    redone = {(n["model"], n["seed"]) for n in found}  # rows of other models and seeds are kept
    order = {(r["model"], r["seed"]): i for i, r in enumerate(f["rows"])}  # the rows' order, as the table shows them
    f["noise"] = sorted([n for n in f.get("noise", []) if (n["model"], n["seed"]) not in redone] + found,
                        key=lambda n: order[(n["model"], n["seed"])])
    result["notes"] = [n for n in result.get("notes", []) if not n.startswith("Seed noise:")] + [
        f"Seed noise: `python -m bench.sweep_efficiency --noise {path} --train-seeds "
        f"{' '.join(map(str, train_seeds))}` ({time.strftime('%Y-%m-%d')})."]
    with open(out or path, "w") as fh:
        json.dump(result, fh, indent=1)
    common.say(SECTION, f"noise figures written to {out or path}")
    return 0


def budget_cut(reports: list, trial: int) -> Optional[int]:
    """The epochs `trial` ran if the arm's budget may have cut it short (it is the arm's last trial):
    retrained with more, it would reach what the recorded run never had the time to. None otherwise."""
    last = max(n for _, n, _, _ in reports)
    return max(e for _, n, e, _ in reports if n == trial) if trial == last else None


def seed_sd(noise_rows: list[dict]) -> dict[str, float]:
    """Per model, the median over its retrained trials of the val RMSE's sd over the training seeds."""
    out = {}
    for model in dict.fromkeys(n["model"] for n in noise_rows):
        sd = noise_summary([n for n in noise_rows if n["model"] == model])["median_sd"]
        if sd is not None:
            out[model] = sd
    return out


def noise_summary(noise_rows: list[dict], tol: float = NEAR) -> dict:
    """What the retrained best trials say: whether seed 0 repeated the recorded R, and how often
    another training seed of random's own best configuration reaches R (and R + tol)."""
    others = [(n["R"], x["val_rmse"]) for n in noise_rows for x in n["runs"] if x["train_seed"] != 0]
    repeats = [abs(x["val_rmse"] - n["R"]) for n in noise_rows for x in n["runs"] if x["train_seed"] == 0]
    spreads = [statistics.stdev(x["val_rmse"] for x in n["runs"]) for n in noise_rows if len(n["runs"]) > 1]
    return {"retrained": len(others), "reach_R": sum(v <= R + 1e-12 for R, v in others),
            "reach_near": sum(v <= R + tol + 1e-12 for R, v in others),
            "mean_above_R": round(sum(v - R for R, v in others) / len(others), 5) if others else None,
            "median_sd": round(common.median(spreads), 5) if spreads else None,
            "max_repeat_diff": round(max(repeats), 5) if repeats else None}


def first_reach(reports: list, target: float) -> Optional[float]:
    """Seconds at which val RMSE first came to `target` or below (None: never)."""
    return next((t for t, _, _, v in reports if v <= target + 1e-12), None)


def best_by(reports: list, seconds: float) -> Optional[float]:
    return min((v for t, _, _, v in reports if t <= seconds), default=None)


def compare(rnd: dict, dft: dict, budget: float) -> dict:
    """The figures of one model and seed from its two arms' reports."""
    R = best_by(rnd["reports"], float("inf"))
    t_random = first_reach(rnd["reports"], R) if R is not None else None
    t_default = first_reach(dft["reports"], R) if R is not None else None
    # the same in epochs trained (a load-independent check of the seconds)
    e_random = next((i + 1 for i, r in enumerate(rnd["reports"]) if r[3] <= R + 1e-12), None) if R else None
    e_default = next((i + 1 for i, r in enumerate(dft["reports"]) if r[3] <= R + 1e-12), None) if R else None
    ratio = bound = None
    if t_random is not None:
        if t_default is not None:
            ratio = t_random / max(t_default, 1e-9)
        else:
            bound = t_random / budget  # the default would need more than the budget: the ratio is below this
    return {"model": rnd["model"], "seed": rnd["seed"], "R": R, "t_random_s": t_random, "t_default_s": t_default,
            "epochs_random": e_random, "epochs_default": e_default,
            "ratio": None if ratio is None else round(ratio, 3), "ratio_below": None if bound is None else round(bound, 3),
            "best_random_at_budget": best_by(rnd["reports"], budget),
            "best_default_at_budget": best_by(dft["reports"], budget),
            "random": {k: v for k, v in rnd.items() if k != "reports"},
            "default": {k: v for k, v in dft.items() if k != "reports"}}


def trial_spans(reports: list) -> list[list[tuple[float, int, float]]]:
    """Per trial, in the order they ran: [(seconds since the trial started, epoch, val RMSE)]. One worker
    runs its trials one after another, so a trial starts when the one before it last reported (its
    start-up, and the end of the trial before, count as its own)."""
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
    reach `target`) and tried it first, alone: that trial's own time to `target`. A bound on the
    sampler's side beside pruning_ceiling's: a search gets past it only with a configuration that
    reaches R sooner than random search's winner does."""
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


def near_ratios(rows: list[dict], curves: dict, budget: float,
                tol: Union[float, dict[str, float]] = NEAR) -> dict[int, Optional[float]]:
    """Per seed, the section's ratio with the bar at R + `tol` instead of R: random's time to come
    within `tol` of its own best over the default's, summed over the models. A looser reading beside
    the target's: an arm that stops 0.0001 short of R counts as the whole budget there. `tol` may be
    per model ({model: tol}; models without one are left out)."""
    bar = (lambda m: tol.get(m)) if isinstance(tol, dict) else (lambda m: tol)
    derived = [{"seed": r["seed"],
                "t_random_s": first_reach(curves[r["model"]][("random", r["seed"])], r["R"] + bar(r["model"])),
                "t_default_s": first_reach(curves[r["model"]][("default", r["seed"])], r["R"] + bar(r["model"]))}
               for r in rows if r["R"] is not None and bar(r["model"]) is not None]
    return {seed: v["ratio"] for seed, v in summed(derived, budget).items()}


def budget_ratios(rows: list[dict], curves: dict, budget: float, steps: int = 6) -> dict[float, dict[int, dict]]:
    """Per shorter budget b = B/steps, 2B/steps, ..., B: the section's ratio per seed had both arms been
    stopped at b, from the same runs (R_b = random's best within b). Says whether the default search
    gains on random search as the budget grows, without running again."""
    out = {}
    for i in range(1, steps + 1):
        b = round(budget * i / steps, 2)
        derived = []
        for r in rows:
            R = best_by(curves[r["model"]][("random", r["seed"])], b)
            if R is not None:
                t_default = first_reach(curves[r["model"]][("default", r["seed"])], R)
                derived.append({"seed": r["seed"], "t_random_s": first_reach(curves[r["model"]][("random", r["seed"])], R),
                                "t_default_s": t_default if t_default is not None and t_default <= b else None})
        out[b] = {seed: {"ratio": v["ratio"], "upper_bound": v["upper_bound"]} for seed, v in summed(derived, b).items()}
    return out


def default_pruner(overrides: Sequence[str], model: str):
    """The default arm's pruner for `model`, as the sweep would make it (conf/sweep/default.yaml +
    overrides; its horizon is the model's epoch budget)."""
    plan = build_plan([f"sweep.models=[{model}]", *overrides])
    return lambda: make_pruner(plan.sweep, epoch_budget(plan, model))


def _ratios_as_if(rows: list[dict], key: str, budget: float, seeds) -> dict[int, Optional[float]]:
    """Per seed, the section's ratio had the default arm taken each row's `key` seconds (a bound or
    a replay derived from random search's curves; rows without R have none and are left out)."""
    per = summed([{**r, "t_default_s": r[key]} for r in rows if key in r], budget)
    return {seed: per.get(seed, {}).get("ratio") for seed in seeds}


def summed(rows: list[dict], budget: float) -> dict[int, dict]:
    """Per seed: sum of t_random over the models / sum of t_default (the budget where not reached)."""
    out = {}
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed and r["t_random_s"] is not None]
        t_r = sum(r["t_random_s"] for r in mine)
        t_d = sum(r["t_default_s"] if r["t_default_s"] is not None else budget for r in mine)
        out[seed] = {"t_random_s": round(t_r, 2), "t_default_s": round(t_d, 2),
                     "ratio": round(t_r / t_d, 3) if t_d > 0 else None,
                     "upper_bound": any(r["t_default_s"] is None for r in mine)}
    return out


def plot(curves: dict, budget: float, path) -> None:
    """Best val RMSE so far against seconds, one panel per model, one line per arm and seed."""
    matplotlib.use("Agg")

    models = list(curves)
    cols = min(3, len(models))
    rows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {"random": "tab:blue", "default": "tab:orange"}
    for ax, model in zip(axes.flat, models):
        lows = []
        for (arm, seed), reports in sorted(curves[model].items()):
            xs, ys, best = [], [], float("inf")
            for t, _, _, v in reports:
                if v < best:
                    best = v
                    xs.append(t)
                    ys.append(v)
            if xs:
                xs.append(budget), ys.append(best)
                lows.append(best)
                ax.step(xs, ys, where="post", color=colors[arm], alpha=0.8, lw=1.2,
                        label=f"{arm}" if seed == min(s for a, s in curves[model] if a == arm) else None)
        if lows:
            ax.set_ylim(min(lows) - 0.005, min(lows) + 0.06)
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
    parser.add_argument("--budget", type=float, default=180.0, help="wall seconds per arm, model and seed")
    parser.add_argument("--budget-epochs", type=int, help="development: a budget of epochs trained per arm "
                                                           "(load-independent) on top of --budget")
    parser.add_argument("--default-arm", action="append", default=[],
                        help="development: an override for the default arm only (a lever to try)")
    parser.add_argument("--random-from", help="an earlier result JSON of this section: reuse its random arms "
                                                "(same models, seeds and budget) and run only the default arms")
    parser.add_argument("--reanalyse", metavar="RESULT_JSON", nargs="+",
                        help="run nothing: re-derive the figures of earlier results of this section (their rows "
                             "and curves; several with the same budget are merged) with this version's analysis, "
                             "into --out or bench/results")
    parser.add_argument("--noise", metavar="RESULT_JSON",
                        help="run no arms: train random search's best trial of each model and seed of that result "
                             "again with train.seed 0 and --train-seeds; the figures go into it (or --out)")
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--trial", type=int, help="(--child retrain) the random arm's trial number")
    parser.add_argument("--epochs-cap", type=int, help="(--child retrain) train at most this many epochs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child == "retrain":
        print(json.dumps(retrain(args.model, args.seed, args.trial, args.train_seeds, args.overrides, args.epochs_cap)))
        return 0
    if args.noise:
        return noise(args.noise, args.out, args.train_seeds, args.models, args.seeds)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.seed, args.budget, args.overrides, args.budget_epochs)))
        return 0
    started = time.perf_counter()
    if args.reanalyse:
        return reanalyse(args.reanalyse, args.out, args.default_arm, started)
    models, seeds, budget, extra = ((["biased"], [0], 15.0, QUICK_OVERRIDES) if args.quick else
                                    (args.models, args.seeds, args.budget, args.overrides))
    common.scratch()
    common.mlflow_store("ready")  # the migrated template, made once here: two children at once would race
    rows, curves = [], {}
    earlier = {}
    if args.random_from:
        old = json.loads(open(args.random_from).read())["figures"]
        earlier = {(r["model"], r["seed"]): {**r["random"], "reports": old["curves"][r["model"]][f"random:{r['seed']}"]}
                   for r in old["rows"] if old["budget_s"] == budget}
    for model in models:
        for seed in seeds:
            arms = {}
            if (model, seed) in earlier:
                arms["random"] = earlier[(model, seed)]
                curves.setdefault(model, {})[("random", seed)] = arms["random"]["reports"]
            todo = [a for a in ("random", "default") if a not in arms]
            # side by side, one core each: both arms see the same machine, whatever else runs on it
            procs = {arm: _spawn(["--child", arm, "--model", model, "--seed", str(seed), "--budget", str(budget),
                                  *extra, *(args.default_arm if arm == "default" else []),
                                  *(["--budget-epochs", str(args.budget_epochs)] if args.budget_epochs else [])])
                     for arm in todo}
            for arm, proc in procs.items():
                arms[arm] = _collect(proc, f"{arm} arm of {model} seed {seed}")
                curves.setdefault(model, {})[(arm, seed)] = arms[arm]["reports"]
            row = compare(arms["random"], arms["default"], budget)
            rows.append(row)
            reached = (f"default reached it after {row['t_default_s']:.1f}s: {row['ratio']:.2f}x"
                       if row["t_default_s"] is not None else
                       f"default never reached it in {budget:.0f}s (ratio < {row['ratio_below']})")
            common.say(SECTION, f"{model} seed {seed}: random best {row['R']} after {row['t_random_s']}s "
                                f"({arms['random']['trials']} trials); {reached}; at {budget:.0f}s random "
                                f"{row['best_random_at_budget']}, default {row['best_default_at_budget']} "
                                f"({arms['default']['trials']} trials, {arms['default']['pruned']} pruned)")
    return finish(rows, curves, models, seeds, budget, extra, args.default_arm, started, args.quick, args.out,
                  argv=list(sys.argv[1:] if argv is None else argv))


def finish(rows: list[dict], curves: dict, models: Sequence[str], seeds: Sequence[int], budget: float,
           extra: Sequence[str], default_arm: Sequence[str], started: float, quick: bool, out,
           reanalysed: Optional[dict] = None, argv: Optional[Sequence[str]] = None,
           noise_rows: Optional[list] = None) -> int:
    """The section's figures from its rows and curves: ratios per seed, what pruning alone could
    gain on random search's own draws, the PNG, the targets; the result file."""
    per_seed = summed(rows, budget)
    ratios = [s["ratio"] for s in per_seed.values() if s["ratio"] is not None]
    ratio = common.median(ratios)
    # what pruning alone can do with random search's draws (TPE's first trials are those same draws)
    pruners = {m: default_pruner([*extra, *default_arm], m) for m in dict.fromkeys(r["model"] for r in rows)}
    for row in rows:
        reports = curves[row["model"]][("random", row["seed"])]
        if row["R"] is not None:
            row["t_ceiling_s"] = _round(pruning_ceiling(reports, row["R"]))
            row["t_hindsight_s"] = _round(hindsight(reports, row["R"]))
            row["t_random_default_pruner_s"] = _round(replay(reports, row["R"], pruners[row["model"]]))
    ceiling, known, pruned_random = (_ratios_as_if(rows, key, budget, per_seed)
                                     for key in ("t_ceiling_s", "t_hindsight_s", "t_random_default_pruner_s"))
    near = near_ratios(rows, curves, budget)
    for seed, s in per_seed.items():
        s["ceiling_ratio"] = ceiling[seed]
        s["hindsight_ratio"] = known[seed]
        s["random_with_default_pruner_ratio"] = pruned_random[seed]
        s["near_ratio"] = near.get(seed)
    near_median = common.median([v for v in near.values() if v is not None])
    by_budget = budget_ratios(rows, curves, budget)
    budget_medians = {b: common.median([v["ratio"] for v in per.values() if v["ratio"] is not None])
                      for b, per in by_budget.items()}
    half = min(budget_medians, key=lambda b: abs(b - budget / 2))
    png = (common.RESULTS / PNG) if not out else (os.path.dirname(os.path.abspath(out)) + "/" + PNG)
    os.makedirs(os.path.dirname(str(png)), exist_ok=True)
    plot(curves, budget, png)
    if not quick and not out:  # the figure BENCHMARKS.md shows, kept in git (bench/results is not)

        shutil.copyfile(png, common.REPO / "docs" / PNG)
    worse = [m for m in models
             if (common.median([r["best_default_at_budget"] - r["best_random_at_budget"] for r in rows
                                if r["model"] == m and None not in (r["best_default_at_budget"],
                                                                    r["best_random_at_budget"])]) or 0) > 0]
    bounded = any(s["upper_bound"] for s in per_seed.values())
    ceiling_median = common.median([c for c in ceiling.values() if c is not None])
    known_median = common.median([c for c in known.values() if c is not None])
    targets = [
        common.target("time to random search's best: random, no pruning / default search, summed over the models, "
                      "median over seeds", ">= 3x", ratio, "x", common.at_least(ratio, 3.0),
                      "per seed: " + ", ".join(f"{s}: {v['ratio']}x" for s, v in per_seed.items())
                      + (" (upper bounds: the default missed R in some model)" if bounded else "")
                      + f"; the most any pruner could make of random's draws: {ceiling_median}x"),
        common.target("models where the default search's best val RMSE at equal wall time is above random's "
                      "(median over seeds)", "0", len(worse), "models", len(worse) == 0,
                      ", ".join(worse) if worse else ""),
        common.target("pruning's ceiling: the same ratio had every trial of random search that misses R stopped at its "
                      "first epoch (a pruner that knew the future), median over seeds", "report", ceiling_median, "x",
                      None, "per seed: " + ", ".join(f"{s}: {c}x" for s, c in ceiling.items())
                      + "; random search with the default pruner (replayed): "
                      + ", ".join(f"{s}: {v['random_with_default_pruner_ratio']}x" for s, v in per_seed.items())),
        common.target("hindsight: the same ratio for a search that knew random search's winner and tried it first "
                      "(its own time to R, nothing before it), median over seeds", "report", known_median, "x", None,
                      "per seed: " + ", ".join(f"{s}: {c}x" for s, c in known.items())
                      + "; beyond it only a configuration that reaches R sooner than random's winner"),
        common.target(f"the same ratio to within {NEAR} of R (a looser bar, beside the target's), median over seeds",
                      "report", near_median, "x", None,
                      "per seed: " + ", ".join(f"{s}: {v}x" for s, v in near.items())),
        common.target(f"the same ratio had both arms stopped at {half:g} s (cut from the same runs), median over seeds",
                      "report", budget_medians[half], "x", None,
                      "at each budget: " + ", ".join(f"{b:g} s: {m}x" for b, m in budget_medians.items()))]
    if noise_rows:
        ns, sd = noise_summary(noise_rows), seed_sd(noise_rows)
        by_sd = near_ratios(rows, curves, budget, tol=sd)
        targets.append(common.target(
            "seed luck in R: random search's own best configuration, trained again with another train.seed, "
            "reaches R", "report", ns["reach_R"], f"of {ns['retrained']} runs", None,
            f"within {NEAR} of R: {ns['reach_near']}; on average {ns['mean_above_R']} above R; median sd over "
            f"the seeds {ns['median_sd']}; seed 0 repeats the recorded run to {ns['max_repeat_diff']}"))
        targets.append(common.target(
            "the same ratio to within one seed sd of R (each model's median sd over the training seeds), median "
            "over seeds", "report", common.median([v for v in by_sd.values() if v is not None]), "x", None,
            "per seed: " + ", ".join(f"{s}: {v}x" for s, v in by_sd.items()) + "; sd per model: "
            + ", ".join(f"{m} {v}" for m, v in sd.items())))
    default_sampler = rows[0]["default"] if rows else {}
    notes = [f"Budget B = {budget:.0f} s of wall time per arm, model and seed; seeds {list(seeds)}; the two arms run side "
             "by side, one process and one thread each; MLflow "
             "tracking on (a ready sqlite store); the default sweep's space, train.epochs and patience; no "
             "reference trial in either arm.",
             f"The default arm: sampler {default_sampler.get('sampler')}, pruner {default_sampler.get('pruner')} "
             "(conf/sweep/default.yaml, conf/sweep.yaml, mfexp/sweep/search.py).",
             "Pruning's ceiling and the replay come from random search's recorded curves (bench/sweep_efficiency.py "
             "pruning_ceiling, replay): its trials in the order they ran, each epoch's duration as measured. TPE's "
             "first 5 trials are random search's own draws (same seed); pruning alone, on random's draws, cannot take "
             "the ratio past the ceiling: beyond it only a sampler that proposes better than random can go.",
             f"Curves: bench/results/{PNG}; every epoch's report is in the JSON (`curves`)."] + \
        ([f"Run as `python -m bench.sweep_efficiency {' '.join(argv)}`" + (
            " (the random arms reused from that earlier run, so each default arm ran beside another default arm or "
            "alone, not beside its random arm)" if "--random-from" in argv else "") + "."] if argv else []) + \
        ["The levers tried on the default search, each with its figure: BENCHMARKS.md, Search levers."] + \
        ([f"quick overrides: {' '.join(extra)}"] if quick else []) + \
        ([f"Figures re-derived (`--reanalyse`) from the run(s) `{reanalysed['command']}` (finished "
          f"{reanalysed['finished']}, {reanalysed['wall_s']:.0f} s of wall time summed over them), whose rows and "
          "curves are kept as they were."] if reanalysed else [])
    common.write_result(out or common.RESULTS / f"{SECTION}.json", SECTION, quick, started,
                        {"models": list(models), "seeds": list(seeds), "budget_s": budget,
                         "overrides": list(extra), "argv": list(argv or []), "rows": rows,
                         "per_seed": {str(k): v for k, v in per_seed.items()}, "ratio": ratio,
                         "ceiling_ratio": ceiling_median, "hindsight_ratio": known_median, "near": NEAR, "near_ratio": near_median,
                         "budget_ratios": {f"{b:g}": {str(s): v for s, v in per.items()} for b, per in by_budget.items()},
                         "png": PNG, **({"noise": noise_rows} if noise_rows else {}),
                         "curves": {m: {f"{a}:{s}": r for (a, s), r in c.items()}
                                    for m, c in curves.items()}},
                        targets, notes, run=reanalysed)
    return 0


def reanalyse(paths: Sequence[str], out, default_arm: Sequence[str], started: float) -> int:
    """Re-derive the figures of earlier results (several: runs of other models or seeds, same budget,
    merged) with this version's analysis."""
    olds = [load_result(path) for path in paths]
    if len({old["figures"]["budget_s"] for old in olds}) > 1:
        raise SystemExit(f"{', '.join(paths)}: their budgets differ; only runs with the same budget merge")
    rows, curves, models, seeds, noise_rows = [], {}, [], [], []
    for old in olds:
        f = old["figures"]
        noise_rows += f.get("noise", [])
        for m, c in f["curves"].items():
            curves.setdefault(m, {}).update({(k.split(":")[0], int(k.split(":")[1])): r for k, r in c.items()})
        rows += [compare({**r["random"], "reports": curves[r["model"]][("random", r["seed"])]},
                         {**r["default"], "reports": curves[r["model"]][("default", r["seed"])]}, f["budget_s"])
                 for r in f["rows"]]
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
    return finish(rows, curves, models, sorted(seeds), first["figures"]["budget_s"],
                  first["figures"].get("overrides", []), default_arm, started, first.get("quick", False), out,
                  reanalysed=run, noise_rows=noise_rows)


def load_result(path: str) -> dict:
    """An earlier result of this section with rows and curves; a clear exit for anything else."""
    try:
        result = json.loads(open(path).read())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{path}: cannot read it as a result of the {SECTION} section ({err})") from None
    if not isinstance(result, dict) or result.get("section") != SECTION or "rows" not in result.get("figures", {}):
        raise SystemExit(f"{path}: not a result of the {SECTION} section with rows and curves")
    return result


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _v(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(result: dict) -> list[str]:
    f = result["figures"]
    if "rows" not in f:  # a result of the earlier, one-model form of this section
        return ["(an earlier form of this section's result: re-run python -m bench.sweep_efficiency)"]
    lines = [f"Budget {f['budget_s']:.0f} s per arm, model and seed; R = random search's best val RMSE "
             "within it; t = seconds until an arm first reached R; ceiling = the same for random search's trials "
             "had each one that misses R stopped at its first epoch (no pruner does better on those draws); "
             "hindsight = random's winner tried first, alone (its own time to R).", "",
             "| model | seed | R (random's best) | t random (s) | t default (s) | ratio | t ceiling (s) | t hindsight (s) | "
             "best at B: random | best at B: default | default trials (pruned) | random trials |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in f["rows"]:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else (
            f"< {r['ratio_below']:.2f}x" if r["ratio_below"] is not None else "-")
        lines.append(f"| {r['model']} | {r['seed']} | {_v(r['R'])} | {_s(r['t_random_s'])} | "
                     f"{_s(r['t_default_s']) if r['t_default_s'] is not None else 'not reached'} | {ratio} | "
                     f"{_s(r.get('t_ceiling_s'))} | {_s(r.get('t_hindsight_s'))} | "
                     f"{_v(r['best_random_at_budget'])} | {_v(r['best_default_at_budget'])} | "
                     f"{r['default']['trials']} ({r['default']['pruned']}) | {r['random']['trials']} |")
    near = f.get("near", NEAR)
    lines += ["", "| seed | sum t random (s) | sum t default (s) | ratio | pruning's ceiling | hindsight | "
              f"random + default pruner (replayed) | ratio to within {near} of R |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, s in f["per_seed"].items():
        ceiling, replayed, loose = s.get("ceiling_ratio"), s.get("random_with_default_pruner_ratio"), s.get("near_ratio")
        known = s.get("hindsight_ratio")
        lines.append(f"| {seed} | {s['t_random_s']:.1f} | {s['t_default_s']:.1f} | "
                     f"{'<= ' if s['upper_bound'] else ''}{s['ratio']}x | "
                     f"{'-' if ceiling is None else f'{ceiling}x'} | {'-' if known is None else f'{known}x'} | "
                     f"{'-' if replayed is None else f'{replayed}x'} | "
                     f"{'-' if loose is None else f'{loose}x'} |")
    lines += ["", f"Median over seeds: **{f['ratio']}x**."]
    if f.get("budget_ratios"):
        seeds = sorted({s for per in f["budget_ratios"].values() for s in per}, key=int)
        lines += ["", "The same ratio had both arms been stopped sooner (cut from the same runs: R is random's best "
                  "within that budget):", "", "| budget (s) | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
                  "|---:|" + "---:|" * (len(seeds) + 1)]
        for b, per in f["budget_ratios"].items():
            cells = [("<= " if per[s]["upper_bound"] else "") + f"{per[s]['ratio']}x" if s in per and per[s]["ratio"]
                     is not None else "-" for s in seeds]
            lines.append(f"| {b} | " + " | ".join(cells) + " | "
                         + f"{common.median([v['ratio'] for v in per.values() if v['ratio'] is not None])}x |")
    lines += ["", f"![best val RMSE so far](docs/{f['png']})"]
    if f.get("noise"):
        seeds = sorted({x["train_seed"] for n in f["noise"] for x in n["runs"]})
        lines += ["", "Seed luck in R: random search's best trial of each model and seed trained again, untracked, with "
                  "each train.seed (every trial of a sweep trains with seed 0: seed 0 repeats it; a trial the arm's "
                  "budget cut is retrained for the epochs it had):", "",
                  "| model | seed | trial | R | " + " | ".join(f"train.seed {s}" for s in seeds)
                  + " | other seeds at or below R |",
                  "|---|---:|---:|---:|" + "---:|" * len(seeds) + "---:|"]
        for n in f["noise"]:
            by = {x["train_seed"]: x["val_rmse"] for x in n["runs"]}
            others = [v for s, v in by.items() if s != 0]
            trial = f"{n['trial']}" + (f" (cut at epoch {n['epochs_cap']})" if n.get("epochs_cap") else "")
            lines.append(f"| {n['model']} | {n['seed']} | {trial} | {_v(n['R'])} | "
                         + " | ".join(_v(by.get(s)) for s in seeds)
                         + f" | {sum(v <= n['R'] + 1e-12 for v in others)} of {len(others)} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

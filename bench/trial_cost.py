"""Section trial_cost: trials per hour of one model, trained one at a time (sweep.population=1)
against a population (sweep.population=auto: several trials as one network), side by side in
one process on u1 with its holdout, at the same code.

Each model trains at its search space's median configuration (SearchSpace.center(), what a
default sweep's space is centred on); a population's members spread train.lr and train.reg
around it (x0.5 .. x2), so that they are P different trials. Also the tutorial's regime (SGD,
momentum 0.9, dense wd 1e-4, batch 64: the reference trials'), where each member's val RMSE is
compared with its lone run's.

    python -m bench.trial_cost [--quick]
"""
from __future__ import annotations

import copy
import time
from typing import Optional, Sequence

import mxnet as mx

from bench import common
from mfexp.data import load_dataset
from mfexp.models.base import TUTORIAL_TRAIN
from mfexp.population import Member, auto_size, fit_population
from mfexp.sweep.objective import apply_params
from mfexp.sweep.plan import build_plan
from mfexp.train import build_net, fit

SECTION = "trial_cost"
MODELS = ("plain", "biased", "mlp", "dropout")  # the models that hold populations (Recommender.population)
OTHERS = ("svdpp", "fm", "autorec")  # one trial at a time: listed, not timed
TARGETS = {"plain": 10.0, "biased": 10.0, "mlp": 5.0, "dropout": 5.0}
SIZE = 16  # the population measured: auto's size on the CPU (auto_size's choice is shown beside it)
TUTORIAL_TARGET = 3.0


def _median_config(model: str, epochs: int):
    plan = build_plan([f"sweep.models=[{model}]", "tracking.enabled=false", "train.device=cpu"])
    space = plan.spaces[model]
    cfg = apply_params(plan.bases[model], {**space.fixed, **space.center(), "train.epochs": epochs,
                                           "train.patience": None})
    return cfg


def _tutorial_config(model: str, epochs: int):
    cfg = _median_config(model, epochs)
    for key, value in {**TUTORIAL_TRAIN, "model.k": 64}.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _at_batch(cfg, batch: int):
    cfg.train.batch_size = batch
    return cfg


def _spread(cfg, n: int, vary_lr: bool = True) -> list:
    """n configurations around cfg, the first cfg itself. vary_lr: lr from x0.5 to x2 (log-spaced)
    and reg inversely; else reg (from 0 to 0.05) and init scale (x0.5 to x2), lr shared: such members
    train with MXNet's own fused optimizer (mfexp.population)."""
    out = []
    for j in range(n):
        c = copy.deepcopy(cfg)
        f = 2.0 ** (((j * 7) % n) / max(1, n - 1) * 2 - 1) if j else 1.0
        if vary_lr:
            c.train.lr, c.train.reg = cfg.train.lr * f, cfg.train.reg / f
        else:
            c.train.reg, c.train.init_scale = 0.05 * j / max(1, n - 1), cfg.train.init_scale * f
        out.append(c)
    return out


def _lone(cfgs, data) -> tuple[float, list[float]]:
    started, vals = time.perf_counter(), []
    for cfg in cfgs:
        net = build_net(cfg, data, mx.cpu())
        vals.append(fit(net, data, cfg.train, mx.cpu(), eval_test=False, final_test=False).best_val_rmse)
    return time.perf_counter() - started, vals


def _population(cfgs, data) -> tuple[float, list[float]]:
    started = time.perf_counter()
    members = fit_population([Member(c) for c in cfgs], data, mx.cpu())
    return time.perf_counter() - started, [m.result.best_val_rmse for m in members]


def measure(data, cfg, size: int, lone_trials: int, vary_lr: bool = True) -> dict:
    """Trials/hour alone (the first `lone_trials` of the population's configurations, one after the
    other) and as one population of `size`; the members' val RMSE against their lone runs'."""
    cfgs = _spread(cfg, size, vary_lr)
    _lone(cfgs[:1], data)  # warm-up: MXNet's first graph and memory
    t_lone, v_lone = _lone(cfgs[:lone_trials], data)
    t_pop, v_pop = _population(cfgs, data)
    per_hour_lone = 3600 * lone_trials / t_lone
    per_hour_pop = 3600 * size / t_pop
    return {"population": size, "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
            "optimizer": cfg.train.optimizer, "sparse_grad": cfg.train.sparse_grad,
            "lone_s_per_trial": round(t_lone / lone_trials, 3), "population_s": round(t_pop, 3),
            "trials_per_hour_lone": round(per_hour_lone), "trials_per_hour_population": round(per_hour_pop),
            "ratio": round(per_hour_pop / per_hour_lone, 2),
            "max_val_diff": max(abs(a - b) for a, b in zip(v_lone, v_pop[:lone_trials]))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = common.section_args(__doc__.splitlines()[0], argv)
    common.quiet_logs()
    started = time.perf_counter()

    data = load_dataset(_median_config("plain", 1).data)
    epochs = 1 if args.quick else 3
    rows, targets = [], []
    lone_trials = 1 if args.quick else 2
    regimes = [("space median", lambda m: _median_config(m, epochs), True, True),
               ("space median at batch 64", lambda m: _at_batch(_median_config(m, epochs), 64), True, False),
               ("tutorial (sgd, dense wd, batch 64), members differ in lr and reg",
                lambda m: _tutorial_config(m, epochs), True, True),
               ("tutorial, members differ in reg and init scale (lr shared: MXNet's own optimizer)",
                lambda m: _tutorial_config(m, epochs), False, True)]
    for label, make, vary_lr, judged in regimes:
        for model in MODELS:
            cfg = make(model)
            size = SIZE if not args.quick else 4
            row = {"model": model, "regime": label, "vary_lr": vary_lr, "auto": auto_size(cfg, 64),
                   **measure(data, cfg, size, lone_trials, vary_lr)}
            rows.append(row)
            common.say(SECTION, f"{model}, {label}: {row['ratio']}x ({row})")
            if not judged:
                continue
            goal = TUTORIAL_TARGET if label.startswith("tutorial") else TARGETS[model]
            targets.append(common.target(f"{model}, {label}: trials/hour, population auto vs 1", f">= {goal:g}x",
                                         row["ratio"], "x", common.at_least(row["ratio"], goal)))
    figures = {"train_ratings": len(data.train), "rows": rows, "one_at_a_time": list(OTHERS)}
    notes = ["trials/hour: the lone arm trains the population's first configurations one after the other "
             "(build, train, evaluate each epoch on the holdout), the population arm all of them at once; both "
             "include building the networks. max_val_diff: the largest difference between a member's best val "
             "RMSE and its lone run's (the tolerance tests/test_population.py states is 1e-4; dropout members "
             "draw other masks than a lone run, so theirs differ as another seed's would).",
             "auto: the size sweep.population=auto picks for that configuration on this machine (1: one at a time).",
             f"Models that train one trial at a time (no population support yet): {', '.join(OTHERS)}."]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        figures, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    fig = result["figures"]
    lines = [f"Trials per hour, one at a time against a population (u1 with its holdout, "
             f"{fig['train_ratings']:,} training ratings, CPU):", "",
             "| model | regime | population | auto | optimizer, batch | s per lone trial | population s | "
             "trials/h lone | trials/h population | ratio | max val diff |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in fig["rows"]:
        lines.append(f"| {r['model']} | {r['regime']} | {r['population']} | {r.get('auto', '')} | {r['optimizer']}, {r['batch_size']} | "
                     f"{r['lone_s_per_trial']:.2f} | {r['population_s']:.2f} | {r['trials_per_hour_lone']:,} | "
                     f"{r['trials_per_hour_population']:,} | {r['ratio']:.2f}x | {r['max_val_diff']:.1e} |")
    lines += ["", f"One trial at a time (no population support yet): {', '.join(fig['one_at_a_time'])}."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

"""Section sweep_efficiency: wall time until the default sweep first reaches val RMSE <= 0.93,
TPE + median pruning against random search without pruning, same budget and seed; trials/h.

The default sweep's space, epochs (20) and early stopping (patience 3) on ONE model, biased
(the only one of the four that reaches 0.93 on u1's holdout within a short budget; four models
would quadruple the section's time). Each arm runs mfexp's own worker loop in a fresh process
with the same sweep.seed, n_trials and sweep.timeout; every epoch's val RMSE is time-stamped
as the objective reports it to Optuna.

    python -m bench.sweep_efficiency [--quick]
    python -m bench.sweep_efficiency --child ARM --trials N --timeout S [overrides...]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Optional, Sequence

from bench import common

SECTION = "sweep_efficiency"
THRESHOLD = 0.93
MODEL = "biased"
ARMS = {"tpe+median": ["sweep.sampler=tpe", "sweep.pruner=median"],
        "random, no pruning": ["sweep.sampler=random", "sweep.pruner=none"]}
QUICK_OVERRIDES = ["train.epochs=2", "train.batch_size=choice(512)"]


def child(arm: str, n_trials: int, timeout: float, extra: Sequence[str]) -> dict:
    import mfexp.sweep.objective as objective
    from mfexp.sweep.__main__ import build_plan
    from mfexp.sweep.runner import prepare, run_workers

    name = "eff-" + "".join(c for c in arm if c.isalnum())
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(name)
    plan = build_plan([f"sweep.models=[{MODEL}]", f"sweep.n_trials={n_trials}", f"sweep.timeout={timeout}",
                       f"sweep.name={name}", f"sweep.root={common.sweep_root(name)}", "sweep.seed=0",
                       *ARMS[arm], *extra])
    reports: list[tuple[float, int, int, float]] = []
    report = objective.Objective._report
    start = 0.0

    def stamped(trial, tracker, epoch_report):
        reports.append((time.perf_counter() - start, trial.number, epoch_report.epoch, epoch_report.val_rmse))
        report(trial, tracker, epoch_report)

    objective.Objective._report = staticmethod(stamped)
    studies = prepare(plan)
    start = time.perf_counter()
    run_workers(plan, None)
    wall = time.perf_counter() - start
    trials = studies[MODEL].get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    hit = next((r for r in reports if r[3] <= THRESHOLD), None)
    best = min((r[3] for r in reports), default=None)
    return {"arm": arm, "wall_s": round(wall, 2), "trials": len(trials), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "epochs_trained": len(reports), "best_val_rmse": best,
            "time_to_target_s": round(hit[0], 2) if hit else None,
            "target_trial": hit[1] if hit else None, "target_epoch": hit[2] if hit else None,
            "trials_per_hour": round(len(trials) / wall * 3600, 1),
            "reports": [[round(t, 2), n, e, round(v, 5)] for t, n, e, v in reports]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--child", choices=list(ARMS))
    parser.add_argument("--trials", type=int, default=12, help="per arm (the default sweep's per-model budget)")
    parser.add_argument("--timeout", type=float, default=600.0, help="sweep.timeout per arm, seconds")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child:
        print(json.dumps(child(args.child, args.trials, args.timeout, args.overrides)))
        return 0
    started = time.perf_counter()
    n_trials, timeout, extra = (2, 20.0, QUICK_OVERRIDES) if args.quick else (args.trials, args.timeout, args.overrides)
    common.scratch()
    rows = []
    for arm in ARMS:
        _, proc = common.run_child(["-m", "bench.sweep_efficiency", "--child", arm, "--trials", str(n_trials),
                                    "--timeout", str(timeout), *extra])
        rows.append(common.last_json_line(proc.stdout))
        r = rows[-1]
        reached = f"reached {THRESHOLD} after {r['time_to_target_s']:.1f}s" if r["time_to_target_s"] is not None \
            else f"never reached {THRESHOLD} (best {r['best_val_rmse']})"
        common.say(SECTION, f"{arm}: {reached}; {r['trials']} trials in {r['wall_s']:.0f}s "
                            f"({r['trials_per_hour']:,.0f}/h, {r['pruned']} pruned)")
    tpe, rnd = rows
    ratio, note = None, ""
    if tpe["time_to_target_s"] is not None and rnd["time_to_target_s"] is not None:
        ratio = round(rnd["time_to_target_s"] / max(tpe["time_to_target_s"], 1e-9), 3)
    elif tpe["time_to_target_s"] is not None:
        ratio = round(rnd["wall_s"] / max(tpe["time_to_target_s"], 1e-9), 3)
        note = "random search never reached it: ratio is a lower bound (its whole wall time)"
    else:
        note = f"TPE + pruning did not reach {THRESHOLD} within the budget"
    targets = [common.target(f"time to val RMSE <= {THRESHOLD}: random, no pruning / TPE + pruning", ">= 3x", ratio,
                             "x", common.at_least(ratio, 3.0) if ratio is not None else None, note)]
    notes = [f"Model {MODEL} only; the default sweep's space, epochs and patience; {n_trials} trials and "
             f"sweep.timeout={timeout:.0f}s per arm, sweep.seed=0, one worker, MLflow tracking on (a ready "
             "sqlite store). Both arms start with the tutorial's enqueued configuration, as the default "
             "sweep does.", "Time is counted from the start of the worker loop (after the studies exist), "
             "data loading included; the per-epoch val RMSE curve of each arm is in the JSON (`reports`: "
             "seconds, trial, epoch, val_rmse)."] + ([f"quick overrides: {' '.join(extra)}"] if args.quick else [])
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        {"model": MODEL, "threshold": THRESHOLD, "n_trials": n_trials, "timeout_s": timeout,
                         "overrides": list(extra), "arms": rows, "ratio": ratio}, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"Model {f['model']}, {f['n_trials']} trials per arm, timeout {f['timeout_s']:.0f} s, seed 0:", "",
             f"| arm | time to val RMSE <= {f['threshold']} (s) | best val RMSE | trials (pruned) | epochs trained | "
             "wall (s) | trials/h |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in f["arms"]:
        hit = f"{r['time_to_target_s']:.1f}" if r["time_to_target_s"] is not None else "not reached"
        best = f"{r['best_val_rmse']:.4f}" if r["best_val_rmse"] is not None else "-"
        lines.append(f"| {r['arm']} | {hit} | {best} | {r['trials']} ({r['pruned']}) | {r['epochs_trained']} | "
                     f"{r['wall_s']:.0f} | {r['trials_per_hour']:,.0f} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

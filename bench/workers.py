"""Section workers: sweep trials per hour with 1 and 2 worker processes on this machine, and the
thread settings per worker that keep them from fighting over the cores.

Every trial does the same work (biased, adam, batch 256, k 64, a fixed number of epochs, no
pruning, no early stopping; lr and reg sampled), so trials per hour measures the machine, not
the sampler's luck. Each configuration runs mfexp's own `run_workers` in a fresh process.

    python -m bench.workers [--quick]
    python -m bench.workers --child WORKERS --trials N --epochs E   (one configuration; prints JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Optional, Sequence

from bench import common

from mfexp.sweep.plan import build_plan
from mfexp.sweep.results import WORKER_ATTR
from mfexp.sweep.runner import prepare, run_workers

SECTION = "workers"
# (workers, MXNet/OpenMP threads per worker); None: MXNet's defaults (OpenMP on every core)
FULL_CONFIGS = ((1, None), (1, 1), (2, 1), (2, 2))
QUICK_CONFIGS = ((1, None), (2, 1))


def child(workers: int, n_trials: int, epochs: int) -> dict:
    name = f"workers-{workers}-{os.environ.get('OMP_NUM_THREADS', 'default')}"
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(name)
    plan = build_plan([
        "sweep.models=[biased]", f"sweep.n_trials={n_trials}", f"sweep.n_workers={workers}", f"sweep.name={name}",
        # one trial at a time, n_trials of them: workers sharing trials (not the default sweep's populations)
        "sweep.population=1", f"sweep.model_trials={{biased:{n_trials}}}",
        f"sweep.root={common.sweep_root(name)}", "sweep.pruner=none", "sweep.enqueue_tutorial=false",
        f"train.epochs={epochs}", "train.patience=null", "train.batch_size=choice(256)", "model.k=choice(64)",
        "train.optimizer=choice(adam)",
    ])
    studies = prepare(plan)
    start = time.perf_counter()
    run_workers(plan, None)
    wall = time.perf_counter() - start
    trials = [t for t in studies["biased"].get_trials(deepcopy=False) if t.datetime_complete]
    # steady state: leave out each worker's first trial (it imports MXNet and MLflow, compiles kernels)
    firsts = {}
    for t in sorted(trials, key=lambda t: t.datetime_start):
        firsts.setdefault(t.user_attrs.get(WORKER_ATTR), t.number)
    later = [t for t in trials if t.number not in firsts.values()]
    busy = ((max(t.datetime_complete for t in later) - min(t.datetime_start for t in later)).total_seconds()
            if later else 0.0)
    durations = [t.duration.total_seconds() for t in later or trials]
    return {"workers": workers, "threads": os.environ.get("OMP_NUM_THREADS") or "default",
            "trials": len(trials), "epochs": epochs, "wall_s": round(wall, 2),
            "trials_per_hour": round(len(trials) / wall * 3600, 1),
            "trials_per_hour_steady": round(len(later) / busy * 3600, 1) if busy > 0 else None,
            "mean_trial_s": round(sum(durations) / len(durations), 3),
            "first_trial_s": round(min(t.duration.total_seconds() for t in trials if t.number in firsts.values()), 2)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--child", type=int, metavar="WORKERS")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child:
        print(json.dumps(child(args.child, args.trials, args.epochs)))
        return 0
    started = time.perf_counter()
    configs, n_trials, epochs = (QUICK_CONFIGS, 3, 1) if args.quick else (FULL_CONFIGS, args.trials, args.epochs)
    common.scratch()  # children share it (and its migrated MLflow template)
    rows = []
    for workers, threads in configs:
        env = common.child_env(threads)
        if threads is None:
            for var in ("MXNET_CPU_WORKER_NTHREADS", "OMP_NUM_THREADS"):
                env.pop(var, None)
        _, proc = common.run_child(["-m", "bench.workers", "--child", str(workers), "--trials", str(n_trials),
                                    "--epochs", str(epochs)], env=env)
        rows.append(common.last_json_line(proc.stdout))
        r = rows[-1]
        common.say(SECTION, f"{workers} worker(s), threads {r['threads']}: {r['trials_per_hour']:,.0f} trials/h "
                            f"({r['trials']} trials in {r['wall_s']:.1f}s, {r['mean_trial_s']:.2f}s each)")
    best_one = max((r for r in rows if r["workers"] == 1), key=lambda r: r["trials_per_hour"])
    two = [r for r in rows if r["workers"] == 2 and r["threads"] == "1"]
    speedup = round(two[0]["trials_per_hour"] / best_one["trials_per_hour"], 3) if two else None
    targets = [common.target("2 workers (1 thread each) vs the best single worker, trials/h", "report", speedup, "x",
                             None, f"1 worker: {best_one['trials_per_hour']:,.0f}/h; 2 workers: "
                                   f"{two[0]['trials_per_hour']:,.0f}/h" if two else "")]
    notes = ["threads = MXNET_CPU_WORKER_NTHREADS and OMP_NUM_THREADS per worker process; 'default' leaves "
             "MXNet's own (one engine worker, OpenMP on every core). mfexp's runner sets 1 and 1 for "
             "n_workers > 1 unless the environment already says otherwise.",
             "trials/h counts the whole run_workers call (each worker process imports MXNet and MLflow and "
             "loads the data once); steady leaves out each worker's first trial, which pays those imports: "
             "trials after the first / (last end - first start of those trials). mean trial = those trials."]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        {"trials_per_config": n_trials, "epochs": epochs, "rows": rows, "speedup_2_workers": speedup},
                        targets, notes)
    return 0


def render(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"biased, adam, batch 256, k 64, {f['epochs']} epoch(s) per trial, {f['trials_per_config']} trials per "
             "configuration, no pruning:", "",
             "| workers | threads per worker | trials/h | trials/h steady | mean trial (s) | first trial (s) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in f["rows"]:
        lines.append(f"| {r['workers']} | {r['threads']} | {r['trials_per_hour']:,.0f} | "
                     f"{r['trials_per_hour_steady'] or 0:,.0f} | {r['mean_trial_s']:.2f} | {r['first_trial_s']:.1f} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

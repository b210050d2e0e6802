"""Section scaling: one epoch of plain k=64 at a large batch on synthetic ML-25M-shaped rating
sets (162,541 users, 59,047 items, long-tailed; bench/synthetic.py) of growing size, each in
a fresh process: epoch time, samples/s and peak RSS.

    python -m bench.scaling [--quick]
    python -m bench.scaling --child N_RATINGS --batch B --budget S   (one size; prints JSON)

An epoch that would outrun `--budget` seconds is stopped there and its time extrapolated from
the batches done (marked `extrapolated`), so the section stays bounded on a slow build.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Optional, Sequence

import mxnet as mx

from bench import common
from bench.synthetic import describe, ml25m_like_dataset
from mfexp.config import Config, TrainConfig
from mfexp.models.plugins import named
import mfexp.train
from mfexp.train import build_net, fit

SECTION = "scaling"
FULL_SIZES = (1_000_000, 10_000_000, 25_000_000)
QUICK_SIZES = (40_000, 120_000)
BATCH = 4096
TARGET_EPOCH_S = 60.0
TARGET_RSS_MB = 4096.0


class OverBudget(Exception):
    pass


@contextlib.contextmanager
def guard(budget_s: float, state: dict, every: int = 32):
    """Within the block, mfexp.train.make_trainer's trainers stop the epoch after `budget_s` seconds of
    training (the clock is read every `every` steps, after a sync); restored on leaving, so that an
    in-process caller (a test) leaves training as it found it."""
    make = mfexp.train.make_trainer

    class Guarded:
        def __init__(self, trainer):
            self.trainer = trainer
            state["start"] = time.perf_counter()

        def step(self, n):
            self.trainer.step(n)
            state["samples"] = state.get("samples", 0) + n
            state["steps"] = state.get("steps", 0) + 1
            if state["steps"] % every:  # the engine runs ahead of Python: look at the clock after a sync
                return
            mx.nd.waitall()
            if time.perf_counter() - state["start"] > budget_s:
                state["elapsed"] = time.perf_counter() - state["start"]
                raise OverBudget()

    mfexp.train.make_trainer = lambda net, cfg: Guarded(make(net, cfg))
    try:
        yield
    finally:
        mfexp.train.make_trainer = make


def one_epoch(net, data, train_cfg, n_ratings: int, state: dict) -> tuple[float, float, bool]:
    """(epoch seconds, samples/s, extrapolated) of one training epoch under guard(): an epoch over
    the budget is extrapolated from the batches it did."""
    try:
        report = fit(net, data, train_cfg, mx.cpu(), eval_test=False, final_test=False).history[0]
        return report.epoch_time_s, report.samples_per_sec, False
    except OverBudget:
        sps = state["samples"] / state["elapsed"]
        return n_ratings / sps, sps, True


def child(n_ratings: int, batch: int, budget_s: float) -> dict:
    t = time.perf_counter()
    data = ml25m_like_dataset(n_ratings)
    gen_s = time.perf_counter() - t
    shape = describe(data.train.users, data.train.items, data.train.ratings)
    rss_data, peak_gen = common.rss_mb(), common.peak_rss_mb()
    common.reset_peak_rss()  # from here: what training adds to the data already in memory
    state: dict = {}
    cfg = Config(model=named("plain", k=64),
                 train=TrainConfig(batch_size=batch, epochs=1, progress=False, sparse_grad=True))
    net = build_net(cfg, data, mx.cpu())
    with guard(budget_s, state):
        epoch_s, sps, extrapolated = one_epoch(net, data, cfg.train, n_ratings, state)
    return {"ratings": n_ratings, "batch_size": batch, "epoch_s": round(epoch_s, 3), "samples_per_sec": round(sps),
            "extrapolated": extrapolated, "measured_samples": state.get("samples", n_ratings),
            "generate_s": round(gen_s, 2), "rss_after_data_mb": rss_data, "peak_rss_generating_mb": peak_gen,
            "peak_rss_training_mb": common.peak_rss_mb(),
            "peak_rss_mb": max(v for v in (peak_gen, common.peak_rss_mb()) if v is not None), "shape": shape}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--child", type=int, metavar="N_RATINGS")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of training per size at most")
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.budget)))
        return 0
    started = time.perf_counter()
    sizes, budget = (QUICK_SIZES, 3.0) if args.quick else (FULL_SIZES, args.budget)
    rows = []
    for n in sizes:
        _, proc = common.run_child(["-m", "bench.scaling", "--child", str(n), "--batch", str(args.batch),
                                    "--budget", str(budget)])
        rows.append(common.last_json_line(proc.stdout))
        r = rows[-1]
        common.say(SECTION, f"{n:>11,} ratings: epoch {r['epoch_s']:8.2f}s{' (extrapolated)' if r['extrapolated'] else ''}"
                            f"  {r['samples_per_sec']:>9,} samples/s  peak RSS {r['peak_rss_mb']:,.0f} MiB")
    per_m = [r["epoch_s"] / (r["ratings"] / 1e6) for r in rows]
    largest = rows[-1]
    epoch_ok = common.at_most(largest["epoch_s"], TARGET_EPOCH_S) if largest["ratings"] >= 25_000_000 else None
    rss_ok = common.at_most(largest["peak_rss_mb"], TARGET_RSS_MB) if largest["ratings"] >= 25_000_000 else None
    label = f"{largest['ratings']:,} ratings"
    targets = [
        common.target(f"one epoch, plain k=64, batch {args.batch}, 25M ratings", "<= 60 s", largest["epoch_s"], "s",
                      epoch_ok, f"measured at {label}" + (" (extrapolated)" if largest["extrapolated"] else "")),
        common.target("peak RSS at 25M ratings", "<= 4096 MiB", largest["peak_rss_mb"], "MiB", rss_ok,
                      f"measured at {label}"),
        common.target("cost linear in ratings: s per 1M ratings, largest / smallest size", "~1.0",
                      round(per_m[-1] / per_m[0], 3), "x", None),
    ]
    notes = ["Each size runs in a fresh process. peak RSS = the process's VmHWM (data generation and "
             "training together); 'RSS with the data' = after generating it, MXNet and mfexp already imported.",
             "Synthetic data: bench/synthetic.py (Zipf-like users and items, seeded); timestamps are zeros "
             "that are never touched, so they take no resident memory.",
             "Training uses train.sparse_grad=true (row-sparse embedding gradients): with dense gradients "
             "every step updates all 162k+59k rows, and one epoch at 25M would take many minutes."]
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        {"batch_size": args.batch, "budget_s": budget, "rows": rows,
                         "s_per_million": [round(x, 3) for x in per_m]}, targets, notes)
    return 0


def render(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"plain k=64, batch {f['batch_size']}, one epoch per size, each in a fresh process:", "",
             "| ratings | users seen | items seen | epoch (s) | samples/s | s per 1M ratings | peak RSS (MiB) | RSS with the data, before training (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r, spm in zip(f["rows"], f["s_per_million"]):
        mark = "*" if r["extrapolated"] else ""
        lines.append(f"| {r['ratings']:,} | {r['shape']['users_seen']:,} | {r['shape']['items_seen']:,} | "
                     f"{r['epoch_s']:.2f}{mark} | {r['samples_per_sec']:,} | {spm:.2f} | {r['peak_rss_mb']:,.0f} | "
                     f"{r['rss_after_data_mb']:,.0f} |")
    if any(r["extrapolated"] for r in f["rows"]):
        lines += ["", f"\\* stopped after {f['budget_s']:.0f} s of training and extrapolated from the batches done."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
